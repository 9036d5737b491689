/**
 * kill -9 of the relay in the middle of a 200-message sync: after a restart
 * on the same data, every message reaches bob exactly once and alice sees
 * every one as delivered. Real CLI processes, a real relay process, real LevelDB.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { openHome } from '../../src/client/client-home.js'
import { compose } from '../../src/client/compose.js'
import { Kind, Priority } from '../../src/protocol/envelope.js'
import { parseAddress } from '../../src/protocol/address.js'
import { assertBuilt, chapar, type RelayProc, start, startRelay, waitFor } from './cli-helpers.js'

const MESSAGES = 200
let dir: string
const relays: RelayProc[] = []

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-crash-'))
})

afterAll(async () => {
  for (const r of relays) if (r.child.exitCode === null) r.child.kill('SIGKILL')
  await rm(dir, { recursive: true, force: true })
})

/**
 * Two fresh homes, with 200 reports of ~100 KB (two chunks each) queued in
 * alice's outbox through the same code path as `chapar send` (200 CLI spawns
 * would cost ~40 s).
 */
async function aliceAndBob(tag: string): Promise<{ alice: string; bob: string; ids: string[] }> {
  const alice = path.join(dir, 'alice' + tag)
  const bob = path.join(dir, 'bob' + tag)
  await chapar(['init', '--home', alice])
  await chapar(['init', '--home', bob])
  const bobAddress = (await chapar(['whoami', '--home', bob])).stdout.trim()
  const home = await openHome(alice)
  const ids: string[] = []
  for (let i = 0; i < MESSAGES; i++) {
    const c = compose({
      outbox: home.outbox,
      me: home.me,
      to: parseAddress(bobAddress),
      content: { kind: Kind.report, text: `report ${i} ` + 'x'.repeat(100_000) },
      now: Date.now(),
      ttlMs: 24 * 3600_000,
      priority: Priority.normal,
    })
    await home.outbox.add(c.record, c.envelope)
    ids.push(c.record.id)
  }
  await home.close()
  return { alice, bob, ids }
}

it('survives kill -9 of the relay mid-sync: exactly-once delivery, every message delivered', async () => {
  const { alice, bob, ids } = await aliceAndBob('1')
  const data = path.join(dir, 'relay-data')

  const first = await startRelay(data, 0, ['--verbose'])
  relays.push(first)
  const sync = start(['sync', '--home', alice, '--relay', first.url, '--until-empty', '--timeout', '90'])
  // Kill the relay once it has acked some but not all of them.
  await waitFor(() => first.lines.filter((l) => l.includes('"stored"')).length >= 20, 30_000, 'relay to store 20 messages')
  first.child.kill('SIGKILL')
  await first.exited
  const storedBeforeCrash = first.lines.filter((l) => l.includes('"stored"')).length
  expect(storedBeforeCrash).toBeLessThan(MESSAGES)

  const second = await startRelay(data, first.port, ['--verbose'])
  relays.push(second)
  // Everything the first relay acked survived the kill: it is in the store at startup.
  const listening = JSON.parse(second.lines.find((l) => l.includes('"relay listening"'))!)
  expect(listening.messages).toBeGreaterThanOrEqual(storedBeforeCrash)

  expect(await sync.exited).toBe(0)
  const accepted = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout)
  expect(accepted).toHaveLength(MESSAGES)
  expect(accepted.every((r: { state: string }) => r.state === 'accepted')).toBe(true)
  // What survived plus what was newly stored after the restart is exactly the 200:
  // re-sends of envelopes the dead relay had fsynced were absorbed by dedup.
  const storedAfter = second.lines.filter((l) => l.includes('"stored"')).length
  expect(listening.messages + storedAfter).toBe(MESSAGES)

  const sb = await chapar(['sync', '--home', bob, '--relay', second.url, '--until-empty', '--timeout', '90'])
  expect(sb.code).toBe(0)
  const inbox = JSON.parse((await chapar(['inbox', '--home', bob, '--json'])).stdout) as Array<{ id: string; text: string }>
  expect(inbox).toHaveLength(MESSAGES)
  expect(new Set(inbox.map((m) => m.id))).toEqual(new Set(ids))
  expect(new Set(inbox.map((m) => m.text.split(' ')[1])).size).toBe(MESSAGES)

  const sa = await chapar(['sync', '--home', alice, '--relay', second.url, '--until-empty', '--timeout', '90'])
  expect(sa.code).toBe(0)
  const final = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout) as Array<{ state: string }>
  expect(final.filter((r) => r.state === 'delivered')).toHaveLength(MESSAGES)

  // A second sync of bob's finds nothing new: nothing is delivered twice.
  await chapar(['sync', '--home', bob, '--relay', second.url, '--until-empty', '--timeout', '30'])
  expect(JSON.parse((await chapar(['inbox', '--home', bob, '--json'])).stdout)).toHaveLength(MESSAGES)
  second.child.kill('SIGTERM')
  await second.exited
}, 180_000)

it('survives kill -9 of the sending client mid-sync: the next sync finishes the job, nothing twice', async () => {
  const { alice, bob, ids } = await aliceAndBob('2')
  const relay = await startRelay(path.join(dir, 'relay-data-2'), 0, ['--verbose'])
  relays.push(relay)
  const sync = start(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '90'])
  await waitFor(() => relay.lines.filter((l) => l.includes('"stored"')).length >= 20, 30_000, 'relay to store 20 messages')
  sync.child.kill('SIGKILL')
  await sync.exited
  expect(relay.lines.filter((l) => l.includes('"stored"')).length).toBeLessThan(MESSAGES)

  const again = await chapar(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '90'])
  expect(again.code).toBe(0)
  const status = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout) as Array<{ state: string }>
  expect(status.filter((r) => r.state === 'accepted')).toHaveLength(MESSAGES)
  expect(relay.lines.filter((l) => l.includes('"stored"'))).toHaveLength(MESSAGES) // each stored once
  expect((await chapar(['sync', '--home', bob, '--relay', relay.url, '--until-empty', '--timeout', '90'])).code).toBe(0)
  const inbox = JSON.parse((await chapar(['inbox', '--home', bob, '--json'])).stdout) as Array<{ id: string }>
  expect(inbox.map((m) => m.id).sort()).toEqual([...ids].sort())
  relay.child.kill('SIGTERM')
  await relay.exited
}, 180_000)
