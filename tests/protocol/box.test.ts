/** node:crypto X25519 gives exactly what tweetnacl's box gives. */
import fc from 'fast-check'
import nacl from 'tweetnacl'
import { describe, expect, it } from 'vitest'
import { boxBefore, boxPublicKey, ephemeralBox } from '../../src/protocol/box.js'
import { signKeyPairFromSeed } from '../../src/protocol/signature.js'

const key = fc.uint8Array({ minLength: 32, maxLength: 32 })

describe('box on node:crypto', () => {
  it('public keys and shared keys equal tweetnacl on random keys', () => {
    fc.assert(
      fc.property(key, key, (a, b) => {
        expect(boxPublicKey(a)).toEqual(nacl.box.keyPair.fromSecretKey(a).publicKey)
        const bPk = nacl.box.keyPair.fromSecretKey(b).publicKey
        expect(boxBefore(bPk, a)).toEqual(nacl.box.before(bPk, a))
      }),
      { numRuns: 200 },
    )
  })

  it('a message boxed one way opens the other way', () => {
    const alice = nacl.box.keyPair()
    const bob = nacl.box.keyPair()
    const nonce = nacl.randomBytes(24)
    const sealed = nacl.secretbox(new Uint8Array([1, 2, 3]), nonce, boxBefore(bob.publicKey, alice.secretKey))
    expect(nacl.box.open(sealed, nonce, alice.publicKey, bob.secretKey)).toEqual(new Uint8Array([1, 2, 3]))
  })

  it('falls back to tweetnacl for a low-order public key (OpenSSL refuses the all-zero point)', () => {
    const sk = nacl.randomBytes(32)
    for (const pk of [new Uint8Array(32), new Uint8Array(32).fill(0).map((_, i) => (i === 0 ? 1 : 0))]) {
      expect(boxBefore(pk, sk)).toEqual(nacl.box.before(pk, sk))
    }
  })
})

describe('ephemeralBox', () => {
  it('gives the public key and shared key tweetnacl gives', () => {
    fc.assert(
      fc.property(key, key, (e, b) => {
        const bPk = nacl.box.keyPair.fromSecretKey(b).publicKey
        const r = ephemeralBox(bPk, e)
        expect(r.publicKey).toEqual(nacl.box.keyPair.fromSecretKey(e).publicKey)
        expect(r.key).toEqual(nacl.box.before(bPk, e))
      }),
      { numRuns: 100 },
    )
  })
})

describe('Ed25519 key pairs from a seed on node:crypto', () => {
  it('equal nacl.sign.keyPair.fromSeed', () => {
    fc.assert(
      fc.property(key, (seed) => {
        const n = nacl.sign.keyPair.fromSeed(seed)
        const o = signKeyPairFromSeed(seed)
        expect(o.publicKey).toEqual(n.publicKey)
        expect(o.secretKey).toEqual(n.secretKey)
      }),
      { numRuns: 100 },
    )
  })
})
