import { createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import nacl from 'tweetnacl'
import { cacheKey, remember } from './key-cache.js'
import { importOkpPrivate, okpPublicOf, SPKI_PREFIX as OKP_SPKI_PREFIX } from './okp-keys.js'

/** Length of a raw Ed25519 public key. */
export const PUBLIC_KEY_BYTES = 32
/** Length of a secret key in tweetnacl layout: seed(32) ‖ publicKey(32). */
export const SECRET_KEY_BYTES = 64
/** Length of an Ed25519 signature: R(32) ‖ S(32). */
export const SIGNATURE_BYTES = 64

/** A signature-layer failure with a stable machine-readable `code`. */
export class SignatureError extends Error {
  readonly code: 'BAD_PUBLIC_KEY' | 'BAD_SIGNATURE_LENGTH' | 'NON_CANONICAL' | 'BAD_SECRET_KEY'
  constructor(code: SignatureError['code'], message: string) {
    super(message)
    this.code = code
    this.name = 'SignatureError'
  }
}

// L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const L_LE = Uint8Array.of(
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
)

/** True iff `sig` is 64 bytes and its S half (little-endian, bytes 32..63) is < L. */
export function isCanonicalSignature(sig: Uint8Array): boolean {
  if (sig.length !== SIGNATURE_BYTES) return false
  for (let i = 31; i >= 0; i--) {
    const s = sig[32 + i]!
    const l = L_LE[i]!
    if (s !== l) return s < l
  }
  return false
}

const P = (1n << 255n) - 19n
const Y_MASK = (1n << 255n) - 1n
const D = 37095705934669439343138083508754565189542113879843219016388785533085940283555n
// y-coordinates of the 8 small-order points: y = 1 (identity), y = -1 (order 2),
// y = 0 (the two order-4 points) and ±Y8 (the four order-8 points).
const Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022n
const NEG_Y8 = P - Y8
const NEG_ONE = P - 1n

function sqn(x: bigint, n: number): bigint {
  let r = x
  for (let i = 0; i < n; i++) r = (r * r) % P
  return r
}

// z^((p-5)/8) = z^(2^252 - 3) by ref10's addition chain: 251 squarings + 11 multiplications.
function pow2523(z: bigint): bigint {
  const z2 = (z * z) % P
  const z9 = (sqn(z2, 2) * z) % P
  const z11 = (z9 * z2) % P
  const z5_0 = (((z11 * z11) % P) * z9) % P
  const z10_0 = (sqn(z5_0, 5) * z5_0) % P
  const z20_0 = (sqn(z10_0, 10) * z10_0) % P
  const z40_0 = (sqn(z20_0, 20) * z20_0) % P
  const z50_0 = (sqn(z40_0, 10) * z10_0) % P
  const z100_0 = (sqn(z50_0, 50) * z50_0) % P
  const z200_0 = (sqn(z100_0, 100) * z100_0) % P
  const z250_0 = (sqn(z200_0, 50) * z50_0) % P
  return (sqn(z250_0, 2) * z) % P
}

/**
 * True iff `pk` is 32 bytes, canonically encodes a point on the Ed25519 curve
 * (y < p and x recoverable, RFC 8032 §5.1.3) and is not one of the 8 small-order points.
 */
export function isValidPublicKey(pk: Uint8Array): boolean {
  if (pk.length !== PUBLIC_KEY_BYTES) return false
  let y = 0n
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(pk[i]!)
  y &= Y_MASK
  if (y >= P) return false
  // x = 0 happens only for y = ±1, both small-order, so rejecting these also covers
  // RFC 8032's "x = 0 with sign bit 1" failure without a separate branch.
  if (y === 1n || y === NEG_ONE || y === 0n || y === Y8 || y === NEG_Y8) return false
  const y2 = (y * y) % P
  const u = y2 - 1n
  const v = (D * y2 + 1n) % P
  const v3 = (((v * v) % P) * v) % P
  const uv3 = (u * v3) % P
  const x = (uv3 * pow2523((((uv3 * v3) % P) * v) % P)) % P
  const vx2 = (((v * x) % P) * x) % P
  return vx2 === u || vx2 === P - u
}

/** An Ed25519 verification backend. `verify` never throws; it returns false for any bad input. */
export interface Verifier {
  readonly name: string
  verify(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean
}

const SPKI_PREFIX = OKP_SPKI_PREFIX.Ed25519
const PUBLIC_CACHE_MAX = 1024
const PRIVATE_CACHE_MAX = 4096
const publicKeys = new Map<string, KeyObject>()
const privateKeys = new Map<string, KeyObject>()


// Only validated keys are cached, so a hit skips the BigInt curve check too.
// Invalid keys are never cached: that would let garbage evict real senders.
function publicKeyObject(pk: Uint8Array): KeyObject | undefined {
  if (pk.length !== PUBLIC_KEY_BYTES) return undefined
  const id = cacheKey(pk)
  const hit = publicKeys.get(id)
  if (hit !== undefined) {
    publicKeys.delete(id)
    publicKeys.set(id, hit)
    return hit
  }
  if (!isValidPublicKey(pk)) return undefined
  const der = Buffer.allocUnsafe(SPKI_PREFIX.length + PUBLIC_KEY_BYTES)
  SPKI_PREFIX.copy(der, 0)
  der.set(pk, SPKI_PREFIX.length)
  let key: KeyObject
  try {
    key = createPublicKey({ key: der, format: 'der', type: 'spki' })
  } catch {
    return undefined
  }
  remember(publicKeys, PUBLIC_CACHE_MAX, id, key)
  return key
}

/**
 * node:crypto Ed25519 (fast path). Pre-checks lengths, S < L and the public key
 * (node accepts small-order keys, e.g. the identity with R = identity, S = 0, for any message).
 */
export const nodeVerifier: Verifier = {
  name: 'node:crypto',
  verify(message, signature, publicKey) {
    if (!isCanonicalSignature(signature)) return false
    const key = publicKeyObject(publicKey)
    if (key === undefined) return false
    try {
      return cryptoVerify(null, message, key, signature)
    } catch {
      return false
    }
  },
}

/** tweetnacl (portable path), with the same pre-checks: tweetnacl alone accepts S + L (tweetnacl-js#253). */
export const naclVerifier: Verifier = {
  name: 'tweetnacl',
  verify(message, signature, publicKey) {
    if (!isCanonicalSignature(signature) || !isValidPublicKey(publicKey)) return false
    try {
      return nacl.sign.detached.verify(message, signature, publicKey)
    } catch {
      return false
    }
  },
}

/** The default verifier for this runtime (node:crypto). */
export const verify: (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean =
  nodeVerifier.verify

function checkSecretKey(secretKey: Uint8Array): void {
  if (secretKey.length !== SECRET_KEY_BYTES) {
    throw new SignatureError('BAD_SECRET_KEY', `secret key must be ${SECRET_KEY_BYTES} bytes, got ${secretKey.length}`)
  }
}

// node derives the public key from the seed, tweetnacl trusts the stored half; a
// mismatched pair would make the two signers disagree, so it is refused once, up front.
function privateKeyObject(secretKey: Uint8Array): KeyObject {
  checkSecretKey(secretKey)
  const id = cacheKey(secretKey)
  const hit = privateKeys.get(id)
  if (hit !== undefined) {
    privateKeys.delete(id)
    privateKeys.set(id, hit)
    return hit
  }
  const key = importOkpPrivate('Ed25519', secretKey.subarray(0, 32))
  if (!Buffer.from(okpPublicOf('Ed25519', key)).equals(secretKey.subarray(32))) {
    throw new SignatureError('BAD_SECRET_KEY', 'secret key public half does not match its seed')
  }
  remember(privateKeys, PRIVATE_CACHE_MAX, id, key)
  return key
}

/**
 * Sign with node:crypto. Byte-identical to `nacl.sign.detached` (Ed25519 is deterministic).
 * Throws SignatureError('BAD_SECRET_KEY') for a wrong-length key or one whose public half
 * does not match its seed.
 */
export function sign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  const sig = cryptoSign(null, message, privateKeyObject(secretKey))
  return new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength)
}

/** Sign with tweetnacl (portable path). Throws SignatureError('BAD_SECRET_KEY') for a wrong-length key. */
export function naclSign(message: Uint8Array, secretKey: Uint8Array): Uint8Array {
  checkSecretKey(secretKey)
  return nacl.sign.detached(message, secretKey)
}

/**
 * An Ed25519 key pair from a 32-byte seed, in tweetnacl's layout (secret
 * key = seed ‖ public key): what nacl.sign.keyPair.fromSeed gives, on
 * node:crypto (tweetnacl's pure-JS base-point multiplication takes ~2 ms).
 */
export function signKeyPairFromSeed(seed: Uint8Array): { publicKey: Uint8Array; secretKey: Uint8Array } {
  if (seed.length !== 32) throw new SignatureError('BAD_SECRET_KEY', 'an Ed25519 seed is 32 bytes')
  const publicKey = okpPublicOf('Ed25519', importOkpPrivate('Ed25519', seed))
  const secretKey = new Uint8Array(64)
  secretKey.set(seed, 0)
  secretKey.set(publicKey, 32)
  return { publicKey, secretKey }
}
