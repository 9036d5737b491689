/**
 * The relay kill loop, shared by tests/e2e/kill.test.ts (100 cycles) and
 * `npm run soak` (bench/soak.ts, 1,000 by default).
 *
 * A real relay process (dist/src/cli.js relay) on one LevelDB directory and
 * one fixed port is killed with SIGKILL at random moments and restarted on
 * the same data, again and again, while two senders and a recipient sync
 * against it the whole time: the real client code (openHome, compose,
 * runSync, the driver `chapar sync` uses), in this process, over real
 * WebSockets. Each client runs `sync --until-empty` passes back to back
 * (a pause only when a pass found nothing to do), so uploads, downloads,
 * DONEs and receipts go on all through every life of the relay; new
 * messages (mostly ~1 KB, about one in BIG_EVERY ~150 KB: three chunks) are
 * queued at random moments of every cycle.
 *
 * Kill moments come from the simulator's seeded Rng (src/sim/rng.ts): a
 * share before the relay says it listens (at 40–100 % of the last measured
 * startup: while Node loads, LevelDB opens and replays its log, usage is
 * counted), the rest
 * log-uniformly 20 ms … 1.5 s after its "relay listening" line (so most
 * land in the first few hundred ms, where the sweep, the reconnections and
 * the bursts of traffic are). The seed fixes every draw (kill moments,
 * message sizes and arrival moments, client backoff), each kind from its
 * own fork of the Rng; what the clients happen to be doing at a given
 * moment still depends on the machine.
 *
 * Checked after every kill, on a copy of the dead relay's directory (the
 * original is left exactly as the kill left it for the next start), by
 * the store's own MailboxStore.check():
 *   - the store opens and reads whole (every key and value), and check()
 *     finds no inconsistent key or envelope;
 *   - every envelope the relay acked so far (STORED: the client's outbox
 *     lists the relay in `relays`, i.e. state accepted) is there whole
 *     (record, every chunk, delivery, listing and expiry entries) or was
 *     delivered (DONE: its tombstone is there). Reports and receipts both;
 *   - the relay did not exit by itself, logged no error and nothing about
 *     corruption or repair, and LevelDB's own LOG says nothing of the kind;
 *   - each life that was given the time printed "relay listening";
 *   - no report is handed to the recipient's application twice (flagged
 *     the moment it happens, so the cycle is known).
 * And at the end, after a last relay life that lets everything drain:
 *   - every acked message and every message queued reached the recipient's
 *     inbox, none twice (the app's `received` events, one per id; the inbox
 *     items; the texts' sequence numbers), nothing quarantined;
 *   - every report is `delivered` in its sender's outbox (receipts came back);
 *   - the relay stops cleanly on SIGTERM and its store checks clean, with
 *     a tombstone for every message; an envelope still whole or arriving
 *     on it is a warning.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { cp, mkdir, readFile, rm } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type ClientHome, openHome } from '../src/client/client-home.js'
import { compose } from '../src/client/compose.js'
import { initHome } from '../src/client/identity.js'
import { runSync } from '../src/client/sync-driver.js'
import type { SyncEvent } from '../src/client/sync-engine.js'
import { Kind, Priority } from '../src/protocol/envelope.js'
import { openDiskDb } from '../src/queue/db.js'
import { GroupCommit } from '../src/queue/group-commit.js'
import { MailboxStore, type StoreCheck } from '../src/queue/mailbox.js'
import { Rng } from '../src/sim/rng.js'
import { median } from './relay-bench.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
/** The built CLI: dist/bench → dist/src, or bench/ (a test running the source) → dist/src. */
const CLI = path.resolve(HERE, path.basename(path.dirname(HERE)) === 'dist' ? '../src/cli.js' : '../dist/src/cli.js')

/** About one message in BIG_EVERY (drawn) carries BIG_BYTES of text (three chunks); the others SMALL_BYTES. */
const BIG_EVERY = 10
const BIG_BYTES = 150_000
const SMALL_BYTES = 1000
/** Kill moments after "relay listening", ms, drawn log-uniformly. */
const KILL_AFTER_MS: readonly [number, number] = [20, 1500]
/** The share of kills aimed before "relay listening" (at 40–100 % of the last measured startup). */
const STARTUP_KILL_SHARE = 0.12
const LISTEN_TIMEOUT_MS = 20_000
const PASS_TIMEOUT_MS = 60_000
const DRAIN_TIMEOUT_MS = 180_000
/** A client whose pass found nothing to do waits this long before the next (else it would spin on connections). */
const IDLE_PAUSE_MS = 150
/** A kill within this long of a client seeing traffic (an ack, a chunk, a message, a receipt) counts as "busy". */
const BUSY_WINDOW_MS = 100
/**
 * The clients' reconnect backoff is the driver's own full-jitter backoff
 * with its random draw scaled by this: at most 60 ms instead of 5 min, so
 * that they get back within the short lives the loop gives the relay.
 */
const JITTER_SCALE = 0.0002
/** Keep at most this many stderr lines of one relay life. */
const MAX_LINES = 400
const MAX_PROBLEMS = 50

export interface KillLoopOptions {
  /** Working directory: relay data, client homes, store copies. Created if missing. */
  dir: string
  cycles: number
  seed: number
  /** Messages queued before the first cycle (default 30). */
  initial?: number
  /** Messages queued during each cycle, at random moments (default 3). */
  perCycle?: number
  /** The compiled CLI (default: dist/src/cli.js of this repository, CLI). */
  cli?: string
  /** Called after each cycle's checks (progress). */
  onCycle?: (c: CycleReport) => void
  /** Stop the kill cycles at the first problem (still drains and checks). Default true. */
  stopOnProblem?: boolean
}

export interface CycleReport {
  cycle: number
  /** ms after "relay listening" the kill came, or null: before it (during startup). */
  killAfterMs: number | null
  /** A client saw traffic within BUSY_WINDOW_MS before the kill. */
  busy: boolean
  queued: number
  acked: number
  delivered: number
  problems: number
}

export interface KillLoopResult {
  seed: number
  cycles: number
  /** Reports queued (all senders). */
  messages: number
  /** Kills before "relay listening". */
  startupKills: number
  /** Kills within BUSY_WINDOW_MS of traffic. */
  busyKills: number
  /** Reports the relay acked (STORED) to their sender. */
  acked: number
  /** Receipts the relay acked to the recipient. */
  ackedReceipts: number
  /** Distinct reports in the recipient's inbox. */
  delivered: number
  /** Ids the application was handed more than once, and inbox items beyond one per id. */
  duplicates: number
  /**
   * Reports listed again to the recipient after it had stored them (the
   * kill took the DONE with it), which its dedup absorbed: expected, harmless.
   */
  redelivered: number
  /** The same for receipts at the senders. */
  redeliveredReceipts: number
  /** Reports confirmed delivered to their sender by a receipt. */
  confirmed: number
  /** Acked (reports or receipts) but never seen again: must be empty. */
  lostAcked: string[]
  /** Every violation, with seed and cycle. */
  problems: string[]
  /** Odd but not a violation of the requirement (say, envelope data left on the relay after the drain). */
  warnings: string[]
  /** Median time from spawn to "relay listening", ms. */
  startupMs: number
  seconds: number
}

/** A port free now, to keep for every life of the relay (clients reconnect to the same URL). */
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface RelayLife {
  child: ChildProcess
  spawnedAt: number
  listeningAt: number | undefined
  lines: string[]
  listening: Promise<boolean>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

function spawnRelay(cli: string, data: string, port: number): RelayLife {
  const child = spawn(process.execPath, [cli, 'relay', '--host', '127.0.0.1', '--port', String(port), '--data', data], { stdio: ['ignore', 'ignore', 'pipe'] })
  const life: RelayLife = { child, spawnedAt: Date.now(), listeningAt: undefined, lines: [], listening: undefined!, exited: undefined! }
  let onListen: (ok: boolean) => void = () => {}
  life.listening = new Promise<boolean>((resolve) => (onListen = resolve))
  let buf = ''
  child.stderr!.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      if (life.lines.length < MAX_LINES) life.lines.push(line)
      if (life.listeningAt === undefined && line.includes('"relay listening"')) {
        life.listeningAt = Date.now()
        onListen(true)
      }
    }
  })
  life.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  void life.exited.then(() => onListen(false))
  return life
}

/** What in a relay's stderr means trouble: an error, a fatal, anything about corruption or repair, a storage error, a crash. */
function badRelayLines(lines: readonly string[]): string[] {
  return lines.filter((l) => {
    if (/corrupt|repair|storage error|uncaught|unhandled/i.test(l)) return true
    try {
      const level = (JSON.parse(l) as { level?: unknown }).level
      return level === 'error' || level === 'fatal' || (typeof level === 'number' && level >= 50)
    } catch {
      return /error/i.test(l) // not a log line: a stack trace or Node's own complaint
    }
  })
}

/** LevelDB's own log of its last open (recovery) and life: what it says of corruption. */
async function levelLogProblems(dir: string): Promise<string[]> {
  let text = ''
  try {
    text = await readFile(path.join(dir, 'LOG'), 'utf8')
  } catch {
    return []
  }
  return text.split('\n').filter((l) => /corrupt|dropping|ignoring|repair|error/i.test(l))
}

/**
 * Open a copy of a relay store (or the final one, the relay stopped) and
 * read it whole with the store's own MailboxStore.check(). Throws if it
 * does not open or read.
 */
async function checkStore(dir: string): Promise<StoreCheck> {
  const db = await openDiskDb(dir)
  try {
    return await new MailboxStore(db, new GroupCommit(db)).check()
  } finally {
    await db.close()
  }
}

/** Ids of `acked` the store neither holds whole nor has delivered. */
function missingFrom(check: StoreCheck, acked: Iterable<string>): string[] {
  return [...acked].filter((id) => !check.whole.has(id) && !check.delivered.has(id))
}

export async function killLoop(o: KillLoopOptions): Promise<KillLoopResult> {
  const t0 = Date.now()
  const cli = o.cli ?? CLI
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run "npm run build" first`)
  const initial = o.initial ?? 30
  const perCycle = o.perCycle ?? 3
  const stopOnProblem = o.stopOnProblem ?? true
  // Separate streams (forks of one Rng), so that the kill schedule does not depend on how many messages or retries there were.
  const rng = new Rng(o.seed)
  const killRng = rng.fork('kill')
  const msgRng = rng.fork('messages')
  const jitterRng = rng.fork('jitter')
  const killRandom = (): number => killRng.next()
  const msgRandom = (): number => msgRng.next()
  const jitterRandom = (): number => jitterRng.next()
  const problems: string[] = []
  const warnings: string[] = []
  let cycle = 0
  let where = 'setup'
  const problem = (what: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(`seed ${o.seed} ${where}: ${what}`)
  }

  await mkdir(o.dir, { recursive: true })
  const data = path.join(o.dir, 'relay')
  const port = await freePort()
  // Whatever happens, no relay process outlives the loop.
  const children = new Set<ChildProcess>()
  const spawnLife = (): RelayLife => {
    const life = spawnRelay(cli, data, port)
    children.add(life.child)
    void life.exited.then(() => children.delete(life.child))
    return life
  }
  const killAll = (): void => {
    for (const child of children) child.kill('SIGKILL')
  }
  process.on('exit', killAll)
  try {
    const copy = path.join(o.dir, 'relay-copy')
    const url = `ws://127.0.0.1:${port}`

    const open = async (name: string): Promise<ClientHome> => {
      await initHome(path.join(o.dir, name))
      return openHome(path.join(o.dir, name))
    }
    const senders = [await open('alice'), await open('carol')]
    const bob = await open('bob')

    // What the application is handed: per id, how often, and how often dedup absorbed a copy.
    const reportsSeen = new Map<string, number>()
    let redelivered = 0
    let redeliveredReceipts = 0
    let quarantined = 0
    let lastTraffic = 0
    /** Per client, events that were traffic (not just a connection or an empty mailbox). */
    const traffic = new Map<ClientHome, number>()
    const onEvent = (h: ClientHome) => (e: SyncEvent): void => {
      if (e.type === 'connected' || e.type === 'drained') return
      lastTraffic = Date.now()
      traffic.set(h, (traffic.get(h) ?? 0) + 1)
      if (e.type === 'rejected') problem(`the relay refused ${e.id} to ${path.basename(h.home)}: ${e.code} ${e.message}`)
      if (e.type === 'received' && e.as === 'report') {
        const n = (reportsSeen.get(e.id) ?? 0) + 1
        reportsSeen.set(e.id, n)
        if (n === 2) problem(`report ${seqOf.get(e.id)} (${e.id}) was handed to the recipient's application a second time`)
      }
      if (e.type === 'received' && e.as === 'duplicate') {
        if (seqOf.has(e.id)) redelivered++
        else redeliveredReceipts++
      }
      if (e.type === 'received' && e.as === 'quarantined') quarantined++
    }

    const sent: string[] = []
    const seqOf = new Map<string, number>()
    const queueOne = async (): Promise<void> => {
      const seq = sent.length
      const from = senders[seq % senders.length]!
      const big = msgRandom() < 1 / BIG_EVERY
      const text = `report ${seq} ` + 'x'.repeat(big ? BIG_BYTES : SMALL_BYTES)
      const c = compose({ outbox: from.outbox, me: from.me, to: bob.me.address, content: { kind: Kind.report, text }, now: Date.now(), ttlMs: 24 * 3600_000, priority: Priority.normal })
      sent.push(c.record.id)
      seqOf.set(c.record.id, seq)
      await from.outbox.add(c.record, c.envelope)
    }
    for (let i = 0; i < initial; i++) await queueOne()

    /** Envelopes the relay acked so far: the outboxes' own record of STORED. */
    const ackedNow = async (): Promise<{ reports: Set<string>; receipts: Set<string> }> => {
      const reports = new Set<string>()
      const receipts = new Set<string>()
      for (const h of [...senders, bob]) {
        for (const r of await h.outbox.list()) if (r.relays.includes(url)) (r.kind === 'report' ? reports : receipts).add(r.id)
      }
      return { reports, receipts }
    }

    // Every client syncs, pass after pass, for the whole run: `chapar sync --until-empty` in a loop.
    const stop = new AbortController()
    const syncLoop = async (h: ClientHome): Promise<void> => {
      while (!stop.signal.aborted) {
        const before = traffic.get(h) ?? 0
        try {
          await runSync(h.context(onEvent(h)), { relays: [url], untilEmpty: true, timeoutMs: PASS_TIMEOUT_MS, signal: stop.signal, random: () => jitterRandom() * JITTER_SCALE })
        } catch (err) {
          problem(`runSync threw for ${path.basename(h.home)}: ${(err as Error).message}`)
        }
        if ((traffic.get(h) ?? 0) === before && !stop.signal.aborted) await sleep(IDLE_PAUSE_MS)
      }
    }
    const clients = [...senders, bob].map((h) => syncLoop(h))

    /** Acked ids already reported missing (each is reported at the first kill after which it is gone). */
    const missingSeen = new Set<string>()
    /** The same for what check() finds inconsistent (one it finds after every later kill too is reported once). */
    const storeProblemsSeen = new Set<string>()
    let startupKills = 0
    let busyKills = 0
    const startups: number[] = []
    let lastStartup = 450
    try {
      for (cycle = 1; cycle <= o.cycles; cycle++) {
        where = `cycle ${cycle}`
        // The whole cycle's plan is drawn first, from the kill stream only.
        const beforeListening = killRandom() < STARTUP_KILL_SHARE
        const startupFraction = 0.4 + 0.6 * killRandom()
        const [lo, hi] = KILL_AFTER_MS
        const killAfter = lo * Math.exp(killRandom() * Math.log(hi / lo))
        const horizon = beforeListening ? lastStartup * startupFraction : lastStartup + killAfter
        const arrivals = Array.from({ length: perCycle }, () => killRandom() * horizon).sort((a, b) => a - b)

        const life = spawnLife()
        const producer = (async () => {
          for (const at of arrivals) {
            await sleep(Math.max(0, life.spawnedAt + at - Date.now()))
            await queueOne()
          }
        })()
        if (beforeListening) {
          await sleep(lastStartup * startupFraction)
        } else {
          const ok = await Promise.race([life.listening, sleep(LISTEN_TIMEOUT_MS).then(() => false)])
          if (!ok) {
            const ex = life.child.exitCode !== null ? `exited with ${life.child.exitCode}` : `silent for ${LISTEN_TIMEOUT_MS} ms`
            problem(`the relay did not open its store and listen (${ex}): ${life.lines.slice(-5).join(' | ')}`)
          } else await sleep(killAfter)
        }
        if (life.child.exitCode !== null || life.child.signalCode !== null) {
          problem(`the relay exited by itself (code ${life.child.exitCode}, signal ${life.child.signalCode}): ${life.lines.slice(-5).join(' | ')}`)
        }
        const killedAt = Date.now()
        life.child.kill('SIGKILL')
        await life.exited
        const busy = killedAt - lastTraffic <= BUSY_WINDOW_MS
        if (busy) busyKills++
        const killAfterMs = life.listeningAt === undefined ? null : killedAt - life.listeningAt
        where = `cycle ${cycle} (killed ${killAfterMs === null ? `${killedAt - life.spawnedAt} ms after spawn, before "relay listening"` : `${killAfterMs} ms after "relay listening"`})`
        if (life.listeningAt === undefined) startupKills++
        else {
          lastStartup = life.listeningAt - life.spawnedAt
          startups.push(lastStartup)
        }
        await producer

        for (const l of badRelayLines(life.lines)) problem(`relay log: ${l.slice(0, 400)}`)
        for (const l of await levelLogProblems(data)) problem(`LevelDB LOG: ${l.slice(0, 400)}`)
        // Everything acked so far, checked against what the dead relay left on disk.
        const acked = await ackedNow()
        await rm(copy, { recursive: true, force: true })
        await cp(data, copy, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err // killed before LevelDB created its directory
        })
        if (existsSync(copy)) {
          try {
            const check = await checkStore(copy)
            for (const p of check.problems) if (!storeProblemsSeen.has(p)) {
              storeProblemsSeen.add(p)
              problem(`store check after the kill: ${p}`)
            }
            for (const id of missingFrom(check, [...acked.reports, ...acked.receipts])) if (!missingSeen.has(id)) {
              missingSeen.add(id)
              problem(`acked ${acked.reports.has(id) ? 'report' : 'receipt'} ${id} is not in the store after the kill${seqOf.has(id) ? ` (report ${seqOf.get(id)})` : ''}`)
            }
          } catch (err) {
            problem(`the store does not open or read after the kill: ${(err as Error).message}`)
          }
        } else if (acked.reports.size + acked.receipts.size > 0) problem('the relay directory is gone')

        o.onCycle?.({ cycle, killAfterMs, busy, queued: sent.length, acked: acked.reports.size, delivered: reportsSeen.size, problems: problems.length })
        if (stopOnProblem && problems.length > 0) break
      }
      cycle = Math.min(cycle, o.cycles)
    } finally {
      stop.abort()
      await Promise.all(clients)
    }
    const ranCycles = cycle
    where = 'final run'

    // The last life: a clean run lets everything drain (senders up, recipient down and its receipts up, senders' receipts down).
    const last = spawnLife()
    if (!(await Promise.race([last.listening, sleep(LISTEN_TIMEOUT_MS).then(() => false)]))) {
      problem(`final start: the relay did not open its store and listen: ${last.lines.slice(-5).join(' | ')}`)
    } else {
      for (const h of [...senders, bob, ...senders]) {
        const report = await runSync(h.context(onEvent(h)), { relays: [url], untilEmpty: true, timeoutMs: DRAIN_TIMEOUT_MS })
        if (!report.ok) problem(`final drain of ${path.basename(h.home)} did not finish: ${report.relays.map((r) => r.error ?? 'unfinished').join('; ')}`)
      }
    }
    const acked = await ackedNow()
    if (last.child.exitCode === null) last.child.kill('SIGTERM')
    const exit = await last.exited
    if (exit.code !== 0) problem(`final relay did not stop cleanly on SIGTERM (code ${exit.code}, signal ${exit.signal})`)
    for (const l of badRelayLines(last.lines)) problem(`relay log: ${l.slice(0, 400)}`)
    for (const l of await levelLogProblems(data)) problem(`LevelDB LOG: ${l.slice(0, 400)}`)

    // What the recipient's application sees.
    const items = await bob.inbox.items()
    const inInbox = new Set(items.map((m) => m.id))
    const sentSet = new Set(sent)
    const seqs = new Set(items.map((m) => m.text?.split(' ')[1]))
    let duplicates = items.length - inInbox.size
    for (const n of reportsSeen.values()) if (n > 1) duplicates += n - 1 // each reported as it happened
    if (items.length !== inInbox.size || seqs.size !== items.length) problem(`the inbox holds ${items.length} items for ${inInbox.size} ids and ${seqs.size} distinct texts`)
    for (const m of items) if (!sentSet.has(m.id)) problem(`the inbox holds ${m.id}, which nobody sent`)
    if (quarantined > 0 || (await bob.inbox.quarantined()).length > 0) problem(`${quarantined} messages quarantined`)
    const lostAcked = [...acked.reports].filter((id) => !inInbox.has(id))
    for (const id of lostAcked) problem(`acked report ${seqOf.get(id)} (${id}) never reached the recipient`)
    const never = sent.filter((id) => !inInbox.has(id))
    if (never.length > 0) problem(`${never.length} of ${sent.length} reports never reached the recipient (first: report ${seqOf.get(never[0]!)})`)
    const delivered = sent.length - never.length
    let confirmed = 0
    for (const h of senders) for (const r of await h.outbox.list()) if (r.kind === 'report' && r.state === 'delivered') confirmed++
    if (confirmed !== sent.length) problem(`${sent.length - confirmed} reports not confirmed delivered to their sender`)
    for (const h of [...senders, bob]) await h.close()

    // The store as the last relay left it: opens, checks clean, and every message was delivered (tombstone).
    try {
      const check = await checkStore(data)
      for (const p of check.problems) problem(`final store check: ${p}`)
      for (const id of missingFrom(check, [...acked.reports, ...acked.receipts])) problem(`acked ${id} is not in the final store`)
      const untombed = sent.filter((id) => !check.delivered.has(id))
      if (untombed.length > 0) problem(`${untombed.length} reports have no tombstone in the final store (not DONE; first: report ${seqOf.get(untombed[0]!)})`)
      if (check.whole.size + check.arriving.size > 0) warnings.push(`envelopes left on the relay after the drain: ${check.whole.size} whole, ${check.arriving.size} arriving`)
    } catch (err) {
      problem(`the final store does not open or read: ${(err as Error).message}`)
    }
    await rm(copy, { recursive: true, force: true })

    return {
      seed: o.seed,
      cycles: ranCycles,
      messages: sent.length,
      startupKills,
      busyKills,
      acked: acked.reports.size,
      ackedReceipts: acked.receipts.size,
      delivered,
      duplicates,
      redelivered,
      redeliveredReceipts,
      confirmed,
      lostAcked,
      problems,
      warnings,
      startupMs: startups.length > 0 ? Math.round(median(startups)) : 0,
      seconds: Math.round((Date.now() - t0) / 100) / 10,
    }
  } finally {
    killAll()
    process.off('exit', killAll)
  }
}
