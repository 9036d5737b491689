/**
 * Envelope: the sealed, signed unit a relay stores and forwards.
 *
 *   header  = "CHP" 0x01 ‖ mailbox(32) ‖ expiresAt(u64 ms) ‖ ephemeralPk(32) ‖ nonce(24)   (100 bytes, cleartext)
 *   sealed  = nacl.box(signature(64) ‖ body, nonce, recipientBoxPk, ephemeralSk)
 *   signature = Ed25519(senderSignSk, "chapar/v1/envelope\0" ‖ header ‖ body)
 *
 * The relay sees only the header (mailbox id, expiry) and the sizes. The
 * signature sits inside the box so the relay cannot tell who wrote to whom,
 * and it covers the exact header bytes, so a relay that edits the expiry or
 * re-addresses a message is caught. The recipient verifies the exact bytes
 * it decrypted, before decoding anything else of the body.
 */
import nacl from 'tweetnacl'
import { boxBefore, ephemeralBox } from './box.js'
import { concat, equal, fromUtf8, Reader, utf8, Writer } from './bytes.js'
import { ChaparError, ErrorCode } from './errors.js'
import { HASH_BYTES, mailboxId } from './hash.js'
import type { Address } from './address.js'
import { SIGNATURE_BYTES, sign, verify as defaultVerify } from './signature.js'

export const ENVELOPE_MAGIC = new Uint8Array([0x43, 0x48, 0x50, 0x01]) // "CHP" v1
export const HEADER_BYTES = 4 + 32 + 8 + 32 + 24
export const BOX_OVERHEAD = nacl.box.overheadLength
/** Largest attachment a report may carry (a short video). */
export const MAX_FILE_BYTES = 64 * 1024 * 1024
/** The longest a sender may ask relays to keep a message (`send --ttl`). */
/** The largest time a JavaScript Date can hold (ECMA-262 §21.4.1.1); a later creation time could not be shown. */
export const MAX_DATE_MS = 8.64e15
export const MAX_TTL_MS = 30 * 24 * 3600_000
/** What relays accept by default: MAX_TTL_MS plus room for a field device's clock running days fast. */
export const RELAY_MAX_TTL_MS = MAX_TTL_MS + 5 * 24 * 3600_000
/**
 * A receipt's lifetime, the same for every receipt and rounded up to the
 * hour: were it the report's remaining lifetime, its expiry would equal the
 * report's to the millisecond and tell the relay who wrote which report.
 */
export const RECEIPT_TTL_MS = 14 * 24 * 3600_000
export const MAX_TEXT_BYTES = 1024 * 1024
export const MAX_FILE_NAME_BYTES = 1024
/** Largest envelope anyone should accept: the biggest report plus headers. */
export const MAX_ENVELOPE_BYTES = MAX_FILE_BYTES + MAX_TEXT_BYTES + 64 * 1024
const SIGN_DOMAIN = utf8('chapar/v1/envelope\0')

export const Kind = { report: 1, receipt: 2 } as const
export type Kind = (typeof Kind)[keyof typeof Kind]

export const Priority = { low: 0, normal: 1, urgent: 2 } as const
export type PriorityName = keyof typeof Priority

export interface Sender {
  readonly address: Address
  readonly signSecretKey: Uint8Array
}

export interface Header {
  readonly mailbox: Uint8Array
  readonly expiresAt: number
  readonly ephemeralPublicKey: Uint8Array
  readonly nonce: Uint8Array
}

export interface Report {
  readonly kind: typeof Kind.report
  readonly text?: string
  readonly file?: { readonly name: string; readonly data: Uint8Array }
  /**
   * The id of the report this one belongs to: `send --text … --file …`
   * makes a text report and an attachment report that names it, so the
   * text travels first and the recipient sees both as one report.
   */
  readonly ref?: Uint8Array
}

export interface Receipt {
  readonly kind: typeof Kind.receipt
  /** Ids of the messages the signer received, verified and stored. */
  readonly ids: readonly Uint8Array[]
}

export type Content = Report | Receipt

export interface Opened {
  readonly header: Header
  readonly from: Address
  readonly createdAt: number
  readonly priority: number
  readonly content: Content
}

/** Randomness is injected so the simulator can seal deterministically. */
export type RandomBytes = (n: number) => Uint8Array

export function encodeHeader(h: Header): Uint8Array {
  return new Writer(HEADER_BYTES).bytes(ENVELOPE_MAGIC).bytes(h.mailbox).u64(h.expiresAt).bytes(h.ephemeralPublicKey).bytes(h.nonce).finish()
}

/** The smallest well-formed envelope: header, box MAC, signature, minimal body. */
export const MIN_ENVELOPE_BYTES = HEADER_BYTES + BOX_OVERHEAD + SIGNATURE_BYTES + 32 * 3 + 8 + 2

/** Parse the cleartext header (what a relay checks) from an envelope or its first bytes. Throws BAD_ENVELOPE. */
export function decodeHeader(envelope: Uint8Array): Header {
  if (envelope.length < HEADER_BYTES) throw new ChaparError(ErrorCode.BAD_ENVELOPE, 'envelope too short')
  const r = new Reader(envelope)
  if (!equal(r.bytes(4), ENVELOPE_MAGIC)) throw new ChaparError(ErrorCode.BAD_ENVELOPE, 'not a chapar v1 envelope')
  const mailbox = r.bytes(32)
  let expiresAt: number
  try {
    expiresAt = r.u64()
  } catch (err) {
    throw new ChaparError(ErrorCode.BAD_ENVELOPE, 'envelope expiry beyond 2^53', { cause: err })
  }
  return { mailbox, expiresAt, ephemeralPublicKey: r.bytes(32), nonce: r.bytes(24) }
}

function encodeBody(from: Address, to: Address, createdAt: number, priority: number, content: Content): Uint8Array {
  const w = new Writer(256)
  w.bytes(from.signPublicKey).bytes(from.boxPublicKey).bytes(to.signPublicKey).u64(createdAt).u8(content.kind).u8(priority)
  if (content.kind === Kind.report) {
    const text = content.text === undefined ? undefined : utf8(content.text)
    if (text && text.length > MAX_TEXT_BYTES) throw new ChaparError(ErrorCode.TOO_LARGE, `text is ${text.length} bytes; the limit is ${MAX_TEXT_BYTES}`)
    if (content.file && utf8(content.file.name).length > MAX_FILE_NAME_BYTES) {
      throw new ChaparError(ErrorCode.TOO_LARGE, `file name is ${utf8(content.file.name).length} bytes; the limit is ${MAX_FILE_NAME_BYTES}`)
    }
    if (content.file && content.file.data.length > MAX_FILE_BYTES) {
      throw new ChaparError(ErrorCode.TOO_LARGE, `file is ${content.file.data.length} bytes; the limit is ${MAX_FILE_BYTES}`)
    }
    w.u8(text ? 1 : 0)
    if (text) w.lbytes(text)
    w.u8(content.file ? 1 : 0)
    if (content.file) w.str(content.file.name).lbytes(content.file.data)
    if (content.ref && content.ref.length !== HASH_BYTES) throw new ChaparError(ErrorCode.BAD_INPUT, `report ref of ${content.ref.length} bytes; ids are ${HASH_BYTES}`)
    // Only when present: a report without one is byte for byte what it was before refs existed.
    if (content.ref) w.u8(1).bytes(content.ref)
  } else {
    if (content.ids.length > 0xffff) throw new ChaparError(ErrorCode.TOO_LARGE, 'too many ids in one receipt')
    w.u16(content.ids.length)
    for (const id of content.ids) {
      if (id.length !== HASH_BYTES) throw new ChaparError(ErrorCode.BAD_INPUT, `receipt id of ${id.length} bytes; ids are ${HASH_BYTES}`)
      w.bytes(id)
    }
  }
  return w.finish()
}

/** Sign, then seal to the recipient with a fresh ephemeral key and random nonce. */
export function seal(args: {
  from: Sender
  to: Address
  content: Content
  createdAt: number
  expiresAt: number
  priority?: number
  randomBytes?: RandomBytes
}): Uint8Array {
  const random = args.randomBytes ?? nacl.randomBytes
  const ephemeralSecret = random(32)
  const ephemeral = ephemeralBox(args.to.boxPublicKey, ephemeralSecret)
  ephemeralSecret.fill(0)
  const header: Header = {
    mailbox: mailboxId(args.to.signPublicKey),
    expiresAt: args.expiresAt,
    ephemeralPublicKey: ephemeral.publicKey,
    nonce: random(nacl.box.nonceLength),
  }
  const headerBytes = encodeHeader(header)
  const body = encodeBody(args.from.address, args.to, args.createdAt, args.priority ?? Priority.normal, args.content)
  const signature = sign(concat([SIGN_DOMAIN, headerBytes, body]), args.from.signSecretKey)
  // nacl.box, with the X25519 step on node:crypto (box.ts)
  const sealed = nacl.secretbox(concat([signature, body]), header.nonce, ephemeral.key)
  return concat([headerBytes, sealed])
}

function flag(r: Reader): boolean {
  const b = r.u8()
  if (b > 1) throw new RangeError(`flag byte ${b}`)
  return b === 1
}

/**
 * Decrypt and verify an envelope addressed to `me`. Throws ChaparError with
 * DECRYPT_FAILED, BAD_SIGNATURE, NOT_FOR_ME or BAD_ENVELOPE; the caller
 * quarantines anything that throws.
 */
export function open(
  envelope: Uint8Array,
  me: { address: Address; boxSecretKey: Uint8Array },
  verify: (m: Uint8Array, s: Uint8Array, pk: Uint8Array) => boolean = defaultVerify,
): Opened {
  if (envelope.length < MIN_ENVELOPE_BYTES) throw new ChaparError(ErrorCode.BAD_ENVELOPE, 'envelope too short')
  if (envelope.length > MAX_ENVELOPE_BYTES) throw new ChaparError(ErrorCode.TOO_LARGE, 'envelope too large')
  const header = decodeHeader(envelope)
  if (!equal(header.mailbox, mailboxId(me.address.signPublicKey))) throw new ChaparError(ErrorCode.NOT_FOR_ME, 'envelope is for another mailbox')
  const headerBytes = envelope.subarray(0, HEADER_BYTES)
  const plain = nacl.secretbox.open(envelope.subarray(HEADER_BYTES), header.nonce, boxBefore(header.ephemeralPublicKey, me.boxSecretKey))
  if (!plain) throw new ChaparError(ErrorCode.DECRYPT_FAILED, 'cannot decrypt: not sealed to this identity, or corrupted')
  const signature = plain.subarray(0, SIGNATURE_BYTES)
  const body = plain.subarray(SIGNATURE_BYTES)
  if (body.length < 32 * 3 + 8 + 2) throw new ChaparError(ErrorCode.BAD_ENVELOPE, 'body too short')
  const senderSignPk = body.subarray(0, 32)
  if (!verify(concat([SIGN_DOMAIN, headerBytes, body]), signature, senderSignPk)) {
    throw new ChaparError(ErrorCode.BAD_SIGNATURE, "sender's signature does not verify")
  }
  try {
    const r = new Reader(body)
    const from: Address = { signPublicKey: r.bytes(32).slice(), boxPublicKey: r.bytes(32).slice() }
    const to = r.bytes(32)
    if (!equal(to, me.address.signPublicKey)) throw new ChaparError(ErrorCode.NOT_FOR_ME, 'signed for another recipient')
    const createdAt = r.u64()
    if (createdAt > MAX_DATE_MS) throw new ChaparError(ErrorCode.BAD_ENVELOPE, 'creation time is past the year 275760')
    const kind = r.u8()
    const priority = r.u8()
    let content: Content
    if (kind === Kind.report) {
      const text = flag(r) ? fromUtf8(r.lbytes(MAX_TEXT_BYTES)) : undefined
      const file = flag(r) ? { name: r.str(MAX_FILE_NAME_BYTES), data: r.lbytes(MAX_FILE_BYTES).slice() } : undefined
      // Optional and last: absent in reports without one (and in every report made before refs).
      let ref: Uint8Array | undefined
      if (r.remaining > 0) {
        if (r.u8() !== 1) throw new RangeError('bad ref marker')
        ref = r.bytes(HASH_BYTES).slice()
      }
      content = { kind: Kind.report, ...(text !== undefined ? { text } : {}), ...(file ? { file } : {}), ...(ref ? { ref } : {}) }
    } else if (kind === Kind.receipt) {
      const n = r.u16()
      const ids: Uint8Array[] = []
      for (let i = 0; i < n; i++) ids.push(r.bytes(HASH_BYTES).slice())
      content = { kind: Kind.receipt, ids }
    } else {
      throw new ChaparError(ErrorCode.BAD_ENVELOPE, `unknown content kind ${kind}`)
    }
    r.end()
    return { header, from, createdAt, priority, content }
  } catch (err) {
    if (err instanceof ChaparError) throw err
    throw new ChaparError(ErrorCode.BAD_ENVELOPE, `malformed body: ${(err as Error).message}`, { cause: err })
  }
}
