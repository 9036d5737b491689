/**
 * The datagram transport for real: the compiled CLI, a real relay process
 * serving udp:// on 127.0.0.1, real sockets. A text report and a file go
 * from alice to bob and the receipt comes back; the relay is killed with
 * SIGKILL in the middle of a large upload and restarted on the same data and
 * UDP port (its key, and so its udp:// URL, survive); and a URL naming the
 * wrong key gets nowhere (the relay drops those packets unseen) and fails
 * within --timeout with a one-line error.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { assertBuilt, chapar, type RelayProc, start, startRelay } from './cli-helpers.js'

let dir: string
const relays: RelayProc[] = []

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-udp-'))
})

afterAll(async () => {
  for (const r of relays) {
    if (r.child.exitCode === null && r.child.signalCode === null) {
      r.child.kill('SIGKILL')
      await r.exited
    }
  }
  await rm(dir, { recursive: true, force: true })
})

/** A relay serving UDP too; its udp:// URL from the "relay listening" log line. */
async function udpRelay(data: string, udpPort = 0, extra: string[] = []): Promise<RelayProc & { udpUrl: string; udpPort: number }> {
  const r = await startRelay(data, 0, ['--udp-port', String(udpPort), ...extra])
  relays.push(r)
  const listening = JSON.parse(r.lines.find((l) => l.includes('"relay listening"'))!)
  const udpUrl = listening.udp_url as string
  expect(udpUrl).toMatch(/^udp:\/\/127\.0\.0\.1:\d+\?key=[A-Za-z0-9_-]{43}$/)
  return { ...r, udpUrl, udpPort: Number(new URL(udpUrl).port) }
}

async function stop(r: RelayProc, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  r.child.kill(signal)
  await r.exited
}

async function home(name: string): Promise<{ home: string; address: string }> {
  const h = path.join(dir, name)
  expect((await chapar(['init', '--home', h])).code).toBe(0)
  return { home: h, address: (await chapar(['whoami', '--home', h])).stdout.trim() }
}

async function file(name: string, size: number): Promise<{ path: string; bytes: Buffer }> {
  const bytes = randomBytes(size)
  const p = path.join(dir, name)
  await writeFile(p, bytes)
  return { path: p, bytes }
}

async function send(from: string, to: string, what: ['--text' | '--file', string]): Promise<string> {
  const r = await chapar(['send', '--home', from, '--to', to, ...what])
  expect(r.code, r.stderr).toBe(0)
  return r.stdout.trim()
}

const sync = (h: string, url: string, extra: string[] = []) => chapar(['sync', '--home', h, '--relay', url, '--until-empty', '--timeout', '60s', ...extra], { timeoutMs: 90_000 })
const json = async (args: string[]) => JSON.parse((await chapar(args)).stdout)

describe('chapar over udp://', () => {
  it('a text report and a 300 KB file from alice reach bob, and alice learns they were delivered', async () => {
    const relay = await udpRelay(path.join(dir, 'relay-1'))
    const alice = await home('alice')
    const bob = await home('bob')
    const id1 = await send(alice.home, bob.address, ['--text', 'report over udp'])
    const photo = await file('photo.jpg', 300_000)
    const id2 = await send(alice.home, bob.address, ['--file', photo.path])

    const sa = await sync(alice.home, relay.udpUrl)
    expect(sa.code, sa.stderr).toBe(0)
    expect(sa.stderr).toMatch(/up 2\/2/)
    const accepted = await json(['status', '--home', alice.home, '--json'])
    expect(accepted.map((r: { state: string }) => r.state)).toEqual(['accepted', 'accepted'])
    expect(accepted[0].relays).toEqual([relay.udpUrl])

    const sb = await sync(bob.home, relay.udpUrl)
    expect(sb.code, sb.stderr).toBe(0)
    const inbox = await json(['inbox', '--home', bob.home, '--json'])
    expect(inbox).toHaveLength(2)
    const byId = Object.fromEntries(inbox.map((x: { id: string }) => [x.id, x]))
    expect(byId[id1].text).toBe('report over udp')
    expect(byId[id1].from).toBe((await chapar(['whoami', '--home', alice.home])).stdout.trim())
    expect(byId[id2].file_bytes).toBe(300_000)
    expect(Buffer.compare(await readFile(byId[id2].file), photo.bytes)).toBe(0)

    const sa2 = await sync(alice.home, relay.udpUrl)
    expect(sa2.code, sa2.stderr).toBe(0)
    const delivered = await json(['status', '--home', alice.home, '--json'])
    expect(delivered).toEqual([
      expect.objectContaining({ id: id1, to: bob.address, state: 'delivered', relays: [relay.udpUrl] }),
      expect.objectContaining({ id: id2, to: bob.address, state: 'delivered', relays: [relay.udpUrl] }),
    ])
    await stop(relay)
  }, 60_000)

  it('survives kill -9 of the relay mid-upload: restarted on the same data and port, same udp:// URL, the upload completes', async () => {
    const data = path.join(dir, 'relay-2')
    // Replies (and bob's download) at 8 Mbit/s: loopback has room, and the test stays quick.
    const first = await udpRelay(data, 0, ['--udp-rate', '8000'])
    const alice = await home('alice-2')
    const bob = await home('bob-2')
    const big = await file('video.mp4', 2_000_000)
    const id = await send(alice.home, bob.address, ['--file', big.path])

    // 2 MB at 2 Mbit/s takes at least 8 s: 3 s in, the upload is under way.
    const upload = start(['sync', '--home', alice.home, '--relay', first.udpUrl, '--until-empty', '--timeout', '60s', '--rate', '2000'])
    await new Promise((r) => setTimeout(r, 3000))
    expect(upload.child.exitCode).toBeNull()
    await stop(first, 'SIGKILL')

    await new Promise((r) => setTimeout(r, 1000))
    const second = await udpRelay(data, first.udpPort, ['--udp-rate', '8000'])
    expect(second.udpPort).toBe(first.udpPort)
    expect(second.udpUrl).toBe(first.udpUrl) // the key was kept in the relay's store

    // The sync that was cut off notices the restart, reconnects and finishes.
    expect(await upload.exited).toBe(0)
    expect(upload.lines.join('\n')).toMatch(/retry udp:\/\//) // it was cut off, and went again
    expect(upload.lines.join('\n')).toMatch(/up 1\/1/)
    expect((await json(['status', '--home', alice.home, '--json']))[0]).toMatchObject({ id, state: 'accepted', relays: [first.udpUrl] })

    // New syncs against the restarted relay: bob gets the file intact, alice the receipt.
    const sb = await sync(bob.home, second.udpUrl)
    expect(sb.code, sb.stderr).toBe(0)
    const inbox = await json(['inbox', '--home', bob.home, '--json'])
    expect(inbox.map((x: { id: string }) => x.id)).toEqual([id])
    expect(Buffer.compare(await readFile(inbox[0].file), big.bytes)).toBe(0)
    const sa = await sync(alice.home, second.udpUrl)
    expect(sa.code, sa.stderr).toBe(0)
    expect((await json(['status', '--home', alice.home, '--json']))[0]).toMatchObject({ id, state: 'delivered' })
    await stop(second)
  }, 60_000)

  // kill -9 while bob downloads. Shared by the three tests below, which run in order.
  let cut: { bob: string; id: string; big: Buffer; relay: RelayProc & { udpUrl: string }; sync: ReturnType<typeof start> } | undefined

  it('kill -9 of the relay while bob downloads a 1 MB file; restarted on the same data and port', async () => {
    const data = path.join(dir, 'relay-4')
    // 1 MB at 1.5 Mbit/s: bob's download takes at least 5.5 s.
    const first = await udpRelay(data, 0, ['--udp-rate', '1500'])
    const alice = await home('alice-4')
    const bob = await home('bob-4')
    const big = await file('evidence.zip', 1_000_000)
    const id = await send(alice.home, bob.address, ['--file', big.path])
    const sa = await sync(alice.home, first.udpUrl, ['--rate', '20000'])
    expect(sa.code, sa.stderr).toBe(0)

    // Bob's link takes 1.5 Mbit/s too (each end paces at the smaller of the two rates).
    const sync2 = start(['sync', '--home', bob.home, '--relay', first.udpUrl, '--until-empty', '--timeout', '12s', '--rate', '1500'])
    await new Promise((r) => setTimeout(r, 2500))
    expect(sync2.child.exitCode).toBeNull()
    await stop(first, 'SIGKILL')
    await new Promise((r) => setTimeout(r, 1000))
    const second = await udpRelay(data, first.udpPort, ['--udp-rate', '1500'])
    expect(second.udpUrl).toBe(first.udpUrl)
    cut = { bob: bob.home, id, big: big.bytes, relay: second, sync: sync2 }
  }, 30_000)

  // Bob's sync, cut off mid-download, hears of the restart from the new
  // relay's RESET (drawn by its keepalive pings), reconnects and finishes
  // within its --timeout. Before the pings it sat silent until the timeout.
  it("bob's cut-off sync reconnects to the restarted relay and finishes", async () => {
    expect(cut).toBeDefined()
    const code = await cut!.sync.exited
    expect(code).toBe(0)
  }, 30_000)

  it('a new sync after the restart gets bob the file intact', async () => {
    expect(cut).toBeDefined()
    await cut!.sync.exited
    const sb = await sync(cut!.bob, cut!.relay.udpUrl)
    expect(sb.code, sb.stderr).toBe(0)
    const inbox = await json(['inbox', '--home', cut!.bob, '--json'])
    expect(inbox.map((x: { id: string }) => x.id)).toEqual([cut!.id])
    expect(Buffer.compare(await readFile(inbox[0].file), cut!.big)).toBe(0)
    await stop(cut!.relay)
  }, 60_000)

  it('a udp:// URL with the wrong key: packets are dropped unseen, sync fails within --timeout with one line', async () => {
    const relay = await udpRelay(path.join(dir, 'relay-3'))
    const carol = await home('carol')
    await send(carol.home, carol.address, ['--text', 'to the wrong relay'])
    const wrongKey = randomBytes(32).toString('base64url')
    const wrong = relay.udpUrl.replace(/key=.*$/, `key=${wrongKey}`)
    expect(wrong).not.toBe(relay.udpUrl)

    const t0 = Date.now()
    const r = await chapar(['sync', '--home', carol.home, '--relay', wrong, '--until-empty', '--timeout', '3s'], { timeoutMs: 30_000 })
    const took = Date.now() - t0
    expect(r.code).toBe(1)
    expect(took).toBeLessThan(3000 + 5000) // the timeout, plus node's start-up
    const lines = r.stderr.split('\n').filter(Boolean)
    expect(lines.filter((l) => /timed out|incomplete|error/.test(l))).toHaveLength(1)
    expect(lines.at(-1)).toMatch(/^sync timed out: 1 not yet accepted by udp:\/\/127\.0\.0\.1:\d+\?key=/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expect((await json(['status', '--home', carol.home, '--json']))[0].state).toBe('queued')

    // The relay saw packets it could not open, and opened no session for them.
    relay.child.kill('SIGTERM')
    await relay.exited
    const stopping = JSON.parse(relay.lines.find((l) => l.includes('"stopped"'))!)
    expect(stopping.udp.packets_in).toBeGreaterThan(0)
    expect(stopping.udp.packets_dropped).toBe(stopping.udp.packets_in)
    expect(stopping.udp.sessions_opened).toBe(0)
    expect(stopping.udp.resets_sent).toBe(0)
  }, 30_000)
})
