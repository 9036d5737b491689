import { createHash, generateKeyPairSync, createPublicKey, verify as rawNodeVerify } from 'node:crypto'
import { describe, it, expect } from 'vitest'
import fc from 'fast-check'
import nacl from 'tweetnacl'
import {
  PUBLIC_KEY_BYTES,
  SECRET_KEY_BYTES,
  SIGNATURE_BYTES,
  SignatureError,
  isCanonicalSignature,
  isValidPublicKey,
  nodeVerifier,
  naclVerifier,
  verify,
  sign,
  naclSign,
  type Verifier,
} from '../../src/protocol/signature.js'

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'))
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const verifiers: readonly Verifier[] = [nodeVerifier, naclVerifier]

// ---------------------------------------------------------------------------
// Independent BigInt reference (RFC 8032 §5.1.3 as in its §6 Python, affine points)
// used to cross-check the implementation's constants and fast paths.
const P = 2n ** 255n - 19n
const L = 2n ** 252n + 27742317777372353535851937790883648493n
const mod = (a: bigint): bigint => ((a % P) + P) % P
const powmod = (b: bigint, e: bigint): bigint => {
  let r = 1n
  let x = mod(b)
  for (; e > 0n; e >>= 1n) {
    if (e & 1n) r = (r * x) % P
    x = (x * x) % P
  }
  return r
}
const inv = (a: bigint): bigint => powmod(a, P - 2n)
const D = mod(-121665n * inv(121666n))
const SQRT_M1 = powmod(2n, (P - 1n) / 4n)
type Point = readonly [bigint, bigint]
const IDENTITY: Point = [0n, 1n]

const leToBig = (b: Uint8Array): bigint => {
  let n = 0n
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!)
  return n
}
const bigToLe = (n: bigint, len: number): Uint8Array => {
  const out = new Uint8Array(len)
  for (let i = 0; i < len; i++) {
    out[i] = Number(n & 0xffn)
    n >>= 8n
  }
  return out
}

function refDecode(enc: Uint8Array): Point | undefined {
  const n = leToBig(enc)
  const sign = n >> 255n
  const y = n & (2n ** 255n - 1n)
  if (y >= P) return undefined
  const x2 = mod((y * y - 1n) * inv(D * y * y + 1n))
  if (x2 === 0n) return sign === 1n ? undefined : [0n, y]
  let x = powmod(x2, (P + 3n) / 8n)
  if (mod(x * x - x2) !== 0n) x = mod(x * SQRT_M1)
  if (mod(x * x - x2) !== 0n) return undefined
  if ((x & 1n) !== sign) x = P - x
  return [x, y]
}

function add(a: Point, b: Point): Point {
  const [x1, y1] = a
  const [x2, y2] = b
  const t = mod(D * x1 * x2 * y1 * y2)
  return [mod((x1 * y2 + y1 * x2) * inv(1n + t)), mod((y1 * y2 + x1 * x2) * inv(1n - t))]
}
const mul8 = (pt: Point): Point => {
  const p2 = add(pt, pt)
  const p4 = add(p2, p2)
  return add(p4, p4)
}
const isIdentity = (pt: Point): boolean => pt[0] === 0n && pt[1] === 1n

/** Reference validity: canonical, on the curve, and 8·P ≠ identity (i.e. not small-order). */
function refValidPublicKey(pk: Uint8Array): boolean {
  if (pk.length !== 32) return false
  const pt = refDecode(pk)
  return pt !== undefined && !isIdentity(mul8(pt))
}

/** S + k (little-endian 256-bit add on bytes 32..63, wrapping). */
function addToS(sig: Uint8Array, k: bigint): Uint8Array {
  const out = sig.slice()
  out.set(bigToLe((leToBig(sig.subarray(32)) + k) % 2n ** 256n, 32), 32)
  return out
}
function withS(sig: Uint8Array, s: bigint): Uint8Array {
  const out = sig.slice()
  out.set(bigToLe(s, 32), 32)
  return out
}
function flipBit(b: Uint8Array, bit: number): Uint8Array {
  const out = b.slice()
  out[bit >> 3]! ^= 1 << (bit & 7)
  return out
}
function secretKeyFromSeed(seed: Uint8Array): Uint8Array {
  return nacl.sign.keyPair.fromSeed(seed).secretKey
}

// ---------------------------------------------------------------------------
// RFC 8032 §7.1 test vectors (SECRET KEY is the 32-byte seed).
const RFC_VECTORS = [
  {
    name: 'TEST 1',
    seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    pk: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    msg: '',
    sig:
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155' +
      '5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2',
    seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    pk: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    msg: '72',
    sig:
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da' +
      '085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3',
    seed: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    pk: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    msg: 'af82',
    sig:
      '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac' +
      '18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
  {
    name: 'TEST 1024',
    seed: 'f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5',
    pk: '278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e',
    msg:
      '08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98' +
      'fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8' +
      '79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d' +
      '658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc' +
      '1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe' +
      'ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e' +
      '06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef' +
      'efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7' +
      'aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1' +
      '85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2' +
      'd17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24' +
      '554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270' +
      '88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc' +
      '2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07' +
      '07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba' +
      'b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a' +
      'ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e' +
      'c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7' +
      '51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c' +
      '42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8' +
      'ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df' +
      'f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08' +
      'd78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649' +
      'de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4' +
      '88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3' +
      '2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e' +
      '6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f' +
      'b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5' +
      '0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1' +
      '369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d' +
      'b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c' +
      '0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0',
    sig:
      '0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350' +
      'aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03',
  },
  {
    name: 'TEST SHA(abc)',
    seed: '833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42',
    pk: 'ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf',
    msg:
      'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a' +
      '2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f',
    sig:
      'dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589' +
      '09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704',
  },
] as const

describe('RFC 8032 §7.1 Ed25519 test vectors', () => {
  it('vector inputs are well-formed (guards against typos in the hex)', () => {
    for (const v of RFC_VECTORS) {
      expect([v.seed.length, v.pk.length, v.sig.length]).toEqual([64, 64, 128])
      expect(v.msg).toMatch(/^(?:[0-9a-f]{2})*$/)
    }
    expect(hex(RFC_VECTORS[3].msg).length).toBe(1023)
    expect(toHex(hex(RFC_VECTORS[4].msg))).toBe(createHash('sha512').update('abc').digest('hex'))
  })

  it.each(RFC_VECTORS)('$name: both signers reproduce the signature and both verifiers accept', (v) => {
    const seed = hex(v.seed)
    const pk = hex(v.pk)
    const msg = hex(v.msg)
    const expected = hex(v.sig)
    const sk = secretKeyFromSeed(seed)
    expect(toHex(sk.subarray(32))).toBe(v.pk)

    expect(toHex(sign(msg, sk))).toBe(v.sig)
    expect(toHex(naclSign(msg, sk))).toBe(v.sig)

    expect(isValidPublicKey(pk)).toBe(true)
    expect(isCanonicalSignature(expected)).toBe(true)
    expect(nodeVerifier.verify(msg, expected, pk)).toBe(true)
    expect(naclVerifier.verify(msg, expected, pk)).toBe(true)
    expect(verify(msg, expected, pk)).toBe(true)

    const otherMsg = msg.length === 0 ? new Uint8Array([0]) : flipBit(msg, 0)
    expect(nodeVerifier.verify(otherMsg, expected, pk)).toBe(false)
    expect(naclVerifier.verify(otherMsg, expected, pk)).toBe(false)
  })
})

// ---------------------------------------------------------------------------
const seedArb = fc.uint8Array({ minLength: 32, maxLength: 32 })
const msgArb = fc.uint8Array({ minLength: 0, maxLength: 300 })

describe('random keys and messages (fast-check)', () => {
  it('sign === naclSign, both verifiers (and verify) accept, the key is valid', () => {
    fc.assert(
      fc.property(seedArb, msgArb, (seed, msg) => {
        const sk = secretKeyFromSeed(seed)
        const pk = sk.subarray(32)
        const s = sign(msg, sk)
        expect(s).toBeInstanceOf(Uint8Array)
        expect(s.length).toBe(SIGNATURE_BYTES)
        expect(toHex(s)).toBe(toHex(naclSign(msg, sk)))
        expect(isValidPublicKey(pk)).toBe(true)
        expect(isCanonicalSignature(s)).toBe(true)
        expect(nodeVerifier.verify(msg, s, pk)).toBe(true)
        expect(naclVerifier.verify(msg, s, pk)).toBe(true)
        expect(verify(msg, s, pk)).toBe(true)
      }),
      { numRuns: 300 },
    )
  })

  it('flipping any one bit of message, signature or public key makes both verifiers reject', () => {
    fc.assert(
      fc.property(
        seedArb,
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.constantFrom('message', 'signature', 'publicKey'),
        fc.nat(),
        (seed, msg, target, bitSeed) => {
          const sk = secretKeyFromSeed(seed)
          let pk: Uint8Array = sk.subarray(32)
          let s = sign(msg, sk)
          let m: Uint8Array = msg
          if (target === 'message') m = flipBit(m, bitSeed % (m.length * 8))
          else if (target === 'signature') s = flipBit(s, bitSeed % (SIGNATURE_BYTES * 8))
          else pk = flipBit(pk, bitSeed % (PUBLIC_KEY_BYTES * 8))
          expect(nodeVerifier.verify(m, s, pk)).toBe(false)
          expect(naclVerifier.verify(m, s, pk)).toBe(false)
        },
      ),
      { numRuns: 300 },
    )
  })

  it('the two verifiers always agree, on valid and on tampered inputs', () => {
    const mutation = fc.constantFrom('none', 'flip', 'addL', 'randomKey', 'randomSig', 'smallOrderKey', 'truncate')
    fc.assert(
      fc.property(seedArb, msgArb, mutation, fc.nat(), seedArb, (seed, msg, mut, n, noise) => {
        const sk = secretKeyFromSeed(seed)
        let pk: Uint8Array = sk.subarray(32)
        let s = sign(msg, sk)
        if (mut === 'flip') s = flipBit(s, n % 512)
        else if (mut === 'addL') s = addToS(s, L)
        else if (mut === 'randomKey') pk = noise
        else if (mut === 'randomSig') s = new Uint8Array([...noise, ...noise])
        else if (mut === 'smallOrderKey') pk = hex(SMALL_ORDER[n % SMALL_ORDER.length]!)
        else if (mut === 'truncate') s = s.subarray(0, n % SIGNATURE_BYTES)
        const a = nodeVerifier.verify(msg, s, pk)
        expect(naclVerifier.verify(msg, s, pk)).toBe(a)
        if (mut === 'none') expect(a).toBe(true)
        if (mut === 'addL' || mut === 'smallOrderKey' || mut === 'truncate') expect(a).toBe(false)
      }),
      { numRuns: 300 },
    )
  })

  it('isValidPublicKey matches an independent BigInt decoder + 8·P ≠ O check on random bytes', () => {
    let valid = 0
    fc.assert(
      fc.property(seedArb, (bytes) => {
        const ref = refValidPublicKey(bytes)
        if (ref) valid++
        expect(isValidPublicKey(bytes)).toBe(ref)
      }),
      { numRuns: 500 },
    )
    // About half of all 32-byte strings decode to a curve point: both branches were exercised.
    expect(valid).toBeGreaterThan(100)
    expect(valid).toBeLessThan(400)
  })

  it('keeps working past the KeyObject cache bounds (LRU eviction and rebuild)', () => {
    const msg = new Uint8Array([1, 2, 3])
    const keys: { sk: Uint8Array; pk: Uint8Array; sig: Uint8Array }[] = []
    for (let i = 0; i < 1100; i++) {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519')
      const pk = new Uint8Array(Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'))
      const seed = new Uint8Array(Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url'))
      const sk = new Uint8Array([...seed, ...pk])
      keys.push({ sk, pk, sig: sign(msg, sk) })
    }
    for (const k of keys) expect(verify(msg, k.sig, k.pk)).toBe(true)
    for (const k of keys.slice(0, 100)) {
      expect(verify(msg, k.sig, k.pk)).toBe(true)
      expect(toHex(sign(msg, k.sk))).toBe(toHex(k.sig))
      expect(verify(msg, k.sig, keys[1099]!.pk)).toBe(false)
    }
  })
})

// ---------------------------------------------------------------------------
describe('non-canonical signatures (S ≥ L)', () => {
  const sk = secretKeyFromSeed(hex(RFC_VECTORS[2].seed))
  const pk = sk.subarray(32)
  const msg = new TextEncoder().encode('chapar/v1/envelope\0 malleability check')
  const good = sign(msg, sk)

  it('tweetnacl alone ACCEPTS S + L (tweetnacl-js#253): the reason for the pre-check', () => {
    const malleated = addToS(good, L)
    expect(toHex(malleated)).not.toBe(toHex(good))
    expect(leToBig(malleated.subarray(32))).toBe(leToBig(good.subarray(32)) + L)
    expect(nacl.sign.detached.verify(msg, malleated, pk)).toBe(true)

    expect(isCanonicalSignature(malleated)).toBe(false)
    expect(nodeVerifier.verify(msg, malleated, pk)).toBe(false)
    expect(naclVerifier.verify(msg, malleated, pk)).toBe(false)
    expect(verify(msg, malleated, pk)).toBe(false)
  })

  it('node:crypto (OpenSSL) by itself already rejects S + L; the pre-check does not rely on it', () => {
    const spki = createPublicKey({
      key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), pk]),
      format: 'der',
      type: 'spki',
    })
    expect(rawNodeVerify(null, msg, spki, good)).toBe(true)
    expect(rawNodeVerify(null, msg, spki, addToS(good, L))).toBe(false)
  })

  it('rejects S = L, S = 2^256 − 1 and other S ≥ L; accepts the boundary S = L − 1 as canonical', () => {
    for (const s of [L, L + 1n, 2n * L, 2n ** 253n, 2n ** 255n, 2n ** 256n - 1n]) {
      const bad = withS(good, s)
      expect(isCanonicalSignature(bad)).toBe(false)
      expect(nodeVerifier.verify(msg, bad, pk)).toBe(false)
      expect(naclVerifier.verify(msg, bad, pk)).toBe(false)
    }
    expect(isCanonicalSignature(withS(good, L - 1n))).toBe(true)
    expect(isCanonicalSignature(withS(good, 0n))).toBe(true)
  })

  it('isCanonicalSignature equals the BigInt comparison S < L (random S, dense near L)', () => {
    const sArb = fc.oneof(
      fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }),
      fc.bigInt({ min: L - 70000n, max: L + 70000n }),
      fc.bigInt({ min: 0n, max: 2n ** 253n }),
    )
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), sArb, (r, s) => {
        const sig = new Uint8Array(64)
        sig.set(r)
        sig.set(bigToLe(s, 32), 32)
        expect(isCanonicalSignature(sig)).toBe(s < L)
      }),
      { numRuns: 1000 },
    )
  })
})

// ---------------------------------------------------------------------------
// All 8 points of order dividing 8 (canonical encodings; cf. libsodium's blocklist).
const SMALL_ORDER = [
  '0100000000000000000000000000000000000000000000000000000000000000', // identity
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // (0, -1), order 2
  '0000000000000000000000000000000000000000000000000000000000000000', // order 4
  '0000000000000000000000000000000000000000000000000000000000000080', // order 4
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', // order 8
  '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a', // order 8
  'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa', // order 8
] as const

describe('malformed public keys', () => {
  const sk = secretKeyFromSeed(hex(RFC_VECTORS[1].seed))
  const pk = sk.subarray(32)
  const msg = new Uint8Array([0x63, 0x68, 0x61, 0x70, 0x61, 0x72])
  const sig = sign(msg, sk)

  const expectRejected = (badPk: Uint8Array, s: Uint8Array = sig): void => {
    expect(isValidPublicKey(badPk)).toBe(false)
    for (const v of verifiers) expect(v.verify(msg, s, badPk)).toBe(false)
    expect(verify(msg, s, badPk)).toBe(false)
  }

  it('a valid key passes (sanity)', () => {
    expect(isValidPublicKey(pk)).toBe(true)
    for (const v of verifiers) expect(v.verify(msg, sig, pk)).toBe(true)
  })

  it('wrong length', () => {
    for (const len of [0, 1, 31, 33, 64]) {
      const bad = new Uint8Array(len)
      bad.set(pk.subarray(0, Math.min(len, 32)))
      expectRejected(bad)
    }
  })

  it('y ≥ p encodings (non-canonical), either sign bit', () => {
    for (const y of [P, P + 1n, P + 2n, 2n ** 255n - 1n]) {
      expect(refDecode(bigToLe(y, 32))).toBeUndefined()
      expectRejected(bigToLe(y, 32))
      expectRejected(bigToLe(y | (1n << 255n), 32))
    }
  })

  it('a point that is not on the curve (first y = 2, 3, … with x² a non-residue)', () => {
    let found: Uint8Array | undefined
    for (let y = 2n; y < 100n && found === undefined; y++) {
      const x2 = mod((y * y - 1n) * inv(D * y * y + 1n))
      if (powmod(x2, (P - 1n) / 2n) === P - 1n) found = bigToLe(y, 32)
    }
    expect(found).toBeDefined()
    const notOnCurve = found!
    expect(refDecode(notOnCurve)).toBeUndefined()
    expectRejected(notOnCurve)
    const withSign = notOnCurve.slice()
    withSign[31]! |= 0x80
    expectRejected(withSign)
  })

  it('x = 0 with the sign bit set (the identity "negated")', () => {
    const bad = hex('0100000000000000000000000000000000000000000000000000000000000080')
    expect(refDecode(bad)).toBeUndefined()
    expectRejected(bad)
  })

  it('the small-order list is right: 8 distinct on-curve encodings with 8·P = O', () => {
    expect(new Set(SMALL_ORDER).size).toBe(8)
    for (const enc of SMALL_ORDER) {
      const pt = refDecode(hex(enc))
      expect(pt).toBeDefined()
      expect(isIdentity(mul8(pt!))).toBe(true)
    }
  })

  it.each(SMALL_ORDER)('small-order point %s is rejected', (enc) => {
    expectRejected(hex(enc))
  })

  it('small-order keys enable universal forgeries that raw node:crypto and raw tweetnacl accept', () => {
    const identity = hex(SMALL_ORDER[0])
    const forged = new Uint8Array(64)
    forged.set(identity) // R = identity, S = 0: valid for every message under A = identity
    const spki = createPublicKey({
      key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), identity]),
      format: 'der',
      type: 'spki',
    })
    for (const m of [msg, new Uint8Array(0), new TextEncoder().encode('anything at all')]) {
      expect(rawNodeVerify(null, m, spki, forged)).toBe(true)
      expect(nacl.sign.detached.verify(m, forged, identity)).toBe(true)
      expect(nodeVerifier.verify(m, forged, identity)).toBe(false)
      expect(naclVerifier.verify(m, forged, identity)).toBe(false)
    }
  })
})

// ---------------------------------------------------------------------------
describe('wrong-length signatures and secret keys', () => {
  const sk = secretKeyFromSeed(hex(RFC_VECTORS[0].seed))
  const pk = sk.subarray(32)
  const msg = new Uint8Array([42])
  const sig = sign(msg, sk)

  it('verifiers return false (never throw) for a wrong-length signature', () => {
    for (const len of [0, 1, 32, 63, 65, 128]) {
      const bad = new Uint8Array(len)
      bad.set(sig.subarray(0, Math.min(len, 64)))
      expect(isCanonicalSignature(bad)).toBe(false)
      for (const v of verifiers) expect(v.verify(msg, bad, pk)).toBe(false)
      expect(verify(msg, bad, pk)).toBe(false)
    }
    const padded = new Uint8Array(65)
    padded.set(sig)
    expect(nodeVerifier.verify(msg, padded.subarray(0, 64), pk)).toBe(true)
  })

  it('sign and naclSign throw SignatureError BAD_SECRET_KEY for a wrong-length secret key', () => {
    for (const len of [0, 32, 63, 65, 96]) {
      const bad = new Uint8Array(len)
      bad.set(sk.subarray(0, Math.min(len, SECRET_KEY_BYTES)))
      for (const signer of [sign, naclSign]) {
        let err: unknown
        try {
          signer(msg, bad)
        } catch (e) {
          err = e
        }
        expect(err).toBeInstanceOf(SignatureError)
        expect(err).toBeInstanceOf(Error)
        expect((err as SignatureError).code).toBe('BAD_SECRET_KEY')
        expect((err as SignatureError).name).toBe('SignatureError')
      }
    }
  })

  it('sign refuses a secret key whose public half does not match its seed', () => {
    const mismatched = sk.slice()
    mismatched.set(secretKeyFromSeed(hex(RFC_VECTORS[1].seed)).subarray(32), 32)
    expect(() => sign(msg, mismatched)).toThrow(SignatureError)
    try {
      sign(msg, mismatched)
    } catch (e) {
      expect((e as SignatureError).code).toBe('BAD_SECRET_KEY')
    }
  })

  it('accepts subarray views (non-zero byteOffset) for every input', () => {
    const buf = new Uint8Array(7 + 64 + 64 + 32 + 1)
    buf.set(sk, 7)
    buf.set(sig, 71)
    buf.set(pk, 135)
    buf[167] = 42
    const skView = buf.subarray(7, 71)
    const sigView = buf.subarray(71, 135)
    const pkView = buf.subarray(135, 167)
    const msgView = buf.subarray(167, 168)
    expect(toHex(sign(msgView, skView))).toBe(toHex(sig))
    expect(toHex(naclSign(msgView, skView))).toBe(toHex(sig))
    for (const v of verifiers) expect(v.verify(msgView, sigView, pkView)).toBe(true)
  })
})
