import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Writer, concat, toHex, utf8 } from '../../src/protocol/bytes.js'
import { ErrorCode, ProtocolError, WIRE_ERROR_CODES } from '../../src/protocol/errors.js'
import {
  CHUNK_BYTES,
  type Frame,
  FrameType,
  MAX_FRAME_BYTES,
  MAX_IDS_PER_FRAME,
  MAX_RANGES_PER_FRAME,
  PROTOCOL_VERSION,
  chunkCount,
  chunkLength,
  decodeFrame,
  encodeFrame,
} from '../../src/protocol/frames.js'
import { rangesFromIndices } from '../../src/protocol/ranges.js'

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v)
const pattern = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * 131 + seed * 17 + 7) & 0xff)
const ID = pattern(32, 1)
const ID2 = pattern(32, 2)
const MAILBOX = pattern(32, 3)
const noBom = (s: string): boolean => !s.startsWith('\uFEFF')

function protocolError(fn: () => unknown): ProtocolError {
  let err: unknown
  try {
    fn()
  } catch (e) {
    err = e
  }
  expect(err, 'expected a ProtocolError').toBeInstanceOf(ProtocolError)
  return err as ProtocolError
}

function badFrame(bytes: Uint8Array, maxEnvelope?: number): ProtocolError {
  const e = protocolError(() => decodeFrame(bytes, maxEnvelope))
  expect(e.code).toBe(ErrorCode.BAD_FRAME)
  expect(e.message).toMatch(/^bad frame: /)
  return e
}

/** Hand-built frame bytes (independent of encodeFrame). */
const raw = (type: number, build: (w: Writer) => void = () => {}): Uint8Array => {
  const w = new Writer().u8(type)
  build(w)
  return w.finish()
}

/** One valid example of every frame type, with hand-written expected encodings. */
const examples: Array<[string, Frame, Uint8Array]> = [
  [
    'HELLO',
    { type: FrameType.HELLO, version: PROTOCOL_VERSION, challenge: pattern(32, 9), maxEnvelope: 70_000_000 },
    raw(0x01, (w) => w.u8(1).bytes(pattern(32, 9)).u32(70_000_000)),
  ],
  [
    'AUTH',
    { type: FrameType.AUTH, signPublicKey: pattern(32, 4), signature: pattern(64, 5), origin: 'wss://relay.example:443' },
    raw(0x02, (w) => w.bytes(pattern(32, 4)).bytes(pattern(64, 5)).u16(23).bytes(utf8('wss://relay.example:443'))),
  ],
  ['AUTH_OK', { type: FrameType.AUTH_OK, mailbox: MAILBOX }, raw(0x03, (w) => w.bytes(MAILBOX))],
  [
    'PUT (middle chunk)',
    { type: FrameType.PUT, id: ID, mailbox: MAILBOX, expiresAt: 1_800_000_000_000, size: 3 * CHUNK_BYTES + 10, index: 1, data: pattern(CHUNK_BYTES, 6) },
    raw(0x10, (w) => w.bytes(ID).bytes(MAILBOX).u64(1_800_000_000_000).u32(3 * CHUNK_BYTES + 10).u32(1).bytes(pattern(CHUNK_BYTES, 6))),
  ],
  [
    'PUT (last, short chunk)',
    { type: FrameType.PUT, id: ID, mailbox: MAILBOX, expiresAt: 2 ** 53 - 1, size: 3 * CHUNK_BYTES + 10, index: 3, data: pattern(10, 6) },
    raw(0x10, (w) => w.bytes(ID).bytes(MAILBOX).u64(2 ** 53 - 1).u32(3 * CHUNK_BYTES + 10).u32(3).bytes(pattern(10, 6))),
  ],
  ['QUERY', { type: FrameType.QUERY, ids: [ID, ID2] }, raw(0x11, (w) => w.u16(2).bytes(ID).bytes(ID2))],
  ['STORED', { type: FrameType.STORED, ids: [ID] }, raw(0x12, (w) => w.u16(1).bytes(ID))],
  ['DONE (empty)', { type: FrameType.DONE, ids: [] }, raw(0x24, (w) => w.u16(0))],
  [
    'HAVE',
    { type: FrameType.HAVE, id: ID, size: 5 * CHUNK_BYTES, have: [[0, 2], [3, 5]] },
    raw(0x13, (w) => w.bytes(ID).u32(5 * CHUNK_BYTES).u16(2).u32(0).u32(2).u32(3).u32(5)),
  ],
  ['HAVE (nothing)', { type: FrameType.HAVE, id: ID, size: 1, have: [] }, raw(0x13, (w) => w.bytes(ID).u32(1).u16(0))],
  ['LIST', { type: FrameType.LIST, max: 500 }, raw(0x20, (w) => w.u16(500))],
  [
    'INDEX',
    { type: FrameType.INDEX, more: true, entries: [{ id: ID, size: 1234, expiresAt: 99 }, { id: ID2, size: 0xffffffff, expiresAt: 2 ** 53 - 1 }] },
    raw(0x21, (w) => w.u8(1).u16(2).bytes(ID).u32(1234).u64(99).bytes(ID2).u32(0xffffffff).u64(2 ** 53 - 1)),
  ],
  ['INDEX (empty, final)', { type: FrameType.INDEX, more: false, entries: [] }, raw(0x21, (w) => w.u8(0).u16(0))],
  ['GET', { type: FrameType.GET, id: ID, want: [[1, 2], [10, 0xffffffff]] }, raw(0x22, (w) => w.bytes(ID).u16(2).u32(1).u32(2).u32(10).u32(0xffffffff))],
  [
    'CHUNK',
    { type: FrameType.CHUNK, id: ID, size: 100, index: 0, data: pattern(100, 8) },
    raw(0x23, (w) => w.bytes(ID).u32(100).u32(0).bytes(pattern(100, 8))),
  ],
  [
    'ERROR (with id)',
    { type: FrameType.ERROR, code: ErrorCode.RETRY_LATER, id: ID, message: 'disk full, retry later' },
    raw(0x7f, (w) => w.u16(11).bytes(ID).str('disk full, retry later')),
  ],
  [
    'ERROR (no id)',
    { type: FrameType.ERROR, code: ErrorCode.UNAUTHENTICATED, id: undefined, message: 'AUTH first' },
    raw(0x7f, (w) => w.u16(9).bytes(new Uint8Array(32)).str('AUTH first')),
  ],
]

describe('chunk arithmetic', () => {
  it('chunkCount', () => {
    expect(CHUNK_BYTES).toBe(65536)
    expect(chunkCount(0)).toBe(1)
    expect(chunkCount(1)).toBe(1)
    expect(chunkCount(CHUNK_BYTES)).toBe(1)
    expect(chunkCount(CHUNK_BYTES + 1)).toBe(2)
    expect(chunkCount(10 * CHUNK_BYTES)).toBe(10)
  })

  it('chunkLength sums to size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 70 * 1024 * 1024 }), (size) => {
        const n = chunkCount(size)
        let total = 0
        for (let i = 0; i < n; i++) {
          const len = chunkLength(size, i)
          expect(len).toBeGreaterThan(0)
          expect(len).toBeLessThanOrEqual(CHUNK_BYTES)
          if (i < n - 1) expect(len).toBe(CHUNK_BYTES)
          total += len
        }
        expect(total).toBe(size)
      }),
      { numRuns: 50 },
    )
  })

  it('MAX_FRAME_BYTES fits the largest PUT', () => {
    const put = encodeFrame({ type: FrameType.PUT, id: ID, mailbox: MAILBOX, expiresAt: 0, size: 2 * CHUNK_BYTES, index: 0, data: fill(CHUNK_BYTES, 1) })
    expect(put.length).toBe(1 + 32 + 32 + 8 + 4 + 4 + CHUNK_BYTES)
    expect(put.length).toBeLessThanOrEqual(MAX_FRAME_BYTES)
    expect(decodeFrame(put).type).toBe(FrameType.PUT)
  })
})

describe('encodeFrame / decodeFrame: exact bytes for every type', () => {
  it('covers every frame type', () => {
    expect(new Set(examples.map(([, f]) => f.type))).toEqual(new Set(Object.values(FrameType)))
  })

  it.each(examples)('%s', (_name, frame, bytes) => {
    expect(toHex(encodeFrame(frame))).toBe(toHex(bytes))
    expect(decodeFrame(bytes)).toEqual(frame)
  })

  it('decoded byte fields are views into the input (documented: copy before keeping)', () => {
    const bytes = encodeFrame({ type: FrameType.AUTH_OK, mailbox: MAILBOX })
    const f = decodeFrame(bytes)
    if (f.type !== FrameType.AUTH_OK) throw new Error('wrong type')
    bytes[1] = bytes[1]! ^ 0xff
    expect(f.mailbox[0]).toBe(MAILBOX[0]! ^ 0xff)
  })

  it('ERROR: all wire codes map back; an unknown code decodes as INTERNAL; the all-zero id means none', () => {
    for (const code of Object.values(ErrorCode)) {
      const f = decodeFrame(encodeFrame({ type: FrameType.ERROR, code, id: ID, message: code }))
      expect(f).toEqual({ type: FrameType.ERROR, code, id: ID, message: code })
    }
    expect(new Set(Object.values(WIRE_ERROR_CODES)).size).toBe(Object.keys(ErrorCode).length)
    expect(decodeFrame(raw(0x7f, (w) => w.u16(999).bytes(ID).str('from the future')))).toEqual({
      type: FrameType.ERROR,
      code: ErrorCode.INTERNAL,
      id: ID,
      message: 'from the future',
    })
    expect(decodeFrame(encodeFrame({ type: FrameType.ERROR, code: ErrorCode.TIMEOUT, id: new Uint8Array(32), message: '' }))).toEqual({
      type: FrameType.ERROR,
      code: ErrorCode.TIMEOUT,
      id: undefined,
      message: '',
    })
  })

  it('ERROR: messages are cut to 500 characters', () => {
    const f = decodeFrame(encodeFrame({ type: FrameType.ERROR, code: ErrorCode.INTERNAL, id: undefined, message: 'x'.repeat(5000) }))
    expect(f.type === FrameType.ERROR && f.message).toBe('x'.repeat(500))
  })
})

// --- arbitraries for every frame type ---
const bytesN = (n: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ minLength: n, maxLength: n })
const id = bytesN(32)
const u32 = fc.integer({ min: 0, max: 0xffffffff })
/** size ≥ 1, index < chunkCount(size); data generated cheaply. */
const chunkOf = fc
  .oneof(fc.integer({ min: 1, max: 600 }), fc.integer({ min: 1, max: 5 * CHUNK_BYTES + 3 }))
  .chain((size) => fc.tuple(fc.constant(size), fc.integer({ min: 0, max: chunkCount(size) - 1 }), fc.nat(255)))
  .map(([size, index, seed]) => ({ size, index, data: pattern(chunkLength(size, index), seed) }))
const rangesWithin = (total: number): fc.Arbitrary<Array<[number, number]>> =>
  fc.uniqueArray(fc.integer({ min: 0, max: Math.min(total, 5000) - 1 }), { maxLength: 60 }).map((xs) => rangesFromIndices(xs))
const errorMessage = fc
  .string({ unit: 'grapheme', maxLength: 120 })
  .filter((s) => noBom(s) && utf8(s).length <= 500 && s.length <= 500)

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant(FrameType.HELLO), version: fc.nat(255), challenge: id, maxEnvelope: u32 }),
  fc.record({ type: fc.constant(FrameType.AUTH), signPublicKey: id, signature: bytesN(64), origin: fc.string({ maxLength: 255, unit: 'binary-ascii' }) }),
  fc.record({ type: fc.constant(FrameType.AUTH_OK), mailbox: id }),
  fc
    .record({ id, mailbox: id, expiresAt: fc.maxSafeNat(), chunk: chunkOf })
    .map(({ chunk, ...r }): Frame => ({ type: FrameType.PUT, ...r, ...chunk })),
  fc.record({ type: fc.constantFrom(FrameType.QUERY, FrameType.STORED, FrameType.DONE), ids: fc.array(id, { maxLength: 20 }) }),
  fc
    .integer({ min: 0, max: 0xffffffff })
    .chain((size) => fc.record({ type: fc.constant(FrameType.HAVE), id, size: fc.constant(size), have: rangesWithin(chunkCount(size)) })),
  fc.record({ type: fc.constant(FrameType.LIST), max: fc.nat(0xffff) }),
  fc.record({
    type: fc.constant(FrameType.INDEX),
    more: fc.boolean(),
    entries: fc.array(fc.record({ id, size: u32, expiresAt: fc.maxSafeNat() }), { maxLength: 20 }),
  }),
  fc.record({
    type: fc.constant(FrameType.GET),
    id,
    want: fc.uniqueArray(u32, { maxLength: 40 }).map((xs) => rangesFromIndices(xs.filter((x) => x < 0xffffffff))),
  }),
  fc.record({ id, chunk: chunkOf }).map(({ id, chunk }): Frame => ({ type: FrameType.CHUNK, id, ...chunk })),
  fc.record({
    type: fc.constant(FrameType.ERROR),
    code: fc.constantFrom(...Object.values(ErrorCode)),
    id: fc.option(id.filter((b) => b.some((x) => x !== 0)), { nil: undefined }),
    message: errorMessage,
  }),
)

describe('round trip (property)', () => {
  it('decodeFrame(encodeFrame(f)) equals f, and re-encodes to the same bytes', () => {
    fc.assert(
      fc.property(frameArb, (f) => {
        const bytes = encodeFrame(f)
        expect(bytes.length).toBeLessThanOrEqual(MAX_FRAME_BYTES)
        expect(bytes[0]).toBe(f.type)
        const back = decodeFrame(bytes)
        expect(back).toEqual(f)
        expect(toHex(encodeFrame(back))).toBe(toHex(bytes))
      }),
      { numRuns: 300 },
    )
  })

  it('full frames: 512 ids, 512 index entries and 1024 ranges round-trip', () => {
    const ids = Array.from({ length: MAX_IDS_PER_FRAME }, (_, i) => pattern(32, i))
    for (const type of [FrameType.QUERY, FrameType.STORED, FrameType.DONE] as const) {
      expect(decodeFrame(encodeFrame({ type, ids }))).toEqual({ type, ids })
    }
    const entries = ids.map((id, i) => ({ id, size: i + 1, expiresAt: i * 1000 }))
    expect(decodeFrame(encodeFrame({ type: FrameType.INDEX, more: true, entries }))).toEqual({ type: FrameType.INDEX, more: true, entries })
    const want = Array.from({ length: MAX_RANGES_PER_FRAME }, (_, i): [number, number] => [2 * i, 2 * i + 1])
    expect(decodeFrame(encodeFrame({ type: FrameType.GET, id: ID, want }))).toEqual({ type: FrameType.GET, id: ID, want })
    const have = want
    const size = 2 * MAX_RANGES_PER_FRAME * CHUNK_BYTES
    expect(decodeFrame(encodeFrame({ type: FrameType.HAVE, id: ID, size, have }))).toEqual({ type: FrameType.HAVE, id: ID, size, have })
  })
})

describe('decodeFrame rejects', () => {
  it('empty input', () => {
    badFrame(new Uint8Array(0))
  })

  it('unknown frame types', () => {
    const known = new Set<number>(Object.values(FrameType))
    for (let t = 0; t < 256; t++) {
      if (known.has(t)) continue
      const e = badFrame(Uint8Array.of(t, 0, 0, 0, 0))
      expect(e.message).toBe(`bad frame: unknown frame type 0x${t.toString(16)}`)
    }
  })

  it.each(examples)('every truncation of %s', (_name, frame) => {
    const bytes = encodeFrame(frame)
    for (let cut = 0; cut < bytes.length; cut++) badFrame(bytes.subarray(0, cut))
  })

  it('truncations of arbitrary frames (property)', () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), (f, cutSeed) => {
        const bytes = encodeFrame(f)
        badFrame(bytes.subarray(0, cutSeed % bytes.length))
      }),
      { numRuns: 300 },
    )
  })

  it.each(examples)('trailing bytes after %s', (_name, frame) => {
    const bytes = encodeFrame(frame)
    for (const extra of [Uint8Array.of(0), Uint8Array.of(0xff), fill(32, 0)]) badFrame(concat([bytes, extra]))
  })

  it('frames larger than MAX_FRAME_BYTES with TOO_LARGE, whatever they hold', () => {
    for (const first of [FrameType.PUT, FrameType.CHUNK, 0x00, 0xff]) {
      const big = new Uint8Array(MAX_FRAME_BYTES + 1)
      big[0] = first
      const e = protocolError(() => decodeFrame(big))
      expect(e.code).toBe(ErrorCode.TOO_LARGE)
      expect(e.message).toBe(`frame of ${MAX_FRAME_BYTES + 1} bytes exceeds ${MAX_FRAME_BYTES}`)
    }
    // A PUT padded to exactly the limit is judged on its content (BAD_FRAME), not its size.
    const atLimit = new Uint8Array(MAX_FRAME_BYTES)
    atLimit[0] = FrameType.PUT
    badFrame(atLimit)
  })

  describe('id lists', () => {
    it.each([FrameType.QUERY, FrameType.STORED, FrameType.DONE])('more than MAX_IDS_PER_FRAME ids in frame 0x%s', (type) => {
      const n = MAX_IDS_PER_FRAME + 1
      const e = badFrame(raw(type, (w) => w.u16(n).bytes(new Uint8Array(32 * n))))
      expect(e.message).toBe(`bad frame: ${n} ids exceed ${MAX_IDS_PER_FRAME}`)
      badFrame(raw(type, (w) => w.u16(0xffff)))
      // Exactly the limit is fine.
      const ok = decodeFrame(raw(type, (w) => w.u16(MAX_IDS_PER_FRAME).bytes(new Uint8Array(32 * MAX_IDS_PER_FRAME))))
      expect(ok.type === type && 'ids' in ok && ok.ids.length).toBe(MAX_IDS_PER_FRAME)
    })

    it('a count that promises more ids than present', () => {
      badFrame(raw(FrameType.QUERY, (w) => w.u16(2).bytes(ID)))
      badFrame(raw(FrameType.QUERY, (w) => w.u16(1).bytes(ID.subarray(0, 31))))
    })

    it('encodeFrame refuses to build oversize lists', () => {
      const ids = new Array<Uint8Array>(MAX_IDS_PER_FRAME + 1).fill(ID)
      expect(() => encodeFrame({ type: FrameType.QUERY, ids })).toThrow(RangeError)
      const entries = ids.map((id) => ({ id, size: 1, expiresAt: 1 }))
      expect(() => encodeFrame({ type: FrameType.INDEX, more: false, entries })).toThrow(RangeError)
      const want = Array.from({ length: MAX_RANGES_PER_FRAME + 1 }, (_, i): [number, number] => [2 * i, 2 * i + 1])
      expect(() => encodeFrame({ type: FrameType.GET, id: ID, want })).toThrow(RangeError)
      expect(() => encodeFrame({ type: FrameType.HAVE, id: ID, size: 0xffffffff, have: want })).toThrow(RangeError)
    })

    it('INDEX with more than MAX_IDS_PER_FRAME entries, or fewer than promised', () => {
      const n = MAX_IDS_PER_FRAME + 1
      expect(badFrame(raw(FrameType.INDEX, (w) => w.u8(0).u16(n).bytes(new Uint8Array(44 * n)))).message).toBe(
        `bad frame: ${n} entries exceed ${MAX_IDS_PER_FRAME}`,
      )
      badFrame(raw(FrameType.INDEX, (w) => w.u8(0).u16(1).bytes(ID).u32(1)))
      // An entry whose expiry is beyond 2^53.
      badFrame(raw(FrameType.INDEX, (w) => w.u8(0).u16(1).bytes(ID).u32(1).u32(0x00200000).u32(0)))
    })
  })

  describe('ranges', () => {
    const get = (pairs: Array<[number, number]>, count = pairs.length): Uint8Array =>
      raw(FrameType.GET, (w) => {
        w.bytes(ID).u16(count)
        for (const [a, b] of pairs) w.u32(a).u32(b)
      })
    const have = (size: number, pairs: Array<[number, number]>, count = pairs.length): Uint8Array =>
      raw(FrameType.HAVE, (w) => {
        w.bytes(ID).u32(size).u16(count)
        for (const [a, b] of pairs) w.u32(a).u32(b)
      })

    it.each<[string, Array<[number, number]>]>([
      ['unsorted', [[5, 6], [1, 2]]],
      ['overlapping', [[1, 4], [3, 6]]],
      ['duplicate', [[1, 2], [1, 2]]],
      ['nested', [[0, 10], [2, 3]]],
      ['adjacent (not coalesced)', [[1, 2], [2, 3]]],
      ['empty range', [[4, 4]]],
      ['reversed range', [[6, 4]]],
    ])('%s ranges in GET and HAVE', (_name, pairs) => {
      expect(badFrame(get(pairs)).message).toBe('bad frame: ranges not sorted and disjoint')
      expect(badFrame(have(100 * CHUNK_BYTES, pairs)).message).toBe('bad frame: ranges not sorted, disjoint and within the envelope')
    })

    it('HAVE ranges beyond the envelope\'s chunk count', () => {
      const size = 3 * CHUNK_BYTES + 1 // 4 chunks: indices 0..3
      expect(decodeFrame(have(size, [[0, 4]]))).toEqual({ type: FrameType.HAVE, id: ID, size, have: [[0, 4]] })
      badFrame(have(size, [[0, 5]]))
      badFrame(have(size, [[4, 5]]))
      badFrame(have(0, [[0, 2]]))
    })

    it('too many ranges', () => {
      const n = MAX_RANGES_PER_FRAME + 1
      const pairs = Array.from({ length: n }, (_, i): [number, number] => [2 * i, 2 * i + 1])
      expect(badFrame(get(pairs)).message).toBe(`bad frame: ${n} ranges exceed ${MAX_RANGES_PER_FRAME}`)
      expect(badFrame(have(0xffffffff, pairs)).message).toBe(`bad frame: ${n} ranges exceed ${MAX_RANGES_PER_FRAME}`)
    })

    it('a count that promises more ranges than present', () => {
      badFrame(get([[1, 2]], 2))
      badFrame(have(10 * CHUNK_BYTES, [[1, 2]], 2))
    })
  })

  describe('PUT / CHUNK payloads', () => {
    const size = 2 * CHUNK_BYTES + 100 // chunks of 65536, 65536, 100
    const put = (size: number, index: number, data: Uint8Array, expiresHi = 0): Uint8Array =>
      raw(FrameType.PUT, (w) => w.bytes(ID).bytes(MAILBOX).u32(expiresHi).u32(12345).u32(size).u32(index).bytes(data))
    const chunk = (size: number, index: number, data: Uint8Array): Uint8Array =>
      raw(FrameType.CHUNK, (w) => w.bytes(ID).u32(size).u32(index).bytes(data))

    it('controls: correctly sized chunks decode', () => {
      for (const make of [put, chunk]) {
        expect(decodeFrame(make(size, 0, fill(CHUNK_BYTES, 1)))).toMatchObject({ size, index: 0 })
        expect(decodeFrame(make(size, 2, fill(100, 1)))).toMatchObject({ size, index: 2 })
        expect(decodeFrame(make(1, 0, fill(1, 1)))).toMatchObject({ size: 1, index: 0 })
      }
    })

    it.each<[string, number, number, number, string]>([
      ['last chunk one byte short', size, 2, 99, 'chunk 2 is 99 bytes, expected 100'],
      ['last chunk one byte long', size, 2, 101, 'chunk 2 is 101 bytes, expected 100'],
      ['full chunk one byte short', size, 0, CHUNK_BYTES - 1, `chunk 0 is ${CHUNK_BYTES - 1} bytes, expected ${CHUNK_BYTES}`],
      ['short data for a middle chunk', size, 1, 100, `chunk 1 is 100 bytes, expected ${CHUNK_BYTES}`],
      ['no data at all', size, 2, 0, 'chunk 2 is 0 bytes, expected 100'],
      ['index just beyond the envelope', size, 3, 100, `chunk 3 beyond envelope of ${size} bytes`],
      ['index far beyond the envelope', size, 0xffffffff, 0, `chunk 4294967295 beyond envelope of ${size} bytes`],
      ['zero-size envelope', 0, 0, 0, `envelope size 0 outside 1..${Number.MAX_SAFE_INTEGER}`],
    ])('%s', (_name, sz, index, len, reason) => {
      expect(badFrame(put(sz, index, fill(len, 2))).message).toBe(`bad frame: ${reason}`)
      expect(badFrame(chunk(sz, index, fill(len, 2))).message).toBe(`bad frame: ${reason}`)
    })

    it('an envelope size above the caller\'s maxEnvelope', () => {
      expect(decodeFrame(put(1000, 0, fill(1000, 3)), 1000).type).toBe(FrameType.PUT)
      expect(badFrame(put(1001, 0, fill(1001, 3)), 1000).message).toBe('bad frame: envelope size 1001 outside 1..1000')
      expect(badFrame(chunk(1001, 0, fill(1001, 3)), 1000).message).toBe('bad frame: envelope size 1001 outside 1..1000')
    })

    it('a PUT expiry beyond 2^53', () => {
      badFrame(put(10, 0, fill(10, 1), 0x00200000))
      badFrame(put(10, 0, fill(10, 1), 0xffffffff))
      expect(decodeFrame(put(10, 0, fill(10, 1), 0x001fffff))).toMatchObject({ expiresAt: 0x001fffff * 2 ** 32 + 12345 })
    })
  })

  describe('fixed-size frames and strings', () => {
    it('AUTH, AUTH_OK, HELLO, LIST with a byte missing or extra', () => {
      badFrame(raw(FrameType.AUTH, (w) => w.bytes(fill(95, 1))))
      badFrame(raw(FrameType.AUTH, (w) => w.bytes(fill(97, 1))))
      badFrame(raw(FrameType.AUTH_OK, (w) => w.bytes(fill(31, 1))))
      badFrame(raw(FrameType.HELLO, (w) => w.u8(1).bytes(fill(32, 1)).u16(1)))
      badFrame(raw(FrameType.LIST, (w) => w.u8(1)))
      badFrame(raw(FrameType.LIST, (w) => w.u16(1).u8(0)))
    })

    it('ERROR with invalid UTF-8 or an over-long message', () => {
      const e = badFrame(raw(FrameType.ERROR, (w) => w.u16(1).bytes(ID).u16(2).bytes(Uint8Array.of(0xc0, 0x80))))
      expect(e.cause).toBeInstanceOf(TypeError)
      badFrame(raw(FrameType.ERROR, (w) => w.u16(1).bytes(ID).u16(501).bytes(fill(501, 0x61))))
      expect(decodeFrame(raw(FrameType.ERROR, (w) => w.u16(1).bytes(ID).u16(500).bytes(fill(500, 0x61))))).toMatchObject({ message: 'a'.repeat(500) })
    })
  })
})

describe('fuzz: decodeFrame throws nothing but ProtocolError', () => {
  const known = Object.values(FrameType)
  const check = (bytes: Uint8Array): void => {
    let f: Frame
    try {
      f = decodeFrame(bytes)
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError)
      expect((e as ProtocolError).code).toBe(bytes.length > MAX_FRAME_BYTES ? ErrorCode.TOO_LARGE : ErrorCode.BAD_FRAME)
      return
    }
    expect(f.type).toBe(bytes[0])
    expect(known).toContain(f.type)
  }

  it('random byte arrays', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), check), { numRuns: 3000 })
  })

  it('random tails after a known type byte', () => {
    fc.assert(
      fc.property(fc.constantFrom(...known), fc.uint8Array({ maxLength: 200 }), (type, tail) => check(concat([Uint8Array.of(type), tail]))),
      { numRuns: 3000 },
    )
  })

  it('valid frames with bytes mutated, inserted or deleted', () => {
    fc.assert(
      fc.property(frameArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete')), { minLength: 1, maxLength: 4 }), (f, edits) => {
        const bytes = [...encodeFrame(f)]
        for (const [at, v, op] of edits) {
          const i = at % (bytes.length + 1)
          if (op === 'set' && i < bytes.length) bytes[i] = v
          else if (op === 'insert') bytes.splice(i, 0, v)
          else if (op === 'delete') bytes.splice(i, 1)
        }
        check(Uint8Array.from(bytes))
      }),
      { numRuns: 1000 },
    )
  })

  it('oversized random input', () => {
    fc.assert(
      fc.property(fc.integer({ min: MAX_FRAME_BYTES + 1, max: MAX_FRAME_BYTES + 5000 }), fc.nat(255), (n, first) => {
        const b = new Uint8Array(n)
        b[0] = first
        check(b)
      }),
      { numRuns: 20 },
    )
  })
})
