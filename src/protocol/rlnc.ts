/**
 * A systematic random linear code over GF(2⁸): a block of k source symbols
 * (equal-length byte strings) travels as the k symbols themselves (encoding
 * symbol ids 0 … k−1) followed by as many repair symbols as the sender
 * likes (ids k, k+1, …), each a combination of all k source symbols with
 * coefficients drawn from a PRNG seeded by (block, id). The code is
 * rateless, and the coefficients never travel: the receiver regenerates
 * them from the ids.
 *
 * The receiver decodes once it holds k linearly independent symbols, in
 * any mix of source and repair. With coefficients uniform over the 255
 * non-zero elements, k received symbols are independent with probability
 * about 0.996, and each extra symbol cuts the failure chance ~256-fold.
 * The decoder eliminates as symbols arrive (rows with leading ones), so its
 * rank is always known and the sender can be told exactly how many more it
 * needs. Cost: O(k · (k + S)) per useful symbol, so blocks stay small
 * (MAX_BLOCK_SYMBOLS) and large transfers are many blocks.
 */
import { addMul, inv, scale } from './gf256.js'

/** Source symbols per block at most: big enough to amortise a round trip, small enough to decode in milliseconds. */
export const MAX_BLOCK_SYMBOLS = 128
/** Encoding symbol ids are 24-bit on the wire. */
export const MAX_SYMBOL_ID = 0xffffff

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d)
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b)
  return (x ^ (x >>> 16)) >>> 0
}

/** The k coefficients of repair symbol `esi` (≥ k) of block `block`: each in 1 … 255. */
export function repairCoefficients(block: number, esi: number, k: number): Uint8Array {
  const out = new Uint8Array(k)
  let s = mix32((block >>> 0) ^ mix32(esi ^ 0x9e3779b9))
  for (let i = 0; i < k; i += 4) {
    s = mix32(s + 0x6d2b79f5)
    for (let j = 0; j < 4 && i + j < k; j++) out[i + j] = 1 + (((s >>> (8 * j)) & 0xff) % 255)
  }
  return out
}

/** Symbols needed to carry `bytes` in symbols of `symbolSize`. */
export function symbolsFor(bytes: number, symbolSize: number): number {
  return Math.max(1, Math.ceil(bytes / symbolSize))
}

export class BlockEncoder {
  readonly k: number
  private readonly source: Uint8Array

  /** `data` (at most MAX_BLOCK_SYMBOLS · symbolSize bytes) is padded with zeros to k whole symbols. */
  constructor(
    readonly block: number,
    data: Uint8Array,
    readonly symbolSize: number,
  ) {
    this.k = symbolsFor(data.length, symbolSize)
    if (this.k > MAX_BLOCK_SYMBOLS) throw new RangeError(`block of ${data.length} bytes needs ${this.k} symbols; at most ${MAX_BLOCK_SYMBOLS}`)
    this.source = new Uint8Array(this.k * symbolSize)
    this.source.set(data)
  }

  /** Encoding symbol `esi`: a source symbol below k, a repair symbol from k on. */
  symbol(esi: number): Uint8Array {
    const S = this.symbolSize
    if (esi < this.k) return this.source.subarray(esi * S, (esi + 1) * S)
    if (esi > MAX_SYMBOL_ID) throw new RangeError(`symbol id ${esi} > ${MAX_SYMBOL_ID}`)
    const c = repairCoefficients(this.block, esi, this.k)
    const out = new Uint8Array(S)
    for (let i = 0; i < this.k; i++) addMul(out, this.source.subarray(i * S, (i + 1) * S), c[i]!)
    return out
  }
}

export class BlockDecoder {
  /** pivots[c]: a row (k coefficients ‖ S data bytes) whose first non-zero coefficient is a 1 at column c. */
  private readonly pivots: Array<Uint8Array | undefined>
  private count = 0
  private decoded: Uint8Array | undefined

  constructor(
    readonly block: number,
    readonly k: number,
    readonly symbolSize: number,
  ) {
    if (!(k >= 1 && k <= MAX_BLOCK_SYMBOLS)) throw new RangeError(`k must be 1..${MAX_BLOCK_SYMBOLS}, got ${k}`)
    this.pivots = new Array<Uint8Array | undefined>(k)
  }

  /** Independent symbols held. */
  get rank(): number {
    return this.count
  }

  get complete(): boolean {
    return this.count === this.k
  }

  /** How many more independent symbols decoding needs. */
  get needed(): number {
    return this.k - this.count
  }

  /** Take one encoding symbol; true if it added to the rank (false: already known, or the block is complete). */
  add(esi: number, data: Uint8Array): boolean {
    if (this.complete) return false
    if (data.length !== this.symbolSize) throw new RangeError(`symbol of ${data.length} bytes in a block of ${this.symbolSize}-byte symbols`)
    const k = this.k
    const row = new Uint8Array(k + this.symbolSize)
    if (esi < k) {
      if (this.pivots[esi] && this.isUnit(this.pivots[esi]!, esi)) return false
      row[esi] = 1
    } else {
      row.set(repairCoefficients(this.block, esi, k))
    }
    row.set(data, k)
    for (let c = 0; c < k; c++) {
      const v = row[c]!
      if (v === 0) continue
      const p = this.pivots[c]
      if (p) {
        // p is zero before c, so only columns from c on change.
        addMul(row.subarray(c), p.subarray(c), v)
        continue
      }
      if (v !== 1) scale(row.subarray(c), inv(v))
      this.pivots[c] = row
      this.count++
      return true
    }
    return false
  }

  private isUnit(row: Uint8Array, c: number): boolean {
    for (let i = c + 1; i < this.k; i++) if (row[i] !== 0) return false
    return true
  }

  /** The k · S source bytes (padding included); only once complete. */
  data(): Uint8Array {
    if (!this.complete) throw new Error(`block ${this.block} not decodable yet: rank ${this.count} of ${this.k}`)
    if (this.decoded) return this.decoded
    const k = this.k
    const S = this.symbolSize
    // Back-substitution: clear every column above its pivot, last column first.
    for (let c = k - 1; c >= 0; c--) {
      const p = this.pivots[c]!
      for (let r = 0; r < c; r++) {
        const q = this.pivots[r]!
        const v = q[c]!
        if (v !== 0) addMul(q.subarray(c), p.subarray(c), v)
      }
    }
    const out = new Uint8Array(k * S)
    for (let c = 0; c < k; c++) out.set(this.pivots[c]!.subarray(k), c * S)
    this.decoded = out
    this.pivots.fill(undefined)
    return out
  }
}
