/**
 * Loss-hardened transfer, measured for real and in the simulator side by
 * side (issue 4). For each loss rate, two network namespaces joined by a
 * veth with real packet loss (nftables on ingress, each way) and a real
 * rate limit (tbf), a real relay process in one and a real client process
 * in the other (bench/netns.ts, bench/transfer-worker.ts). One report of
 * --size bytes goes up over the datagram transport and then over WebSocket;
 * the simulator runs the same transfer with the same rate and loss.
 *
 *   npm run bench:transfer -- [--size 1000000] [--rate 512] [--loss 0.3,0.5,0.8] [--ws-timeout 180s] [--json FILE] [--report FILE.html]
 *
 * capacity_ratio = payload bits accepted ÷ (rate × (1 − p) × seconds from
 * the first PUT to the relay's fsynced ack); 1.0 is the erasure-channel
 * limit. Needs root, iproute2, nftables and ethtool.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { LiveLine } from '../src/client/progress.js'
import { parseDuration } from '../src/protocol/duration.js'
import { applyOptions, DEFAULTS } from '../src/sim/options.js'
import { runSim } from '../src/sim/world.js'
import { esc, svg } from '../src/sim/report.js'
import { createNetnsPair, netnsUnavailable, type NetnsPair } from './netns.js'

// The built files, whether this module runs from dist/bench or (in tests) from bench/.
const here = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.basename(path.dirname(here)) === 'dist' ? path.join(here, '..', '..') : path.join(here, '..')
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js')
const WORKER = path.join(ROOT, 'dist', 'bench', 'transfer-worker.js')

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1]! : fallback
}

export interface WorkerResult {
  ok: boolean
  timed_out: boolean
  envelope_bytes: number
  first_put_ms: number | null
  accepted_ms: number | null
  connections: number
  datagram_bytes_sent: number
  datagram_packets_sent: number
  loss_estimate: number | null
}

/** Start a relay in the pair's relay namespace; resolves with its ws and udp URLs. */
export function startRelay(pair: NetnsPair, rateKbps: number): Promise<{ ws: string; udp: string; stop: () => void }> {
  const data = mkdtempSync(path.join(os.tmpdir(), 'chapar-bench-relay-'))
  const child = pair.spawnIn(pair.relay, [process.execPath, CLI, 'relay', '--host', pair.relayIp, '--port', '7000', '--udp-port', '7001', '--udp-rate', String(rateKbps), '--data', data])
  const stop = (): void => {
    child.kill('SIGKILL')
    rmSync(data, { recursive: true, force: true })
  }
  return new Promise((resolve, reject) => {
    let err = ''
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString()
      const line = err.split('\n').find((l) => l.includes('"relay listening"'))
      if (line) {
        const j = JSON.parse(line) as { url: string; udp_url: string }
        resolve({ ws: j.url, udp: j.udp_url, stop })
      }
    })
    child.once('exit', (code) => reject(new Error(`relay exited (${code}): ${err.trim()}`)))
  })
}

/** Run one upload in the client namespace. */
export function runWorker(pair: NetnsPair, relay: string, size: number, rateKbps: number, timeoutMs: number): Promise<WorkerResult> {
  const child = pair.spawnIn(pair.client, [process.execPath, WORKER, '--relay', relay, '--size', String(size), '--rate', String(rateKbps), '--timeout', String(timeoutMs)])
  let out = ''
  let err = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()))
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      const line = out.trim().split('\n').pop()
      if (code !== 0 || !line) reject(new Error(`transfer worker exited ${code}: ${err.trim()}`))
      else resolve(JSON.parse(line) as WorkerResult)
    })
  })
}

/** The table's header and cells for these rows. */
export function formatRows(rows: Array<Record<string, unknown>>, wsTimeoutMs: number): { head: string[]; table: string[][] } {
  const fmt = (v: unknown): string => (v === null || v === undefined ? '—' : typeof v === 'number' ? v.toLocaleString('en-US') : String(v))
  const head = ['loss', 'UDP accept', 'UDP capacity', 'sim capacity', 'UDP wire/payload', 'sim wire/payload', 'WebSocket accept', 'WS capacity']
  const table = rows.map((r) => [
    String(r.loss),
    r.udp_ok ? `${((r.udp_accept_ms as number) / 1000).toFixed(1)} s` : 'not in 20 min',
    fmt(r.udp_capacity_ratio),
    fmt(r.sim_capacity_ratio),
    fmt(r.udp_wire_per_payload),
    fmt(r.sim_wire_per_payload),
    r.ws_ok ? `${((r.ws_accept_ms as number) / 1000).toFixed(1)} s` : `not in ${wsTimeoutMs / 1000} s`,
    fmt(r.ws_capacity_ratio),
  ])
  return { head, table }
}

export function capacityRatio(r: WorkerResult, rateKbps: number, loss: number): number | null {
  if (!r.ok || r.accepted_ms === null || r.first_put_ms === null) return null
  const ms = r.accepted_ms - r.first_put_ms
  return Math.round(((r.envelope_bytes * 8) / (rateKbps * (1 - loss) * ms)) * 1000) / 1000
}

async function main(): Promise<void> {
  const size = Number(arg('size', '1000000'))
  const rate = Number(arg('rate', '512'))
  const losses = arg('loss', '0.3,0.5,0.8').split(',').map(Number)
  const wsTimeout = parseDuration(arg('ws-timeout', '180s'))
  const jsonFile = process.argv.includes('--json') ? arg('json', '') : undefined
  const reportFile = process.argv.includes('--report') ? arg('report', '') : undefined
  const why = netnsUnavailable()
  if (why) {
    process.stderr.write(`bench:transfer needs network namespaces: ${why}\n`)
    process.exit(2)
  }
  const live = new LiveLine()
  const rows: Array<Record<string, unknown>> = []
  for (const loss of losses) {
    const row: Record<string, unknown> = { loss, size, rate_kbps: rate }
    live.update(`bench:transfer · loss ${loss} · simulator`)
    const sim = await runSim(applyOptions(DEFAULTS, { transport: 'datagram', clients: 1, recipients: 1, messages: 1, size, loss, rtt: 1, jitter: 0, bandwidth: rate, duration: '6h' }))
    row.sim_capacity_ratio = sim.result.capacity_ratio
    row.sim_accept_ms = sim.result.accept_latency_ms.p50
    row.sim_wire_per_payload = sim.result.wire_per_payload
    const pair = createNetnsPair({ rateKbit: rate, lossPercent: loss * 100, tag: 'chb' })
    try {
      const relay = await startRelay(pair, rate)
      try {
        live.update(`bench:transfer · loss ${loss} · real UDP (datagram transport)`)
        const udp = await runWorker(pair, relay.udp, size, rate, 20 * 60_000)
        row.udp_ok = udp.ok
        row.udp_accept_ms = udp.accepted_ms
        row.udp_capacity_ratio = capacityRatio(udp, rate, loss)
        row.udp_wire_per_payload = udp.ok ? Math.round((udp.datagram_bytes_sent / udp.envelope_bytes) * 1000) / 1000 : null
        row.udp_loss_estimate = udp.loss_estimate
        live.update(`bench:transfer · loss ${loss} · real WebSocket (timeout ${wsTimeout / 1000} s)`)
        const ws = await runWorker(pair, relay.ws, size, rate, wsTimeout)
        row.ws_ok = ws.ok
        row.ws_accept_ms = ws.accepted_ms
        row.ws_capacity_ratio = capacityRatio(ws, rate, loss)
      } finally {
        relay.stop()
      }
    } finally {
      pair.destroy()
    }
    rows.push(row)
  }
  live.done()
  const { head, table } = formatRows(rows, wsTimeout)
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)))
  const line = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ')
  process.stdout.write(`bench:transfer — one ${size.toLocaleString('en-US')}-byte report, ${rate} kbit/s each way, real loss each way (netns + nftables), no added delay\n\n`)
  process.stdout.write(line(head) + '\n' + table.map(line).join('\n') + '\n\n')
  const json = JSON.stringify({ bench: 'transfer', node: process.version, size, rate_kbps: rate, rows })
  if (jsonFile) await writeFile(jsonFile, json + '\n')
  if (reportFile) {
    await writeFile(reportFile, await chartPage(rows, size, rate, head, table))
    process.stdout.write(`report written to ${reportFile}\n`)
  }
  process.stdout.write(json + '\n')
}

/** A self-contained page: the table and capacity ratio against loss for real UDP, the simulator and WebSocket. */
export async function chartPage(rows: Array<Record<string, unknown>>, size: number, rate: number, head: string[], table: string[][]): Promise<string> {
  const values = rows.flatMap((r) => [
    { loss: r.loss, path: 'UDP, real netns', capacity: r.udp_capacity_ratio ?? 0 },
    { loss: r.loss, path: 'UDP, simulator', capacity: r.sim_capacity_ratio ?? 0 },
    { loss: r.loss, path: 'WebSocket, real netns', capacity: r.ws_capacity_ratio ?? 0 },
  ])
  const chart = await svg({
    width: 560,
    height: 260,
    data: { values },
    mark: { type: 'bar' },
    encoding: {
      x: { field: 'loss', type: 'ordinal', title: 'packet loss each way' },
      xOffset: { field: 'path' },
      y: { field: 'capacity', type: 'quantitative', title: 'capacity ratio (1.0 = erasure-channel limit)', scale: { domain: [0, 1] } },
      color: { field: 'path', type: 'nominal', title: null, legend: { labelLimit: 300, orient: 'bottom' } },
    },
  })
  const tr = (cells: string[], tag: string): string => `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join('')}</tr>`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chapar bench:transfer</title>
<style>body{font:14px/1.4 system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}</style>
</head><body>
<h1>chapar bench:transfer</h1>
<p>One ${size.toLocaleString('en-US')}-byte report, ${rate} kbit/s each way, real packet loss each way between two network namespaces (nftables on ingress, tbf rate limit), and the simulator with the same settings. A missing bar: the transfer did not finish.</p>
<table>${tr(head, 'th')}${table.map((t) => tr(t, 'td')).join('')}</table>
${chart}
</body></html>
`
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await main()
