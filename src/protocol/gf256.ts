/**
 * Arithmetic in GF(2⁸) with the polynomial x⁸ + x⁴ + x³ + x² + 1 (0x11d,
 * the one Reed–Solomon codes and RaptorQ use). Addition is XOR; products
 * come from a full 256 × 256 table (64 KiB), so the inner loop of row
 * operations is one lookup and one XOR per byte.
 */
const POLY = 0x11d

const EXP = new Uint8Array(512)
const LOG = new Uint8Array(256)
{
  let x = 1
  for (let i = 0; i < 255; i++) {
    EXP[i] = x
    LOG[x] = i
    x <<= 1
    if (x & 0x100) x ^= POLY
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!
}

/** MUL[a * 256 + b] = a · b. */
const MUL = new Uint8Array(256 * 256)
for (let a = 1; a < 256; a++) for (let b = 1; b < 256; b++) MUL[a * 256 + b] = EXP[LOG[a]! + LOG[b]!]!

export function mul(a: number, b: number): number {
  return MUL[(a << 8) | b]!
}

/** The multiplicative inverse of a non-zero element. */
export function inv(a: number): number {
  if (a === 0) throw new RangeError('0 has no inverse in GF(256)')
  return EXP[255 - LOG[a]!]!
}

/** dst[i] ^= c · src[i] for every i (the row operation of elimination). */
export function addMul(dst: Uint8Array, src: Uint8Array, c: number): void {
  if (c === 0) return
  const n = Math.min(dst.length, src.length)
  if (c === 1) {
    for (let i = 0; i < n; i++) dst[i]! ^= src[i]!
    return
  }
  const row = MUL.subarray(c << 8, (c << 8) + 256)
  for (let i = 0; i < n; i++) dst[i]! ^= row[src[i]!]!
}

/** v[i] = c · v[i] for every i. */
export function scale(v: Uint8Array, c: number): void {
  if (c === 1) return
  const row = MUL.subarray(c << 8, (c << 8) + 256)
  for (let i = 0; i < v.length; i++) v[i] = row[v[i]!]!
}
