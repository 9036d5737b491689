/** Small byte helpers shared by the codecs. Pure. */

export const EMPTY = new Uint8Array(0)
const encoder = new TextEncoder()
// ignoreBOM: keep a leading U+FEFF as text; the default silently strips it, so strings would not round-trip.
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

export function utf8(s: string): Uint8Array {
  return encoder.encode(s)
}

/** Strict UTF-8 decode: throws on invalid sequences. */
export function fromUtf8(b: Uint8Array): string {
  return decoder.decode(b)
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  let d = 0
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!
  return d === 0
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
}

export function fromHex(s: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/.test(s)) throw new TypeError('not lowercase hex')
  return new Uint8Array(Buffer.from(s, 'hex'))
}

export function toBase64url(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url')
}

export function fromBase64url(s: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new TypeError('not base64url')
  const out = Buffer.from(s, 'base64url')
  // Buffer ignores a dangling character and non-zero padding bits; accept only the one canonical spelling.
  if (out.toString('base64url') !== s) throw new TypeError('not canonical base64url')
  return new Uint8Array(out)
}

/** Growable writer for fixed-layout binary encodings (big-endian). */
export class Writer {
  private buf: Uint8Array
  private view: DataView
  length = 0

  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity)
    this.view = new DataView(this.buf.buffer)
  }

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return
    let cap = Math.max(16, this.buf.length * 2)
    while (cap < this.length + n) cap *= 2
    const next = new Uint8Array(cap)
    next.set(this.buf.subarray(0, this.length))
    this.buf = next
    this.view = new DataView(next.buffer)
  }

  private static check(v: number, max: number): void {
    if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${v} does not fit in 0..${max}`)
  }

  u8(v: number): this {
    Writer.check(v, 0xff)
    this.reserve(1)
    this.view.setUint8(this.length, v)
    this.length += 1
    return this
  }

  u16(v: number): this {
    Writer.check(v, 0xffff)
    this.reserve(2)
    this.view.setUint16(this.length, v)
    this.length += 2
    return this
  }

  u32(v: number): this {
    Writer.check(v, 0xffffffff)
    this.reserve(4)
    this.view.setUint32(this.length, v)
    this.length += 4
    return this
  }

  /** Unsigned integer up to 2^53-1 stored in 8 bytes. */
  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError('u64 out of range')
    this.reserve(8)
    this.view.setUint32(this.length, Math.floor(v / 2 ** 32))
    this.view.setUint32(this.length + 4, v >>> 0)
    this.length += 8
    return this
  }

  bytes(b: Uint8Array): this {
    this.reserve(b.length)
    this.buf.set(b, this.length)
    this.length += b.length
    return this
  }

  /** u32 length prefix then bytes. */
  lbytes(b: Uint8Array): this {
    return this.u32(b.length).bytes(b)
  }

  /** u16 length prefix then UTF-8. */
  str(s: string): this {
    const b = utf8(s)
    if (b.length > 0xffff) throw new RangeError('string too long')
    return this.u16(b.length).bytes(b)
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.length)
  }
}

/** Bounds-checked reader; every overrun throws a RangeError the caller maps to a typed error. */
export class Reader {
  private readonly view: DataView
  offset = 0

  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  }

  get remaining(): number {
    return this.buf.length - this.offset
  }

  private need(n: number): void {
    if (this.offset + n > this.buf.length) throw new RangeError(`truncated: need ${n} bytes at ${this.offset}`)
  }

  u8(): number {
    this.need(1)
    return this.view.getUint8(this.offset++)
  }

  u16(): number {
    this.need(2)
    const v = this.view.getUint16(this.offset)
    this.offset += 2
    return v
  }

  u32(): number {
    this.need(4)
    const v = this.view.getUint32(this.offset)
    this.offset += 4
    return v
  }

  u64(): number {
    this.need(8)
    const hi = this.view.getUint32(this.offset)
    const lo = this.view.getUint32(this.offset + 4)
    if (hi >= 2 ** 21) throw new RangeError('u64 beyond 2^53')
    this.offset += 8
    return hi * 2 ** 32 + lo
  }

  /** A view (no copy) of the next n bytes. */
  bytes(n: number): Uint8Array {
    this.need(n)
    const v = this.buf.subarray(this.offset, this.offset + n)
    this.offset += n
    return v
  }

  lbytes(max: number): Uint8Array {
    const n = this.u32()
    if (n > max) throw new RangeError(`field of ${n} bytes exceeds ${max}`)
    return this.bytes(n)
  }

  str(max = 0xffff): string {
    const n = this.u16()
    if (n > max) throw new RangeError(`string of ${n} bytes exceeds ${max}`)
    return fromUtf8(this.bytes(n))
  }

  rest(): Uint8Array {
    return this.bytes(this.remaining)
  }

  end(): void {
    if (this.remaining !== 0) throw new RangeError(`${this.remaining} trailing bytes`)
  }
}
