/**
 * Sets of chunk indices as sorted, disjoint, half-open ranges [start, end).
 * Used for "which chunks do you hold" on both hops; compact on the wire
 * (a contiguous prefix is one pair however large the file).
 */
export type Ranges = Array<[number, number]>

export function rangesFromIndices(indices: Iterable<number>): Ranges {
  const sorted = [...new Set(indices)].sort((a, b) => a - b)
  const out: Ranges = []
  for (const i of sorted) {
    const last = out[out.length - 1]
    if (last && last[1] === i) last[1] = i + 1
    else out.push([i, i + 1])
  }
  return out
}

export function countRanges(r: Ranges): number {
  let n = 0
  for (const [a, b] of r) n += b - a
  return n
}

export function inRanges(r: Ranges, i: number): boolean {
  for (const [a, b] of r) if (i >= a && i < b) return true
  return false
}

/** Indices in [0, total) not covered by r, as ranges. */
export function missingRanges(r: Ranges, total: number): Ranges {
  const out: Ranges = []
  let at = 0
  for (const [a, b] of r) {
    if (a > at) out.push([at, Math.min(a, total)])
    at = Math.max(at, b)
    if (at >= total) break
  }
  if (at < total) out.push([at, total])
  return out.filter(([a, b]) => b > a)
}

export function* indicesOf(r: Ranges): Generator<number> {
  for (const [a, b] of r) for (let i = a; i < b; i++) yield i
}

/** True when r is well-formed: sorted, disjoint, non-empty ranges within [0, total). */
export function validRanges(r: Ranges, total: number): boolean {
  let prev = -1
  for (const [a, b] of r) {
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b <= a || b > total || a <= prev) return false
    prev = b
  }
  return true
}
