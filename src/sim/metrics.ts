/** Percentile summaries, named as DESIGN §6 names them. */
export interface Summary {
  p50: number
  p95: number
  p99: number
  max: number
}

/** Nearest-rank percentiles of `xs` (ms, rounded to whole ms); zeros when empty. */
export function summarize(xs: readonly number[]): Summary {
  if (xs.length === 0) return { p50: 0, p95: 0, p99: 0, max: 0 }
  const s = [...xs].sort((a, b) => a - b)
  const at = (q: number): number => Math.round(s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!)
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: Math.round(s[s.length - 1]!) }
}
