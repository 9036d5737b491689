/**
 * The relay engine fuzzed with fast-check: arbitrary bytes, frames of valid
 * layout with arbitrary field values, truncated and oversized frames, and
 * mutated PUTs of real sealed envelopes, each fed to a RelaySession. Proves:
 *
 *  - `receive` never throws; input that does not decode gets exactly one
 *    ERROR (BAD_FRAME, or TOO_LARGE past MAX_FRAME_BYTES) and the connection
 *    is closed; a well-formed frame gets its normal answer and stays open;
 *  - every answer comes within ANSWER_MS of `receive`, store work included,
 *    and every ERROR is typed (a known code, not INTERNAL, not a store
 *    failure that was not a ChaparError);
 *  - no envelope is ever stored under an id its bytes do not hash to; what
 *    the relay lists, calls stored or acks reads back whole; and a
 *    legitimate PUT afterwards is still STORED;
 *  - a long stream of garbage over many connections leaves the heap bounded,
 *    no connection counted open and no work in flight.
 *
 * Latency is measured on a clock that stops while this thread waits for a
 * CPU, and a late answer is measured once more before it fails the test, so
 * a loaded box or a GC pause is not blamed on the relay. An uncaught
 * exception or unhandled rejection anywhere fails the run.
 */
import { openSync, readSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { generateIdentity, type Identity } from '../../src/client/identity.js'
import { authMessage } from '../../src/protocol/auth.js'
import { concat, fromHex, toHex, utf8, Writer } from '../../src/protocol/bytes.js'
import { Kind, MAX_ENVELOPE_BYTES, seal } from '../../src/protocol/envelope.js'
import { ErrorCode, ProtocolError } from '../../src/protocol/errors.js'
import {
  CHUNK_BYTES,
  chunkCount,
  chunkLength,
  decodeFrame,
  encodeFrame,
  type Frame,
  type FrameOf,
  FrameType,
  MAX_FRAME_BYTES,
  MAX_IDS_PER_FRAME,
  MAX_RANGES_PER_FRAME,
  PROTOCOL_VERSION,
} from '../../src/protocol/frames.js'
import { HASH_BYTES, messageId } from '../../src/protocol/hash.js'
import { rangesFromIndices } from '../../src/protocol/ranges.js'
import { sign } from '../../src/protocol/signature.js'
import { MAX_LIST, type Relay } from '../../src/relay/relay-engine.js'
import { makeRelay } from '../helpers/pair.js'

const ORIGIN = 'ws://r1:80'
/** The bound: every input is answered this soon after `receive`, store work included. */
const ANSWER_MS = 50
/** How long past ANSWER_MS to keep waiting, so a late answer is reported with its latency rather than as missing. */
const LATE_MS = 1_000
const TTL_MS = 3600_000
const DAY_MS = 24 * 3600_000

const RUNS_BYTES = 2_000
const RUNS_FIELDS = 1_000
const RUNS_CUT_OR_GROWN = 1_000
/** Each run: 1..3 waves of 1..4 (mutated) PUTs at once, one connection each, to a new relay. */
const RUNS_MUTATED = 1_000
/** Truncations of frames up to this long are tried at every length; longer ones at random lengths. */
const EVERY_CUT_MAX_BYTES = 1_024

const HEAP_WARMUP_FRAMES = 2_000
const HEAP_FRAMES = 20_000
/** Frames one connection of the garbage stream carries before it is replaced (sooner if the relay closes it). */
const FRAMES_PER_SESSION = 100
/** The garbage stream waits for the store to catch up this often. */
const SETTLE_EVERY_FRAMES = 100
/** Carried by each garbage connection's link, standing in for a real transport's socket buffers: a leaked session is a measurable leak. */
const SESSION_BALLAST_BYTES = 32 * 1024
/** Allowed growth of heap plus ArrayBuffer memory over the garbage stream. */
const HEAP_GROWTH_BOUND = 64 * 1024 * 1024

type HelloFrame = FrameOf<typeof FrameType.HELLO>
type ErrorFrame = FrameOf<typeof FrameType.ERROR>

/** Codes a refusal may carry: every ErrorCode but INTERNAL, which would mean the relay failed itself. */
const TYPED_CODES = new Set<string>(Object.values(ErrorCode).filter((c) => c !== ErrorCode.INTERNAL))
/** How RelaySession.guard words a store failure that was not a ChaparError: typed on the wire, untyped in fact. */
const UNTYPED_FAILURE = 'relay storage error'
const typed = (e: ErrorFrame): boolean => TYPED_CODES.has(e.code) && !e.message.startsWith(UNTYPED_FAILURE)

const SCHEDSTAT = (() => {
  try {
    return openSync('/proc/thread-self/schedstat', 'r')
  } catch {
    return undefined
  }
})()
const schedstatBuf = Buffer.alloc(128)

/**
 * A clock in ms that stops while this thread is runnable but waiting for a
 * CPU (Linux schedstat: its second field): latencies measured on it are the
 * relay's own, not another process's load on a shared box. Where schedstat
 * is missing it is wall time.
 */
function runnableNow(): number {
  const wall = performance.now()
  if (SCHEDSTAT === undefined) return wall
  const n = readSync(SCHEDSTAT, schedstatBuf, 0, schedstatBuf.length, 0)
  return wall - Number(schedstatBuf.toString('latin1', 0, n).split(' ')[1]) / 1e6
}

const immediate = () => new Promise<void>((resolve) => setImmediate(resolve))

async function until(done: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms
  while (!done() && performance.now() < deadline) await immediate()
}

/** n pseudo-random bytes from a seed: any size, cheaply (fast-check picks n and the seed, not every byte). */
function filled(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n)
  let x = seed | 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    b[i] = x & 0xff
  }
  return b
}

function authFor(challenge: Uint8Array, who: Identity): Frame {
  return { type: FrameType.AUTH, signPublicKey: who.address.signPublicKey, signature: sign(authMessage(challenge, ORIGIN), who.signSecretKey), origin: ORIGIN }
}

interface Received {
  at: number
  frame: Frame
}

type Conn = ReturnType<typeof open>

/** A connection to `relay`, logged in as `who` if given; `ballast` rides on its link. */
function open(relay: Relay, who?: Identity, ballast?: Uint8Array) {
  const got: Received[] = []
  let closed: string | undefined
  const link = { send: (b: Uint8Array) => void got.push({ at: runnableNow(), frame: decodeFrame(b) }), close: (r?: string) => void (closed = r ?? ''), ballast }
  const s = relay.connect(link)
  if (who) {
    s.receive(encodeFrame(authFor((got[0]!.frame as HelloFrame).challenge, who)))
    expect(got.at(-1)!.frame.type).toBe(FrameType.AUTH_OK)
  }
  return { relay, who, got, closed: () => closed !== undefined, receive: (b: Uint8Array) => s.receive(b), close: () => s.close() }
}

/** What the relay owes an input: one ERROR and a closed connection if it does not decode, else at least `answers` answers. */
type Owed = { refused: ErrorCode } | { answers: number }

function owed(relay: Relay, bytes: Uint8Array, loggedIn: boolean): Owed {
  let f: Frame
  try {
    f = decodeFrame(bytes, relay.maxEnvelope)
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolError)
    return { refused: (err as ProtocolError).code }
  }
  switch (f.type) {
    case FrameType.QUERY:
      return { answers: f.ids.length } // a STORED or HAVE per id
    case FrameType.GET:
      return { answers: loggedIn && f.want.length === 0 ? 0 : 1 } // CHUNKs, or the ERROR that stops them
    case FrameType.DONE:
      return { answers: loggedIn ? 0 : 1 } // deletes silently
    default:
      return { answers: 1 } // PUT: STORED, HAVE or ERROR; AUTH, LIST; a frame only a relay sends: BAD_FRAME
  }
}

/** Follows a frame answered by silence on a logged-in connection: mailbox work runs in order, so its INDEX marks the frame done. */
const LIST_PROBE = encodeFrame({ type: FrameType.LIST, max: 0 })

/** Answers in `got`: a STORED acks each of its ids. */
const answerCount = (got: readonly Received[]): number => got.reduce((n, r) => n + (r.frame.type === FrameType.STORED ? r.frame.ids.length : 1), 0)

interface Pending {
  c: Conn
  bytes: Uint8Array
  due: Owed
  from: number
  t0: number
}

function offer(c: Conn, bytes: Uint8Array): Pending {
  let due = owed(c.relay, bytes, c.who !== undefined)
  const from = c.got.length
  const t0 = runnableNow()
  expect(() => c.receive(bytes)).not.toThrow()
  if ('answers' in due && due.answers === 0 && c.who) {
    c.receive(LIST_PROBE)
    due = { answers: 1 }
  }
  return { c, bytes, due, from, t0 }
}

/**
 * Wait for what `p` is owed and check it: typed, complete, and the
 * connection closed only for undecodable input. Returns how long the answer
 * took (0 for none owed).
 */
async function answer(p: Pending): Promise<number> {
  const { c, due } = p
  const want = 'refused' in due ? 1 : due.answers
  await until(() => answerCount(c.got.slice(p.from)) >= want, ANSWER_MS + LATE_MS)
  const got = c.got.slice(p.from)
  for (const { frame } of got) if (frame.type === FrameType.ERROR) expect(typed(frame), `untyped ERROR ${frame.code}: ${frame.message}`).toBe(true)
  if ('refused' in due) {
    expect(got.map((r) => r.frame)).toMatchObject([{ type: FrameType.ERROR, code: due.refused }])
    expect(c.closed(), 'connection left open after undecodable input').toBe(true)
  } else {
    expect(answerCount(got), 'answers').toBeGreaterThanOrEqual(want)
    expect(c.closed(), 'connection closed after a well-formed frame').toBe(false)
  }
  let n = 0
  const last = got.find((r) => (n += answerCount([r])) >= want)
  return last ? last.at - p.t0 : 0
}

/**
 * `answer`, and within ANSWER_MS. A late answer is measured once more, on
 * a new connection: a GC pause does not repeat, a slow path does.
 */
async function answered(p: Pending): Promise<void> {
  const ms = await answer(p)
  if (ms <= ANSWER_MS) return
  const again = await answer(offer(open(p.c.relay, p.c.who), p.bytes))
  expect(again, `answered after ${ms.toFixed(1)} ms, then after ${again.toFixed(1)} ms (runnable time)`).toBeLessThanOrEqual(ANSWER_MS)
}

const feed = (c: Conn, bytes: Uint8Array): Promise<void> => answered(offer(c, bytes))

const newRelay = () => makeRelay(undefined, undefined, { origins: [ORIGIN] })

// ---- Envelopes: real sealed ones, and the PUT frames of their chunks ----

interface Sealed {
  id: Uint8Array
  mailbox: Uint8Array
  puts: Uint8Array[]
}

function sealFor(to: Identity, fileBytes = 0): Sealed {
  const from = generateIdentity()
  const expiresAt = Date.now() + TTL_MS
  const file = fileBytes > 0 ? { name: 'f', data: filled(fileBytes, 1) } : undefined
  const env = seal({ from: { address: from.address, signSecretKey: from.signSecretKey }, to: to.address, content: { kind: Kind.report, text: 'hi', file }, createdAt: Date.now(), expiresAt })
  const id = messageId(env)
  const puts = Array.from({ length: chunkCount(env.length) }, (_, i) =>
    encodeFrame({ type: FrameType.PUT, id, mailbox: to.mailbox, expiresAt, size: env.length, index: i, data: env.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES) }),
  )
  return { id, mailbox: to.mailbox, puts }
}

const OWNER = generateIdentity()
const RECIPIENTS = [generateIdentity(), generateIdentity()]
const SINGLES = Array.from({ length: 5 }, (_, i) => sealFor(RECIPIENTS[i % 2]!))
const MULTI = sealFor(RECIPIENTS[0]!, 2 * CHUNK_BYTES + 1000)
const POOL = [...SINGLES, MULTI]
const POOL_PUTS = POOL.flatMap((e) => e.puts)
/** PUT after the fuzz: no mutation can reach its id. */
const AFTER = sealFor(RECIPIENTS[1]!)

/** Valid client frames to cut short or extend. */
const VALID_FRAMES: Uint8Array[] = [
  SINGLES[0]!.puts[0]!,
  MULTI.puts[0]!, // a full chunk: a few bytes more and it is past MAX_FRAME_BYTES
  MULTI.puts[2]!,
  encodeFrame({ type: FrameType.QUERY, ids: POOL.map((e) => e.id) }),
  encodeFrame(authFor(filled(32, 7), OWNER)),
  encodeFrame({ type: FrameType.LIST, max: 100 }),
  encodeFrame({ type: FrameType.GET, id: MULTI.id, want: [[0, 3]] }),
  encodeFrame({ type: FrameType.DONE, ids: [SINGLES[0]!.id] }),
]

// ---- Arbitraries ----

const FRAME_TYPES = Object.values(FrameType)
const anyId = fc.uint8Array({ minLength: HASH_BYTES, maxLength: HASH_BYTES })
const u16 = fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(0, 1, MAX_IDS_PER_FRAME, MAX_IDS_PER_FRAME + 1, MAX_RANGES_PER_FRAME + 1, 0xffff))
const u32 = fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff))
const NOW = Date.now()
const expiry = fc.oneof(fc.integer({ min: NOW - DAY_MS, max: NOW + 40 * DAY_MS }), fc.maxSafeNat(), fc.constantFrom(0, Number.MAX_SAFE_INTEGER))
/** A declared count: usually the true one (null), else any u16, huge ones included. */
const count = fc.option(u16, { freq: 4 })

/** Any bytes, mostly short; some open with a frame type to get past the first switch; some up to past MAX_FRAME_BYTES. */
const anyBytes = fc.oneof(
  { weight: 6, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...FRAME_TYPES), fc.uint8Array({ maxLength: 512 })).map(([t, rest]) => concat([Uint8Array.of(t), rest])) },
  {
    weight: 1,
    arbitrary: fc.record({ type: fc.option(fc.constantFrom(...FRAME_TYPES)), n: fc.integer({ min: 1, max: MAX_FRAME_BYTES + 1000 }), seed: fc.integer() }).map((f) => {
      const b = filled(f.n, f.seed)
      if (f.type !== null) b[0] = f.type
      return b
    }),
  },
)

const put = fc
  .record({
    id: anyId,
    mailbox: anyId,
    expiresAt: expiry,
    size: fc.oneof(fc.integer({ min: 1, max: 3 * CHUNK_BYTES }), u32, fc.constantFrom(MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES + 1)),
    index: fc.oneof(fc.integer({ min: 0, max: 3 }), u32),
    /** null: the length the size and index call for. */
    dataBytes: fc.option(fc.integer({ min: 0, max: 300 }), { freq: 2 }),
    seed: fc.integer(),
  })
  .map((f) => {
    const data = filled(f.dataBytes ?? Math.max(0, chunkLength(f.size, f.index)), f.seed)
    return new Writer().u8(FrameType.PUT).bytes(f.id).bytes(f.mailbox).u64(f.expiresAt).u32(f.size).u32(f.index).bytes(data).finish()
  })

const ids = fc
  .record({ type: fc.constantFrom(FrameType.QUERY, FrameType.DONE, FrameType.STORED), n: fc.integer({ min: 0, max: MAX_IDS_PER_FRAME + 4 }), count, seed: fc.integer() })
  .map((f) => new Writer().u8(f.type).u16(f.count ?? f.n).bytes(filled(f.n * HASH_BYTES, f.seed)).finish())

const ranges = fc.oneof(
  fc.array(fc.tuple(u32, u32), { maxLength: 6 }),
  fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 80 }).map(rangesFromIndices),
  fc.constant<Array<[number, number]>>([[0, 0xffffffff]]),
)

const get = fc.record({ id: anyId, want: ranges, count }).map((f) => {
  const w = new Writer().u8(FrameType.GET).bytes(f.id).u16(f.count ?? f.want.length)
  for (const [a, b] of f.want) w.u32(a).u32(b)
  return w.finish()
})

const list = u16.map((max) => new Writer().u8(FrameType.LIST).u16(max).finish())

const auth = fc
  .record({ pk: anyId, signature: fc.uint8Array({ minLength: 64, maxLength: 64 }), origin: fc.oneof(fc.constant(utf8(ORIGIN)), fc.uint8Array({ maxLength: 300 })), count })
  .map((f) => new Writer().u8(FrameType.AUTH).bytes(f.pk).bytes(f.signature).u16(f.count ?? f.origin.length).bytes(f.origin).finish())

/** Well-formed frames only a relay sends. */
const relayBound = fc.oneof(
  fc.record({ challenge: anyId, maxEnvelope: u32 }).map((f) => encodeFrame({ type: FrameType.HELLO, version: PROTOCOL_VERSION, ...f })),
  anyId.map((mailbox) => encodeFrame({ type: FrameType.AUTH_OK, mailbox })),
  fc.record({ id: anyId, size: fc.integer({ min: 1, max: CHUNK_BYTES }), seed: fc.integer() }).map((f) =>
    encodeFrame({ type: FrameType.CHUNK, id: f.id, size: f.size, index: 0, data: filled(f.size, f.seed) }),
  ),
  fc.record({ code: fc.constantFrom(...Object.values(ErrorCode)), id: fc.option(anyId, { nil: undefined }), message: fc.string({ maxLength: 64 }) }).map((f) =>
    encodeFrame({ type: FrameType.ERROR, ...f }),
  ),
)

/** Sometimes a few bytes too many. */
const trailing = (frame: fc.Arbitrary<Uint8Array>) =>
  fc.tuple(frame, fc.option(fc.uint8Array({ minLength: 1, maxLength: 8 }), { freq: 5 })).map(([f, extra]) => (extra ? concat([f, extra]) : f))

/** Valid layouts of every frame type, with arbitrary ids, sizes, indices, expiries, ranges, origins and counts. */
const anyFields = trailing(fc.oneof(put, ids, get, list, auth, relayBound))

/** A valid frame cut short, or with bytes after it: as many as take it past MAX_FRAME_BYTES. */
const cutOrGrown = fc.oneof(
  fc.record({ frame: fc.nat(VALID_FRAMES.length - 1), cut: fc.nat() }).map(({ frame, cut }) => {
    const f = VALID_FRAMES[frame]!
    return f.subarray(0, cut % f.length)
  }),
  fc
    .record({ frame: fc.nat(VALID_FRAMES.length - 1), extra: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: MAX_FRAME_BYTES + 1000 })), seed: fc.integer() })
    .map(({ frame, extra, seed }) => concat([VALID_FRAMES[frame]!, filled(extra, seed)])),
)

/** Offsets of a PUT's fields: type(1) id(32) mailbox(32) expiresAt(8) size(4) index(4), then the data. */
const PUT_AT = { id: 1, mailbox: 33, expiresAt: 65, size: 73, index: 77, data: 81 } as const

const mutation = fc.oneof(
  { weight: 3, arbitrary: fc.record({ flip: fc.array(fc.record({ at: fc.oneof(fc.nat(PUT_AT.data - 1), fc.nat()), bit: fc.nat(7) }), { minLength: 1, maxLength: 4 }) }) },
  fc.record({ field: fc.constantFrom('size' as const, 'index' as const), to: u32 }),
  fc.record({ field: fc.constantFrom('size' as const, 'index' as const), by: fc.integer({ min: -2, max: 2 }) }),
  fc.record({ field: fc.constant('expiresAt' as const), to: expiry }),
  fc.record({ field: fc.constant('expiresAt' as const), by: fc.integer({ min: -1000, max: 1000 }) }),
  fc.record({ field: fc.constantFrom('id' as const, 'mailbox' as const), from: fc.nat(POOL.length - 1) }),
)
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never

function mutate(put: Uint8Array, m: Mutation): Uint8Array {
  const b = put.slice()
  const v = new DataView(b.buffer)
  if ('flip' in m) {
    for (const { at, bit } of m.flip) b[at % b.length] = b[at % b.length]! ^ (1 << bit)
  } else if ('from' in m) {
    b.set(m.field === 'id' ? POOL[m.from]!.id : POOL[m.from]!.mailbox, PUT_AT[m.field])
  } else if (m.field === 'expiresAt') {
    const old = v.getUint32(PUT_AT.expiresAt) * 2 ** 32 + v.getUint32(PUT_AT.expiresAt + 4)
    const at = 'to' in m ? m.to : Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, old + m.by))
    v.setUint32(PUT_AT.expiresAt, Math.floor(at / 2 ** 32))
    v.setUint32(PUT_AT.expiresAt + 4, at >>> 0)
  } else {
    v.setUint32(PUT_AT[m.field], 'to' in m ? m.to : (v.getUint32(PUT_AT[m.field]) + m.by) >>> 0)
  }
  return b
}

/**
 * One of the first `of` POOL_PUTS (the one-chunk envelopes lead), mutated
 * or not: kept as data, so that a counterexample reads as what was done.
 */
const mutatedPut = (of = POOL_PUTS.length) => fc.record({ put: fc.nat(of - 1), mutation: fc.option(mutation, { freq: 4, nil: undefined }) })
type MutatedPut = { put: number; mutation: Mutation | undefined }
const putBytes = ({ put, mutation }: MutatedPut): Uint8Array => (mutation ? mutate(POOL_PUTS[put]!, mutation) : POOL_PUTS[put]!)

/**
 * What `relay` holds after `puts` is sound: whatever it lists reads back
 * whole and hashes to its id, and whatever it calls stored (held, or
 * acked with STORED) is listed. Returns the ids listed.
 */
async function expectSound(relay: Relay, puts: readonly Uint8Array[], acked: ReadonlySet<string>): Promise<Set<string>> {
  const offered = puts.filter((b) => b.length >= PUT_AT.expiresAt)
  const listed = new Set<string>()
  for (const hex of new Set(offered.map((b) => toHex(b.subarray(PUT_AT.mailbox, PUT_AT.expiresAt))))) {
    const mailbox = fromHex(hex)
    for (const e of (await relay.store.list(mailbox, MAX_LIST, Date.now())).entries) {
      const id = toHex(e.id)
      expect((await relay.store.holding(e.id)).kind, `${id} is listed but not held as stored`).toBe('stored')
      const chunks: Uint8Array[] = []
      for (let i = 0; i < chunkCount(e.size); i++) {
        const chunk = await relay.store.chunk(e.id, mailbox, i)
        expect(chunk, `chunk ${i} of listed ${id}`).toBeDefined()
        chunks.push(chunk!.data)
      }
      const env = concat(chunks)
      expect(env.length).toBe(e.size)
      expect(toHex(messageId(env)), 'a stored envelope hashes to its id').toBe(id)
      listed.add(id)
    }
  }
  for (const id of new Set(offered.map((b) => toHex(b.subarray(PUT_AT.id, PUT_AT.mailbox))))) {
    if ((await relay.store.holding(fromHex(id))).kind === 'stored') expect(listed.has(id), `${id} is held as stored but not listed`).toBe(true)
  }
  for (const id of acked) expect(listed.has(id), `${id} was acked STORED but is not listed`).toBe(true)
  const check = await relay.store.check()
  expect(check.problems, 'every key of the store belongs to a consistent envelope').toEqual([])
  expect(check.whole).toEqual(listed)
  return listed
}

// ---- Properties ----

describe('relay engine fuzz', () => {
  it('answers arbitrary bytes: one typed ERROR and a closed connection, or a well-formed frame\'s answer', async () => {
    const relay = await newRelay()
    await fc.assert(
      fc.asyncProperty(anyBytes, (bytes) => feed(open(relay), bytes)),
      { numRuns: RUNS_BYTES },
    )
  })

  it('answers valid frame layouts with arbitrary field values, logged in or not', async () => {
    const relay = await newRelay()
    await fc.assert(
      fc.asyncProperty(anyFields, fc.boolean(), (bytes, loggedIn) => feed(open(relay, loggedIn ? OWNER : undefined), bytes)),
      { numRuns: RUNS_FIELDS },
    )
  })

  it('refuses every truncation of a valid frame with BAD_FRAME and closes the connection', async () => {
    const relay = await newRelay()
    for (const frame of VALID_FRAMES.filter((f) => f.length <= EVERY_CUT_MAX_BYTES)) {
      for (let n = 0; n < frame.length; n++) {
        const cut = frame.subarray(0, n)
        expect(owed(relay, cut, false)).toEqual({ refused: ErrorCode.BAD_FRAME })
        await feed(open(relay), cut)
      }
    }
  })

  it('refuses valid frames cut short or grown with BAD_FRAME, or TOO_LARGE past MAX_FRAME_BYTES, and closes', async () => {
    const relay = await newRelay()
    await fc.assert(
      fc.asyncProperty(cutOrGrown, async (bytes) => {
        expect(owed(relay, bytes, false)).toEqual({ refused: bytes.length > MAX_FRAME_BYTES ? ErrorCode.TOO_LARGE : ErrorCode.BAD_FRAME })
        await feed(open(relay), bytes)
      }),
      { numRuns: RUNS_CUT_OR_GROWN },
    )
  })

  it('never stores an envelope under an id its bytes do not hash to, under mutated PUTs, and keeps storing good ones', async () => {
    let stored = 0
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(mutatedPut(), { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 3 }), async (waves) => {
        // A relay of its own, to which every pool envelope is new.
        const relay = await newRelay()
        const acked = new Set<string>()
        const puts = waves.map((wave) => wave.map(putBytes))
        for (const wave of puts) {
          // Sent at once, one connection each, so that chunks under one id meet in the store.
          const pending = wave.map((bytes) => offer(open(relay), bytes))
          for (const p of pending) {
            await answered(p)
            for (const { frame } of p.c.got) if (frame.type === FrameType.STORED) for (const id of frame.ids) acked.add(toHex(id))
          }
        }
        stored += (await expectSound(relay, puts.flat(), acked)).size
        const c = open(relay)
        await feed(c, AFTER.puts[0]!)
        expect(c.got.at(-1)!.frame, 'a legitimate PUT afterwards').toMatchObject({ type: FrameType.STORED, ids: [AFTER.id] })
      }),
      { numRuns: RUNS_MUTATED },
    )
    expect(stored, 'pool envelopes were stored').toBeGreaterThan(0)
  })

  it('keeps the heap bounded over a long stream of garbage on many connections', async () => {
    const relay = await newRelay()
    // Nothing here is stored but the pool's few one-chunk envelopes, so the store does not grow either.
    const garbage = fc.oneof(anyBytes, cutOrGrown, mutatedPut(SINGLES.length).map(putBytes), fc.oneof(ids, get, list, auth, relayBound))
    const connect = () => open(relay, undefined, new Uint8Array(SESSION_BALLAST_BYTES))
    let c = connect()
    let carried = 0
    let fed = 0
    let sessions = 0
    const stream = (frames: number) =>
      fc.assert(
        fc.asyncProperty(garbage, async (bytes) => {
          if (c.closed() || carried === FRAMES_PER_SESSION) {
            c.close() // what the transport does when the socket goes
            c = connect()
            carried = 0
            sessions++
          }
          carried++
          expect(() => c.receive(bytes)).not.toThrow()
          if (++fed % SETTLE_EVERY_FRAMES === 0) await until(() => relay.inFlightOps === 0, LATE_MS)
        }),
        { numRuns: frames },
      )
    const settledMemory = async (): Promise<number> => {
      await until(() => relay.inFlightOps === 0, LATE_MS)
      for (let i = 0; i < 3; i++) {
        await immediate()
        ;(globalThis as { gc?: () => void }).gc?.()
      }
      const m = process.memoryUsage()
      return m.heapUsed + m.arrayBuffers
    }

    await stream(HEAP_WARMUP_FRAMES)
    const before = await settledMemory()
    sessions = 0
    await stream(HEAP_FRAMES)
    c.close()
    const after = await settledMemory()

    expect(relay.inFlightOps).toBe(0)
    expect(relay.counters.open).toBe(0)
    // Big enough that keeping every connection (and so its ballast) would break the bound several times over.
    expect(sessions * SESSION_BALLAST_BYTES).toBeGreaterThan(4 * HEAP_GROWTH_BOUND)
    expect(after - before, `grew ${((after - before) / 2 ** 20).toFixed(1)} MB over ${HEAP_FRAMES} frames, ${sessions} connections`).toBeLessThan(HEAP_GROWTH_BOUND)
  })
})
