/**
 * The relay kill loop, shared by tests/e2e/kill.test.ts (100 cycles) and
 * `npm run soak` (bench/soak.ts, 1,000 by default): a real relay process
 * on one LevelDB directory is killed with SIGKILL at random moments while
 * a sender and a recipient sync against it (the real client code, in this
 * process, over real WebSockets), then restarted on the same data and
 * port. Afterwards everything is drained and checked:
 *   - every message the relay acked (the sender's outbox marked it
 *     accepted) reached the recipient: an ack means fsynced;
 *   - every message queued reached the recipient exactly once;
 *   - every restart opened the store (it printed "relay listening"), and
 *     the store reads back whole at the end.
 * Kill moments are drawn from a seeded PRNG: some during startup (before
 * the relay listens), most during uploads, fsyncs, downloads and DONEs.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ClassicLevel } from 'classic-level'
import { openHome } from '../src/client/client-home.js'
import { compose } from '../src/client/compose.js'
import { initHome } from '../src/client/identity.js'
import { runSync } from '../src/client/sync-driver.js'
import { Kind, Priority } from '../src/protocol/envelope.js'
import { Rng } from '../src/sim/rng.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
/** The built CLI: dist/bench → dist/src, or bench/ (a test running the source) → dist/src. */
const CLI = path.resolve(HERE, path.basename(path.dirname(HERE)) === 'dist' ? '../src/cli.js' : '../dist/src/cli.js')
/** Most of the messages are short reports; every SIZE_EVERY-th carries ~150 KB (three chunks). */
const SIZE_EVERY = 10
const BIG_BYTES = 150_000
/** Kill moments after "relay listening", ms; a share of kills land before it (during startup). */
const KILL_AFTER_MS: [number, number] = [20, 1500]
const STARTUP_KILL_SHARE = 0.1
const LISTEN_TIMEOUT_MS = 20_000
const DRAIN_TIMEOUT_MS = 180_000
/** The share of the driver's full-jitter reconnect delay the clients wait (see below). */
const RECONNECT_JITTER = 0.02

export interface KillLoopOptions {
  dir: string
  cycles: number
  seed: number
  /** Queued before the first cycle. */
  messages: number
  /** Queued during each cycle, so that uploads, downloads and DONEs go on all through the run. */
  perCycle: number
  /** After each cycle (for progress). */
  onCycle?: (cycle: number, state: { acked: number; delivered: number }) => void
}

export interface KillLoopResult {
  cycles: number
  messages: number
  /** Kills that landed before the relay listened. */
  startupKills: number
  acked: number
  delivered: number
  duplicates: number
  /** Acked but never delivered: must be empty. */
  lostAcked: string[]
  /** Anything else wrong (a restart that did not open the store, a drain that did not finish, …). */
  problems: string[]
  seconds: number
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

interface RelayRun {
  child: ChildProcess
  lines: string[]
  listening: Promise<boolean>
  exited: Promise<void>
}

function startRelay(data: string, port: number): RelayRun {
  const child = spawn(process.execPath, [CLI, 'relay', '--host', '127.0.0.1', '--port', String(port), '--data', data], { stdio: ['ignore', 'ignore', 'pipe'] })
  const lines: string[] = []
  let buf = ''
  let onListen: (ok: boolean) => void = () => {}
  const listening = new Promise<boolean>((resolve) => (onListen = resolve))
  child.stderr!.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      lines.push(line)
      if (line.includes('"relay listening"')) onListen(true)
    }
  })
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  void exited.then(() => onListen(false))
  return { child, lines, listening, exited }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export async function killLoop(o: KillLoopOptions): Promise<KillLoopResult> {
  const t0 = Date.now()
  const rng = new Rng(o.seed)
  const random = (): number => rng.next()
  const problems: string[] = []
  await mkdir(o.dir, { recursive: true })
  const data = path.join(o.dir, 'relay')
  await initHome(path.join(o.dir, 'alice'))
  await initHome(path.join(o.dir, 'bob'))
  const alice = await openHome(path.join(o.dir, 'alice'))
  const bob = await openHome(path.join(o.dir, 'bob'))
  const ids: string[] = []
  const queue = async (n: number): Promise<void> => {
    for (let k = 0; k < n; k++) {
      const i = ids.length
      const text = `report ${i} ` + 'x'.repeat(i % SIZE_EVERY === SIZE_EVERY - 1 ? BIG_BYTES : 1000)
      const c = compose({ outbox: alice.outbox, me: alice.me, to: bob.me.address, content: { kind: Kind.report, text }, now: Date.now(), ttlMs: 24 * 3600_000, priority: Priority.normal })
      await alice.outbox.add(c.record, c.envelope)
      ids.push(c.record.id)
    }
  }
  await queue(o.messages)
  const port = await freePort()
  const url = `ws://127.0.0.1:${port}`
  const acked = new Set<string>()
  const noteAcked = async (): Promise<void> => {
    for (const r of await alice.outbox.list()) if (r.kind === 'report' && (r.state === 'accepted' || r.state === 'delivered')) acked.add(r.id)
  }

  // Both clients sync the whole time, reconnecting by themselves as a field client would.
  const stop = new AbortController()
  // Their reconnect backoff is scaled down (2% of the usual full-jitter
  // delay) so that they get through in the short lives the loop gives the relay.
  const syncs = [alice, bob].map((h) => runSync(h.context(), { relays: [url], untilEmpty: false, signal: stop.signal, random: () => RECONNECT_JITTER }).catch(() => undefined))
  let startupKills = 0
  try {
    for (let cycle = 1; cycle <= o.cycles; cycle++) {
      const relay = startRelay(data, port)
      await queue(o.perCycle)
      if (random() < STARTUP_KILL_SHARE) {
        await sleep(random() * 300)
        if (!relay.lines.some((l) => l.includes('"relay listening"'))) startupKills++
      } else {
        const ok = await Promise.race([relay.listening, sleep(LISTEN_TIMEOUT_MS).then(() => false)])
        if (!ok) {
          problems.push(`cycle ${cycle}: the relay did not open its store and listen: ${relay.lines.slice(-3).join(' | ')}`)
          relay.child.kill('SIGKILL')
          await relay.exited
          break
        }
        await sleep(KILL_AFTER_MS[0] + random() * (KILL_AFTER_MS[1] - KILL_AFTER_MS[0]))
      }
      relay.child.kill('SIGKILL')
      await relay.exited
      for (const l of relay.lines) if (/"level":"(error|fatal)"|corrupt|repair/i.test(l)) problems.push(`cycle ${cycle}: ${l.slice(0, 300)}`)
      await noteAcked()
      o.onCycle?.(cycle, { acked: acked.size, delivered: (await bob.inbox.items()).length })
    }
  } finally {
    stop.abort()
    await Promise.all(syncs)
  }

  // Drain on a relay left running: sender up, recipient down (and receipts up), sender's receipts down.
  const last = startRelay(data, port)
  const up = await Promise.race([last.listening, sleep(LISTEN_TIMEOUT_MS).then(() => false)])
  if (!up) problems.push(`final restart: the relay did not listen: ${last.lines.slice(-3).join(' | ')}`)
  for (const h of up ? [alice, bob, alice] : []) {
    const report = await runSync(h.context(), { relays: [url], untilEmpty: true, timeoutMs: DRAIN_TIMEOUT_MS })
    if (!report.ok) problems.push(`drain of ${h.home}: ${report.relays.map((r) => r.error ?? 'unfinished').join('; ')}`)
  }
  await noteAcked()
  last.child.kill('SIGTERM')
  await last.exited

  const items = await bob.inbox.items()
  const got = new Set(items.map((m) => m.id))
  const delivered = ids.filter((id) => got.has(id)).length
  const lostAcked = [...acked].filter((id) => !got.has(id))
  if (delivered !== ids.length) problems.push(`${ids.length - delivered} of ${ids.length} messages never reached the recipient`)
  const undelivered = (await alice.outbox.list()).filter((r) => r.kind === 'report' && r.state !== 'delivered').length
  if (undelivered) problems.push(`${undelivered} reports not confirmed delivered to the sender`)
  await alice.close()
  await bob.close()

  // The store reads back whole after all those kills.
  const db = new ClassicLevel(data, { keyEncoding: 'utf8', valueEncoding: 'view' })
  try {
    let keys = 0
    for await (const _ of db.keys()) keys++
    if (keys === 0) problems.push('the relay store is empty after the run')
  } catch (err) {
    problems.push(`the relay store does not read back: ${(err as Error).message}`)
  } finally {
    await db.close()
  }
  return { cycles: o.cycles, messages: ids.length, startupKills, acked: acked.size, delivered, duplicates: items.length - got.size, lostAcked, problems, seconds: Math.round((Date.now() - t0) / 100) / 10 }
}
