import { ChaparError, ErrorCode } from './errors.js'

/** A human duration (`500ms`, `90s`, `30m`, `12h`, `7d`; a bare number is seconds) in milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(s.trim())
  if (!m) throw new ChaparError(ErrorCode.BAD_INPUT, `bad duration "${s}": use e.g. 90s, 30m, 12h, 7d`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 }[(m[2] ?? 's') as 's']
  const v = Number(m[1]) * unit
  if (!(v > 0)) throw new ChaparError(ErrorCode.BAD_INPUT, `duration must be positive: "${s}"`)
  return Math.round(v)
}
