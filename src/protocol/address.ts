import { concat, equal, fromBase64url, toBase64url } from './bytes.js'
import { ChaparError, ErrorCode } from './errors.js'
import { sha256 } from './hash.js'
import { isValidPublicKey } from './signature.js'

/** Addresses read `ch1.` + base64url(signPk ‖ boxPk ‖ checksum): one line, no leading dash. */
export const ADDRESS_PREFIX = 'ch1.'
const CHECKSUM_BYTES = 4
const RAW_BYTES = 32 + 32 + CHECKSUM_BYTES

export interface Address {
  /** Ed25519 public key: signs the sender's messages, proves mailbox ownership. */
  readonly signPublicKey: Uint8Array
  /** X25519 public key: messages to this address are sealed to it. */
  readonly boxPublicKey: Uint8Array
}

function checksum(sign: Uint8Array, box: Uint8Array): Uint8Array {
  return sha256(sign, box).subarray(0, CHECKSUM_BYTES)
}

export function formatAddress(a: Address): string {
  return ADDRESS_PREFIX + toBase64url(concat([a.signPublicKey, a.boxPublicKey, checksum(a.signPublicKey, a.boxPublicKey)]))
}

/** Parse and check an address; throws ChaparError(BAD_ADDRESS) with a one-line reason. */
export function parseAddress(text: string): Address {
  const s = text.trim()
  if (!s.startsWith(ADDRESS_PREFIX)) throw new ChaparError(ErrorCode.BAD_ADDRESS, `malformed address: must start with "${ADDRESS_PREFIX}"`)
  let raw: Uint8Array
  try {
    raw = fromBase64url(s.slice(ADDRESS_PREFIX.length))
  } catch {
    throw new ChaparError(ErrorCode.BAD_ADDRESS, 'malformed address: not base64url after the prefix')
  }
  if (raw.length !== RAW_BYTES) throw new ChaparError(ErrorCode.BAD_ADDRESS, `malformed address: ${raw.length} bytes, expected ${RAW_BYTES}`)
  const signPublicKey = raw.slice(0, 32)
  const boxPublicKey = raw.slice(32, 64)
  if (!equal(raw.subarray(64), checksum(signPublicKey, boxPublicKey))) {
    throw new ChaparError(ErrorCode.BAD_ADDRESS, 'malformed address: checksum mismatch (typo or truncated copy?)')
  }
  if (!isValidPublicKey(signPublicKey)) throw new ChaparError(ErrorCode.BAD_ADDRESS, 'malformed address: signing key is not a valid Ed25519 point')
  return { signPublicKey, boxPublicKey }
}

export function sameAddress(a: Address, b: Address): boolean {
  return equal(a.signPublicKey, b.signPublicKey) && equal(a.boxPublicKey, b.boxPublicKey)
}
