/** The sync driver over real WebSockets to in-process relays: several relays, retries, timeouts. */
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { compose } from '../../src/client/compose.js'
import { runSync } from '../../src/client/sync-driver.js'
import { Kind, Priority } from '../../src/protocol/envelope.js'
import { listenWs, type RelayServer } from '../../src/relay/ws-server.js'
import { makeClient, makeRelay, type TestClient } from '../helpers/pair.js'

const servers: RelayServer[] = []
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close()
})

async function startRelay(port = 0) {
  const relay = await makeRelay()
  const server = await listenWs(relay, { host: '127.0.0.1', port })
  servers.push(server)
  return { relay, server }
}

async function queue(from: TestClient, to: TestClient, text: string) {
  const c = compose({ outbox: from.outbox, me: from.me, to: to.me.address, content: { kind: Kind.report, text }, now: Date.now(), ttlMs: 86_400_000, priority: Priority.normal })
  await from.outbox.add(c.record, c.envelope)
  return c.record.id
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

describe('runSync', () => {
  it('delivers through two relays and sends the receipt to both', async () => {
    const a = await startRelay()
    const b = await startRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const id = await queue(alice, bob, 'hello twice')
    const urls = [a.server.url, b.server.url]
    const up = await runSync(alice.ctx, { relays: urls, untilEmpty: true, timeoutMs: 20_000 })
    expect(up.ok).toBe(true)
    expect((await alice.outbox.get(id))!.relays.sort()).toEqual([...urls].sort())

    const down = await runSync(bob.ctx, { relays: urls, untilEmpty: true, timeoutMs: 20_000 })
    expect(down.ok).toBe(true)
    expect(await bob.inbox.items()).toHaveLength(1)
    const receipts = (await bob.outbox.list()).filter((r) => r.kind === 'receipt')
    expect(receipts).toHaveLength(1)
    expect(receipts[0]!.relays.sort()).toEqual([...urls].sort()) // a later round took it to the second relay

    await runSync(alice.ctx, { relays: urls, untilEmpty: true, timeoutMs: 20_000 })
    expect((await alice.outbox.get(id))!.state).toBe('delivered')
  })

  it('never logs in on a connection that uploads: the relay cannot tie a sender to its mailbox', async () => {
    const { relay, server } = await startRelay()
    const connections: number[][] = []
    const connect = relay.connect.bind(relay)
    relay.connect = (link) => {
      const session = connect(link)
      const types: number[] = []
      connections.push(types)
      const receive = session.receive.bind(session)
      session.receive = (bytes) => {
        types.push(bytes[0]!)
        receive(bytes)
      }
      return session
    }
    const alice = await makeClient()
    const bob = await makeClient()
    await queue(alice, bob, 'who sent this?')
    expect((await runSync(alice.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 20_000 })).ok).toBe(true)
    expect((await runSync(bob.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 20_000 })).ok).toBe(true) // fetches, then uploads its receipt
    expect((await runSync(alice.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 20_000 })).ok).toBe(true) // fetches the receipt
    const AUTH = 0x02
    const PUT = 0x10
    expect(connections.filter((t) => t.includes(PUT)).length).toBeGreaterThanOrEqual(2) // alice's report, bob's receipt
    expect(connections.filter((t) => t.includes(AUTH)).length).toBeGreaterThanOrEqual(3)
    for (const types of connections) expect(types.includes(AUTH) && types.includes(PUT)).toBe(false)
  })

  it('keeps retrying with backoff until the relay comes up', async () => {
    const port = await freePort()
    const alice = await makeClient()
    const bob = await makeClient()
    const id = await queue(alice, bob, 'patience')
    const retries: number[] = []
    const started = runSync(alice.ctx, {
      relays: [`ws://127.0.0.1:${port}`],
      untilEmpty: true,
      timeoutMs: 20_000,
      random: () => 0.5,
      onRetry: (_relay, _err, delay, role) => role === 'upload' && retries.push(delay),
    })
    await new Promise((r) => setTimeout(r, 1500))
    await startRelay(port)
    const report = await started
    expect(report.ok).toBe(true)
    expect(retries.length).toBeGreaterThanOrEqual(2)
    // full jitter around a doubling ceiling: 0.5 × 500 ms × 2^n
    expect(retries.slice(0, 3)).toEqual([250, 500, 1000].slice(0, Math.min(3, retries.length)))
    expect((await alice.outbox.get(id))!.state).toBe('accepted')
  })

  it('times out with the message still queued', async () => {
    const port = await freePort()
    const alice = await makeClient()
    const bob = await makeClient()
    const id = await queue(alice, bob, 'nobody home')
    const report = await runSync(alice.ctx, { relays: [`ws://127.0.0.1:${port}`], untilEmpty: true, timeoutMs: 1000 })
    expect(report.ok).toBe(false)
    expect(report.timedOut).toBe(true)
    expect((await alice.outbox.get(id))!.state).toBe('queued')
  })
})
