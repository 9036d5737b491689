/** `chapar sim`: options in, one deterministic run (or a sweep) out, as a table or JSON. */
import { readFile, writeFile } from 'node:fs/promises'
import { InputError } from '../protocol/errors.js'
import { LiveLine } from '../client/progress.js'
import { applyOptions, DEFAULTS, parseSweep, type SimOptions, sweepValue, withProfile } from './options.js'
import { runSim, type SimResult, type SimTrace } from './world.js'

export interface SimCliOptions {
  profile?: string
  scenario?: string
  sweep?: string
  json?: boolean
  report?: string
  [k: string]: unknown
}

const META = new Set(['profile', 'scenario', 'sweep', 'json', 'report'])

export async function resolveOptions(cli: SimCliOptions): Promise<SimOptions> {
  let o = cli.profile ? withProfile(cli.profile) : { ...DEFAULTS }
  if (cli.scenario) {
    let raw: unknown
    try {
      raw = JSON.parse(await readFile(cli.scenario, 'utf8'))
    } catch (err) {
      throw new InputError(`cannot read scenario ${cli.scenario}: ${(err as Error).message}`)
    }
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError(`scenario ${cli.scenario} must be a JSON object of sim options`)
    const { profile, ...rest } = raw as Record<string, unknown>
    if (profile !== undefined && !cli.profile) {
      if (typeof profile !== 'string') throw new InputError(`scenario ${cli.scenario}: profile must be a string`)
      o = withProfile(profile)
    }
    o = applyOptions(o, rest, `scenario ${cli.scenario}`)
  }
  const flags: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(cli)) if (!META.has(k) && v !== undefined) flags[k] = v
  return applyOptions(o, flags)
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 3600_000) return `${(ms / 60_000).toFixed(1)} min`
  return `${(ms / 3600_000).toFixed(2)} h`
}

export function table(r: SimResult, o: SimOptions): string {
  const rows: Array<[string, string]> = [
    ['delivered', `${r.delivered} / ${r.sent}  (${(r.delivery_ratio * 100).toFixed(1)}%)`],
    ['duplicates at app', String(r.duplicates_at_app)],
    ['latency p50 / p95 / p99 / max', [r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max].map(formatDuration).join(' / ')],
    ['accept latency p50 / p95 / p99 / max', [r.accept_latency_ms.p50, r.accept_latency_ms.p95, r.accept_latency_ms.p99, r.accept_latency_ms.max].map(formatDuration).join(' / ')],
    ['payload / wire bytes', `${r.payload_bytes.toLocaleString('en-US')} / ${r.wire_bytes.toLocaleString('en-US')}  (${r.wire_per_payload}× on the field links)`],
    ['capacity ratio', `${r.capacity_ratio}  (1.0 = the erasure-channel limit of the field uplinks)`],
    ['relay crashes', String(r.relay_crashes)],
    ['virtual time / events / wall', `${formatDuration(r.virtual_ms)} / ${r.events.toLocaleString('en-US')} / ${formatDuration(r.wall_ms)}`],
  ]
  const head = `chapar sim — ${o.clients} clients × ${o.messages} reports (${o.size === 'mix' ? 'mix' : o.size + ' B'}) → ${o.recipients} recipient(s) via ${o.relays} relay(s); ${o.lossModel} loss ${o.lossVary ? `${o.lossVary.min}–${o.lossVary.max}` : o.loss}${o.lossModel === 'gilbert' ? ` (bursts of ${o.burst})` : ''}, RTT ${o.rttMs} ms ± ${o.jitterMs}, ${o.bandwidthKbps} kbit/s${o.outage ? `, up ${formatDuration(o.outage.upMs)} / down ${formatDuration(o.outage.downMs)}` : ''}; seed ${o.seed}`
  const w = Math.max(...rows.map(([k]) => k.length))
  return [head, '', ...rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`)].join('\n')
}

export async function cmdSim(cli: SimCliOptions, out: (s: string) => void = (s) => process.stdout.write(s + '\n')): Promise<number> {
  const base = await resolveOptions(cli)
  const sweep = cli.sweep ? parseSweep(cli.sweep) : undefined
  const runs: Array<{ options: SimOptions; value?: string }> = sweep
    ? sweep.values.map((value) => ({ options: applyOptions(base, { [sweep.name]: value }), value }))
    : [{ options: base }]
  const live = new LiveLine()
  const results: Array<{ result: SimResult; trace: SimTrace; options: SimOptions; value?: string }> = []
  for (const [i, run] of runs.entries()) {
    const label = sweep ? `${sweep.name}=${run.value} (${i + 1}/${runs.length}) ` : ''
    const { result, trace } = await runSim(run.options, {
      onProgress: (p) =>
        live.update(`sim ${label}· virtual ${formatDuration(p.virtualMs)} of ${formatDuration(run.options.durationMs)} · delivered ${p.delivered}/${p.sent} · ${p.events.toLocaleString('en-US')} events`),
    })
    results.push({ result, trace, options: run.options, ...(run.value !== undefined ? { value: run.value } : {}) })
  }
  live.done()
  if (cli.json) {
    if (sweep) out(JSON.stringify(results.map((r) => ({ [sweep.name]: sweepValue(r.value!), ...r.result }))))
    else out(JSON.stringify(results[0]!.result))
  } else {
    for (const r of results) out(table(r.result, r.options) + '\n')
  }
  if (cli.report) {
    const { renderReport } = await import('./report.js')
    try {
      await writeFile(cli.report, await renderReport(results, sweep?.name))
    } catch (err) {
      throw new InputError(`cannot write report ${cli.report}: ${(err as Error).message}`)
    }
    if (!cli.json) out(`report written to ${cli.report}`)
  }
  const short = results.filter((r) => r.result.delivered < r.result.sent)
  if (short.length > 0) process.stderr.write(`sim: ${short.length} run(s) did not deliver every report within the virtual time given\n`)
  return short.length === 0 ? 0 : 1
}
