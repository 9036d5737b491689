/**
 * Raw 32-byte Ed25519 and X25519 private keys into node:crypto KeyObjects,
 * and their public halves, for signature.ts and box.ts.
 *
 * On Node 20, importing a key as JWK is ~10× faster than as PKCS#8 DER (no
 * OpenSSL decoder framework), and reading `x` back from the private key's
 * JWK is ~40× faster than exporting SPKI DER. The JWK is given a placeholder
 * `x`: Node builds the key from `d` alone and derives the public half. That
 * path is used only if this runtime does exactly that, checked once per
 * curve against a published vector; otherwise DER, as before.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'

export type OkpCurve = 'Ed25519' | 'X25519'

export const SPKI_PREFIX: Record<OkpCurve, Buffer> = {
  Ed25519: Buffer.from('302a300506032b6570032100', 'hex'),
  X25519: Buffer.from('302a300506032b656e032100', 'hex'),
}
const PKCS8_PREFIX: Record<OkpCurve, Buffer> = {
  Ed25519: Buffer.from('302e020100300506032b657004220420', 'hex'),
  X25519: Buffer.from('302e020100300506032b656e04220420', 'hex'),
}
/** [private, public]: RFC 8032 §7.1 test 1 and RFC 7748 §6.1 (Alice). */
const VECTORS: Record<OkpCurve, [string, string]> = {
  Ed25519: ['9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a'],
  X25519: ['77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'],
}
const PLACEHOLDER_X = Buffer.alloc(32).toString('base64url')

function importJwk(crv: OkpCurve, raw: Uint8Array): KeyObject {
  return createPrivateKey({ key: { kty: 'OKP', crv, d: Buffer.from(raw).toString('base64url'), x: PLACEHOLDER_X }, format: 'jwk' })
}

function importDer(crv: OkpCurve, raw: Uint8Array): KeyObject {
  const der = Buffer.concat([PKCS8_PREFIX[crv], raw])
  const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
  der.fill(0)
  return key
}

function jwkX(key: KeyObject): Uint8Array | undefined {
  const x = key.export({ format: 'jwk' }).x
  return typeof x === 'string' ? new Uint8Array(Buffer.from(x, 'base64url')) : undefined
}

const checked = new Map<OkpCurve, boolean>()

function jwkWorks(crv: OkpCurve): boolean {
  let ok = checked.get(crv)
  if (ok === undefined) {
    try {
      const [d, x] = VECTORS[crv]
      ok = Buffer.from(jwkX(importJwk(crv, Buffer.from(d, 'hex'))) ?? []).toString('hex') === x
    } catch {
      ok = false
    }
    checked.set(crv, ok)
  }
  return ok
}

/** A private KeyObject from 32 raw bytes (an Ed25519 seed or an X25519 scalar). */
export function importOkpPrivate(crv: OkpCurve, raw: Uint8Array): KeyObject {
  if (jwkWorks(crv)) {
    try {
      return importJwk(crv, raw)
    } catch {
      // fall through to DER
    }
  }
  return importDer(crv, raw)
}

/** The raw 32-byte public key of a private KeyObject. */
export function okpPublicOf(crv: OkpCurve, key: KeyObject): Uint8Array {
  const x = jwkWorks(crv) ? jwkX(key) : undefined
  if (x) return x
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' })
  return new Uint8Array(spki.subarray(SPKI_PREFIX[crv].length))
}
