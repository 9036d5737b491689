/**
 * Wire frames: a one-byte type, then a fixed big-endian layout per type.
 * Decoding is strict (bounds, counts, trailing bytes) and never trusts a
 * length it has not checked against a limit. Every frame is idempotent:
 * receiving any of them twice changes nothing.
 */
import { fromUtf8, Reader, utf8, Writer } from './bytes.js'
import { ErrorCode, ProtocolError, WIRE_ERROR_CODES, errorCodeFromWire } from './errors.js'
import { HASH_BYTES } from './hash.js'
import { MAX_ORIGIN_BYTES } from './auth.js'
import type { Ranges } from './ranges.js'
import { validRanges } from './ranges.js'

export const PROTOCOL_VERSION = 1
/** Payload bytes per chunk: small enough to keep a lossy link's retransmits cheap. */
export const CHUNK_BYTES = 64 * 1024
/** The largest frame either side sends (CHUNK plus its header); also the ws maxPayload. */
export const MAX_FRAME_BYTES = CHUNK_BYTES + 256
/** Ids per QUERY/STORED/DONE frame, and entries per INDEX frame. */
export const MAX_IDS_PER_FRAME = 512
export const MAX_RANGES_PER_FRAME = 1024

/** HELLO flag: this relay takes uploads only from connections logged in (AUTH) with an allowed key. */
export const HELLO_UPLOAD_LOGIN = 0x01

export const FrameType = {
  HELLO: 0x01,
  AUTH: 0x02,
  AUTH_OK: 0x03,
  PUT: 0x10,
  QUERY: 0x11,
  STORED: 0x12,
  HAVE: 0x13,
  LIST: 0x20,
  INDEX: 0x21,
  GET: 0x22,
  CHUNK: 0x23,
  DONE: 0x24,
  ERROR: 0x7f,
} as const

export interface IndexEntry {
  id: Uint8Array
  size: number
  expiresAt: number
}

export type Frame =
  /** relay → client, first frame: the challenge to sign for mailbox access. */
  | { type: typeof FrameType.HELLO; version: number; challenge: Uint8Array; maxEnvelope: number; flags?: number | undefined }
  /** client → relay: proves ownership of the mailbox H(signPk), bound to the relay origin dialled (auth.ts). */
  | { type: typeof FrameType.AUTH; signPublicKey: Uint8Array; signature: Uint8Array; origin: string }
  | { type: typeof FrameType.AUTH_OK; mailbox: Uint8Array }
  /** client → relay: one chunk of an envelope. Self-describing, so no setup round trip. */
  | { type: typeof FrameType.PUT; id: Uint8Array; mailbox: Uint8Array; expiresAt: number; size: number; index: number; data: Uint8Array }
  /** client → relay: what do you hold of these? Answered by STORED and HAVE. */
  | { type: typeof FrameType.QUERY; ids: Uint8Array[] }
  /** relay → client: these envelopes are whole and fsynced (or were already delivered). */
  | { type: typeof FrameType.STORED; ids: Uint8Array[] }
  /** relay → client: the chunks of one envelope it holds on disk (empty = none). */
  | { type: typeof FrameType.HAVE; id: Uint8Array; size: number; have: Ranges }
  | { type: typeof FrameType.LIST; max: number }
  /** relay → client: mailbox contents; `more` when the listing was cut at `max`. */
  | { type: typeof FrameType.INDEX; more: boolean; entries: IndexEntry[] }
  | { type: typeof FrameType.GET; id: Uint8Array; want: Ranges }
  | { type: typeof FrameType.CHUNK; id: Uint8Array; size: number; index: number; data: Uint8Array }
  /** client → relay: these are on the recipient's disk; delete them. */
  | { type: typeof FrameType.DONE; ids: Uint8Array[] }
  /** `retryAfterMs`: for a refusal the sender should retry (RETRY_LATER, RATE_LIMITED, QUOTA), not before this long. */
  | { type: typeof FrameType.ERROR; code: ErrorCode; id: Uint8Array | undefined; message: string; retryAfterMs?: number | undefined }

export type FrameOf<T extends Frame['type']> = Extract<Frame, { type: T }>

const ZERO_ID = new Uint8Array(HASH_BYTES)

export function chunkCount(size: number): number {
  return Math.max(1, Math.ceil(size / CHUNK_BYTES))
}

/** Byte length of chunk `index` of an envelope of `size` bytes. */
export function chunkLength(size: number, index: number): number {
  return Math.min(CHUNK_BYTES, size - index * CHUNK_BYTES)
}

const MAX_ERROR_MESSAGE_BYTES = 500

/** The longest prefix of s whose UTF-8 encoding fits in maxBytes, cut at a character boundary. */
function clipUtf8(s: string, maxBytes: number): string {
  const b = utf8(s)
  if (b.length <= maxBytes) return s
  let end = maxBytes
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--
  return fromUtf8(b.subarray(0, end))
}

function writeIds(w: Writer, ids: readonly Uint8Array[]): void {
  if (ids.length > MAX_IDS_PER_FRAME) throw new RangeError('too many ids for one frame')
  w.u16(ids.length)
  for (const id of ids) {
    if (id.length !== HASH_BYTES) throw new RangeError(`id of ${id.length} bytes`)
    w.bytes(id)
  }
}

function writeRanges(w: Writer, r: Ranges): void {
  if (r.length > MAX_RANGES_PER_FRAME) throw new RangeError('too many ranges for one frame')
  w.u16(r.length)
  for (const [a, b] of r) w.u32(a).u32(b)
}

export function encodeFrame(f: Frame): Uint8Array {
  const w = new Writer(f.type === FrameType.PUT || f.type === FrameType.CHUNK ? f.data.length + 96 : 128)
  w.u8(f.type)
  switch (f.type) {
    case FrameType.HELLO:
      w.u8(f.version).bytes(f.challenge).u32(f.maxEnvelope)
      if (f.flags) w.u8(f.flags)
      break
    case FrameType.AUTH:
      w.bytes(f.signPublicKey).bytes(f.signature).str(f.origin)
      break
    case FrameType.AUTH_OK:
      w.bytes(f.mailbox)
      break
    case FrameType.PUT:
      w.bytes(f.id).bytes(f.mailbox).u64(f.expiresAt).u32(f.size).u32(f.index).bytes(f.data)
      break
    case FrameType.QUERY:
    case FrameType.STORED:
    case FrameType.DONE:
      writeIds(w, f.ids)
      break
    case FrameType.HAVE:
      w.bytes(f.id).u32(f.size)
      writeRanges(w, f.have)
      break
    case FrameType.LIST:
      w.u16(f.max)
      break
    case FrameType.INDEX:
      if (f.entries.length > MAX_IDS_PER_FRAME) throw new RangeError('too many entries for one frame')
      w.u8(f.more ? 1 : 0).u16(f.entries.length)
      for (const e of f.entries) w.bytes(e.id).u32(e.size).u64(e.expiresAt)
      break
    case FrameType.GET:
      w.bytes(f.id)
      writeRanges(w, f.want)
      break
    case FrameType.CHUNK:
      w.bytes(f.id).u32(f.size).u32(f.index).bytes(f.data)
      break
    case FrameType.ERROR:
      w.u16(WIRE_ERROR_CODES[f.code]).bytes(f.id ?? ZERO_ID).str(clipUtf8(f.message, MAX_ERROR_MESSAGE_BYTES))
      if (f.retryAfterMs !== undefined) w.u32(Math.min(0xffffffff, Math.max(0, Math.ceil(f.retryAfterMs))))
      break
  }
  return w.finish()
}

function readIds(r: Reader): Uint8Array[] {
  const n = r.u16()
  if (n > MAX_IDS_PER_FRAME) throw new RangeError(`${n} ids exceed ${MAX_IDS_PER_FRAME}`)
  const ids: Uint8Array[] = []
  for (let i = 0; i < n; i++) ids.push(r.bytes(HASH_BYTES))
  return ids
}

function readRanges(r: Reader, size: number): Ranges {
  const n = r.u16()
  if (n > MAX_RANGES_PER_FRAME) throw new RangeError(`${n} ranges exceed ${MAX_RANGES_PER_FRAME}`)
  const out: Ranges = []
  for (let i = 0; i < n; i++) out.push([r.u32(), r.u32()])
  if (!validRanges(out, chunkCount(size))) throw new RangeError('ranges not sorted, disjoint and within the envelope')
  return out
}

function checkChunk(size: number, index: number, data: Uint8Array, maxEnvelope: number): void {
  if (size === 0 || size > maxEnvelope) throw new RangeError(`envelope size ${size} outside 1..${maxEnvelope}`)
  if (index >= chunkCount(size)) throw new RangeError(`chunk ${index} beyond envelope of ${size} bytes`)
  if (data.length !== chunkLength(size, index)) throw new RangeError(`chunk ${index} is ${data.length} bytes, expected ${chunkLength(size, index)}`)
}

/**
 * Decode one frame. Byte fields are views into `bytes` (copy before keeping
 * them past the frame's handler). Throws ProtocolError(BAD_FRAME) on anything
 * malformed, with a reason fit to send back in an ERROR frame.
 */
export function decodeFrame(bytes: Uint8Array, maxEnvelope = Number.MAX_SAFE_INTEGER): Frame {
  if (bytes.length > MAX_FRAME_BYTES) throw new ProtocolError(ErrorCode.TOO_LARGE, `frame of ${bytes.length} bytes exceeds ${MAX_FRAME_BYTES}`)
  const r = new Reader(bytes)
  try {
    const type = r.u8()
    let f: Frame
    switch (type) {
      case FrameType.HELLO:
        f = { type, version: r.u8(), challenge: r.bytes(32), maxEnvelope: r.u32() }
        // An optional trailing flags byte: known bits only, and never 0 (absent is 0).
        if (r.remaining > 0) {
          const flags = r.u8()
          if (flags === 0 || flags & ~HELLO_UPLOAD_LOGIN) throw new RangeError(`HELLO flags 0x${flags.toString(16)}`)
          f.flags = flags
        }
        break
      case FrameType.AUTH:
        f = { type, signPublicKey: r.bytes(32), signature: r.bytes(64), origin: r.str(MAX_ORIGIN_BYTES) }
        break
      case FrameType.AUTH_OK:
        f = { type, mailbox: r.bytes(HASH_BYTES) }
        break
      case FrameType.PUT: {
        const id = r.bytes(HASH_BYTES)
        const mailbox = r.bytes(HASH_BYTES)
        const expiresAt = r.u64()
        const size = r.u32()
        const index = r.u32()
        const data = r.rest()
        checkChunk(size, index, data, maxEnvelope)
        f = { type, id, mailbox, expiresAt, size, index, data }
        break
      }
      case FrameType.QUERY:
      case FrameType.STORED:
      case FrameType.DONE:
        f = { type, ids: readIds(r) }
        break
      case FrameType.HAVE: {
        const id = r.bytes(HASH_BYTES)
        const size = r.u32()
        f = { type, id, size, have: readRanges(r, size) }
        break
      }
      case FrameType.LIST:
        f = { type, max: r.u16() }
        break
      case FrameType.INDEX: {
        const moreByte = r.u8()
        if (moreByte > 1) throw new RangeError(`INDEX more flag ${moreByte}`)
        const more = moreByte === 1
        const n = r.u16()
        if (n > MAX_IDS_PER_FRAME) throw new RangeError(`${n} entries exceed ${MAX_IDS_PER_FRAME}`)
        const entries: IndexEntry[] = []
        for (let i = 0; i < n; i++) entries.push({ id: r.bytes(HASH_BYTES), size: r.u32(), expiresAt: r.u64() })
        f = { type, more, entries }
        break
      }
      case FrameType.GET: {
        const id = r.bytes(HASH_BYTES)
        const n = r.u16()
        if (n > MAX_RANGES_PER_FRAME) throw new RangeError(`${n} ranges exceed ${MAX_RANGES_PER_FRAME}`)
        const want: Ranges = []
        for (let i = 0; i < n; i++) want.push([r.u32(), r.u32()])
        if (!validRanges(want, 0xffffffff)) throw new RangeError('ranges not sorted and disjoint')
        f = { type, id, want }
        break
      }
      case FrameType.CHUNK: {
        const id = r.bytes(HASH_BYTES)
        const size = r.u32()
        const index = r.u32()
        const data = r.rest()
        checkChunk(size, index, data, maxEnvelope)
        f = { type, id, size, index, data }
        break
      }
      case FrameType.ERROR: {
        const code = errorCodeFromWire(r.u16())
        const id = r.bytes(HASH_BYTES)
        const message = r.str(MAX_ERROR_MESSAGE_BYTES)
        // An optional trailing u32: the retry-after of a refusal.
        const retryAfterMs = r.remaining > 0 ? r.u32() : undefined
        f = { type, code, id: id.every((b) => b === 0) ? undefined : id, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) }
        break
      }
      default:
        throw new RangeError(`unknown frame type 0x${type.toString(16)}`)
    }
    r.end()
    return f
  } catch (err) {
    if (err instanceof ProtocolError) throw err
    throw new ProtocolError(ErrorCode.BAD_FRAME, `bad frame: ${(err as Error).message}`, { cause: err })
  }
}
