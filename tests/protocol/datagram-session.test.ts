/**
 * DatagramSession end to end: two sessions back to back over a small link
 * model on virtual time (Bernoulli loss from a seeded PRNG, one-way delay,
 * jitter that reorders, duplication, and blackout windows that drop every
 * packet one way). Frames must arrive whole, once and in order whatever the
 * link does; lost acks cost time, never a stall; the pace and the coding
 * overhead stay within their budgets; and the same seed gives the same run.
 * Also: the body codec, sendsFor against a brute-force binomial, RESET on a
 * peer that lost blocks, CLOSE, and the receiver's frame-size limit.
 */
import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import { AEAD_TAG_BYTES, CLIENT_HEADER_BYTES, CLIENT_TAG, clientKeys, openPacket, peekHeader, RELAY_TAG, relayKeys, sealPacket } from '../../src/protocol/datagram-crypto.js'
import { boxPublicKey } from '../../src/protocol/box.js'
import {
  BODY_OVERHEAD_BYTES,
  type Body,
  DatagramSession,
  decodeBody,
  encodeBody,
  IP_UDP_BYTES,
  DEAD_AFTER_MS,
  MAX_OPEN_BLOCKS,
  MAX_SILENT_RTO_MS,
  MIN_SILENCE_MS,
  PROBE_INTERVAL_MS,
  ROUND_CONFIDENCE,
  sendsFor,
} from '../../src/protocol/datagram-session.js'
import { ProtocolError } from '../../src/protocol/errors.js'
import { MAX_BLOCK_SYMBOLS } from '../../src/protocol/rlnc.js'
import { Rng } from '../../src/sim/rng.js'
import { EPOCH_MS, Scheduler } from '../../src/sim/scheduler.js'

/** A relay session's salt (datagram-crypto.ts: relay nonces are salt ‖ packet number). */
const SALT = new Uint8Array(7).fill(0x5a)

const OVERHEAD = CLIENT_HEADER_BYTES + AEAD_TAG_BYTES // 37 + 16
const MAX_FRAME = 65_000
const MB = 1 << 20

// ---------------------------------------------------------------------------
// The link model
// ---------------------------------------------------------------------------

interface DirSpec {
  /** Bernoulli loss probability. */
  loss: number
  /** One-way delay, ms. */
  delayMs: number
  /** Extra delay uniform in [0, jitterMs): packets overtake each other. */
  jitterMs: number
  /** Probability that a packet that got through arrives a second time (with its own delay). */
  dup: number
  /** [from, to) windows of virtual ms since EPOCH_MS in which every packet this way is dropped. */
  blackouts: Array<[number, number]>
}

type Deliver = (pn: number, body: Uint8Array) => void

interface Sent {
  at: number
  pn: number
  body: Uint8Array
}

/** One direction of the link. */
class OneWay {
  readonly spec: DirSpec
  readonly log: Sent[] = []
  sent = 0
  dropped = 0
  deliveries = 0
  /** Virtual ms (since EPOCH_MS) of every delivery. */
  readonly arrivals: number[] = []

  constructor(
    private readonly sched: Scheduler,
    private readonly rng: Rng,
    spec: Partial<DirSpec>,
    private readonly deliver: () => Deliver,
    private readonly keepLog = false,
  ) {
    this.spec = { loss: 0, delayMs: 25, jitterMs: 0, dup: 0, blackouts: [], ...spec }
  }

  send(pn: number, body: Uint8Array): void {
    this.sent++
    const t = this.sched.elapsed
    if (this.keepLog) this.log.push({ at: t, pn, body: body.slice() })
    // Always draw the same number of random numbers per packet, so one knob does not shift the others' draws.
    const lost = this.rng.next() < this.spec.loss
    const d1 = this.rng.next()
    const dup = this.rng.next() < this.spec.dup
    const d2 = this.rng.next()
    if (lost || this.spec.blackouts.some(([a, b]) => t >= a && t < b)) {
      this.dropped++
      return
    }
    const copy = body.slice()
    this.schedule(this.spec.delayMs + d1 * this.spec.jitterMs, pn, copy)
    if (dup) this.schedule(this.spec.delayMs + d2 * this.spec.jitterMs, pn, copy.slice())
  }

  private schedule(delay: number, pn: number, body: Uint8Array): void {
    this.sched.at(
      this.sched.now + delay,
      () => {
        this.deliveries++
        this.arrivals.push(this.sched.elapsed)
        this.deliver()(pn, body)
      },
      true,
    )
  }
}

interface End {
  session: DatagramSession
  frames: Uint8Array[]
  closes: string[]
  /** Virtual ms (since EPOCH_MS) at which each frame arrived. */
  frameAt: number[]
}

interface PairOptions {
  seed?: number
  /** Both directions, overridden by ab / ba. */
  link?: Partial<DirSpec>
  ab?: Partial<DirSpec>
  ba?: Partial<DirSpec>
  rateKbps?: number
  mtu?: number
  /** The largest frame each end accepts. */
  maxFrameBytes?: number
  keepLog?: boolean
}

interface Pair {
  sched: Scheduler
  a: End
  b: End
  ab: OneWay
  ba: OneWay
  /** Replace b by a fresh session (a restart that lost everything), wired to the same link. */
  restartB(): End
}

function makePair(o: PairOptions = {}): Pair {
  const sched = new Scheduler(o.seed ?? 1)
  const linkRng = sched.rng.fork('link')
  const ends: { a?: End; b?: End } = {}
  const ab = new OneWay(sched, linkRng.fork('ab'), { ...o.link, ...o.ab }, () => (pn, body) => ends.b!.session.receive(pn, body), o.keepLog)
  const ba = new OneWay(sched, linkRng.fork('ba'), { ...o.link, ...o.ba }, () => (pn, body) => ends.a!.session.receive(pn, body), o.keepLog)
  const end = (way: OneWay, opener: boolean): End => {
    const e: End = { frames: [], closes: [], frameAt: [], session: undefined as unknown as DatagramSession }
    e.session = new DatagramSession({
      env: sched,
      transmit: (pn, body) => way.send(pn, body),
      packetOverhead: OVERHEAD,
      mtu: o.mtu,
      rateKbps: o.rateKbps,
      maxFrameBytes: o.maxFrameBytes ?? MAX_FRAME,
      onFrame: (f) => {
        e.frames.push(f)
        e.frameAt.push(sched.elapsed)
      },
      onClose: (r) => e.closes.push(r),
      opener,
    })
    return e
  }
  ends.a = end(ab, true)
  ends.b = end(ba, false)
  return {
    sched,
    a: ends.a,
    b: ends.b,
    ab,
    ba,
    restartB: () => (ends.b = end(ba, false)),
  }
}

/** Deterministic frame contents. */
function frame(size: number, seed: number): Uint8Array {
  return new Rng(seed * 7919 + size).bytes(size)
}

/** 20 frames, 1 … MAX_FRAME bytes, boundary sizes included. */
function mixedFrames(seed: number, n = 20): Uint8Array[] {
  const r = new Rng(seed)
  const fixed = [1, MAX_FRAME, 2, 1000, MAX_FRAME - 1, 3]
  const out: Uint8Array[] = []
  for (let i = 0; i < n; i++) {
    const size = i < fixed.length ? fixed[i]! : r.next() < 0.3 ? 1 + r.int(64) : 1 + r.int(MAX_FRAME)
    out.push(frame(size, seed * 1000 + i))
  }
  return out
}

/** Frames making up `total` bytes of payload, each at most MAX_FRAME. */
function bulkFrames(total: number, seed: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let left = total, i = 0; left > 0; i++) {
    const n = Math.min(MAX_FRAME, left)
    out.push(frame(n, seed * 1000 + i))
    left -= n
  }
  return out
}

function expectFrames(got: Uint8Array[], want: Uint8Array[], label = ''): void {
  const firstBad = got.findIndex((f, i) => i >= want.length || !Buffer.from(f).equals(Buffer.from(want[i]!)))
  expect(firstBad, `${label}: first frame out of place`).toBe(-1)
  expect(got.length, `${label}: frames delivered`).toBe(want.length)
}

const streamBytes = (frames: Uint8Array[]): number => frames.reduce((n, f) => n + 4 + f.length, 0)

async function runUntil(p: Pair, done: () => boolean, maxMs: number): Promise<void> {
  await p.sched.run(EPOCH_MS + maxMs, { stop: done })
}

// ---------------------------------------------------------------------------
// Transfers over the link
// ---------------------------------------------------------------------------

describe('DatagramSession: frames arrive whole, once, in order', () => {
  for (const loss of [0, 0.3, 0.5, 0.8]) {
    it(`loss ${loss}, both directions at once`, async () => {
      const p = makePair({ seed: 100 + loss * 10, link: { loss, delayMs: 40 }, rateKbps: 4000 })
      const toB = mixedFrames(1)
      const toA = mixedFrames(2)
      for (const f of toB) p.a.session.send(f)
      for (const f of toA) p.b.session.send(f)
      await runUntil(p, () => p.a.frames.length >= toA.length && p.b.frames.length >= toB.length, 600_000)
      expectFrames(p.b.frames, toB, 'a→b')
      expectFrames(p.a.frames, toA, 'b→a')
      // Let the last acks settle: nothing more arrives, nothing closes, the backlogs drain.
      await p.sched.run(p.sched.now + 120_000)
      expect(p.b.frames.length).toBe(toB.length)
      expect(p.a.frames.length).toBe(toA.length)
      expect(p.a.closes).toEqual([])
      expect(p.b.closes).toEqual([])
      expect(p.a.session.backlog).toBe(0)
      expect(p.b.session.backlog).toBe(0)
      if (loss > 0) expect(Math.abs(p.a.session.stats.loss - loss)).toBeLessThan(0.15)
    })
  }

  it('frames sent later, one at a time, while earlier ones are in flight', async () => {
    const p = makePair({ seed: 7, link: { loss: 0.3, delayMs: 60, jitterMs: 30 }, rateKbps: 1000 })
    const frames = mixedFrames(3, 40).map((f, i) => (i % 2 ? f.subarray(0, Math.min(f.length, 3000)) : f))
    frames.forEach((f, i) => p.sched.at(EPOCH_MS + i * 137, () => p.a.session.send(f)))
    await runUntil(p, () => p.b.frames.length >= frames.length, 600_000)
    expectFrames(p.b.frames, frames)
  })

  it('a zero-length frame is a frame', async () => {
    const p = makePair({ seed: 8, link: { loss: 0.2 } })
    const frames = [new Uint8Array(0), frame(10, 1), new Uint8Array(0)]
    for (const f of frames) p.a.session.send(f)
    await runUntil(p, () => p.b.frames.length >= 3, 60_000)
    await p.sched.run(p.sched.now + 10_000)
    expectFrames(p.b.frames, frames)
  })
})

describe('DatagramSession: duplication and reordering', () => {
  it('duplicated and reordered packets deliver every frame once, in order', async () => {
    const p = makePair({ seed: 11, link: { loss: 0.2, delayMs: 20, jitterMs: 200, dup: 0.5 }, rateKbps: 4000 })
    const toB = mixedFrames(4)
    const toA = mixedFrames(5, 10)
    for (const f of toB) p.a.session.send(f)
    for (const f of toA) p.b.session.send(f)
    await runUntil(p, () => p.b.frames.length >= toB.length && p.a.frames.length >= toA.length, 600_000)
    await p.sched.run(p.sched.now + 60_000)
    expect(p.ab.deliveries).toBeGreaterThan(p.ab.sent - p.ab.dropped) // there were duplicates
    expectFrames(p.b.frames, toB, 'a→b')
    expectFrames(p.a.frames, toA, 'b→a')
    expect(p.a.closes).toEqual([])
    expect(p.b.closes).toEqual([])
  })

  it('every packet delivered twice, in reverse order within bursts: same frames', async () => {
    const p = makePair({ seed: 12, link: { delayMs: 10, jitterMs: 400, dup: 1 }, rateKbps: 8000 })
    const toB = mixedFrames(6)
    for (const f of toB) p.a.session.send(f)
    await runUntil(p, () => p.b.frames.length >= toB.length, 600_000)
    await p.sched.run(p.sched.now + 60_000)
    expectFrames(p.b.frames, toB)
    expect(p.b.closes).toEqual([])
  })

  it('replaying every old packet after the transfer delivers nothing new and closes nothing', async () => {
    const p = makePair({ seed: 13, link: { loss: 0.3 }, keepLog: true })
    const toB = mixedFrames(7, 8)
    for (const f of toB) p.a.session.send(f)
    await runUntil(p, () => p.b.frames.length >= toB.length, 600_000)
    await p.sched.run(p.sched.now + 30_000)
    expectFrames(p.b.frames, toB)
    const old = [...p.ab.log]
    const r = new Rng(99)
    for (let i = old.length - 1; i > 0; i--) {
      const j = r.int(i + 1)
      ;[old[i], old[j]] = [old[j]!, old[i]!]
    }
    for (const s of old) p.b.session.receive(s.pn, s.body.slice())
    await p.sched.run(p.sched.now + 30_000)
    expectFrames(p.b.frames, toB)
    expect(p.a.closes).toEqual([])
    expect(p.b.closes).toEqual([])
  })
})

describe('DatagramSession: lost acks', () => {
  it('losing every ack for 20 s does not stall: the sender goes quiet, and the transfer completes once acks flow again', async () => {
    const [T0, T1] = [300, 20_300]
    // Small symbols, so the transfer is more than MAX_OPEN_BLOCKS blocks and cannot finish without acks.
    const p = makePair({ seed: 21, mtu: 400, link: { loss: 0.2, delayMs: 30 }, ba: { blackouts: [[T0, T1]] }, rateKbps: 2000, keepLog: true })
    const frames = bulkFrames(600_000, 3)
    expect(streamBytes(frames)).toBeGreaterThan(MAX_OPEN_BLOCKS * MAX_BLOCK_SYMBOLS * p.a.session.symbolSize)
    for (const f of frames) p.a.session.send(f)
    let framesAtT1 = -1
    p.sched.at(EPOCH_MS + T1, () => (framesAtT1 = p.b.frames.length))
    await runUntil(p, () => p.b.frames.length >= frames.length && p.a.session.backlog === 0, 300_000)
    expectFrames(p.b.frames, frames)
    expect(p.a.session.backlog).toBe(0)
    expect(p.a.closes).toEqual([])
    expect(p.b.closes).toEqual([])
    // The blackout really held the transfer up…
    expect(framesAtT1).toBeLessThan(frames.length)
    // …the sender did not blast into the void while it heard nothing (a few probes per stretched timeout)…
    const sentInBlackout = p.ab.log.filter((s) => s.at >= T0 + MIN_SILENCE_MS + 1_000 && s.at < T1).length
    expect(sentInBlackout).toBeLessThan(60)
    // …and it resumed once acks flowed: the next probe round comes at most half the silence after the last
    // (MAX_SILENT_RTO_MS at most), so even with one round lost the sender hears the peer again within
    // 1.25 × the blackout; from there the rest goes at full speed.
    const heardAgain = p.ba.arrivals.find((t) => t >= T1)!
    expect(heardAgain).toBeLessThan(T1 + Math.min(2 * MAX_SILENT_RTO_MS, 1.25 * (T1 - T0)) + 1_000)
    const rest = (streamBytes(frames) * 8) / 2000 / (1 - 0.2)
    expect(p.b.frameAt.at(-1)!).toBeLessThan(heardAgain + 2 * rest + 1_000)
  })

  it('losing every packet both ways for 10 s (a blackout) does not kill the connection', async () => {
    const p = makePair({ seed: 22, link: { loss: 0.1, delayMs: 30, blackouts: [[1_000, 11_000]] }, rateKbps: 500 })
    const frames = bulkFrames(200_000, 4)
    for (const f of frames) p.a.session.send(f)
    await runUntil(p, () => p.b.frames.length >= frames.length, 300_000)
    expectFrames(p.b.frames, frames)
    expect(p.a.closes).toEqual([])
  })
})

describe('DatagramSession: long silences', () => {
  it('a 5-minute blackout both ways (well under DEAD_AFTER_MS) is ridden out', async () => {
    const p = makePair({ seed: 23, link: { loss: 0.2, delayMs: 30, blackouts: [[2_000, 302_000]] }, rateKbps: 500, keepLog: true })
    const frames = bulkFrames(300_000, 6)
    for (const f of frames) p.a.session.send(f)
    await runUntil(p, () => p.b.frames.length >= frames.length, 900_000)
    expectFrames(p.b.frames, frames)
    expect(p.a.closes).toEqual([])
    // Quiet during the blackout: small PINGs a couple of seconds apart (PROBE_INTERVAL_MS), not the link's worth.
    const inBlackout = p.ab.log.filter((s) => s.at >= 10_000 && s.at < 302_000)
    expect(inBlackout.length).toBeLessThan(292_000 / PROBE_INTERVAL_MS + 20)
    expect(inBlackout.reduce((n, s) => n + s.body.length, 0)).toBeLessThan(inBlackout.length * 80)
    // And back within a stretched timeout (MAX_SILENT_RTO_MS) plus a second round of it.
    expect(p.b.frameAt.at(-1)!).toBeLessThan(302_000 + 2 * MAX_SILENT_RTO_MS + (300_000 * 8) / 500 / 0.8 * 1.5)
  })

  it('a frame sent after a 5-minute idle spell (nothing outstanding) arrives', async () => {
    const p = makePair({ seed: 24 })
    p.a.session.send(frame(100, 1))
    await p.sched.run(EPOCH_MS + 10_000)
    const t = EPOCH_MS + 10_000 + 5 * 60_000
    p.sched.at(t, () => p.a.session.send(frame(100, 2)))
    await p.sched.run(t + 60_000)
    expectFrames(p.b.frames, [frame(100, 1), frame(100, 2)])
    expect(p.b.frameAt[1]! - (t - EPOCH_MS)).toBeLessThan(1_000)
    expect(p.a.closes).toEqual([])
  })

  // Silence counts from when data started waiting, not from the last packet heard before an idle spell.
  it('a frame sent after an idle spell longer than DEAD_AFTER_MS still arrives (loss 0)', async () => {
    const p = makePair({ seed: 25 })
    p.a.session.send(frame(100, 1))
    await p.sched.run(EPOCH_MS + 10_000)
    const t = EPOCH_MS + 10_000 + DEAD_AFTER_MS + 60_000
    p.sched.at(t, () => p.a.session.send(frame(100, 2)))
    await p.sched.run(t + 60_000)
    expect(p.a.closes).toEqual([])
    expectFrames(p.b.frames, [frame(100, 1), frame(100, 2)])
  })
})

// ---------------------------------------------------------------------------
// Body codec
// ---------------------------------------------------------------------------

const u32 = fc.nat({ max: 0xffffffff })
const ackArb = fc.record({
  recvBase: u32,
  received: u32,
  largestPn: u32,
  ackDelay: fc.nat({ max: 0xffff }),
  needed: fc.array(fc.nat({ max: 0xffff }), { maxLength: MAX_OPEN_BLOCKS }),
})
const symbolArb = fc
  .uint8Array({ minLength: 1, maxLength: 300 })
  .chain((data) => fc.record({ block: u32, blockBytes: fc.integer({ min: 1, max: MAX_BLOCK_SYMBOLS * data.length }), esi: fc.nat({ max: 0xffffff }), data: fc.constant(data) }))
const bodyArb: fc.Arbitrary<Body> = fc
  .record({ flags: fc.constantFrom(0, 4, 8, 12, 16, 20), instance: u32, sendBase: u32, lossHint: fc.nat({ max: 255 }), rateHint: fc.nat({ max: 0xffff }), ack: fc.option(ackArb, { nil: undefined }), symbol: fc.option(symbolArb, { nil: undefined }) })
  .map((b) => {
    const out: Body = { flags: b.flags | (b.ack ? 2 : 0) | (b.symbol ? 1 : 0), instance: b.instance, sendBase: b.sendBase, lossHint: b.lossHint, rateHint: b.rateHint }
    if (b.ack) out.ack = b.ack
    if (b.symbol) out.symbol = b.symbol
    return out
  })

/** The strict decoder either refuses `bytes` with a ProtocolError or decodes a body that encodes back to exactly them. */
function expectRejectedOrCanonical(bytes: Uint8Array): void {
  let body: Body
  try {
    body = decodeBody(bytes)
  } catch (e) {
    expect(e).toBeInstanceOf(ProtocolError)
    return
  }
  expect(encodeBody(body)).toEqual(bytes)
}

function expectProtocolError(bytes: Uint8Array): void {
  let err: unknown
  try {
    decodeBody(bytes)
  } catch (e) {
    err = e
  }
  expect(err, `decodeBody(${Buffer.from(bytes).toString('hex')}) should throw`).toBeInstanceOf(ProtocolError)
}

describe('encodeBody / decodeBody', () => {
  it('round trips any body — property', () => {
    fc.assert(
      fc.property(bodyArb, (b) => {
        const bytes = encodeBody(b)
        expect(bytes.length).toBeLessThanOrEqual(BODY_OVERHEAD_BYTES + (b.symbol?.data.length ?? 0))
        expect(decodeBody(bytes)).toEqual(b)
        expect(encodeBody(decodeBody(bytes))).toEqual(bytes)
      }),
      { numRuns: 500 },
    )
  })

  it('random bytes either throw a ProtocolError or decode to a body that re-encodes to the same bytes — property', () => {
    const anyBytes = fc.oneof(
      fc.uint8Array({ maxLength: 80 }),
      // Mostly valid flags, so the property reaches past the first byte.
      fc.tuple(fc.nat({ max: 31 }), fc.uint8Array({ maxLength: 80 })).map(([f, rest]) => Uint8Array.of(f, ...rest)),
      // A valid ack-and-symbol header with garbage after it.
      fc.tuple(fc.nat({ max: 31 }), fc.uint8Array({ minLength: 11, maxLength: 11 }), fc.nat({ max: 10 }), fc.uint8Array({ maxLength: 60 })).map(([f, ib, n, rest]) => {
        const ack = new Uint8Array(15)
        ack[14] = n
        return Uint8Array.of(f | 2, ...ib, ...ack, ...rest)
      }),
    )
    fc.assert(
      fc.property(anyBytes, expectRejectedOrCanonical),
      { numRuns: 2000 },
    )
  })

  it('a valid body damaged by mutation either throws a ProtocolError or re-encodes to the same bytes — property', () => {
    fc.assert(
      fc.property(bodyArb, fc.nat(), fc.nat({ max: 255 }), (b, at, v) => {
        const bytes = encodeBody(b)
        bytes[at % bytes.length] = v
        expectRejectedOrCanonical(bytes)
      }),
      { numRuns: 500 },
    )
  })

  it('throws a ProtocolError on every truncation of a body without a symbol, and on trailing bytes', () => {
    fc.assert(
      fc.property(bodyArb, (b) => {
        delete b.symbol
        b.flags &= ~1
        const bytes = encodeBody(b)
        for (let n = 0; n < bytes.length; n++) expectProtocolError(bytes.subarray(0, n))
        expectProtocolError(Uint8Array.of(...bytes, 0))
      }),
      { numRuns: 200 },
    )
  })

  it('throws a ProtocolError on a symbol cut inside its header or with no data', () => {
    fc.assert(
      fc.property(bodyArb, (b) => {
        if (!b.symbol) return
        const bytes = encodeBody(b)
        for (let n = 0; n <= bytes.length - b.symbol.data.length; n++) expectProtocolError(bytes.subarray(0, n))
      }),
      { numRuns: 200 },
    )
  })

  it('rejects what the strict decoder promises to reject', () => {
    const base: Body = { flags: 0, instance: 1, sendBase: 2, lossHint: 0, rateHint: 0, ack: { recvBase: 0, received: 0, largestPn: 0, ackDelay: 0, needed: [1, 2] } }
    const bytes = encodeBody(base)
    // Unknown flag bits.
    for (const f of [0x20, 0x40, 0x80]) expectProtocolError(Uint8Array.of(bytes[0]! | f, ...bytes.subarray(1)))
    // More than MAX_OPEN_BLOCKS needed entries.
    expectProtocolError(encodeBody({ ...base, ack: { ...base.ack!, needed: new Array<number>(MAX_OPEN_BLOCKS + 1).fill(1) } }))
    // A block larger than MAX_BLOCK_SYMBOLS symbols of this size, and an empty block.
    expectProtocolError(encodeBody({ flags: 0, instance: 0, sendBase: 0, symbol: { block: 0, blockBytes: MAX_BLOCK_SYMBOLS * 10 + 1, esi: 0, data: new Uint8Array(10) } }))
    expectProtocolError(encodeBody({ flags: 0, instance: 0, sendBase: 0, symbol: { block: 0, blockBytes: 0, esi: 0, data: new Uint8Array(10) } }))
    expect(decodeBody(encodeBody({ flags: 0, instance: 0, sendBase: 0, symbol: { block: 0, blockBytes: MAX_BLOCK_SYMBOLS * 10, esi: 0, data: new Uint8Array(10) } })).symbol?.blockBytes).toBe(MAX_BLOCK_SYMBOLS * 10)
  })
})

// ---------------------------------------------------------------------------
// sendsFor
// ---------------------------------------------------------------------------

/** P(Binomial(m, q) ≥ need) for m = need, need+1, …: a forward DP over the count, capped at `need`. */
function bruteSendsFor(need: number, q: number, confidence: number): number {
  if (need <= 0) return 0
  // dist[j] = P(X = j) for j < need; done = P(X ≥ need)
  let dist = new Float64Array(need)
  dist[0] = 1
  let done = 0
  for (let m = 1; ; m++) {
    const next = new Float64Array(need)
    for (let j = 0; j < need; j++) {
      next[j]! += dist[j]! * (1 - q)
      if (j + 1 < need) next[j + 1]! += dist[j]! * q
      else done += dist[j]! * q
    }
    dist = next
    if (m >= need && done >= confidence) return m
  }
}

describe('sendsFor', () => {
  const needs = [1, 2, 3, 5, 8, 17, 40, 64, 100, MAX_BLOCK_SYMBOLS]
  const qs = [0.05, 0.1, 0.2, 0.3, 0.45, 0.5, 0.66, 0.8, 0.9, 0.99, 1]

  it(`is the smallest m with P(Bin(m, q) ≥ need) ≥ ${ROUND_CONFIDENCE}, against a brute-force binomial`, () => {
    for (const need of needs)
      for (const q of qs) {
        const want = q === 1 ? need : bruteSendsFor(need, q, ROUND_CONFIDENCE)
        expect(sendsFor(need, q, ROUND_CONFIDENCE), `need ${need}, q ${q}`).toBe(want)
      }
  })

  it('is 0 for nothing needed, and never below the need', () => {
    expect(sendsFor(0, 0.5, ROUND_CONFIDENCE)).toBe(0)
    expect(sendsFor(-3, 0.5, ROUND_CONFIDENCE)).toBe(0)
    for (const need of needs) expect(sendsFor(need, 1, ROUND_CONFIDENCE)).toBe(need)
  })

  it('grows with the need and as q falls', () => {
    for (const q of qs) for (let i = 1; i < needs.length; i++) expect(sendsFor(needs[i]!, q, ROUND_CONFIDENCE)).toBeGreaterThan(sendsFor(needs[i - 1]!, q, ROUND_CONFIDENCE))
    for (const need of needs) for (let i = 1; i < qs.length; i++) expect(sendsFor(need, qs[i]!, ROUND_CONFIDENCE)).toBeLessThanOrEqual(sendsFor(need, qs[i - 1]!, ROUND_CONFIDENCE))
  })

  /** A fresh copy of the module, so sendsFor's cache starts empty. */
  async function freshSendsFor(): Promise<typeof sendsFor> {
    vi.resetModules()
    return (await import('../../src/protocol/datagram-session.js')).sendsFor
  }

  for (const c of [0.6, 0.8, 0.9, 0.99])
    it(`confidence ${c}, asked first: matches the brute force`, async () => {
      const f = await freshSendsFor()
      for (const need of [1, 5, 40, MAX_BLOCK_SYMBOLS]) for (const q of [0.1, 0.5, 0.9]) expect(f(need, q, c), `need ${need}, q ${q}`).toBe(bruteSendsFor(need, q, c))
    })

  // The cache is keyed on the confidence itself.
  it('a second confidence for the same (need, q) is not answered from the first one’s cache entry', async () => {
    const f = await freshSendsFor()
    expect(f(40, 0.5, 0.95)).toBe(bruteSendsFor(40, 0.5, 0.95))
    expect(f(40, 0.5, 0.99)).toBe(bruteSendsFor(40, 0.5, 0.99))
  })
})

// ---------------------------------------------------------------------------
// RESET, CLOSE, frame limit
// ---------------------------------------------------------------------------

describe('DatagramSession: reset, close, limits', () => {
  it('a peer that reports a sendBase beyond what this end received gets reset, and onClose fires once', async () => {
    const p = makePair({ seed: 31 })
    const sentBefore = p.ab.sent
    // A packet from "b" claiming blocks 0…4 were delivered, though a never received any.
    p.a.session.receive(5, encodeBody({ flags: 0, instance: 42, sendBase: 5 }))
    expect(p.a.session.isClosed).toBe(true)
    expect(p.a.closes).toHaveLength(1)
    expect(p.a.closes[0]).toMatch(/\S/)
    // It told the peer: RESET packets went out.
    const resets = p.ab.sent - sentBefore
    expect(resets).toBeGreaterThan(0)
    // Nothing more happens on further packets, close, reset or abort.
    p.a.session.receive(6, encodeBody({ flags: 0, instance: 42, sendBase: 9 }))
    p.a.session.close()
    p.a.session.reset('again')
    p.a.session.abort('again')
    p.a.session.send(new Uint8Array(5))
    await p.sched.run(EPOCH_MS + 10_000)
    expect(p.a.closes).toHaveLength(1)
    expect(p.ab.sent - sentBefore).toBe(resets)
  })

  it('a restarted peer that lost delivered blocks is reset; both ends close once', async () => {
    const p = makePair({ seed: 32, link: { loss: 0.1 }, rateKbps: 4000, mtu: 400 })
    const frames = bulkFrames(300_000, 5)
    for (const f of frames) p.a.session.send(f)
    // Run until b has delivered a few blocks and a knows (its sendBase moved past 0).
    await runUntil(p, () => p.b.frames.length >= 3 && p.a.session.backlog < streamBytes(frames) - 2 * MAX_BLOCK_SYMBOLS * p.a.session.symbolSize, 120_000)
    const oldB = p.b
    oldB.session.abort('crashed')
    const newB = p.restartB()
    await p.sched.run(p.sched.now + 30_000)
    expect(newB.closes).toHaveLength(1)
    expect(newB.closes[0]).toMatch(/lost blocks/)
    expect(newB.frames).toEqual([])
    expect(p.a.closes).toHaveLength(1)
    expect(p.a.session.isClosed).toBe(true)
  })

  it("close(): the peer's onClose fires once with 'closed by peer'", async () => {
    const p = makePair({ seed: 33 })
    const frames = mixedFrames(8, 4)
    for (const f of frames) p.a.session.send(f)
    await runUntil(p, () => p.b.frames.length >= frames.length, 60_000)
    p.a.session.close()
    expect(p.a.closes).toEqual(['closed'])
    await p.sched.run(p.sched.now + 10_000)
    expect(p.b.closes).toEqual(['closed by peer'])
    expect(p.b.session.isClosed).toBe(true)
    expect(p.a.closes).toEqual(['closed'])
    expectFrames(p.b.frames, frames)
  })

  it('close() with a reason before anything was sent', async () => {
    const p = makePair({ seed: 34 })
    p.b.session.close('bye')
    expect(p.b.closes).toEqual(['bye'])
    await p.sched.run(EPOCH_MS + 10_000)
    expect(p.a.closes).toEqual(['closed by peer'])
  })

  it('a frame longer than maxFrameBytes on the receiving side closes the connection with a reason; no frame delivered', async () => {
    const LIMIT = 1000
    const p = makePair({ seed: 35, maxFrameBytes: LIMIT })
    p.a.session.send(frame(LIMIT + 1, 1))
    await p.sched.run(EPOCH_MS + 30_000)
    expect(p.b.frames).toEqual([])
    expect(p.b.closes).toHaveLength(1)
    expect(p.b.closes[0]).toMatch(/1001.*1000/)
    expect(p.a.closes).toEqual(['peer reset the connection'])
  })

  it('a frame of exactly maxFrameBytes is delivered', async () => {
    const LIMIT = 1000
    const p = makePair({ seed: 36, maxFrameBytes: LIMIT })
    const f = frame(LIMIT, 2)
    p.a.session.send(f)
    await p.sched.run(EPOCH_MS + 30_000)
    expectFrames(p.b.frames, [f])
    expect(p.b.closes).toEqual([])
  })
})

// ---------------------------------------------------------------------------
// Pace, efficiency, determinism
// ---------------------------------------------------------------------------

interface BulkResult {
  finishMs: number
  aStats: DatagramSession['stats']
  bStats: DatagramSession['stats']
  symbolSize: number
  frames: Uint8Array[]
  sendTimes: number[]
  sendSizes: number[]
  /** a's packets that carried a symbol, and how many of them also carried an ack. */
  symbolPackets: number
  symbolPacketsWithAck: number
}

async function bulk(o: PairOptions & { bytes: number }): Promise<BulkResult> {
  const p = makePair({ ...o, keepLog: true })
  const frames = bulkFrames(o.bytes, 9)
  for (const f of frames) p.a.session.send(f)
  await runUntil(p, () => p.b.frames.length >= frames.length, 900_000)
  expectFrames(p.b.frames, frames)
  return {
    finishMs: p.b.frameAt.at(-1)!,
    aStats: { ...p.a.session.stats },
    bStats: { ...p.b.session.stats },
    symbolSize: p.a.session.symbolSize,
    frames,
    sendTimes: p.ab.log.map((s) => s.at),
    sendSizes: p.ab.log.map((s) => s.body.length + OVERHEAD + IP_UDP_BYTES),
    symbolPackets: p.ab.log.filter((s) => decodeBody(s.body).symbol).length,
    symbolPacketsWithAck: p.ab.log.filter((s) => { const b = decodeBody(s.body); return b.symbol && b.ack }).length,
  }
}

describe('DatagramSession: pace, efficiency, determinism', () => {
  it('with rateKbps R and no loss, 1 MB takes at least 1 MB·8/R ms and at most ~1.3× that', async () => {
    const R = 2000
    const r = await bulk({ seed: 41, bytes: MB, rateKbps: R, link: { delayMs: 20 } })
    const ideal = (MB * 8) / R
    expect(r.finishMs).toBeGreaterThanOrEqual(ideal)
    expect(r.finishMs).toBeLessThanOrEqual(1.3 * ideal)
    // The pacer never runs ahead of R: by each send, the wire bytes before it fit in R·t plus a packet or two.
    let bits = 0
    for (let i = 0; i < r.sendTimes.length; i++) {
      expect(bits, `packet ${i} at ${r.sendTimes[i]} ms`).toBeLessThanOrEqual(R * (r.sendTimes[i]! + 1) + 2 * 8 * 1200)
      bits += 8 * r.sendSizes[i]!
    }
  })

  it('a pace whose packet gap is not a whole millisecond (2.4 ms at 4000 kbit/s) is kept: late timers do not stretch every gap', async () => {
    const R = 4000
    const r = await bulk({ seed: 47, bytes: MB, rateKbps: R, link: { delayMs: 20 } })
    const wireMs = (r.sendSizes.reduce((n, b) => n + b, 0) * 8) / R
    // Rounding each gap up to 3 ms took 1.25× the wire time.
    expect(r.finishMs).toBeLessThan(1.05 * wireMs + 100)
  })

  it('efficiency at loss 0.5: packets sent for 1 MB < 1.35 × symbols needed ÷ (1 − 0.5)', async () => {
    const r = await bulk({ seed: 42, bytes: MB, rateKbps: 4000, link: { loss: 0.5, delayMs: 40 } })
    const needed = Math.ceil(streamBytes(r.frames) / r.symbolSize)
    expect(r.aStats.packetsSent).toBeLessThan((1.35 * needed) / (1 - 0.5))
  })

  it('efficiency at loss 0.8 with a 600 ms round trip, where the acks that get through are far apart: packets sent for 1 MB < 1.04 × symbols needed ÷ (1 − 0.8): symbols are not given up before an ack could have covered them', async () => {
    // With the bare timeout (no flightMs), 1.06 here: symbols given up on were sent for again.
    const r = await bulk({ seed: 45, bytes: MB, rateKbps: 1000, link: { loss: 0.8, delayMs: 300 } })
    const needed = Math.ceil(streamBytes(r.frames) / r.symbolSize)
    expect(r.aStats.packetsSent / (needed / (1 - 0.8))).toBeLessThan(1.04)
  })

  it('a sender that is owed no acks sends its symbols without one (the pace counts those bytes)', async () => {
    // b sends nothing but acks, and acks are not acked: a owes nothing after the opening.
    const r = await bulk({ seed: 46, bytes: 300_000, rateKbps: 1000, link: { loss: 0.3, delayMs: 50 } })
    expect(r.symbolPackets).toBeGreaterThan(250)
    expect(r.symbolPacketsWithAck).toBeLessThanOrEqual(2)
  })

  it('determinism: the same seed gives the same packet counts and finish time', async () => {
    const o = { seed: 43, bytes: 300_000, rateKbps: 1000, link: { loss: 0.3, delayMs: 50, jitterMs: 20, dup: 0.1 } }
    const x = await bulk(o)
    const y = await bulk(o)
    expect(y.finishMs).toBe(x.finishMs)
    expect(y.aStats).toEqual(x.aStats)
    expect(y.bStats).toEqual(x.bStats)
    expect(y.sendTimes).toEqual(x.sendTimes)
    const z = await bulk({ ...o, seed: 44 })
    expect([z.finishMs, z.aStats.packetsSent]).not.toEqual([x.finishMs, x.aStats.packetsSent])
  })
})

// ---------------------------------------------------------------------------
// Over real sealed packets
// ---------------------------------------------------------------------------

describe('DatagramSession over sealed packets', () => {
  it('client and relay sessions through datagram-crypto, with corrupted packets dropped by the AEAD', async () => {
    const sched = new Scheduler(51)
    const rng = sched.rng.fork('wire')
    const relaySk = rng.bytes(32)
    const { ephemeralPk, keys } = clientKeys(boxPublicKey(relaySk), rng.bytes(32))
    let relayKeysCache: ReturnType<typeof relayKeys> | undefined
    const got = { client: [] as Uint8Array[], relay: [] as Uint8Array[] }
    let rejected = 0
    const wire = (packet: Uint8Array, to: (p: Uint8Array) => void): void => {
      if (rng.next() < 0.3) return
      const p = packet.slice()
      if (rng.next() < 0.05) p[rng.int(p.length)]! ^= 1 << rng.int(8)
      sched.at(sched.now + 30, () => to(p), true)
    }
    const toRelay = (p: Uint8Array): void => {
      const h = peekHeader(p)
      if (!h || h.tag !== CLIENT_TAG) return void rejected++
      const k = relayKeys(relaySk, h.ephemeralPk!)
      const body = openPacket(h, k.up, p)
      if (!body) return void rejected++
      relayKeysCache ??= k
      relay.receive(h.pn, body)
    }
    const toClient = (p: Uint8Array): void => {
      const h = peekHeader(p)
      const body = h && h.tag === RELAY_TAG ? openPacket(h, keys.down, p) : undefined
      if (!h || !body) return void rejected++
      client.receive(h.pn, body)
    }
    const client: DatagramSession = new DatagramSession({
      env: sched,
      transmit: (pn, body) => wire(sealPacket(CLIENT_TAG, keys.up, pn, body, ephemeralPk), toRelay),
      packetOverhead: CLIENT_HEADER_BYTES + AEAD_TAG_BYTES,
      maxFrameBytes: MAX_FRAME,
      onFrame: (f) => got.client.push(f),
      onClose: (r) => expect.fail(`client closed: ${r}`),
      opener: true,
    })
    const relay: DatagramSession = new DatagramSession({
      env: sched,
      transmit: (pn, body) => wire(sealPacket(RELAY_TAG, relayKeysCache!.down, pn, body, SALT), toClient),
      packetOverhead: 5 + AEAD_TAG_BYTES,
      maxFrameBytes: MAX_FRAME,
      onFrame: (f) => {
        got.relay.push(f)
        relay.send(f) // echo
      },
      onClose: (r) => expect.fail(`relay closed: ${r}`),
    })
    const frames = mixedFrames(10, 10)
    for (const f of frames) client.send(f)
    await sched.run(EPOCH_MS + 600_000, { stop: () => got.client.length >= frames.length })
    expectFrames(got.relay, frames, 'client → relay')
    expectFrames(got.client, frames, 'relay → client (echo)')
    expect(rejected).toBeGreaterThan(0)
  })
})

// ---------------------------------------------------------------------------
// Priorities
// ---------------------------------------------------------------------------

describe('priorities', () => {
  const same = (x: Uint8Array, y: Uint8Array): boolean => Buffer.from(x).equals(Buffer.from(y))

  /** Split what arrived by the frames each priority sent (all frames distinct); every frame must be one of them. */
  function byLane(got: Uint8Array[], lanes: Map<number, Uint8Array[]>): Map<number, Uint8Array[]> {
    const index = new Map<string, number>()
    for (const [prio, frames] of lanes) for (const f of frames) index.set(Buffer.from(f).toString('base64'), prio)
    const out = new Map<number, Uint8Array[]>([...lanes.keys()].map((k) => [k, []]))
    for (const f of got) {
      const prio = index.get(Buffer.from(f).toString('base64'))
      expect(prio, `a frame of ${f.length} bytes that no lane sent (cut, merged or corrupted)`).toBeDefined()
      out.get(prio!)!.push(f)
    }
    return out
  }

  const LOW_FRAME = 60_000
  const LOW_FRAMES = 34 // 2.04 MB

  for (const loss of [0, 0.5]) {
    it(`loss ${loss}: a small priority-2 frame queued 5 ms after 2 MB of priority-1 frames arrives before a quarter of them; each priority in order, every frame once`, async () => {
      const p = makePair({ seed: 300 + loss * 10, link: { loss, delayMs: 40 }, rateKbps: 4000 })
      const low = Array.from({ length: LOW_FRAMES }, (_, i) => frame(LOW_FRAME, 3000 + i))
      for (const f of low) p.a.session.send(f, 1)
      const urgent = frame(300, 3999)
      const T = 5
      p.sched.at(EPOCH_MS + T, () => p.a.session.send(urgent, 2))
      await runUntil(p, () => p.b.frames.length >= low.length + 1, 600_000)
      // Let the link settle: nothing more arrives, nothing closes.
      await p.sched.run(p.sched.now + 30_000)
      expect(p.a.closes).toEqual([])
      expect(p.b.closes).toEqual([])

      const lanes = byLane(p.b.frames, new Map([[1, low], [2, [urgent]]]))
      expectFrames(lanes.get(1)!, low, 'priority 1')
      expectFrames(lanes.get(2)!, [urgent], 'priority 2')
      expect(p.b.frames).toHaveLength(low.length + 1)

      const ui = p.b.frames.findIndex((f) => same(f, urgent))
      const lowBytesBefore = ui * LOW_FRAME // every frame before it is a priority-1 frame
      const urgentAt = p.b.frameAt[ui]!
      const lastLowAt = p.b.frameAt.at(-1)!
      // By bytes: at most the blocks open when it was queued (MAX_OPEN_BYTES) went ahead of it.
      expect(lowBytesBefore).toBeLessThan(0.25 * LOW_FRAMES * LOW_FRAME)
      // And by time: long before the last priority-1 frame.
      expect(urgentAt).toBeLessThan(0.25 * lastLowAt)
      // Nothing after it but priority-1 frames, in order (checked above); and it did overtake most of them.
      expect(low.length - ui).toBeGreaterThan(0.75 * low.length)
    })
  }

  it('frames queued together in three priorities arrive highest first, each priority in order', async () => {
    const p = makePair({ seed: 310, link: { loss: 0.3, delayMs: 30 }, rateKbps: 4000 })
    const lanes = new Map<number, Uint8Array[]>([
      [0, mixedFrames(311, 8)],
      [1, mixedFrames(312, 8)],
      [5, mixedFrames(313, 8)],
    ])
    // Interleaved sends, all in one turn: the first block is formed after them.
    for (let i = 0; i < 8; i++) for (const prio of [0, 5, 1]) p.a.session.send(lanes.get(prio)![i]!, prio)
    await runUntil(p, () => p.b.frames.length >= 24, 600_000)
    await p.sched.run(p.sched.now + 30_000)
    expectFrames(p.b.frames, [...lanes.get(5)!, ...lanes.get(1)!, ...lanes.get(0)!])
    expect(p.a.closes).toEqual([])
  })

  for (const loss of [0, 0.3]) {
    it(`loss ${loss}: a frame a block cut in two is finished before an overtaking frame starts; frames arrive whole, byte for byte`, async () => {
      // Small packets (mtu 400: blocks of ~37 KB), so every 60 KB frame spans two or three blocks and
      // the overtaking frames are queued while one is cut: they must wait for its rest.
      const p = makePair({ seed: 320 + loss * 10, mtu: 400, link: { loss, delayMs: 30, jitterMs: 10 }, rateKbps: 4000 })
      const blockBytes = MAX_BLOCK_SYMBOLS * p.a.session.symbolSize
      expect(LOW_FRAME).toBeGreaterThan(blockBytes)
      const low = Array.from({ length: 16 }, (_, i) => frame(LOW_FRAME, 3100 + i))
      for (const f of low) p.a.session.send(f, 0)
      // Overtaking frames of two priorities, some of them spanning blocks themselves, sent at odd moments.
      const mid = Array.from({ length: 6 }, (_, i) => frame(i % 2 ? 45_000 : 700 + i, 3200 + i))
      const high = Array.from({ length: 12 }, (_, i) => frame(i % 3 === 2 ? 50_000 : 1 + 97 * i, 3300 + i))
      let sentWhileCut = 0
      const cut = (): boolean => (p.a.session as unknown as { partial: Uint8Array | undefined }).partial !== undefined
      mid.forEach((f, i) => p.sched.at(EPOCH_MS + 40 + i * 311, () => p.a.session.send(f, 1)))
      high.forEach((f, i) =>
        p.sched.at(EPOCH_MS + 17 + i * 173, () => {
          if (cut()) sentWhileCut++
          p.a.session.send(f, 2)
        }),
      )
      const total = low.length + mid.length + high.length
      await runUntil(p, () => p.b.frames.length >= total, 600_000)
      await p.sched.run(p.sched.now + 30_000)
      expect(p.a.closes).toEqual([])
      expect(p.b.closes).toEqual([])
      // The case under test did happen: overtaking frames were queued while a frame was cut.
      expect(sentWhileCut).toBeGreaterThan(3)

      // Whole, byte for byte, once, and in order within each priority.
      const got = byLane(p.b.frames, new Map([[0, low], [1, mid], [2, high]]))
      expectFrames(got.get(0)!, low, 'priority 0')
      expectFrames(got.get(1)!, mid, 'priority 1')
      expectFrames(got.get(2)!, high, 'priority 2')
      expect(p.b.frames).toHaveLength(total)
      // And they did overtake: every priority-2 frame arrived before the last priority-0 frame.
      const lastLow = p.b.frames.findIndex((f) => same(f, low.at(-1)!))
      for (const f of high) expect(p.b.frames.findIndex((g) => same(g, f))).toBeLessThan(lastLow)
    })
  }
})

describe('review regressions', () => {
  /** Two sessions over a delay line; `drop` filters a→b bodies. Counts events run at one virtual instant (a spinning timer). */
  function pairWith(opts: { delayMs: number; drop?: (body: Uint8Array, t: number) => boolean; seed: number }) {
    const sched = new Scheduler(opts.seed)
    const ends: Record<'a' | 'b', DatagramSession> = {} as never
    const closes: string[] = []
    const frames: Uint8Array[] = []
    const link = (to: 'a' | 'b', drop?: (body: Uint8Array, t: number) => boolean) => (pn: number, body: Uint8Array) => {
      if (drop?.(body, sched.elapsed)) return
      const copy = body.slice()
      sched.at(sched.now + opts.delayMs, () => ends[to].receive(pn, copy), true)
    }
    const mk = (to: 'a' | 'b', opener: boolean, drop?: (body: Uint8Array, t: number) => boolean) =>
      new DatagramSession({ env: sched, transmit: link(to, drop), packetOverhead: 53, rateKbps: 4000, maxFrameBytes: 65_000, opener, onFrame: (f) => frames.push(f), onClose: (r) => closes.push(r) })
    ends.b = mk('a', false)
    ends.a = mk('b', true, opts.drop)
    let last = -1
    let same = 0
    let maxSame = 0
    const run = (until: number) =>
      sched.run(EPOCH_MS + until, {
        stop: () => {
          if (sched.now === last) maxSame = Math.max(maxSame, ++same)
          else [same, last] = [0, sched.now]
          return false
        },
      })
    return { sched, ends, closes, frames, run, maxSame: () => maxSame }
  }

  it('blocks decoded out of order never push a new block past the receiver’s window (no reset)', async () => {
    // Block 0's symbols are lost for 5 s while small frames keep coming: later blocks decode, block 0 does not.
    const p = pairWith({ seed: 1, delayMs: 40, drop: (body, t) => decodeBody(body).symbol?.block === 0 && t < 5_000 })
    for (let i = 0; i < 20; i++) p.sched.at(EPOCH_MS + i * 100, () => p.ends.a.send(new Uint8Array(100).fill(i)))
    await p.run(60_000)
    expect(p.closes).toEqual([])
    expect(p.frames.map((f) => f[0])).toEqual([...Array(20).keys()])
  })

  it('the timer never spins: frames trickling in over a long round trip', async () => {
    const p = pairWith({ seed: 3, delayMs: 300 })
    for (let i = 0; i < 100; i++) p.sched.at(EPOCH_MS + i * 30, () => p.ends.a.send(new Uint8Array(50)))
    await p.run(30_000)
    expect(p.frames).toHaveLength(100)
    expect(p.maxSame()).toBeLessThan(50)
    expect(p.sched.events).toBeLessThan(5_000)
  })
})

describe('pace', () => {
  it('a peer never sends faster than the slower end says it can take (rateHint)', async () => {
    const sched = new Scheduler(4)
    const ends: Record<'client' | 'relay', DatagramSession> = {} as never
    let lastFrameAt = 0
    let frames = 0
    const link = (to: 'client' | 'relay') => (pn: number, body: Uint8Array) => {
      const copy = body.slice()
      sched.at(sched.now + 20, () => ends[to].receive(pn, copy), true)
    }
    const mk = (to: 'client' | 'relay', rateKbps: number, opener: boolean, onFrame: () => void) =>
      new DatagramSession({ env: sched, transmit: link(to), packetOverhead: 53, rateKbps, maxFrameBytes: 65_000, opener, onFrame, onClose: () => {} })
    ends.client = mk('relay', 200, true, () => {
      frames++
      lastFrameAt = sched.elapsed
    })
    ends.relay = mk('client', 4000, false, () => {})
    ends.client.send(new Uint8Array(10)) // the relay hears the client (and its rate) first
    await sched.run(EPOCH_MS + 1_000)
    const t0 = sched.elapsed
    for (let i = 0; i < 8; i++) ends.relay.send(new Uint8Array(60_000))
    await sched.run(EPOCH_MS + 120_000, { stop: () => frames >= 8 })
    expect(frames).toBe(8)
    // 480 KB at 200 kbit/s takes ≥ 19.2 s; at the relay's own 4000 kbit/s it would take ~1 s.
    expect(lastFrameAt - t0).toBeGreaterThan((480_000 * 8) / 200)
  })
})
