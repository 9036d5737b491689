import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import {
  EMPTY,
  Reader,
  Writer,
  concat,
  equal,
  fromBase64url,
  fromHex,
  fromUtf8,
  toBase64url,
  toHex,
  utf8,
} from '../../src/protocol/bytes.js'

const u8 = (...xs: number[]): Uint8Array => Uint8Array.from(xs)

/** A view with a non-zero byteOffset into a larger buffer full of 0xee sentinels. */
function offsetView(content: Uint8Array, before = 5, after = 7): Uint8Array {
  const big = new Uint8Array(before + content.length + after).fill(0xee)
  big.set(content, before)
  return big.subarray(before, before + content.length)
}

function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw')
}

describe('utf8 / fromUtf8', () => {
  it('encodes known strings to exact bytes', () => {
    expect([...utf8('')]).toEqual([])
    expect([...utf8('A')]).toEqual([0x41])
    expect([...utf8('é')]).toEqual([0xc3, 0xa9])
    expect([...utf8('ش')]).toEqual([0xd8, 0xb4])
    expect([...utf8('€')]).toEqual([0xe2, 0x82, 0xac])
    expect([...utf8('😀')]).toEqual([0xf0, 0x9f, 0x98, 0x80])
  })

  it('decodes what it encodes (well-formed strings without a leading BOM)', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => !s.startsWith('\uFEFF')),
        (s) => {
          expect(fromUtf8(utf8(s))).toBe(s)
        },
      ),
    )
  })

  it('decodes a view at a non-zero offset', () => {
    expect(fromUtf8(offsetView(utf8('héllo')))).toBe('héllo')
  })

  it.each([
    ['0xff', [0xff]],
    ['a lone continuation byte', [0x80]],
    ['an overlong NUL', [0xc0, 0x80]],
    ['a truncated 3-byte sequence', [0xe2, 0x82]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ['valid text followed by garbage', [0x61, 0x62, 0xfe]],
  ])('rejects %s with a TypeError', (_name, bytes) => {
    expect(() => fromUtf8(Uint8Array.from(bytes))).toThrow(TypeError)
  })
})

describe('concat / equal', () => {
  it('concatenates in order, including empty parts and views', () => {
    expect([...concat([])]).toEqual([])
    expect([...concat([EMPTY, u8(1, 2), EMPTY, offsetView(u8(3)), u8(4, 5)])]).toEqual([1, 2, 3, 4, 5])
  })

  it('returns a fresh array (not aliasing its input)', () => {
    const a = u8(1, 2, 3)
    const out = concat([a])
    out[0] = 9
    expect(a[0]).toBe(1)
  })

  it('compares content, not identity or offset', () => {
    expect(equal(u8(1, 2, 3), offsetView(u8(1, 2, 3)))).toBe(true)
    expect(equal(EMPTY, new Uint8Array(0))).toBe(true)
    expect(equal(u8(1, 2, 3), u8(1, 2, 4))).toBe(false)
    expect(equal(u8(1, 2, 3), u8(1, 2))).toBe(false)
    expect(equal(u8(0), u8(0x80))).toBe(false)
  })

  it('agrees with Buffer.equals on random input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ maxLength: 8 }), (a, b) => {
        expect(equal(a, b)).toBe(Buffer.from(a).equals(Buffer.from(b)))
        expect(equal(a, a.slice())).toBe(true)
      }),
    )
  })
})

describe('hex', () => {
  it('encodes lowercase and only the view it is given', () => {
    expect(toHex(u8(0x00, 0x0f, 0xa0, 0xff))).toBe('000fa0ff')
    expect(toHex(offsetView(u8(0xde, 0xad)))).toBe('dead')
    expect(toHex(EMPTY)).toBe('')
  })

  it('round-trips', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
        expect([...fromHex(toHex(b))]).toEqual([...b])
      }),
    )
  })

  it('decodes to exact bytes', () => {
    expect([...fromHex('00ff10')]).toEqual([0x00, 0xff, 0x10])
    expect(fromHex('')).toHaveLength(0)
  })

  it.each(['ABCD', 'abC0', 'abc', '0', 'zz', '0x00', ' 00', '00 ', '00\n', 'g0'])('rejects %j with a TypeError', (s) => {
    expect(() => fromHex(s)).toThrow(TypeError)
  })
})

describe('base64url', () => {
  it('encodes without padding using - and _', () => {
    expect(toBase64url(u8(0xfb, 0xff))).toBe('-_8')
    expect(toBase64url(u8(0xfb, 0xef, 0xbe))).toBe('----')
    expect(toBase64url(u8(0xff, 0xff, 0xff))).toBe('____')
    expect(toBase64url(u8(0))).toBe('AA')
    expect(toBase64url(EMPTY)).toBe('')
    expect(toBase64url(offsetView(u8(0xff, 0xff, 0xff)))).toBe('____')
  })

  it('round-trips', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
        const s = toBase64url(b)
        expect(s).toMatch(/^[A-Za-z0-9_-]*$/)
        expect([...fromBase64url(s)]).toEqual([...b])
      }),
    )
  })

  it.each(['AA==', 'AA=', '+/8', 'ab/c', 'a b', 'ab\n', 'ab.c', 'ab,c', 'äb'])('rejects %j with a TypeError', (s) => {
    expect(() => fromBase64url(s)).toThrow(TypeError)
  })
})

describe('Writer', () => {
  it('writes big-endian fixed-width integers', () => {
    const b = new Writer().u8(0x01).u16(0x0203).u32(0x04050607).finish()
    expect([...b]).toEqual([1, 2, 3, 4, 5, 6, 7])
  })

  it.each([
    [0, [0, 0, 0, 0, 0, 0, 0, 0]],
    [1, [0, 0, 0, 0, 0, 0, 0, 1]],
    [2 ** 32 - 1, [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]],
    [2 ** 32, [0, 0, 0, 1, 0, 0, 0, 0]],
    [2 ** 53 - 2, [0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]],
    [2 ** 53 - 1, [0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
    [1_700_000_000_123, [0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b]],
  ])('u64(%d) writes %j', (v, bytes) => {
    expect([...new Writer().u64(v).finish()]).toEqual(bytes)
  })

  it.each([2 ** 53, 2 ** 64, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, -0.5])('u64(%d) throws RangeError and writes nothing', (v) => {
    const w = new Writer().u8(7)
    expect(() => w.u64(v)).toThrow(RangeError)
    expect(w.length).toBe(1)
    expect([...w.finish()]).toEqual([7])
  })

  it('lbytes writes a u32 length prefix; str a u16 prefix and UTF-8', () => {
    expect([...new Writer().lbytes(u8(9, 8)).finish()]).toEqual([0, 0, 0, 2, 9, 8])
    expect([...new Writer().lbytes(EMPTY).finish()]).toEqual([0, 0, 0, 0])
    expect([...new Writer().str('é!').finish()]).toEqual([0, 3, 0xc3, 0xa9, 0x21])
  })

  it('str accepts 65535 bytes and rejects 65536 with a RangeError', () => {
    expect(new Writer().str('a'.repeat(0xffff)).length).toBe(2 + 0xffff)
    expect(() => new Writer().str('a'.repeat(0x10000))).toThrow(RangeError)
    // The limit is in bytes, not UTF-16 units: 32768 two-byte characters is 65536 bytes.
    expect(() => new Writer().str('é'.repeat(0x8000))).toThrow(RangeError)
  })

  it('grows past its initial capacity without losing data', () => {
    const w = new Writer(1)
    const expected: number[] = []
    for (let i = 0; i < 1000; i++) {
      w.u8(i & 0xff)
      expected.push(i & 0xff)
    }
    const big = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff)
    w.bytes(big)
    expected.push(...big)
    expect(w.length).toBe(6000)
    expect([...w.finish()]).toEqual(expected)
  })

  it('finish returns an independent copy of exactly the written bytes', () => {
    const w = new Writer(64).u16(0xabcd)
    const a = w.finish()
    expect(a.length).toBe(2)
    expect(a.buffer.byteLength).toBe(2)
    a[0] = 0
    w.u8(1)
    expect([...w.finish()]).toEqual([0xab, 0xcd, 1])
  })

  it('bytes copies from a view at an offset', () => {
    expect([...new Writer().bytes(offsetView(u8(1, 2, 3))).finish()]).toEqual([1, 2, 3])
  })
})

describe('Reader', () => {
  it('reads big-endian integers and tracks offset/remaining', () => {
    const r = new Reader(u8(1, 2, 3, 4, 5, 6, 7, 0xaa))
    expect(r.u8()).toBe(1)
    expect(r.u16()).toBe(0x0203)
    expect(r.offset).toBe(3)
    expect(r.u32()).toBe(0x04050607)
    expect(r.remaining).toBe(1)
    expect(() => r.end()).toThrow(RangeError)
    expect(r.u8()).toBe(0xaa)
    expect(r.remaining).toBe(0)
    r.end()
  })

  it('reads u64 up to 2^53-1 and rejects anything larger', () => {
    expect(new Reader(u8(0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)).u64()).toBe(2 ** 53 - 1)
    expect(new Reader(u8(0, 0, 0, 1, 0, 0, 0, 0)).u64()).toBe(2 ** 32)
    expect(new Reader(u8(0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff)).u64()).toBe(2 ** 32 - 1)
    for (const hi of [[0x00, 0x20, 0, 0], [0x80, 0, 0, 0], [0xff, 0xff, 0xff, 0xff]]) {
      const r = new Reader(u8(...hi, 0, 0, 0, 0))
      expect(() => r.u64()).toThrow(RangeError)
      expect(r.offset).toBe(0)
    }
  })

  it('round-trips u64 values near and at 2^53', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: 2 ** 53 - 1_000_000, max: 2 ** 53 - 1 }), fc.maxSafeNat(), fc.nat()), (v) => {
        const r = new Reader(new Writer().u64(v).finish())
        expect(r.u64()).toBe(v)
        r.end()
      }),
    )
  })

  it('reads from a view with a non-zero byteOffset', () => {
    const r = new Reader(offsetView(u8(0x12, 0x34, 0x56, 0x78, 0x9a)))
    expect(r.u32()).toBe(0x12345678)
    expect([...r.rest()]).toEqual([0x9a])
    r.end()
  })

  it('bytes returns a view (no copy) of the next n bytes', () => {
    const buf = u8(1, 2, 3, 4)
    const r = new Reader(buf)
    r.u8()
    const v = r.bytes(2)
    expect([...v]).toEqual([2, 3])
    buf[1] = 42
    expect(v[0]).toBe(42)
    expect(r.offset).toBe(3)
  })

  it('every read past the end throws a RangeError and does not advance', () => {
    const reads: Array<[string, (r: Reader) => unknown, number]> = [
      ['u8', (r) => r.u8(), 1],
      ['u16', (r) => r.u16(), 2],
      ['u32', (r) => r.u32(), 4],
      ['u64', (r) => r.u64(), 8],
      ['bytes(5)', (r) => r.bytes(5), 5],
      ['lbytes', (r) => r.lbytes(100), 4],
      ['str', (r) => r.str(), 2],
    ]
    for (const [name, read, need] of reads) {
      for (let have = 0; have < need; have++) {
        const r = new Reader(new Uint8Array(have))
        const err = thrown(() => read(r))
        expect(err, `${name} with ${have} bytes`).toBeInstanceOf(RangeError)
        expect(r.offset, name).toBe(0)
      }
    }
  })

  it('lbytes / str with a prefix promising more than is present throw RangeError', () => {
    expect(() => new Reader(u8(0, 0, 0, 3, 1, 2)).lbytes(10)).toThrow(RangeError)
    expect(() => new Reader(u8(0xff, 0xff, 0xff, 0xff)).lbytes(2 ** 32)).toThrow(/truncated/)
    expect(() => new Reader(u8(0, 3, 0x61, 0x62)).str()).toThrow(RangeError)
  })

  it('lbytes enforces its limit before reading, at exactly max+1', () => {
    const data = new Writer().lbytes(new Uint8Array(10).fill(7)).finish()
    expect(new Reader(data).lbytes(10)).toHaveLength(10)
    const err = thrown(() => new Reader(data).lbytes(9))
    expect(err).toBeInstanceOf(RangeError)
    expect((err as Error).message).toBe('field of 10 bytes exceeds 9')
    // The limit applies even when the claimed bytes are absent (no allocation, no over-read).
    expect(() => new Reader(u8(0x7f, 0xff, 0xff, 0xff)).lbytes(1024)).toThrow('exceeds 1024')
  })

  it('str enforces its byte limit and strict UTF-8', () => {
    const data = new Writer().str('héllo').finish() // 6 bytes
    expect(new Reader(data).str(6)).toBe('héllo')
    expect(() => new Reader(data).str(5)).toThrow(RangeError)
    expect(() => new Reader(u8(0, 2, 0xc0, 0x80)).str()).toThrow(TypeError)
    expect(() => new Reader(u8(0, 1, 0xff)).str()).toThrow(TypeError)
  })

  it('rest returns everything left; end rejects trailing bytes', () => {
    const r = new Reader(u8(1, 2, 3))
    r.u8()
    expect([...r.rest()]).toEqual([2, 3])
    expect([...r.rest()]).toEqual([])
    r.end()
    const t = new Reader(u8(1, 2, 3))
    t.u16()
    expect(() => t.end()).toThrow('1 trailing bytes')
  })
})

describe('Writer ↔ Reader round trip', () => {
  type Op =
    | { k: 'u8'; v: number }
    | { k: 'u16'; v: number }
    | { k: 'u32'; v: number }
    | { k: 'u64'; v: number }
    | { k: 'bytes'; v: Uint8Array }
    | { k: 'lbytes'; v: Uint8Array }
    | { k: 'str'; v: string }
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.integer({ min: 0, max: 0xff }).map((v) => ({ k: 'u8' as const, v })),
    fc.integer({ min: 0, max: 0xffff }).map((v) => ({ k: 'u16' as const, v })),
    fc.integer({ min: 0, max: 0xffffffff }).map((v) => ({ k: 'u32' as const, v })),
    fc.oneof(fc.maxSafeNat(), fc.integer({ min: 2 ** 53 - 100, max: 2 ** 53 - 1 })).map((v) => ({ k: 'u64' as const, v })),
    fc.uint8Array({ maxLength: 40 }).map((v) => ({ k: 'bytes' as const, v })),
    fc.uint8Array({ maxLength: 40 }).map((v) => ({ k: 'lbytes' as const, v })),
    fc
      .string({ unit: 'grapheme', maxLength: 20 })
      .filter((s) => !s.startsWith('\uFEFF'))
      .map((v) => ({ k: 'str' as const, v })),
  )

  it('reads back every sequence of writes, then is at the end', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 30 }), fc.integer({ min: 1, max: 64 }), (ops, cap) => {
        const w = new Writer(cap)
        for (const o of ops) {
          if (o.k === 'bytes') w.bytes(o.v)
          else if (o.k === 'lbytes') w.lbytes(o.v)
          else if (o.k === 'str') w.str(o.v)
          else w[o.k](o.v)
        }
        const buf = w.finish()
        expect(buf.length).toBe(w.length)
        const r = new Reader(buf)
        for (const o of ops) {
          if (o.k === 'bytes') expect([...r.bytes(o.v.length)]).toEqual([...o.v])
          else if (o.k === 'lbytes') expect([...r.lbytes(o.v.length)]).toEqual([...o.v])
          else if (o.k === 'str') expect(r.str()).toBe(o.v)
          else expect(r[o.k]()).toBe(o.v)
        }
        r.end()
      }),
    )
  })

  it('any strict prefix of an encoding fails to read back with a RangeError', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 10 }), fc.nat(), (ops, cutSeed) => {
        const w = new Writer()
        for (const o of ops) {
          if (o.k === 'bytes') w.lbytes(o.v) // length-prefixed so the reader knows what to expect
          else if (o.k === 'lbytes') w.lbytes(o.v)
          else if (o.k === 'str') w.str(o.v)
          else w[o.k](o.v)
        }
        const buf = w.finish()
        fc.pre(buf.length > 0)
        const cut = cutSeed % buf.length
        const r = new Reader(buf.subarray(0, cut))
        const err = thrown(() => {
          for (const o of ops) {
            if (o.k === 'bytes' || o.k === 'lbytes') r.lbytes(0xffffffff)
            else if (o.k === 'str') r.str()
            else r[o.k]()
          }
          r.end()
        })
        expect(err).toBeInstanceOf(RangeError)
      }),
    )
  })
})
