import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import nacl from 'tweetnacl'
import type { Address } from '../../src/protocol/address.js'
import { Writer, concat, toHex, utf8 } from '../../src/protocol/bytes.js'
import { ChaparError, ErrorCode } from '../../src/protocol/errors.js'
import { mailboxId } from '../../src/protocol/hash.js'
import {
  BOX_OVERHEAD,
  type Content,
  ENVELOPE_MAGIC,
  HEADER_BYTES,
  Kind,
  MAX_ENVELOPE_BYTES,
  MAX_FILE_BYTES,
  MAX_TEXT_BYTES,
  MIN_ENVELOPE_BYTES,
  Priority,
  type Report,
  decodeHeader,
  encodeHeader,
  open,
  seal,
} from '../../src/protocol/envelope.js'
import { generateIdentity, type Identity } from '../../src/client/identity.js'

/** Deterministic byte source: SHA-256(seed ‖ counter) stream. */
function seededRandom(seed: string): (n: number) => Uint8Array {
  let counter = 0
  return (n) => {
    const out = new Uint8Array(n)
    for (let o = 0; o < n; o += 32) {
      const block = createHash('sha256').update(`${seed}/${counter++}`).digest()
      out.set(block.subarray(0, Math.min(32, n - o)), o)
    }
    return out
  }
}

const alice = generateIdentity(seededRandom('alice'))
const bob = generateIdentity(seededRandom('bob'))
const carol = generateIdentity(seededRandom('carol'))
const mallory = generateIdentity(seededRandom('mallory'))

const CREATED = 1_800_000_000_000
const EXPIRES = CREATED + 7 * 24 * 3600 * 1000
const SIGN_DOMAIN = utf8('chapar/v1/envelope\0')
// Header layout offsets.
const MAILBOX_AT = 4
const EXPIRY_AT = 36
const EPHEMERAL_AT = 44
const NONCE_AT = 76

const sealFor = (to: Identity, content: Content, extra: { priority?: number; randomBytes?: (n: number) => Uint8Array; from?: Identity } = {}): Uint8Array =>
  seal({
    from: extra.from ?? alice,
    to: to.address,
    content,
    createdAt: CREATED,
    expiresAt: EXPIRES,
    ...(extra.priority !== undefined ? { priority: extra.priority } : {}),
    ...(extra.randomBytes ? { randomBytes: extra.randomBytes } : {}),
  })

const openBy = (env: Uint8Array, me: Identity) => open(env, { address: me.address, boxSecretKey: me.boxSecretKey })

function chaparError(fn: () => unknown): ChaparError {
  let err: unknown
  try {
    fn()
  } catch (e) {
    err = e
  }
  expect(err, 'expected a ChaparError').toBeInstanceOf(ChaparError)
  return err as ChaparError
}

const contains = (hay: Uint8Array, needle: Uint8Array): boolean => Buffer.from(hay).indexOf(Buffer.from(needle)) !== -1

// --- an independent encoder for the body and the sealed form (from the module's doc comment) ---
function bodyBytes(args: { from: Address; toSignPk: Uint8Array; createdAt?: number; kind: number; priority?: number; rest: Uint8Array }): Uint8Array {
  return new Writer()
    .bytes(args.from.signPublicKey)
    .bytes(args.from.boxPublicKey)
    .bytes(args.toSignPk)
    .u64(args.createdAt ?? CREATED)
    .u8(args.kind)
    .u8(args.priority ?? Priority.normal)
    .bytes(args.rest)
    .finish()
}

function handSeal(args: {
  body: Uint8Array
  signSecretKey?: Uint8Array
  signature?: Uint8Array
  mailbox?: Uint8Array
  boxTo?: Uint8Array
  expiresAt?: number
  ephemeralSecret?: Uint8Array
  nonce?: Uint8Array
}): Uint8Array {
  const eph = nacl.box.keyPair.fromSecretKey(args.ephemeralSecret ?? nacl.randomBytes(32))
  const nonce = args.nonce ?? nacl.randomBytes(24)
  const header = concat([
    ENVELOPE_MAGIC,
    args.mailbox ?? bob.mailbox,
    new Writer().u64(args.expiresAt ?? EXPIRES).finish(),
    eph.publicKey,
    nonce,
  ])
  const signature = args.signature ?? nacl.sign.detached(concat([SIGN_DOMAIN, header, args.body]), args.signSecretKey ?? alice.signSecretKey)
  return concat([header, nacl.box(concat([signature, args.body]), nonce, args.boxTo ?? bob.address.boxPublicKey, eph.secretKey)])
}

const textRest = (text: Uint8Array | undefined, file?: { name: Uint8Array; data: Uint8Array }, ref?: Uint8Array): Uint8Array => {
  const w = new Writer()
  if (text) w.u8(1).lbytes(text)
  else w.u8(0)
  if (file) w.u8(1).u16(file.name.length).bytes(file.name).lbytes(file.data)
  else w.u8(0)
  if (ref) w.u8(1).bytes(ref)
  return w.finish()
}

const noBom = (s: string): boolean => !s.startsWith('\uFEFF')

describe('constants and layout', () => {
  it('has the documented sizes', () => {
    expect([...ENVELOPE_MAGIC]).toEqual([0x43, 0x48, 0x50, 0x01])
    expect(HEADER_BYTES).toBe(100)
    expect(BOX_OVERHEAD).toBe(16)
    // header + MAC + signature + from(64) + to(32) + createdAt(8) + kind + priority
    expect(MIN_ENVELOPE_BYTES).toBe(100 + 16 + 64 + 96 + 8 + 2)
    expect(MAX_ENVELOPE_BYTES).toBeGreaterThan(MAX_FILE_BYTES + MAX_TEXT_BYTES)
  })

  it('seal produces exactly header ‖ box(Ed25519 sig ‖ body), byte for byte', () => {
    const content: Report = { kind: Kind.report, text: 'hello', file: { name: 'a.txt', data: Uint8Array.of(1, 2, 3) } }
    const env = sealFor(bob, content, { randomBytes: seededRandom('layout'), priority: Priority.urgent })
    const rnd = seededRandom('layout')
    const expected = handSeal({
      body: bodyBytes({ from: alice.address, toSignPk: bob.address.signPublicKey, kind: Kind.report, priority: Priority.urgent, rest: textRest(utf8('hello'), { name: utf8('a.txt'), data: Uint8Array.of(1, 2, 3) }) }),
      ephemeralSecret: rnd(32),
      nonce: rnd(24),
    })
    expect(toHex(env)).toBe(toHex(expected))
  })

  it('has the expected length for a text report', () => {
    const env = sealFor(bob, { kind: Kind.report, text: 'hello' })
    const body = 96 + 8 + 1 + 1 + (1 + 4 + 5) + 1 // …, no file; no ref, not even its marker
    expect(env.length).toBe(HEADER_BYTES + BOX_OVERHEAD + 64 + body)
  })
})

describe('seal / open round trip', () => {
  const cases: Array<[string, Content]> = [
    ['text', { kind: Kind.report, text: 'Bridge on route 7 is down; use the ford.' }],
    ['unicode text', { kind: Kind.report, text: 'پل جاده ۷ خراب است — 🚧' }],
    ['empty text', { kind: Kind.report, text: '' }],
    ['file', { kind: Kind.report, file: { name: 'photo.jpg', data: new Uint8Array(70_000).map((_, i) => (i * 31) & 0xff) } }],
    ['empty file with unicode name', { kind: Kind.report, file: { name: 'گزارش.txt', data: new Uint8Array(0) } }],
    ['text + file', { kind: Kind.report, text: 'see attached', file: { name: 'map.pdf', data: Uint8Array.of(0x25, 0x50, 0x44, 0x46) } }],
    ['empty report', { kind: Kind.report }],
    ['attachment naming its report', { kind: Kind.report, file: { name: 'video.mp4', data: new Uint8Array(1000).fill(7) }, ref: new Uint8Array(32).fill(9) }],
    ['receipt', { kind: Kind.receipt, ids: [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2), new Uint8Array(createHash('sha256').update('x').digest())] }],
    ['empty receipt', { kind: Kind.receipt, ids: [] }],
  ]

  it.each(cases)('%s', (_name, content) => {
    const env = sealFor(bob, content)
    const opened = openBy(env, bob)
    expect(opened.content).toEqual(content)
    expect(Object.keys(opened.content).sort()).toEqual(Object.keys(content).sort())
    expect(opened.from.signPublicKey).toEqual(alice.address.signPublicKey)
    expect(opened.from.boxPublicKey).toEqual(alice.address.boxPublicKey)
    expect(opened.createdAt).toBe(CREATED)
    expect(opened.priority).toBe(Priority.normal)
    expect(opened.header.expiresAt).toBe(EXPIRES)
    expect(opened.header.mailbox).toEqual(bob.mailbox)
  })

  it('a ref is the last field: byte for byte, and a bad marker is BAD_ENVELOPE', () => {
    const ref = new Uint8Array(32).fill(4)
    const content: Report = { kind: Kind.report, file: { name: 'v', data: Uint8Array.of(9) }, ref }
    const env = sealFor(bob, content, { randomBytes: seededRandom('ref') })
    const rnd = seededRandom('ref')
    const expected = handSeal({
      body: bodyBytes({ from: alice.address, toSignPk: bob.address.signPublicKey, kind: Kind.report, rest: textRest(undefined, { name: utf8('v'), data: Uint8Array.of(9) }, ref) }),
      ephemeralSecret: rnd(32),
      nonce: rnd(24),
    })
    expect(toHex(env)).toBe(toHex(expected))
    const bad = handSeal({ body: bodyBytes({ from: alice.address, toSignPk: bob.address.signPublicKey, kind: Kind.report, rest: concat([textRest(utf8('x')), Uint8Array.of(2), ref]) }) })
    expect(() => openBy(bad, bob)).toThrow(expect.objectContaining({ code: 'BAD_ENVELOPE' }))
  })

  it('refuses a report ref that is not a 32-byte id', () => {
    expect(() => sealFor(bob, { kind: Kind.report, file: { name: 'a', data: new Uint8Array(1) }, ref: new Uint8Array(31) })).toThrow(/ref of 31 bytes/)
  })

  it.each([Priority.low, Priority.normal, Priority.urgent])('carries priority %d', (priority) => {
    expect(openBy(sealFor(bob, { kind: Kind.report, text: 'p' }, { priority }), bob).priority).toBe(priority)
  })

  it('carries creation times up to the largest Date and expiries up to 2^53-2', () => {
    const env = seal({ from: alice, to: bob.address, content: { kind: Kind.report, text: 't' }, createdAt: 8.64e15, expiresAt: 2 ** 53 - 2 })
    const opened = openBy(env, bob)
    expect(opened.createdAt).toBe(8.64e15)
    expect(opened.header.expiresAt).toBe(2 ** 53 - 2)
  })

  it('a sender can seal to itself', () => {
    expect(openBy(sealFor(alice, { kind: Kind.report, text: 'note to self' }), alice).content).toEqual({ kind: Kind.report, text: 'note to self' })
  })

  it('returned byte fields are copies, not views into the envelope', () => {
    const env = sealFor(bob, { kind: Kind.report, file: { name: 'f', data: Uint8Array.of(9, 9, 9) } })
    const opened = openBy(env, bob)
    env.fill(0)
    expect(opened.content.kind === Kind.report && [...opened.content.file!.data]).toEqual([9, 9, 9])
    expect(opened.from.signPublicKey).toEqual(alice.address.signPublicKey)
  })

  it('round-trips arbitrary reports (property)', () => {
    const name = fc
      .string({ unit: 'grapheme', maxLength: 40 })
      .filter((s) => noBom(s) && utf8(s).length <= 1024)
    const report = fc.record({
      text: fc.option(fc.string({ unit: 'grapheme', maxLength: 300 }).filter(noBom), { nil: undefined }),
      file: fc.option(fc.record({ name, data: fc.uint8Array({ maxLength: 2000 }) }), { nil: undefined }),
      priority: fc.integer({ min: 0, max: 255 }),
      createdAt: fc.integer({ min: 0, max: 8.64e15 }),
      expiresAt: fc.maxSafeNat(),
    })
    fc.assert(
      fc.property(report, (r) => {
        const content: Report = { kind: Kind.report, ...(r.text !== undefined ? { text: r.text } : {}), ...(r.file ? { file: r.file } : {}) }
        const env = seal({ from: alice, to: bob.address, content, createdAt: r.createdAt, expiresAt: r.expiresAt, priority: r.priority })
        const opened = openBy(env, bob)
        expect(opened.content).toEqual(content)
        expect(opened.priority).toBe(r.priority)
        expect(opened.createdAt).toBe(r.createdAt)
        expect(opened.header.expiresAt).toBe(r.expiresAt)
      }),
      { numRuns: 60 },
    )
  })

  it('round-trips arbitrary receipts (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 32, maxLength: 32 }), { maxLength: 40 }), (ids) => {
        expect(openBy(sealFor(bob, { kind: Kind.receipt, ids }), bob).content).toEqual({ kind: Kind.receipt, ids })
      }),
      { numRuns: 40 },
    )
  })
})

describe('what the relay sees', () => {
  const secret = 'The meeting point moved to the old mill at 0600, tell nobody.'
  const file = { name: 'names-and-phone-numbers.csv', data: utf8('alice,+98 912 000 0000\nbob,+98 912 111 1111\n') }
  const env = sealFor(bob, { kind: Kind.report, text: secret, file })

  it('the cleartext header holds only magic, mailbox, expiry, ephemeral key and nonce', () => {
    const h = decodeHeader(env)
    expect(Object.keys(h).sort()).toEqual(['ephemeralPublicKey', 'expiresAt', 'mailbox', 'nonce'])
    expect(h.mailbox).toEqual(mailboxId(bob.address.signPublicKey))
    expect(h.mailbox).toEqual(bob.mailbox)
    expect(h.expiresAt).toBe(EXPIRES)
    expect(h.ephemeralPublicKey).toHaveLength(32)
    expect(h.nonce).toHaveLength(24)
    expect(toHex(encodeHeader(h))).toBe(toHex(env.subarray(0, HEADER_BYTES)))
    expect(toHex(env.subarray(0, 4))).toBe('43485001')
    expect(toHex(env.subarray(MAILBOX_AT, EXPIRY_AT))).toBe(toHex(bob.mailbox))
  })

  it('decodeHeader works on just the first HEADER_BYTES bytes (what a relay sees first)', () => {
    expect(decodeHeader(env.slice(0, HEADER_BYTES))).toEqual(decodeHeader(env))
  })

  it('no plaintext, name, attachment, sender key or recipient key appears in the bytes', () => {
    for (const needle of [
      utf8(secret),
      utf8(secret.slice(10, 30)),
      utf8(file.name),
      file.data,
      alice.address.signPublicKey,
      alice.address.boxPublicKey,
      bob.address.signPublicKey,
      bob.address.boxPublicKey,
      new Writer().u64(CREATED).finish(),
    ]) {
      expect(contains(env, needle)).toBe(false)
    }
    // Sanity-check the search itself.
    expect(contains(env, bob.mailbox)).toBe(true)
  })

  it('two senders writing to the same mailbox produce headers that differ only in expiry/ephemeral/nonce', () => {
    const fromCarol = sealFor(bob, { kind: Kind.report, text: secret }, { from: carol })
    expect(toHex(fromCarol.subarray(0, EXPIRY_AT + 8))).toBe(toHex(env.subarray(0, EXPIRY_AT + 8)))
  })
})

describe('randomness', () => {
  const content: Content = { kind: Kind.report, text: 'same content' }

  it('each seal uses a fresh ephemeral key and nonce', () => {
    const seen = { eph: new Set<string>(), nonce: new Set<string>(), env: new Set<string>() }
    for (let i = 0; i < 20; i++) {
      const env = sealFor(bob, content)
      const h = decodeHeader(env)
      seen.eph.add(toHex(h.ephemeralPublicKey))
      seen.nonce.add(toHex(h.nonce))
      seen.env.add(toHex(env.subarray(HEADER_BYTES)))
      expect(openBy(env, bob).content).toEqual(content)
    }
    expect(seen.eph.size).toBe(20)
    expect(seen.nonce.size).toBe(20)
    expect(seen.env.size).toBe(20)
  })

  it('draws a 32-byte ephemeral secret, then a 24-byte nonce, from the injected source', () => {
    const calls: number[] = []
    const src = seededRandom('draws')
    const env = sealFor(bob, content, {
      randomBytes: (n) => {
        calls.push(n)
        return src(n)
      },
    })
    expect(calls).toEqual([32, 24])
    const again = seededRandom('draws')
    const ephSecret = again(32)
    const h = decodeHeader(env)
    expect(h.ephemeralPublicKey).toEqual(nacl.box.keyPair.fromSecretKey(ephSecret).publicKey)
    expect(h.nonce).toEqual(again(24))
  })

  it('is deterministic given the same randomness; different randomness gives different bytes', () => {
    const a = sealFor(bob, content, { randomBytes: seededRandom('det') })
    const b = sealFor(bob, content, { randomBytes: seededRandom('det') })
    const c = sealFor(bob, content, { randomBytes: seededRandom('det2') })
    expect(toHex(a)).toBe(toHex(b))
    expect(toHex(a)).not.toBe(toHex(c))
    expect(openBy(c, bob).content).toEqual(content)
  })
})

describe('wrong recipient', () => {
  const env = sealFor(bob, { kind: Kind.report, text: 'for bob only' })

  it('another identity gets NOT_FOR_ME (mailbox differs)', () => {
    const e = chaparError(() => openBy(env, carol))
    expect(e.code).toBe(ErrorCode.NOT_FOR_ME)
  })

  it('a box key that does not match the mailbox gets DECRYPT_FAILED', () => {
    const e = chaparError(() => open(env, { address: bob.address, boxSecretKey: carol.boxSecretKey }))
    expect(e.code).toBe(ErrorCode.DECRYPT_FAILED)
  })

  it('a body signed for another recipient gets NOT_FOR_ME even though it decrypts and verifies', () => {
    const forged = handSeal({ body: bodyBytes({ from: alice.address, toSignPk: carol.address.signPublicKey, kind: Kind.report, rest: textRest(utf8('hi')) }) })
    expect(chaparError(() => openBy(forged, bob)).code).toBe(ErrorCode.NOT_FOR_ME)
    // The same construction addressed to bob opens: the NOT_FOR_ME above is about the `to` field.
    const honest = handSeal({ body: bodyBytes({ from: alice.address, toSignPk: bob.address.signPublicKey, kind: Kind.report, rest: textRest(utf8('hi')) }) })
    expect(openBy(honest, bob).content).toEqual({ kind: Kind.report, text: 'hi' })
  })
})

describe('tampering', () => {
  const content: Content = { kind: Kind.report, text: 'tamper with me', file: { name: 'x', data: Uint8Array.of(1, 2, 3, 4) } }
  const env = sealFor(bob, content, { randomBytes: seededRandom('tamper') })

  /** The error a single XOR at `pos` must produce. */
  function expectedCode(pos: number, mask: number): ErrorCode {
    if (pos < MAILBOX_AT) return ErrorCode.BAD_ENVELOPE
    if (pos < EXPIRY_AT) return ErrorCode.NOT_FOR_ME
    if (pos < EPHEMERAL_AT) {
      const hi = Buffer.from(env.subarray(EXPIRY_AT, EXPIRY_AT + 4))
      if (pos < EXPIRY_AT + 4) hi[pos - EXPIRY_AT] = hi[pos - EXPIRY_AT]! ^ mask
      // an expiry pushed beyond 2^53 is a malformed header, anything else breaks the signature
      return hi.readUInt32BE(0) >= 2 ** 21 ? ErrorCode.BAD_ENVELOPE : ErrorCode.BAD_SIGNATURE
    }
    // X25519 ignores the top bit of a public key, so that flip still decrypts; the
    // signature over the exact header bytes is what catches it.
    if (pos === NONCE_AT - 1 && mask === 0x80) return ErrorCode.BAD_SIGNATURE
    return ErrorCode.DECRYPT_FAILED
  }

  function checkFlip(pos: number, mask: number): void {
    const bad = env.slice()
    bad[pos] = bad[pos]! ^ mask
    const want = expectedCode(pos, mask)
    const e = chaparError(() => openBy(bad, bob))
    expect(e.code, `byte ${pos} ^ 0x${mask.toString(16)}`).toBe(want)
  }

  it('the untampered envelope opens', () => {
    expect(openBy(env, bob).content).toEqual(content)
  })

  it('flipping the low bit of every byte in turn is always caught', () => {
    for (let pos = 0; pos < env.length; pos++) checkFlip(pos, 0x01)
  })

  it('flipping the high bit of every byte in turn is always caught', () => {
    for (let pos = 0; pos < env.length; pos++) if (pos !== EXPIRY_AT && pos !== EXPIRY_AT + 1) checkFlip(pos, 0x80)
  })

  it('any single corrupted byte anywhere is caught (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: env.length - 1 }), fc.integer({ min: 1, max: 255 }), (pos, mask) => checkFlip(pos, mask)),
      { numRuns: 400 },
    )
  })

  it('truncated or extended envelopes are rejected', () => {
    for (let len = 0; len < env.length; len++) {
      const e = chaparError(() => openBy(env.subarray(0, len), bob))
      expect(e.code, `length ${len}`).toBe(len < MIN_ENVELOPE_BYTES ? ErrorCode.BAD_ENVELOPE : ErrorCode.DECRYPT_FAILED)
    }
    expect(chaparError(() => openBy(concat([env, Uint8Array.of(0)]), bob)).code).toBe(ErrorCode.DECRYPT_FAILED)
  })

  it('an expiry edited in place still decrypts but fails the signature', () => {
    const bad = env.slice()
    new DataView(bad.buffer).setUint32(EXPIRY_AT + 4, (EXPIRES + 86_400_000) % 2 ** 32) // same high word, +1 day
    expect(decodeHeader(bad).expiresAt).toBe(EXPIRES + 86_400_000)
    const h = decodeHeader(bad)
    // The box itself does not cover the header...
    expect(nacl.box.open(bad.subarray(HEADER_BYTES), h.nonce, h.ephemeralPublicKey, bob.boxSecretKey)).not.toBeNull()
    // ...the signature does.
    expect(chaparError(() => openBy(bad, bob)).code).toBe(ErrorCode.BAD_SIGNATURE)
  })

  it('a recipient re-sealing the signed body under a new header is caught', () => {
    const h = decodeHeader(env)
    const plain = nacl.box.open(env.subarray(HEADER_BYTES), h.nonce, h.ephemeralPublicKey, bob.boxSecretKey)!
    const signature = plain.subarray(0, 64)
    const body = plain.subarray(64)
    // New expiry, new ephemeral key and nonce, sealed to bob again.
    const extended = handSeal({ body, signature, expiresAt: EXPIRES + 30 * 86_400_000 })
    expect(chaparError(() => openBy(extended, bob)).code).toBe(ErrorCode.BAD_SIGNATURE)
    // Same expiry, only the ephemeral key and nonce changed.
    const replayed = handSeal({ body, signature })
    expect(chaparError(() => openBy(replayed, bob)).code).toBe(ErrorCode.BAD_SIGNATURE)
    // Forwarded to carol's mailbox and box key.
    const forwarded = handSeal({ body, signature, mailbox: carol.mailbox, boxTo: carol.address.boxPublicKey })
    // The signature over the header is checked before the body's `to` field.
    expect(chaparError(() => openBy(forwarded, carol)).code).toBe(ErrorCode.BAD_SIGNATURE)
    // Control: re-sealing with the original header parameters reproduces a valid envelope only for
    // someone who knows the ephemeral secret (the sender), not for bob.
    const rnd = seededRandom('tamper')
    const original = handSeal({ body, signature, ephemeralSecret: rnd(32), nonce: rnd(24) })
    expect(toHex(original)).toBe(toHex(env))
  })
})

describe('sender authenticity', () => {
  it('a message signed by Mallory but claiming Alice\'s address is BAD_SIGNATURE', () => {
    const env = seal({
      from: { address: alice.address, signSecretKey: mallory.signSecretKey },
      to: bob.address,
      content: { kind: Kind.report, text: 'this is alice, really' },
      createdAt: CREATED,
      expiresAt: EXPIRES,
    })
    expect(chaparError(() => openBy(env, bob)).code).toBe(ErrorCode.BAD_SIGNATURE)
  })

  it('Mallory signing as herself opens, and reports Mallory as the sender', () => {
    const env = sealFor(bob, { kind: Kind.report, text: 'hi' }, { from: mallory })
    expect(openBy(env, bob).from.signPublicKey).toEqual(mallory.address.signPublicKey)
  })

  it('verifies Ed25519(sender, "chapar/v1/envelope\\0" ‖ exact header ‖ body) with the body\'s sender key', () => {
    const env = sealFor(bob, { kind: Kind.report, text: 'check the signed bytes' })
    const calls: Array<{ m: Uint8Array; s: Uint8Array; pk: Uint8Array }> = []
    const opened = open(env, { address: bob.address, boxSecretKey: bob.boxSecretKey }, (m, s, pk) => {
      calls.push({ m: m.slice(), s: s.slice(), pk: pk.slice() })
      return nacl.sign.detached.verify(m, s, pk)
    })
    expect(opened.content).toEqual({ kind: Kind.report, text: 'check the signed bytes' })
    expect(calls).toHaveLength(1)
    const { m, s, pk } = calls[0]!
    expect(pk).toEqual(alice.address.signPublicKey)
    expect(s).toHaveLength(64)
    expect(toHex(m.subarray(0, SIGN_DOMAIN.length))).toBe(toHex(SIGN_DOMAIN))
    expect(toHex(m.subarray(SIGN_DOMAIN.length, SIGN_DOMAIN.length + HEADER_BYTES))).toBe(toHex(env.subarray(0, HEADER_BYTES)))
    expect(m.length).toBe(SIGN_DOMAIN.length + env.length - BOX_OVERHEAD - 64)
    expect(nacl.sign.detached.verify(m, s, alice.address.signPublicKey)).toBe(true)
  })

  it('a verifier that says no gives BAD_SIGNATURE before any body parsing', () => {
    const env = sealFor(bob, { kind: Kind.report, text: 'x' })
    expect(chaparError(() => open(env, { address: bob.address, boxSecretKey: bob.boxSecretKey }, () => false)).code).toBe(ErrorCode.BAD_SIGNATURE)
    const junkBody = handSeal({ body: new Uint8Array(200).fill(0xff) })
    expect(chaparError(() => open(junkBody, { address: bob.address, boxSecretKey: bob.boxSecretKey }, () => false)).code).toBe(ErrorCode.BAD_SIGNATURE)
  })

  it('a signature with S + L (tweetnacl-js#253 malleability) is BAD_SIGNATURE', () => {
    const body = bodyBytes({ from: alice.address, toSignPk: bob.address.signPublicKey, kind: Kind.report, rest: textRest(utf8('malleable')) })
    const rnd = seededRandom('malleable')
    const ephemeralSecret = rnd(32)
    const nonce = rnd(24)
    const honest = handSeal({ body, ephemeralSecret, nonce })
    expect(openBy(honest, bob).content).toEqual({ kind: Kind.report, text: 'malleable' })
    const header = honest.subarray(0, HEADER_BYTES)
    const sig = nacl.sign.detached(concat([SIGN_DOMAIN, header, body]), alice.signSecretKey)
    const L = 2n ** 252n + 27742317777372353535851937790883648493n
    let s = 0n
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!)
    s += L
    const malleated = sig.slice()
    for (let i = 0; i < 32; i++) malleated[32 + i] = Number((s >> BigInt(8 * i)) & 0xffn)
    expect(nacl.sign.detached.verify(concat([SIGN_DOMAIN, header, body]), malleated, alice.address.signPublicKey)).toBe(true) // raw tweetnacl accepts it
    const env = handSeal({ body, signature: malleated, ephemeralSecret, nonce })
    expect(chaparError(() => openBy(env, bob)).code).toBe(ErrorCode.BAD_SIGNATURE)
  })

  it('a small-order sender key with the trivial signature (R = identity, S = 0) is BAD_SIGNATURE', () => {
    const identityPoint = new Uint8Array(32)
    identityPoint[0] = 1
    const trivial = new Uint8Array(64)
    trivial[0] = 1
    const body = bodyBytes({ from: { signPublicKey: identityPoint, boxPublicKey: alice.address.boxPublicKey }, toSignPk: bob.address.signPublicKey, kind: Kind.report, rest: textRest(utf8('anyone')) })
    const env = handSeal({ body, signature: trivial })
    expect(chaparError(() => openBy(env, bob)).code).toBe(ErrorCode.BAD_SIGNATURE)
  })
})

describe('malformed bodies that carry valid signatures', () => {
  const to = bob.address.signPublicKey
  const signed = (kind: number, rest: Uint8Array): Uint8Array => handSeal({ body: bodyBytes({ from: alice.address, toSignPk: to, kind, rest }) })

  it.each<[string, () => Uint8Array]>([
    ['unknown content kind 0', () => signed(0, textRest(utf8('x')))],
    ['unknown content kind 3', () => signed(3, textRest(utf8('x')))],
    ['trailing byte after a report', () => signed(Kind.report, concat([textRest(utf8('x')), Uint8Array.of(0)]))],
    ['trailing byte after a receipt', () => signed(Kind.receipt, Uint8Array.of(0, 0, 7))],
    ['report missing its file flag', () => signed(Kind.report, Uint8Array.of(0))],
    ['text length beyond the body', () => signed(Kind.report, Uint8Array.of(1, 0, 0, 0, 50, 0x61, 0))],
    ['text length over MAX_TEXT_BYTES', () => signed(Kind.report, new Writer().u8(1).u32(MAX_TEXT_BYTES + 1).finish())],
    ['invalid UTF-8 text', () => signed(Kind.report, textRest(Uint8Array.of(0x61, 0xff, 0x62)))],
    ['overlong UTF-8 text', () => signed(Kind.report, textRest(Uint8Array.of(0xc0, 0xaf)))],
    ['invalid UTF-8 file name', () => signed(Kind.report, textRest(undefined, { name: Uint8Array.of(0xfe), data: Uint8Array.of(1) }))],
    ['file name over 1024 bytes', () => signed(Kind.report, textRest(undefined, { name: new Uint8Array(1025).fill(0x61), data: Uint8Array.of(1) }))],
    ['receipt claiming more ids than present', () => signed(Kind.receipt, concat([Uint8Array.of(0, 2), new Uint8Array(32)]))],
    ['receipt with a short id', () => signed(Kind.receipt, concat([Uint8Array.of(0, 1), new Uint8Array(31)]))],
  ])('%s → BAD_ENVELOPE', (_name, make) => {
    const e = chaparError(() => openBy(make(), bob))
    expect(e.code).toBe(ErrorCode.BAD_ENVELOPE)
    expect(e.message).toMatch(/^(malformed body: |unknown content kind )/)
  })

  it('a body shorter than the fixed fields is refused by length before decryption', () => {
    // MIN_ENVELOPE_BYTES already accounts for the fixed body fields (106 bytes).
    for (const n of [0, 50, 105]) {
      const env = handSeal({ body: new Uint8Array(n), signature: new Uint8Array(64) })
      expect(env.length).toBe(MIN_ENVELOPE_BYTES - 106 + n)
      const e = chaparError(() => openBy(env, bob))
      expect(e.code).toBe(ErrorCode.BAD_ENVELOPE)
      expect(e.message).toBe('envelope too short')
    }
  })

  it('the same bodies with correct fields open (controls for the cases above)', () => {
    expect(openBy(signed(Kind.report, textRest(utf8('x'))), bob).content).toEqual({ kind: Kind.report, text: 'x' })
    expect(openBy(signed(Kind.receipt, Uint8Array.of(0, 0)), bob).content).toEqual({ kind: Kind.receipt, ids: [] })
    expect(openBy(signed(Kind.report, textRest(undefined, { name: new Uint8Array(1024).fill(0x61), data: Uint8Array.of(1) })), bob).content).toEqual({
      kind: Kind.report,
      file: { name: 'a'.repeat(1024), data: Uint8Array.of(1) },
    })
  })
})

describe('size limits', () => {
  const tooLarge = (content: Content): ChaparError => chaparError(() => sealFor(bob, content))

  it('text of exactly MAX_TEXT_BYTES seals and opens', () => {
    const text = 'a'.repeat(MAX_TEXT_BYTES)
    const opened = openBy(sealFor(bob, { kind: Kind.report, text }), bob)
    expect(opened.content.kind === Kind.report && opened.content.text?.length).toBe(MAX_TEXT_BYTES)
  })

  it('text over MAX_TEXT_BYTES is TOO_LARGE (counted in UTF-8 bytes)', () => {
    const e = tooLarge({ kind: Kind.report, text: 'a'.repeat(MAX_TEXT_BYTES + 1) })
    expect(e.code).toBe(ErrorCode.TOO_LARGE)
    expect(e.message).toBe(`text is ${MAX_TEXT_BYTES + 1} bytes; the limit is ${MAX_TEXT_BYTES}`)
    // Fewer UTF-16 units than the limit, but two bytes each in UTF-8.
    expect(tooLarge({ kind: Kind.report, text: 'ش'.repeat(MAX_TEXT_BYTES / 2 + 1) }).code).toBe(ErrorCode.TOO_LARGE)
  })

  it('a file over MAX_FILE_BYTES is TOO_LARGE', () => {
    const e = tooLarge({ kind: Kind.report, file: { name: 'big.mp4', data: new Uint8Array(MAX_FILE_BYTES + 1) } })
    expect(e.code).toBe(ErrorCode.TOO_LARGE)
    expect(e.message).toBe(`file is ${MAX_FILE_BYTES + 1} bytes; the limit is ${MAX_FILE_BYTES}`)
  })

  it('a receipt with more than 65535 ids is TOO_LARGE', () => {
    const id = new Uint8Array(32)
    expect(tooLarge({ kind: Kind.receipt, ids: new Array<Uint8Array>(0x10000).fill(id) }).code).toBe(ErrorCode.TOO_LARGE)
  })

  it('open refuses envelopes above MAX_ENVELOPE_BYTES (TOO_LARGE) and below MIN_ENVELOPE_BYTES (BAD_ENVELOPE)', () => {
    const huge = new Uint8Array(MAX_ENVELOPE_BYTES + 1)
    huge.set(sealFor(bob, { kind: Kind.report, text: 'x' }))
    expect(chaparError(() => openBy(huge, bob)).code).toBe(ErrorCode.TOO_LARGE)
    const tiny = sealFor(bob, { kind: Kind.report, text: 'x' }).subarray(0, MIN_ENVELOPE_BYTES - 1)
    const e = chaparError(() => openBy(tiny, bob))
    expect(e.code).toBe(ErrorCode.BAD_ENVELOPE)
    expect(e.message).toBe('envelope too short')
  })
})

describe('decodeHeader', () => {
  const env = sealFor(bob, { kind: Kind.report, text: 'h' })

  it('rejects fewer than HEADER_BYTES bytes with BAD_ENVELOPE', () => {
    for (const n of [0, 1, 4, HEADER_BYTES - 1]) {
      const e = chaparError(() => decodeHeader(env.subarray(0, n)))
      expect(e.code).toBe(ErrorCode.BAD_ENVELOPE)
    }
  })

  it('rejects any other magic or version with BAD_ENVELOPE', () => {
    for (let i = 0; i < 4; i++) {
      const bad = env.slice()
      bad[i] = bad[i]! ^ 0x20
      const e = chaparError(() => decodeHeader(bad))
      expect(e.code).toBe(ErrorCode.BAD_ENVELOPE)
      expect(e.message).toBe('not a chapar v1 envelope')
    }
  })

  it('encodeHeader/decodeHeader round-trip any header with a safe expiry', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.maxSafeNat(),
        fc.uint8Array({ minLength: 32, maxLength: 32 }),
        fc.uint8Array({ minLength: 24, maxLength: 24 }),
        (mailbox, expiresAt, ephemeralPublicKey, nonce) => {
          const bytes = encodeHeader({ mailbox, expiresAt, ephemeralPublicKey, nonce })
          expect(bytes).toHaveLength(HEADER_BYTES)
          expect(decodeHeader(bytes)).toEqual({ mailbox, expiresAt, ephemeralPublicKey, nonce })
        },
      ),
    )
  })
})
