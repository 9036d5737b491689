/**
 * Simulator speed: how many events per second `chapar sim` runs, and the
 * wall time of the yardstick scenario — 1,000 field clients × 10
 * reports × 24 h of virtual time at 50% loss each way (100 recipients, one
 * relay, the sim's default link otherwise). The run stops early once every
 * report is delivered, so `virtual_ms` says how much of the day it needed.
 *
 *   npm run bench:sim -- [--clients N] [--messages M] [--recipients R] [--loss P] [--duration 24h] [--seed S] [--json FILE]
 *
 * Prints a table, then one JSON line (or writes it to --json FILE). Target:
 * the yardstick under 60 s of wall time on one core (Node runs the whole
 * simulation on its one JS thread).
 */
import { writeFile } from 'node:fs/promises'
import os from 'node:os'
import { LiveLine } from '../src/client/progress.js'
import { applyOptions, DEFAULTS } from '../src/sim/options.js'
import { runSim } from '../src/sim/world.js'

const TARGET_WALL_MS = 60_000

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : undefined
}

const raw: Record<string, string> = { clients: '1000', messages: '10', recipients: '100', loss: '0.5', duration: '24h', seed: '1' }
for (const k of Object.keys(raw)) raw[k] = arg(k) ?? raw[k]!
const options = applyOptions(DEFAULTS, raw)
const live = new LiveLine()
const cpu0 = process.cpuUsage()
const { result } = await runSim(options, {
  onProgress: (p) => live.update(`bench:sim · virtual ${(p.virtualMs / 3600_000).toFixed(2)} h · delivered ${p.delivered}/${p.sent} · ${p.events.toLocaleString('en-US')} events`),
})
live.done()
const cpu = process.cpuUsage(cpu0)
const cpuMs = (cpu.user + cpu.system) / 1000
const eventsPerSec = Math.round(result.events / (result.wall_ms / 1000))
const pass = result.wall_ms < TARGET_WALL_MS && result.delivered === result.sent
const rows: Array<[string, string]> = [
  ['scenario', `${options.clients} clients × ${options.messages} reports → ${options.recipients} recipients, loss ${options.loss}, ${options.bandwidthKbps} kbit/s, RTT ${options.rttMs} ms, seed ${options.seed}`],
  ['delivered', `${result.delivered} / ${result.sent}`],
  ['virtual time used', `${(result.virtual_ms / 3600_000).toFixed(2)} h of ${(options.durationMs / 3600_000).toFixed(0)} h`],
  ['events', result.events.toLocaleString('en-US')],
  ['wall time', `${(result.wall_ms / 1000).toFixed(1)} s (target < ${TARGET_WALL_MS / 1000} s: ${pass ? 'PASS' : 'FAIL'})`],
  ['events per second', eventsPerSec.toLocaleString('en-US')],
  ['CPU (all threads)', `${(cpuMs / 1000).toFixed(1)} s, ${(cpuMs / result.wall_ms).toFixed(2)} cores`],
  ['peak RSS', `${Math.round(process.memoryUsage().rss / 1024 / 1024)} MB`],
]
const w = Math.max(...rows.map(([k]) => k.length))
process.stdout.write(`Chapar simulator speed — node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}\n\n`)
for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`)
const json = JSON.stringify({ bench: 'sim', ...result, events_per_sec: eventsPerSec, cpu_ms: Math.round(cpuMs), target_wall_ms: TARGET_WALL_MS, pass, options: raw })
const out = arg('json')
if (out) await writeFile(out, json + '\n')
else process.stdout.write('\n' + json + '\n')
