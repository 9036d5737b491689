import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { addMul, inv, mul } from '../../src/protocol/gf256.js'
import { BlockDecoder, BlockEncoder, MAX_BLOCK_SYMBOLS, repairCoefficients, symbolsFor } from '../../src/protocol/rlnc.js'

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n)
  let s = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    out[i] = s & 0xff
  }
  return out
}

describe('gf256', () => {
  it('is a field: every non-zero element has an inverse, multiplication distributes over XOR', () => {
    for (let a = 1; a < 256; a++) expect(mul(a, inv(a))).toBe(1)
    for (let a = 0; a < 256; a += 7) for (let b = 0; b < 256; b += 5) for (let c = 0; c < 256; c += 11) expect(mul(a, b ^ c)).toBe(mul(a, b) ^ mul(a, c))
    expect(mul(2, 0x80)).toBe(0x1d) // x · x⁷ = x⁸ = x⁴ + x³ + x² + 1
    expect(() => inv(0)).toThrow(RangeError)
  })

  it('addMul is dst ^= c·src', () => {
    const dst = bytes(100, 1)
    const src = bytes(100, 2)
    const want = dst.map((d, i) => d ^ mul(37, src[i]!))
    addMul(dst, src, 37)
    expect(dst).toEqual(want)
  })
})

describe('rlnc', () => {
  it('repair coefficients are deterministic and non-zero', () => {
    const a = repairCoefficients(7, 130, 128)
    expect(a).toEqual(repairCoefficients(7, 130, 128))
    expect(a).not.toEqual(repairCoefficients(7, 131, 128))
    expect(a).not.toEqual(repairCoefficients(8, 130, 128))
    expect(a.every((c) => c !== 0)).toBe(true)
  })

  for (const k of [1, 2, 3, 16, 60, MAX_BLOCK_SYMBOLS]) {
    it(`k=${k}: decodes from the source symbols alone, and from repair symbols alone`, () => {
      const S = 37
      const data = bytes(k * S - (k > 1 ? 5 : 0), k)
      const enc = new BlockEncoder(k * 3, data, S)
      expect(enc.k).toBe(k)
      const fromSource = new BlockDecoder(k * 3, k, S)
      for (let i = 0; i < k; i++) expect(fromSource.add(i, enc.symbol(i))).toBe(true)
      expect(fromSource.data().subarray(0, data.length)).toEqual(data)
      const fromRepair = new BlockDecoder(k * 3, k, S)
      let esi = k
      while (!fromRepair.complete) fromRepair.add(esi, enc.symbol(esi++))
      expect(esi - k).toBeLessThanOrEqual(k + 2)
      expect(fromRepair.data().subarray(0, data.length)).toEqual(data)
    })
  }

  it('any loss pattern: decodes once it holds k independent symbols, and says how many more it needs', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 200 }), fc.double({ min: 0, max: 0.9, noNaN: true }), fc.integer(), (k, S, loss, seed) => {
        const data = bytes(k * S, seed)
        const enc = new BlockEncoder(seed >>> 0, data, S)
        const dec = new BlockDecoder(seed >>> 0, k, S)
        const drop = bytes(4096, seed ^ 0x5555)
        let esi = 0
        let received = 0
        while (!dec.complete) {
          const before = dec.needed
          if (drop[esi % 4096]! / 256 >= loss) {
            received++
            const useful = dec.add(esi, enc.symbol(esi))
            expect(dec.needed).toBe(useful ? before - 1 : before)
          }
          esi++
          if (esi > 50_000) throw new Error('never decoded')
        }
        // Random linear codes over GF(256): a handful of extra symbols at most.
        expect(received).toBeLessThanOrEqual(k + 4)
        expect(dec.data()).toEqual(data)
      }),
      { numRuns: 300 },
    )
  })

  it('k received symbols (any mix) decode ≥ 99% of the time, k + 2 always in 2000 trials', () => {
    let exact = 0
    const trials = 2000
    for (let t = 0; t < trials; t++) {
      const k = 1 + (t % 40)
      const enc = new BlockEncoder(t, bytes(k * 8, t + 1), 8)
      const pick = bytes(4 * k + 8, t + 99)
      // A random subset of ids from the first 3k: sources and repairs mixed.
      const ids = [...new Set(Array.from(pick, (b) => b % (3 * k)))]
      const dec = new BlockDecoder(t, k, 8)
      let n = 0
      for (const id of ids) {
        dec.add(id, enc.symbol(id))
        n++
        if (n === k && dec.complete) exact++
        if (dec.complete) break
      }
      let extra = 3 * k
      while (!dec.complete) {
        dec.add(extra, enc.symbol(extra))
        extra++
        n++
      }
      expect(n).toBeLessThanOrEqual(k + 2)
    }
    expect(exact / trials).toBeGreaterThan(0.98)
  })

  it('duplicates and already-known symbols do not count', () => {
    const enc = new BlockEncoder(1, bytes(40, 3), 10)
    const dec = new BlockDecoder(1, 4, 10)
    expect(dec.add(0, enc.symbol(0))).toBe(true)
    expect(dec.add(0, enc.symbol(0))).toBe(false)
    expect(dec.add(5, enc.symbol(5))).toBe(true)
    expect(dec.add(5, enc.symbol(5))).toBe(false)
    expect(dec.rank).toBe(2)
    expect(dec.needed).toBe(2)
  })

  it('rejects impossible shapes', () => {
    expect(() => new BlockEncoder(0, new Uint8Array(MAX_BLOCK_SYMBOLS * 10 + 1), 10)).toThrow(RangeError)
    expect(() => new BlockDecoder(0, 0, 10)).toThrow(RangeError)
    expect(() => new BlockDecoder(0, 4, 10).add(0, new Uint8Array(9))).toThrow(RangeError)
    expect(symbolsFor(0, 10)).toBe(1)
    expect(symbolsFor(21, 10)).toBe(3)
  })
})
