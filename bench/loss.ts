/**
 * `npm run bench:loss` / `chapar bench loss` (issue 5): Chapar against what
 * people would otherwise use, over the same real lossy link, with the same
 * workload, in one run.
 *
 * For each loss model and loss rate it builds two network namespaces joined
 * by a veth (bench/netns.ts): real loss each way (nftables on ingress for
 * Bernoulli, our userspace shaper for bursts), a real rate limit (tbf), and
 * a real one-way delay from the shaper. For each workload and system it
 * starts that system's server in the relay namespace (a Chapar relay, a
 * mosquitto broker with persistence on, or a plain HTTP server that fsyncs
 * each POST), runs one worker process per field client in the client
 * namespace (bench/loss-worker.ts), collects each message's ack latency
 * until every message is acknowledged or the time limit passes, kills
 * everything, and records one row. Every namespace, process and temporary
 * directory is removed afterwards, also on Ctrl-C or failure.
 *
 * Row fields (DESIGN §6 names):
 *   sent, delivered      messages queued; messages the far side acknowledged
 *                        (Chapar: the relay's fsynced ack; MQTT: PUBACK;
 *                        naive: 200 after fsync) within the time limit
 *   p50_ms, p95_ms       queued → acknowledged, over all sent messages; null
 *                        when that percentile was never acknowledged
 *   goodput_bps          payload bits acknowledged ÷ seconds until the last
 *                        ack (the time limit, when not all were)
 *   capacity_ratio       goodput ÷ (rate × (1 − loss)); 1.0 is the physical
 *                        limit of the lossy link
 *   wire_bytes           IP bytes both sides put on the link (before loss)
 *   timed_out            not every message acknowledged within the limit
 * The `physical-limit` rows are computed, not measured: the payload carried
 * at rate × (1 − loss), in queue order, with nothing else on the link.
 */
import { spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { LiveLine } from '../src/client/progress.js'
import { DEFAULT_WS_STREAMS, MAX_WS_STREAMS } from '../src/client/transports.js'
import { InputError } from '../src/protocol/errors.js'
import { parseDuration } from '../src/protocol/duration.js'
import { parseOutage } from '../src/sim/options.js'
import { esc, svg } from '../src/sim/report.js'
import { createNetnsPair, destroyAllPairs, netnsUnavailable, type NetLossModel, type NetnsPair } from './netns.js'
import { startRelay } from './transfer.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.basename(path.dirname(here)) === 'dist' ? path.join(here, '..', '..') : path.join(here, '..')
const WORKER = path.join(ROOT, 'dist', 'bench', 'loss-worker.js')
const NAIVE_SERVER = path.join(ROOT, 'dist', 'bench', 'naive-server.js')

export const SYSTEMS = ['chapar-udp', 'chapar-ws', 'mqtt-qos1', 'naive-retry'] as const
export type System = (typeof SYSTEMS)[number]
export const PHYSICAL_LIMIT = 'physical-limit'

export interface Workload {
  clients: number
  perClient: number
  size: number
}
export const WORKLOADS: Record<string, Workload> = {
  reports: { clients: 10, perClient: 10, size: 2000 },
  photo: { clients: 1, perClient: 1, size: 1_000_000 },
  video: { clients: 1, perClient: 1, size: 20_000_000 },
}

export interface LossBenchOptions {
  workloads: string[]
  losses: number[]
  models: NetLossModel[]
  systems: System[]
  rateKbps: number
  rttMs: number
  jitterMs: number
  burst: number
  outage: { upMs: number; downMs: number } | undefined
  /** Fixed limit per run; otherwise timeLimitFor(). */
  timeLimitMs: number | undefined
  seed: number
  /** Cap on TCP's retransmission timeout on both hosts (NetnsOptions.tcpRtoMaxMs); the kernel's default when undefined. */
  tcpRtoMaxMs?: number
  /** WebSockets each chapar-ws upload stripes over (the worker's --ws-streams); the client's default when undefined. */
  wsStreams?: number
}

export interface Row {
  system: string
  workload: string
  loss: number
  loss_model: NetLossModel
  rate_kbps: number
  rtt_ms: number
  sent: number
  delivered: number
  delivery_ratio: number
  p50_ms: number | null
  p95_ms: number | null
  goodput_bps: number
  capacity_ratio: number
  wire_bytes: number
  timed_out: boolean
  time_limit_ms: number
  /** Only when the run capped TCP's retransmission timeout (--tcp-rto-max). */
  tcp_rto_max_ms?: number
  /** Only on chapar-ws rows of a run with --ws-streams. */
  ws_streams?: number
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000

/** Nearest-rank percentile over all sent messages, undelivered ones counting as never: null if it lands on one. */
export function percentileOfSent(latencies: readonly number[], sent: number, q: number): number | null {
  if (sent === 0) return null
  const rank = Math.max(1, Math.ceil(q * sent))
  if (rank > latencies.length) return null
  return Math.round([...latencies].sort((a, b) => a - b)[rank - 1]!)
}

/** One measured row from the ack latencies (ms) of the delivered messages. */
type Cell = { workload: string; loss: number; model: NetLossModel; rateKbps: number; rttMs: number; timeLimitMs: number; tcpRtoMaxMs?: number; wsStreams?: number }

export function aggregate(cell: Cell & { system: string }, w: Workload, latencies: readonly number[], wireBytes: number): Row {
  const sent = w.clients * w.perClient
  const delivered = latencies.length
  const timedOut = delivered < sent
  const seconds = (timedOut ? cell.timeLimitMs : Math.max(1, ...latencies)) / 1000
  const goodput = (delivered * w.size * 8) / seconds
  return {
    system: cell.system,
    workload: cell.workload,
    loss: cell.loss,
    loss_model: cell.model,
    rate_kbps: cell.rateKbps,
    rtt_ms: cell.rttMs,
    sent,
    delivered,
    delivery_ratio: round3(delivered / sent),
    p50_ms: percentileOfSent(latencies, sent, 0.5),
    p95_ms: percentileOfSent(latencies, sent, 0.95),
    goodput_bps: Math.round(goodput),
    capacity_ratio: round3(goodput / (cell.rateKbps * 1000 * (1 - cell.loss))),
    wire_bytes: wireBytes,
    timed_out: timedOut,
    time_limit_ms: cell.timeLimitMs,
    ...(cell.tcpRtoMaxMs !== undefined ? { tcp_rto_max_ms: cell.tcpRtoMaxMs } : {}),
    ...(cell.wsStreams !== undefined && cell.system === 'chapar-ws' ? { ws_streams: cell.wsStreams } : {}),
  }
}

/** The physical limit: payload at rate × (1 − loss), messages one after another in queue order. */
export function physicalLimitRow(cell: Cell, w: Workload): Row {
  const sent = w.clients * w.perClient
  const bps = cell.rateKbps * 1000 * (1 - cell.loss)
  const latencies = Array.from({ length: sent }, (_, k) => ((k + 1) * w.size * 8 * 1000) / bps)
  return {
    ...aggregate({ ...cell, system: PHYSICAL_LIMIT }, w, latencies, Math.round((sent * w.size) / (1 - cell.loss))),
    goodput_bps: Math.round(bps),
    capacity_ratio: 1,
  }
}

/** The default limit: 4× the physical limit's time, at least 2 minutes. */
export function timeLimitFor(w: Workload, loss: number, rateKbps: number): number {
  const idealMs = (w.clients * w.perClient * w.size * 8) / (rateKbps * (1 - loss))
  return Math.max(120_000, Math.ceil(Math.round(4 * idealMs) / 1000) * 1000)
}

function list(v: string | undefined, fallback: string): string[] {
  return (v ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
}

export interface LossCliOptions {
  workload?: string
  loss?: string
  lossModel?: string
  systems?: string
  rate?: string
  rtt?: string
  jitter?: string
  burst?: string
  outage?: string
  timeLimit?: string
  seed?: string
  quick?: boolean
  full?: boolean
  json?: boolean
  report?: string
  /** Render saved rows (comma-separated --json files) instead of running. */
  from?: string
  tcpRtoMax?: string
  wsStreams?: string
}

function num(name: string, v: string, lo: number, hi: number): number {
  const x = Number(v)
  if (!Number.isFinite(x) || x < lo || x > hi) throw new InputError(`--${name} must be a number in ${lo}..${hi}, got "${v}"`)
  return x
}

function wholeNum(name: string, v: string, lo: number, hi: number): number {
  const x = num(name, v, lo, hi)
  if (!Number.isInteger(x)) throw new InputError(`--${name} must be a whole number in ${lo}..${hi}, got "${v}"`)
  return x
}

/** CLI flags → options. --quick: the reports workload at 0.5 loss, 60 s limit; --full adds the video workload. */
export function resolveLossOptions(cli: LossCliOptions): LossBenchOptions {
  const workloads = list(cli.workload, cli.quick ? 'reports' : cli.full ? 'reports,photo,video' : 'reports,photo')
  for (const w of workloads) if (!WORKLOADS[w]) throw new InputError(`--workload: unknown "${w}" (reports, photo, video)`)
  const losses = list(cli.loss, cli.quick ? '0.5' : '0.3,0.5,0.8').map((v) => num('loss', v, 0, 0.95))
  const models = list(cli.lossModel, cli.quick ? 'bernoulli' : 'bernoulli,gilbert')
  for (const m of models) if (m !== 'bernoulli' && m !== 'gilbert') throw new InputError(`--loss-model: unknown "${m}" (bernoulli, gilbert)`)
  const systems = list(cli.systems, SYSTEMS.join(','))
  for (const s of systems) if (!(SYSTEMS as readonly string[]).includes(s)) throw new InputError(`--systems: unknown "${s}" (${SYSTEMS.join(', ')})`)
  const ms = (name: string, v: string): number => {
    try {
      return /^\d+(\.\d+)?$/.test(v) ? Number(v) : parseDuration(v)
    } catch {
      throw new InputError(`--${name}: bad duration "${v}"`)
    }
  }
  const burst = num('burst', cli.burst ?? '8', 1, 1000)
  // All of Gilbert–Elliott's loss is in bursts, so a mean burst of b packets caps the long-run loss at b / (b + 1).
  if (models.includes('gilbert')) for (const p of losses) if (p > burst / (burst + 1)) throw new InputError(`--loss ${p} needs bursts longer than --burst ${burst} in the gilbert model (at most ${(burst / (burst + 1)).toFixed(3)})`)
  const seed = num('seed', cli.seed ?? '1', 0, 2 ** 31)
  if (!Number.isInteger(seed)) throw new InputError(`--seed must be a whole number, got "${cli.seed}"`)
  const timeLimitMs = cli.timeLimit ? ms('time-limit', cli.timeLimit) : cli.quick ? 60_000 : undefined
  if (timeLimitMs !== undefined && timeLimitMs < 1000) throw new InputError(`--time-limit must be at least 1s, got "${cli.timeLimit}"`)
  return {
    workloads,
    losses,
    models: models as NetLossModel[],
    systems: systems as System[],
    rateKbps: num('rate', cli.rate ?? '1000', 8, 1_000_000),
    rttMs: ms('rtt', cli.rtt ?? '600'),
    jitterMs: ms('jitter', cli.jitter ?? '0'),
    burst,
    outage: cli.outage ? parseOutage(cli.outage) : undefined,
    timeLimitMs,
    seed,
    tcpRtoMaxMs: cli.tcpRtoMax === undefined ? undefined : num('tcp-rto-max', cli.tcpRtoMax, 1000, 120_000),
    wsStreams: cli.wsStreams === undefined ? undefined : wholeNum('ws-streams', cli.wsStreams, 1, MAX_WS_STREAMS),
  }
}

interface Server {
  url: string
  stop(): void
}

/** Spawn in a namespace; resolve once `ready(line)` returns a URL for a line on stdout or stderr. */
function startServer(pair: NetnsPair, argv: string[], ready: (line: string) => string | undefined, cleanup: () => void): Promise<Server> {
  const child = pair.spawnIn(pair.relay, argv)
  const stop = (): void => {
    child.kill('SIGKILL')
    cleanup()
  }
  return new Promise((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => {
      stop()
      reject(new Error(`${path.basename(argv[0]!)} did not start in 20 s: ${text.trim().slice(-500)}`))
    }, 20_000)
    const onData = (b: Buffer): void => {
      text += b.toString()
      for (const line of text.split('\n')) {
        const url = ready(line)
        if (url) {
          child.stdout!.off('data', onData)
          child.stderr!.off('data', onData)
          child.stdout!.resume()
          child.stderr!.resume()
          clearTimeout(timer)
          resolve({ url, stop })
          return
        }
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.once('exit', (code) => {
      clearTimeout(timer)
      cleanup()
      reject(new Error(`${path.basename(argv[0]!)} exited (${code}): ${text.trim().slice(-500)}`))
    })
  })
}

async function startSystemServer(system: System, pair: NetnsPair, rateKbps: number): Promise<Server> {
  const dir = mkdtempSync(path.join(os.tmpdir(), `chapar-bench-${system}-`))
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true })
  switch (system) {
    case 'chapar-udp':
    case 'chapar-ws': {
      cleanup()
      const r = await startRelay(pair, rateKbps)
      return { url: system === 'chapar-udp' ? r.udp : r.ws, stop: r.stop }
    }
    case 'mqtt-qos1': {
      const conf = path.join(dir, 'mosquitto.conf')
      writeFileSync(conf, [`listener 1883 ${pair.relayIp}`, 'allow_anonymous true', 'persistence true', `persistence_location ${dir}/`, 'log_dest stderr', 'log_type error', 'log_type warning', 'log_type notice', 'log_type information', 'user root', ''].join('\n'))
      return startServer(pair, ['mosquitto', '-c', conf], (l) => (/mosquitto version .* running/.test(l) ? `mqtt://${pair.relayIp}:1883` : undefined), cleanup)
    }
    case 'naive-retry':
      return startServer(pair, [process.execPath, NAIVE_SERVER, '--host', pair.relayIp, '--port', '8080', '--data', dir], (l) => (l.includes('"listening"') ? `http://${pair.relayIp}:8080` : undefined), cleanup)
  }
}

export interface CellProgress {
  acked: number
  sent: number
  elapsedMs: number
}

/** Run one system's workload on the pair; returns the ack latencies and the wire bytes. */
async function runCell(system: System, w: Workload, pair: NetnsPair, o: LossBenchOptions, timeLimitMs: number, onProgress: (p: CellProgress) => void, children: Set<ChildProcess>): Promise<{ latencies: number[]; wireBytes: number }> {
  const server = await startSystemServer(system, pair, o.rateKbps)
  const latencies: number[] = []
  const wire0 = pair.wireBytes()
  const started = performance.now()
  let outageTimer: NodeJS.Timeout | undefined
  if (o.outage) {
    const { upMs, downMs } = o.outage
    const cycle = (blocked: boolean): void => {
      pair.setBlocked(blocked)
      outageTimer = setTimeout(() => cycle(!blocked), blocked ? downMs : upMs)
    }
    outageTimer = setTimeout(() => cycle(true), upMs)
  }
  const ticker = setInterval(() => onProgress({ acked: latencies.length, sent: w.clients * w.perClient, elapsedMs: performance.now() - started }), 1000)
  try {
    const workers = Array.from({ length: w.clients }, (_, i) => {
      // The clients share one link, so each Chapar UDP client paces at its share of it.
      const rate = Math.max(8, Math.floor(o.rateKbps / w.clients))
      const child = pair.spawnIn(pair.client, [process.execPath, WORKER, '--system', system, '--target', server.url, '--count', String(w.perClient), '--size', String(w.size), '--client', String(i), '--rate', String(rate), ...(system === 'chapar-ws' && o.wsStreams !== undefined ? ['--ws-streams', String(o.wsStreams)] : [])])
      children.add(child)
      let out = ''
      let err = ''
      child.stdout!.on('data', (b: Buffer) => {
        out += b.toString()
        const lines = out.split('\n')
        out = lines.pop()!
        for (const line of lines) {
          let j: { ack?: number; ms?: number }
          try {
            j = JSON.parse(line) as typeof j
          } catch {
            continue // not one of ours (a library's stray output)
          }
          if (j.ack !== undefined && typeof j.ms === 'number') latencies.push(j.ms)
        }
      })
      child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-2000)))
      return new Promise<void>((resolve, reject) => {
        child.once('exit', (code, signal) => {
          children.delete(child)
          if (code === 0 || signal === 'SIGKILL') resolve()
          else reject(new Error(`${system} worker ${i} exited (${code ?? signal}): ${err.trim()}`))
        })
      })
    })
    let timer: NodeJS.Timeout | undefined
    const limit = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeLimitMs)))
    try {
      await Promise.race([Promise.all(workers), limit])
    } finally {
      clearTimeout(timer)
      for (const c of children) c.kill('SIGKILL')
      await Promise.allSettled(workers)
    }
  } finally {
    clearInterval(ticker)
    clearTimeout(outageTimer)
    if (o.outage) pair.setBlocked(false)
    server.stop()
  }
  // A dead shaper makes the link a black hole: the row would measure that, not the system.
  const failure = pair.failure()
  if (failure) throw new Error(`the link broke during ${system}: ${failure}`)
  return { latencies, wireBytes: pair.wireBytes() - wire0 }
}

/** The whole matrix. `onRow` sees each row as it is made. */
export async function runLossBench(o: LossBenchOptions, live: LiveLine, onRow: (r: Row) => void = () => {}): Promise<Row[]> {
  const rows: Row[] = []
  const children = new Set<ChildProcess>()
  const onSignal = (): void => {
    for (const c of children) c.kill('SIGKILL')
    destroyAllPairs()
    live.done()
    process.stderr.write('bench:loss interrupted; namespaces removed\n')
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const total = o.models.length * o.losses.length * o.workloads.length * o.systems.length
  let n = 0
  try {
    for (const model of o.models) {
      for (const loss of o.losses) {
        const pair = createNetnsPair({ rateKbit: o.rateKbps, lossPercent: loss * 100, lossModel: model, burst: o.burst, delayMs: o.rttMs / 2, jitterMs: o.jitterMs, seed: o.seed, tag: 'chl', tcpRtoMaxMs: o.tcpRtoMaxMs })
        try {
          await pair.ready
          for (const workload of o.workloads) {
            const w = WORKLOADS[workload]!
            const timeLimitMs = o.timeLimitMs ?? timeLimitFor(w, loss, o.rateKbps)
            const cell = { workload, loss, model, rateKbps: o.rateKbps, rttMs: o.rttMs, timeLimitMs, tcpRtoMaxMs: o.tcpRtoMaxMs, wsStreams: o.wsStreams }
            const push = (r: Row): void => {
              rows.push(r)
              onRow(r)
            }
            push(physicalLimitRow(cell, w))
            for (const system of o.systems) {
              n++
              const label = `bench:loss ${n}/${total} · ${workload} · loss ${loss} ${model} · ${system}`
              live.update(label, true)
              const { latencies, wireBytes } = await runCell(system, w, pair, o, timeLimitMs, (p) => live.update(`${label} · ${p.acked}/${p.sent} acked · ${Math.round(p.elapsedMs / 1000)} s of ${timeLimitMs / 1000} s`), children)
              push(aggregate({ ...cell, system }, w, latencies, wireBytes))
            }
          }
        } finally {
          pair.destroy()
        }
      }
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    live.done()
  }
  return rows
}

const fmtMs = (v: number | null): string => (v === null ? '—' : v < 10_000 ? `${(v / 1000).toFixed(2)} s` : `${(v / 1000).toFixed(0)} s`)

/** Header and cells of the printed table. */
export function formatTable(rows: readonly Row[]): { head: string[]; table: string[][] } {
  // Rows merged from runs at several rates or round trips (--from) say which.
  const rates = new Set(rows.map((r) => r.rate_kbps)).size > 1
  const rtts = new Set(rows.map((r) => r.rtt_ms)).size > 1
  const rtoCap = rows.some((r) => r.tcp_rto_max_ms !== undefined)
  const streams = rows.some((r) => r.ws_streams !== undefined)
  const head = ['system', 'workload', 'loss', 'model', ...(rates ? ['kbit/s'] : []), ...(rtts ? ['rtt ms'] : []), ...(rtoCap ? ['tcp rto max'] : []), ...(streams ? ['ws streams'] : []), 'sent', 'delivered', 'ratio', 'p50', 'p95', 'goodput kbit/s', 'capacity', 'wire bytes', 'timed out']
  const table = rows.map((r) => [
    r.system,
    r.workload,
    String(r.loss),
    r.loss_model,
    ...(rates ? [String(r.rate_kbps)] : []),
    ...(rtts ? [String(r.rtt_ms)] : []),
    ...(rtoCap ? [r.tcp_rto_max_ms === undefined ? '120 s' : `${r.tcp_rto_max_ms / 1000} s`] : []),
    ...(streams ? [r.system === 'chapar-ws' ? String(r.ws_streams ?? DEFAULT_WS_STREAMS) : '—'] : []),
    String(r.sent),
    String(r.delivered),
    r.delivery_ratio.toFixed(2),
    fmtMs(r.p50_ms),
    fmtMs(r.p95_ms),
    (r.goodput_bps / 1000).toFixed(1),
    r.capacity_ratio.toFixed(3),
    r.wire_bytes.toLocaleString('en-US'),
    r.timed_out ? `yes (${r.time_limit_ms / 1000} s)` : 'no',
  ])
  return { head, table }
}

export function textTable(rows: readonly Row[]): string {
  const { head, table } = formatTable(rows)
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')
  return [line(head), ...table.map(line)].join('\n')
}

/** What the run was done on, for the report. */
export function describeMachine(): Record<string, string> {
  const v = (argv: string[]): string => {
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' })
    return (r.stdout || r.stderr || '').trim().split('\n')[0] ?? ''
  }
  return {
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    mosquitto: v(['mosquitto', '-h']).replace(/^mosquitto version /, ''),
    python: v(['python3', '--version']),
  }
}

/** A system run with TCP's timeout capped, or chapar-ws with a chosen stripe, is its own line in the charts. */
function systemLabel(r: Row): string {
  const notes = [...(r.tcp_rto_max_ms === undefined ? [] : [`tcp rto ≤ ${r.tcp_rto_max_ms / 1000} s`]), ...(r.ws_streams === undefined ? [] : [`${r.ws_streams} streams`])]
  return notes.length ? `${r.system} (${notes.join(', ')})` : r.system
}

/** A self-contained page: the table and four charts against loss, one line per system, one panel per workload and loss model. */
export async function reportPage(rows: readonly Row[], o: LossBenchOptions, machine: Record<string, string>, sources?: readonly string[]): Promise<string> {
  const rates = [...new Set(rows.map((r) => r.rate_kbps))].sort((a, b) => a - b)
  const values = rows.map((r) => ({ ...r, system: systemLabel(r), panel: `${r.workload} · ${r.loss_model}${rates.length > 1 ? ` · ${r.rate_kbps} kbit/s` : ''}`, p95_s: r.p95_ms === null ? null : r.p95_ms / 1000, goodput_kbps: r.goodput_bps / 1000 }))
  const chart = (field: string, title: string, scale: Record<string, unknown> = {}): Promise<string> =>
    svg({
      data: { values },
      // a system that never reached the percentile has no point (not a zero on a log scale)
      transform: [{ filter: `datum.${field} != null` }],
      facet: { column: { field: 'panel', type: 'nominal', title: null } },
      spec: {
        width: 220,
        height: 180,
        mark: { type: 'line', point: true },
        encoding: {
          x: { field: 'loss', type: 'quantitative', title: 'loss each way', scale: { domain: [0, 1] } },
          y: { field, type: 'quantitative', title, scale },
          color: { field: 'system', type: 'nominal', title: null, sort: [...SYSTEMS, PHYSICAL_LIMIT] },
          strokeDash: { condition: { test: `datum.system === '${PHYSICAL_LIMIT}'`, value: [4, 3] }, value: [1, 0] },
        },
      },
      resolve: { scale: { y: 'independent' } },
    } as never)
  const charts = [
    await chart('delivery_ratio', 'delivery ratio', { domain: [0, 1] }),
    await chart('p95_s', 'p95 time to deliver, s', { type: 'log' }),
    await chart('goodput_kbps', 'goodput, kbit/s'),
    await chart('capacity_ratio', 'capacity ratio (1.0 = physical limit)', { domain: [0, 1] }),
  ]
  const { head, table } = formatTable(rows)
  const tr = (cells: string[], tag: string): string => `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join('')}</tr>`
  const link = `${rates.length > 1 ? `${rates.join(' or ')} kbit/s each way (as each panel says)` : `${o.rateKbps} kbit/s each way`}, ${o.rttMs} ms round trip${o.jitterMs ? ` (+ up to ${o.jitterMs} ms jitter each way)` : ''}, loss each way: Bernoulli from nftables on each namespace's ingress, or Gilbert–Elliott bursts (mean ${o.burst} packets) from the userspace shaper${o.outage ? `; outages: up ${o.outage.upMs / 1000} s, down ${o.outage.downMs / 1000} s` : ''}${o.tcpRtoMaxMs ? `; TCP's retransmission timeout capped at ${o.tcpRtoMaxMs / 1000} s on both hosts` : ''}${o.wsStreams !== undefined ? `; chapar-ws uploads striped over ${o.wsStreams} WebSocket${o.wsStreams === 1 ? '' : 's'}` : ''}${sources ? ' (saved rows do not record burst length, jitter or outages: this is the default; the source runs say what they used)' : ''}`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chapar bench:loss</title>
<style>body{font:14px/1.4 system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:12px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f4f4f4}td:nth-child(-n+2){text-align:left}</style>
</head><body>
<h1>chapar bench:loss</h1>
<p>${sources ? `Merged from ${sources.length} runs of this harness (${esc(sources.join(', '))}); within a run, every system had the same link and workload` : 'Same link, same workload, one run'}. Link: ${esc(link)}. Real network namespaces joined by a veth; the rate limit is tbf; the delay is our userspace shaper (bench/shaper.py). Not modelled: reordering, duplication, delay that varies with load beyond the 500 ms tbf queue, asymmetric links.</p>
<p>Machine: ${esc(Object.entries(machine).map(([k, v]) => `${k} ${v}`).join('; '))}.</p>
${charts.join('\n')}
<table>${tr(head, 'th')}${table.map((t) => tr(t, 'td')).join('')}</table>
</body></html>
`
}

const NUMERIC_FIELDS = ['loss', 'rate_kbps', 'rtt_ms', 'sent', 'delivered', 'delivery_ratio', 'goodput_bps', 'capacity_ratio', 'wire_bytes', 'time_limit_ms'] as const

/** A saved row whole: every field of Row with its type, or why not. */
function rowProblem(r: unknown): string | undefined {
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return 'not an object'
  const o = r as Record<string, unknown>
  if (typeof o.system !== 'string') return 'no system'
  if (typeof o.workload !== 'string' || WORKLOADS[o.workload] === undefined) return `workload ${JSON.stringify(o.workload)}`
  if (o.loss_model !== 'bernoulli' && o.loss_model !== 'gilbert') return `loss_model ${JSON.stringify(o.loss_model)}`
  for (const k of NUMERIC_FIELDS) if (typeof o[k] !== 'number' || !Number.isFinite(o[k])) return `${k} ${JSON.stringify(o[k])}`
  for (const k of ['p50_ms', 'p95_ms'] as const) if (o[k] !== null && typeof o[k] !== 'number') return `${k} ${JSON.stringify(o[k])}`
  if (typeof o.timed_out !== 'boolean') return `timed_out ${JSON.stringify(o.timed_out)}`
  for (const k of ['tcp_rto_max_ms', 'ws_streams'] as const) if (o[k] !== undefined && (typeof o[k] !== 'number' || !Number.isFinite(o[k]))) return `${k} ${JSON.stringify(o[k])}`
  return undefined
}

/** Rows from saved `--json` output, merged: for the same cell (system, workload, loss, model, rate, round trip, TCP timeout cap, ws streams), a later file's row wins. */
export async function readRows(files: readonly string[]): Promise<Row[]> {
  const cells = new Map<string, Row>()
  for (const file of files) {
    let parsed: unknown
    try {
      parsed = JSON.parse(await readFile(file, 'utf8'))
    } catch (err) {
      throw new InputError(`--from ${file}: ${(err as Error).message.split('\n')[0]}`)
    }
    if (!Array.isArray(parsed)) throw new InputError(`--from ${file}: not a JSON array of rows (bench loss --json writes one)`)
    for (const r of parsed as unknown[]) {
      const problem = rowProblem(r)
      if (problem) throw new InputError(`--from ${file}: a row that is not a bench:loss row (${problem}): ${JSON.stringify(r).slice(0, 80)}`)
      const row = r as Row
      cells.set(`${row.system}|${row.workload}|${row.loss}|${row.loss_model}|${row.rate_kbps}|${row.rtt_ms}|${row.tcp_rto_max_ms ?? ''}|${row.ws_streams ?? ''}`, row)
    }
  }
  const order = [PHYSICAL_LIMIT, ...SYSTEMS] as string[]
  const workloads = Object.keys(WORKLOADS)
  return [...cells.values()].sort(
    (a, b) =>
      a.loss_model.localeCompare(b.loss_model) ||
      workloads.indexOf(a.workload) - workloads.indexOf(b.workload) ||
      a.rate_kbps - b.rate_kbps ||
      a.rtt_ms - b.rtt_ms ||
      a.loss - b.loss ||
      (a.tcp_rto_max_ms ?? 120_000) - (b.tcp_rto_max_ms ?? 120_000) ||
      (a.ws_streams ?? DEFAULT_WS_STREAMS) - (b.ws_streams ?? DEFAULT_WS_STREAMS) ||
      order.indexOf(a.system) - order.indexOf(b.system),
  )
}

/** `chapar bench loss`: exit 0 with the table (or JSON rows), 2 when namespaces cannot be made. */
export async function cmdBenchLoss(cli: LossCliOptions, out: (s: string) => void = (s) => process.stdout.write(s + '\n')): Promise<number> {
  if (cli.from !== undefined) {
    // No run: the table, JSON and report of rows saved by earlier runs.
    const files = list(cli.from, '')
    if (files.length === 0) throw new InputError('--from needs one or more JSON files, comma-separated')
    const rows = await readRows(files)
    out(cli.json ? JSON.stringify(rows) : textTable(rows))
    if (cli.report) {
      const first = rows[0]
      const o = { ...resolveLossOptions({}), ...(first ? { rateKbps: first.rate_kbps, rttMs: first.rtt_ms } : {}) }
      await writeFile(cli.report, await reportPage(rows, o, describeMachine(), files.map((f) => path.basename(f))))
      process.stderr.write(`report written to ${cli.report}\n`)
    }
    return 0
  }
  const o = resolveLossOptions(cli)
  const why = netnsUnavailable({ shaper: o.rttMs > 0 || o.jitterMs > 0 || o.models.includes('gilbert') })
  if (why) {
    process.stderr.write(`chapar: bench loss needs network namespaces: ${why}\n`)
    return 2
  }
  for (const [system, tool] of [['mqtt-qos1', 'mosquitto']] as const) {
    if (o.systems.includes(system) && spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      process.stderr.write(`chapar: bench loss: ${system} needs ${tool} (Debian package ${tool}), or leave it out with --systems\n`)
      return 2
    }
  }
  const rows = await runLossBench(o, new LiveLine())
  out(cli.json ? JSON.stringify(rows) : textTable(rows))
  if (cli.report) {
    await writeFile(cli.report, await reportPage(rows, o, describeMachine()))
    process.stderr.write(`report written to ${cli.report}\n`)
  }
  return 0
}
