import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { ADDRESS_PREFIX, type Address, formatAddress, parseAddress, sameAddress } from '../../src/protocol/address.js'
import { concat, fromBase64url, toBase64url } from '../../src/protocol/bytes.js'
import { ChaparError, ErrorCode } from '../../src/protocol/errors.js'
import { generateIdentity } from '../../src/client/identity.js'

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

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const alice = generateIdentity(seededRandom('alice'))
const bob = generateIdentity(seededRandom('bob'))

function badAddress(text: string): ChaparError {
  let err: unknown
  try {
    parseAddress(text)
  } catch (e) {
    err = e
  }
  expect(err, `parseAddress(${JSON.stringify(text)}) should throw`).toBeInstanceOf(ChaparError)
  const e = err as ChaparError
  expect(e.code).toBe(ErrorCode.BAD_ADDRESS)
  expect(e.message).toMatch(/^malformed address: [^\r\n]+$/)
  return e
}

/** Format an address with a correct checksum around arbitrary key bytes. */
const withKeys = (signPublicKey: Uint8Array, boxPublicKey = alice.address.boxPublicKey): string =>
  formatAddress({ signPublicKey, boxPublicKey })

// --- independent curve arithmetic, to build keys that are not Ed25519 points ---
const P = 2n ** 255n - 19n
const powmod = (b: bigint, e: bigint): bigint => {
  let r = 1n
  let x = ((b % P) + P) % P
  for (; e > 0n; e >>= 1n) {
    if (e & 1n) r = (r * x) % P
    x = (x * x) % P
  }
  return r
}
const D = (((-121665n * powmod(121666n, P - 2n)) % P) + P) % P
/** Is there an x with -x² + y² = 1 + d x² y²? (x² = (y²-1)/(dy²+1) must be a square.) */
function yOnCurve(y: bigint): boolean {
  const x2 = (((y * y - 1n) % P) * powmod(D * y * y + 1n, P - 2n)) % P
  return x2 === 0n || powmod(x2, (P - 1n) / 2n) === 1n
}
const leBytes = (n: bigint): Uint8Array => {
  const out = new Uint8Array(32)
  for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn)
  return out
}

describe('formatAddress', () => {
  it('is "ch1." + base64url(signPk ‖ boxPk ‖ first 4 bytes of SHA-256(signPk ‖ boxPk))', () => {
    const { signPublicKey, boxPublicKey } = alice.address
    const sum = createHash('sha256').update(signPublicKey).update(boxPublicKey).digest().subarray(0, 4)
    const expected = 'ch1.' + Buffer.concat([signPublicKey, boxPublicKey, sum]).toString('base64url')
    expect(formatAddress(alice.address)).toBe(expected)
    expect(alice.addressText).toBe(expected)
  })

  it('is one line of 95 URL-safe characters that never starts with "-"', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (s, b) => {
        const text = formatAddress({ signPublicKey: s, boxPublicKey: b })
        expect(text).toMatch(/^ch1\.[A-Za-z0-9_-]{91}$/)
        expect(text.startsWith('-')).toBe(false)
        expect(text.startsWith(ADDRESS_PREFIX)).toBe(true)
      }),
    )
    // Key bytes that base64url-encode to a leading '-' (0xf8 → "-") still get the prefix first.
    expect(withKeys(new Uint8Array(32).fill(0xfb)).startsWith('ch1.-')).toBe(true)
  })
})

describe('parseAddress', () => {
  it('round-trips generated identities', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 12 }), (seed) => {
        const id = generateIdentity(seededRandom(seed))
        const parsed = parseAddress(id.addressText)
        expect(toBase64url(parsed.signPublicKey)).toBe(toBase64url(id.address.signPublicKey))
        expect(toBase64url(parsed.boxPublicKey)).toBe(toBase64url(id.address.boxPublicKey))
        expect(parsed.signPublicKey).toHaveLength(32)
        expect(parsed.boxPublicKey).toHaveLength(32)
        expect(formatAddress(parsed)).toBe(id.addressText)
        expect(sameAddress(parsed, id.address)).toBe(true)
      }),
      { numRuns: 40 },
    )
  })

  it('returns fresh key arrays each time', () => {
    const a = parseAddress(alice.addressText)
    a.signPublicKey.fill(0)
    a.boxPublicKey.fill(0)
    const b = parseAddress(alice.addressText)
    expect(b.signPublicKey).toEqual(alice.address.signPublicKey)
    expect(b.boxPublicKey).toEqual(alice.address.boxPublicKey)
  })

  it('tolerates surrounding whitespace (copy/paste) but nothing inside', () => {
    expect(sameAddress(parseAddress(`  ${alice.addressText}\n`), alice.address)).toBe(true)
    expect(sameAddress(parseAddress(`\t${alice.addressText}\r\n`), alice.address)).toBe(true)
    const t = alice.addressText
    badAddress(t.slice(0, 40) + ' ' + t.slice(40))
    badAddress(t.slice(0, 40) + '\n' + t.slice(40))
  })

  describe('rejects with BAD_ADDRESS and a one-line message', () => {
    const t = alice.addressText
    const body = t.slice(ADDRESS_PREFIX.length)

    it.each([
      ['no prefix', body],
      ['empty', ''],
      ['only whitespace', '  \n'],
      ['uppercase prefix', 'CH1.' + body],
      ['other version', 'ch2.' + body],
      ['prefix without dot', 'ch1' + body],
      ['leading dash', '-' + t],
      ['option-like', '--to=' + t],
    ])('missing prefix: %s', (_name, text) => {
      expect(badAddress(text).message).toBe('malformed address: must start with "ch1."')
    })

    it.each([
      ['standard base64 "+"', t.slice(0, 20) + '+' + t.slice(21)],
      ['standard base64 "/"', t.slice(0, 20) + '/' + t.slice(21)],
      ['padding', t + '='],
      ['a second dot', t.slice(0, 20) + '.' + t.slice(21)],
      ['non-ASCII', t.slice(0, 20) + 'é' + t.slice(21)],
    ])('bad base64url: %s', (_name, text) => {
      expect(badAddress(text).message).toBe('malformed address: not base64url after the prefix')
    })

    // Built from canonical base64url so only the length is wrong.
    const raw = fromBase64url(body)
    it.each([
      ['nothing after the prefix', new Uint8Array(0)],
      ['one byte', Uint8Array.of(1)],
      ['just the keys (no checksum)', raw.subarray(0, 64)],
      ['one byte short', raw.subarray(0, 67)],
      ['one byte extra', concat([raw, Uint8Array.of(0)])],
      ['three bytes extra', concat([raw, Uint8Array.of(1, 2, 3)])],
      ['the address twice', concat([raw, raw])],
    ])('wrong length: %s', (_name, bytes) => {
      const text = 'ch1.' + toBase64url(bytes)
      expect(badAddress(text).message).toBe(`malformed address: ${bytes.length} bytes, expected 68`)
    })

    it('wrong length: a truncated copy', () => {
      for (let cut = 1; cut <= 20; cut++) expect(badAddress(t.slice(0, -cut)).message).toMatch(/^malformed address: (\d+ bytes, expected 68|not base64url after the prefix)$/)
    })

    it('checksum mismatch: any single substituted character in the first 90 positions', () => {
      // Positions 0..89 each carry 6 bits of key/checksum data, so every substitution changes
      // the decoded bytes. (The last character also carries 2 padding bits: see below.)
      let checked = 0
      for (let pos = 0; pos < 90; pos++) {
        for (const c of B64URL) {
          if (c === body[pos]) continue
          const text = ADDRESS_PREFIX + body.slice(0, pos) + c + body.slice(pos + 1)
          expect(badAddress(text).message).toBe('malformed address: checksum mismatch (typo or truncated copy?)')
          checked++
        }
      }
      expect(checked).toBe(90 * 63)
    })

    it('checksum mismatch: substitutions in the last character that change its data bits', () => {
      // The last character carries 4 data bits and 2 zero padding bits; substitute canonical ones.
      const last = B64URL.indexOf(body.at(-1)!)
      expect(last & 3).toBe(0)
      for (let v = 0; v < 64; v += 4) {
        if (v === last) continue
        const text = t.slice(0, -1) + B64URL[v]!
        expect(badAddress(text).message).toBe('malformed address: checksum mismatch (typo or truncated copy?)')
      }
    })

    it('checksum mismatch: swapped keys, or a checksum from another address', () => {
      badAddress(formatAddress(alice.address).slice(0, 4) + toBase64url(Buffer.concat([alice.address.boxPublicKey, alice.address.signPublicKey, fromBase64url(body).subarray(64)])))
      const raw = fromBase64url(body)
      const other = fromBase64url(bob.addressText.slice(4))
      raw.set(other.subarray(64), 64)
      expect(badAddress('ch1.' + toBase64url(raw)).message).toMatch(/checksum mismatch/)
    })

    const notOnCurve = (() => {
      for (let y = 2n; ; y++) if (!yOnCurve(y)) return y
    })()

    it.each([
      ['y with no x on the curve', leBytes(notOnCurve)],
      ['y = p (non-canonical encoding of 0)', leBytes(P)],
      ['y = 2^255 - 1 (≥ p)', leBytes(2n ** 255n - 1n)],
      ['the identity point (small order)', leBytes(1n)],
      ['y = -1 (order 2)', leBytes(P - 1n)],
      ['y = 0 (order 4)', leBytes(0n)],
      ['all zero except the sign bit', (() => {
        const b = new Uint8Array(32)
        b[31] = 0x80
        return b
      })()],
    ])('invalid Ed25519 signing key: %s', (_name, signPk) => {
      const text = withKeys(signPk)
      expect(text).toMatch(/^ch1\.[A-Za-z0-9_-]{91}$/) // well-formed text, correct checksum
      expect(badAddress(text).message).toBe('malformed address: signing key is not a valid Ed25519 point')
    })

    it('never throws anything but BAD_ADDRESS on random text', () => {
      fc.assert(
        fc.property(
          fc.oneof(
            fc.string({ maxLength: 120 }),
            fc.string({ unit: fc.constantFrom(...B64URL), maxLength: 100 }).map((s) => 'ch1.' + s),
            fc.uint8Array({ maxLength: 80 }).map((b) => 'ch1.' + toBase64url(b)),
          ),
          (text) => {
            let out: Address | undefined
            try {
              out = parseAddress(text)
            } catch (e) {
              expect(e).toBeInstanceOf(ChaparError)
              expect((e as ChaparError).code).toBe(ErrorCode.BAD_ADDRESS)
              expect((e as Error).message).not.toMatch(/[\r\n]/)
              return
            }
            // Random text essentially never carries a valid 32-bit checksum.
            expect(formatAddress(out)).toBe(text.trim())
          },
        ),
        { numRuns: 500 },
      )
    })
  })
})

describe('sameAddress', () => {
  it('compares both keys', () => {
    expect(sameAddress(alice.address, { ...alice.address })).toBe(true)
    expect(sameAddress(alice.address, bob.address)).toBe(false)
    expect(sameAddress(alice.address, { signPublicKey: alice.address.signPublicKey, boxPublicKey: bob.address.boxPublicKey })).toBe(false)
    expect(sameAddress(alice.address, { signPublicKey: bob.address.signPublicKey, boxPublicKey: alice.address.boxPublicKey })).toBe(false)
  })
})
