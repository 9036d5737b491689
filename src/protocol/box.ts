/**
 * X25519 for nacl.box, on node:crypto where it runs: `boxBefore` and
 * `boxPublicKey` give exactly what tweetnacl's `nacl.box.before` and
 * `nacl.box.keyPair.fromSecretKey` give (RFC 7748 with the same clamping;
 * HSalsa20 of the shared point as crypto_box_beforenm does), about 40×
 * faster than tweetnacl's pure-JS scalar multiplication, which was most of
 * the simulator's time. tweetnacl stays the portable path and the fallback
 * for inputs OpenSSL refuses (a low-order public key gives an all-zero
 * shared point, which OpenSSL rejects and tweetnacl computes).
 */
import { createPublicKey, diffieHellman, type KeyObject } from 'node:crypto'
import nacl from 'tweetnacl'
import { cached } from './key-cache.js'
import { importOkpPrivate, okpPublicOf } from './okp-keys.js'

const SIGMA = new Uint8Array(Buffer.from('expand 32-byte k', 'latin1'))
const ZERO16 = new Uint8Array(16)
const CACHE_MAX = 4096
/** tweetnacl's low-level API, present at runtime but not in its type declarations. */
const lowlevel = (nacl as unknown as { lowlevel: { crypto_core_hsalsa20(out: Uint8Array, inp: Uint8Array, k: Uint8Array, c: Uint8Array): number } }).lowlevel
const privateKeys = new Map<string, KeyObject>()
const publicKeys = new Map<string, KeyObject>()

/** A recipient's long-lived public key: imported once. */
function cachedPublic(pk: Uint8Array): KeyObject {
  return cached(publicKeys, CACHE_MAX, pk, () => importPublic(pk))
}

function importPrivate(sk: Uint8Array): KeyObject {
  return importOkpPrivate('X25519', sk)
}

/** A long-lived key (an identity's): imported once. */
function cachedPrivate(sk: Uint8Array): KeyObject {
  return cached(privateKeys, CACHE_MAX, sk, () => importPrivate(sk))
}

function publicOf(key: KeyObject): Uint8Array {
  return okpPublicOf('X25519', key)
}

function importPublic(pk: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(pk).toString('base64url') }, format: 'jwk' })
}

function before(theirPk: Uint8Array, mine: KeyObject, mySk: Uint8Array, cachePublic: boolean, strict = false): Uint8Array {
  let shared: Uint8Array
  try {
    const publicKey = cachePublic ? cachedPublic(theirPk) : importPublic(theirPk)
    shared = diffieHellman({ privateKey: mine, publicKey })
  } catch (err) {
    if (strict) throw err
    return nacl.box.before(theirPk, mySk)
  }
  const k = new Uint8Array(32)
  lowlevel.crypto_core_hsalsa20(k, ZERO16, shared, SIGMA)
  return k
}

function check(...keys: Uint8Array[]): void {
  for (const k of keys) if (k.length !== 32) throw new RangeError('box keys must be 32 bytes')
}

/** The X25519 public key of a 32-byte secret key (= nacl.box.keyPair.fromSecretKey(sk).publicKey). */
export function boxPublicKey(sk: Uint8Array): Uint8Array {
  check(sk)
  return publicOf(importPrivate(sk))
}

/** The shared secret key nacl.box uses between `theirPk` and a long-lived `mySk` (= nacl.box.before(theirPk, mySk)). */
export function boxBefore(theirPk: Uint8Array, mySk: Uint8Array): Uint8Array {
  check(theirPk, mySk)
  return before(theirPk, cachedPrivate(mySk), mySk, false) // theirPk is a sender's one-time key
}

/**
 * boxBefore for keys from strangers, where the slow path is an attack
 * surface: a key OpenSSL refuses (a low-order point) throws instead of
 * falling back to tweetnacl's pure-JS scalar multiplication (~10× slower).
 */
export function boxBeforeStrict(theirPk: Uint8Array, mySk: Uint8Array): Uint8Array {
  check(theirPk, mySk)
  return before(theirPk, cachedPrivate(mySk), mySk, false, true)
}

/** For a one-time key: its public key and the shared key with `theirPk`, importing it once and caching nothing. */
export function ephemeralBox(theirPk: Uint8Array, ephemeralSk: Uint8Array): { publicKey: Uint8Array; key: Uint8Array } {
  check(theirPk, ephemeralSk)
  const mine = importPrivate(ephemeralSk)
  return { publicKey: publicOf(mine), key: before(theirPk, mine, ephemeralSk, true) } // theirPk is a recipient's long-lived key
}
