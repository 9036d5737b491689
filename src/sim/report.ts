/**
 * `chapar sim --report FILE.html`: one self-contained HTML page — summary
 * table and charts as inline SVG rendered by vega-lite/vega in Node (no
 * scripts, nothing fetched), so it opens anywhere, offline.
 */
import vega from 'vega'
import * as vl from 'vega-lite'
import { type SimOptions, sweepValue } from './options.js'
import type { SimResult, SimTrace } from './world.js'

export interface ReportRun {
  result: SimResult
  trace: SimTrace
  options: SimOptions
  value?: string
}

const MAX_POINTS = 400

/** At most MAX_POINTS evenly spaced samples of a sorted series (first and last kept). */
function thin<T>(xs: readonly T[]): T[] {
  if (xs.length <= MAX_POINTS) return [...xs]
  const out: T[] = []
  for (let i = 0; i < MAX_POINTS; i++) out.push(xs[Math.round((i * (xs.length - 1)) / (MAX_POINTS - 1))]!)
  return out
}

/** One vega-lite chart as inline SVG (also used by bench/transfer.ts). */
export async function svg(spec: vl.TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' })
  const out = await view.toSVG()
  view.finalize()
  return out
}

export const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!)

function label(r: ReportRun, sweep: string | undefined): string {
  return sweep ? `${sweep}=${r.value}` : `seed ${r.options.seed}`
}

export async function renderReport(runs: readonly ReportRun[], sweep?: string): Promise<string> {
  const hours = (ms: number): number => ms / 3600_000
  const delivery = runs.flatMap((r) => {
    const pts = thin(r.trace.delivered_at.map((t, i) => ({ t, n: i + 1 })))
    return [{ run: label(r, sweep), hours: 0, delivered: 0 }, ...pts.map((p) => ({ run: label(r, sweep), hours: hours(p.t), delivered: (100 * p.n) / r.result.sent }))]
  })
  const cdf = runs.flatMap((r) =>
    thin(r.trace.latencies.map((l, i) => ({ l, q: (i + 1) / r.trace.latencies.length }))).map((p) => ({ run: label(r, sweep), minutes: p.l / 60_000, fraction: p.q })),
  )
  const color = { field: 'run', type: 'nominal' as const, title: sweep ?? 'run' }
  /** One step line per run, x from zero, y over a fixed range. */
  const steps = (values: object[], x: [string, string], y: [string, string, number]): vl.TopLevelSpec => ({
    width: 640,
    height: 260,
    data: { values },
    mark: { type: 'line', interpolate: 'step-after' },
    encoding: {
      x: { field: x[0], type: 'quantitative', title: x[1], scale: { domainMin: 0 } },
      y: { field: y[0], type: 'quantitative', title: y[1], scale: { domain: [0, y[2]] } },
      color,
    },
  })
  const charts: Array<[string, vl.TopLevelSpec]> = [
    ["Reports in recipients' inboxes over virtual time", steps(delivery, ['hours', 'virtual time (h)'], ['delivered', 'delivered (% of sent)', 100])],
    ['Latency, queued → inbox (CDF)', steps(cdf, ['minutes', 'latency (min)'], ['fraction', 'fraction of delivered reports', 1])],
  ]
  if (sweep && runs.length > 1) {
    const rows = runs.map((r) => ({ value: sweepValue(r.value ?? ''), wire_per_payload: r.result.wire_per_payload, capacity_ratio: r.result.capacity_ratio, delivery_ratio: r.result.delivery_ratio }))
    const numeric = rows.every((r) => typeof r.value === 'number')
    for (const [field, title] of [
      ['wire_per_payload', 'bytes on the field links per payload byte'],
      ['capacity_ratio', 'capacity ratio (1.0 = erasure-channel limit)'],
      ['delivery_ratio', 'delivery ratio'],
    ] as const) {
      charts.push([
        `${title} against ${sweep}`,
        {
          width: 640,
          height: 220,
          data: { values: rows },
          // Numbers on a line; names (size=mix, transport=datagram) as bars.
          mark: numeric ? { type: 'line', point: true } : { type: 'bar' },
          encoding: { x: { field: 'value', type: numeric ? 'quantitative' : 'nominal', title: sweep, sort: null }, y: { field, type: 'quantitative', title } },
        },
      ])
    }
  }
  const rendered: string[] = []
  for (const [title, spec] of charts) rendered.push(`<h2>${esc(title)}</h2>\n${await svg(spec)}`)
  const cols = ['run', 'sent', 'delivered', 'latency p50 (min)', 'latency p95 (min)', 'accept p50 (s)', 'wire/payload', 'capacity ratio', 'virtual (h)', 'events']
  const table = [
    `<table><tr>${cols.map((c) => `<th>${c}</th>`).join('')}</tr>`,
    ...runs.map((r) => {
      const x = r.result
      const cells = [label(r, sweep), x.sent, x.delivered, (x.latency_ms.p50 / 60_000).toFixed(1), (x.latency_ms.p95 / 60_000).toFixed(1), (x.accept_latency_ms.p50 / 1000).toFixed(1), x.wire_per_payload, x.capacity_ratio, hours(x.virtual_ms).toFixed(2), x.events]
      return `<tr>${cells.map((c) => `<td>${esc(String(c))}</td>`).join('')}</tr>`
    }),
    '</table>',
  ].join('\n')
  const o = runs[0]!.options
  const setting = `${o.clients} clients × ${o.messages} reports → ${o.recipients} recipient(s) via ${o.relays} relay(s); ${o.lossModel} loss ${o.lossVary ? `${o.lossVary.min}–${o.lossVary.max}` : o.loss}; RTT ${o.rttMs} ms; ${o.bandwidthKbps} kbit/s${o.outage ? `; up ${o.outage.upMs / 1000} s / down ${o.outage.downMs / 1000} s` : ''}`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chapar sim report</title>
<style>body{font:14px/1.4 system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}h2{font-size:16px;margin-top:2em}code{background:#f4f4f4;padding:1px 4px}</style>
</head><body>
<h1>chapar sim</h1>
<p>${esc(setting)}${sweep ? ` — swept over <code>${esc(sweep)}</code>` : ''}. Virtual time, real engines; identical for the same options and seed.</p>
${table}
${rendered.join('\n')}
<p>Full results: <code>chapar sim … --json</code>.</p>
</body></html>
`
}
