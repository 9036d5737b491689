/**
 * Datagram packet sealing: a client packet sealed with the keys derived
 * from the relay's static key opens on the relay with the keys derived from
 * the one-time key in its clear header, and the reverse; every bit of the
 * packet (header included) is authenticated; keys do not cross relays,
 * sessions or directions; peekHeader accepts only well-formed headers; and
 * the nonce changes with the packet number.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { boxPublicKey } from '../../src/protocol/box.js'
import {
  AEAD_TAG_BYTES,
  CLIENT_HEADER_BYTES,
  CLIENT_TAG,
  clientKeys,
  openPacket,
  type PacketKeys,
  peekHeader,
  RELAY_HEADER_BYTES,
  RELAY_TAG,
  relayKeys,
  sealPacket,
} from '../../src/protocol/datagram-crypto.js'
import { Rng } from '../../src/sim/rng.js'

/** A relay session's salt (datagram-crypto.ts: relay nonces are salt ‖ packet number). */
const SALT = new Uint8Array(7).fill(0x5a)

const rng = new Rng(0xc4a9a5)
const key32 = (): Uint8Array => rng.bytes(32)

interface Session {
  relaySk: Uint8Array
  relayPk: Uint8Array
  ephemeralPk: Uint8Array
  client: PacketKeys
}

function session(relaySk = key32()): Session {
  const relayPk = boxPublicKey(relaySk)
  const { ephemeralPk, keys } = clientKeys(relayPk, key32())
  return { relaySk, relayPk, ephemeralPk, client: keys }
}

/** What a relay does with a client packet: peek, derive from the header's one-time key, open. */
function relayOpen(relaySk: Uint8Array, packet: Uint8Array): Uint8Array | undefined {
  const h = peekHeader(packet)
  if (!h || h.tag !== CLIENT_TAG || !h.ephemeralPk) return undefined
  return openPacket(h, relayKeys(relaySk, h.ephemeralPk).up, packet)
}

/** What a client does with a relay packet. */
function clientOpen(keys: PacketKeys, packet: Uint8Array): Uint8Array | undefined {
  const h = peekHeader(packet)
  if (!h || h.tag !== RELAY_TAG) return undefined
  return openPacket(h, keys.down, packet)
}

function flipped(packet: Uint8Array, bit: number): Uint8Array {
  const p = packet.slice()
  p[bit >> 3]! ^= 1 << (bit & 7)
  return p
}

describe('datagram-crypto: round trip', () => {
  it('client and relay derive the same two keys, one per direction', () => {
    const s = session()
    const r = relayKeys(s.relaySk, s.ephemeralPk)
    expect(r.up).toEqual(s.client.up)
    expect(r.down).toEqual(s.client.down)
    expect(r.up).not.toEqual(r.down)
    expect(relayKeys(s.relaySk, s.ephemeralPk, s.relayPk)).toEqual(r)
  })

  it('client → relay: sealed with clientKeys, opened with relayKeys from the header', () => {
    const s = session()
    for (const [pn, size] of [
      [0, 0],
      [1, 1],
      [2, 1200],
      [0x7fffffff, 77],
      [0xffffffff, 5],
    ] as const) {
      const body = rng.bytes(size)
      const packet = sealPacket(CLIENT_TAG, s.client.up, pn, body, s.ephemeralPk)
      expect(packet.length).toBe(CLIENT_HEADER_BYTES + size + AEAD_TAG_BYTES)
      const h = peekHeader(packet)!
      expect(h).toEqual({ tag: CLIENT_TAG, pn, headerBytes: CLIENT_HEADER_BYTES, ephemeralPk: s.ephemeralPk })
      expect(relayOpen(s.relaySk, packet)).toEqual(body)
    }
  })

  it('relay → client: sealed with the down key, opened by the client', () => {
    const s = session()
    const relay = relayKeys(s.relaySk, s.ephemeralPk)
    for (const [pn, size] of [
      [0, 0],
      [9, 300],
      [0xfffffffe, 1],
    ] as const) {
      const body = rng.bytes(size)
      const packet = sealPacket(RELAY_TAG, relay.down, pn, body, SALT)
      expect(packet.length).toBe(RELAY_HEADER_BYTES + size + AEAD_TAG_BYTES)
      expect(peekHeader(packet)).toEqual({ tag: RELAY_TAG, pn, headerBytes: RELAY_HEADER_BYTES, salt: SALT })
      expect(clientOpen(s.client, packet)).toEqual(body)
    }
  })

  it('round trips any body and packet number — property', () => {
    const s = session()
    const relay = relayKeys(s.relaySk, s.ephemeralPk)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), fc.nat({ max: 0xffffffff }), (body, pn) => {
        expect(relayOpen(s.relaySk, sealPacket(CLIENT_TAG, s.client.up, pn, body, s.ephemeralPk))).toEqual(body)
        expect(clientOpen(s.client, sealPacket(RELAY_TAG, relay.down, pn, body, SALT))).toEqual(body)
      }),
      { numRuns: 100 },
    )
  })

  it('opens a packet that sits at an offset inside a larger buffer (as from a socket)', () => {
    const s = session()
    const body = rng.bytes(40)
    const packet = sealPacket(CLIENT_TAG, s.client.up, 3, body, s.ephemeralPk)
    const big = new Uint8Array(packet.length + 19)
    big.set(packet, 7)
    const view = big.subarray(7, 7 + packet.length)
    expect(relayOpen(s.relaySk, view)).toEqual(body)
  })
})

describe('datagram-crypto: authentication', () => {
  it('any single flipped bit of a client packet (header included) makes it not open', () => {
    const s = session()
    const body = rng.bytes(24)
    const packet = sealPacket(CLIENT_TAG, s.client.up, 1234, body, s.ephemeralPk)
    const hOrig = peekHeader(packet)!
    const keyOrig = relayKeys(s.relaySk, s.ephemeralPk).up
    expect(openPacket(hOrig, keyOrig, packet)).toEqual(body)
    for (let bit = 0; bit < packet.length * 8; bit++) {
      const bad = flipped(packet, bit)
      // As the relay would: from the corrupted header.
      expect(relayOpen(s.relaySk, bad), `bit ${bit}`).toBeUndefined()
      // With the original header and the right key: the flipped bit is still caught.
      expect(openPacket(hOrig, keyOrig, bad), `bit ${bit}`).toBeUndefined()
      const h = peekHeader(bad)
      if (h) expect(openPacket(h, keyOrig, bad), `bit ${bit}`).toBeUndefined()
    }
  })

  it('flipping the top bit of the one-time key (ignored by X25519) is still caught', () => {
    const s = session()
    const packet = sealPacket(CLIENT_TAG, s.client.up, 0, rng.bytes(10), s.ephemeralPk)
    const bad = flipped(packet, (1 + 31) * 8 + 7) // last byte of the key, bit 7
    expect(relayOpen(s.relaySk, bad)).toBeUndefined()
  })

  it('any single flipped bit of a relay packet makes it not open', () => {
    const s = session()
    const relay = relayKeys(s.relaySk, s.ephemeralPk)
    const body = rng.bytes(33)
    const packet = sealPacket(RELAY_TAG, relay.down, 0xabcdef, body, SALT)
    const hOrig = peekHeader(packet)!
    expect(clientOpen(s.client, packet)).toEqual(body)
    for (let bit = 0; bit < packet.length * 8; bit++) {
      const bad = flipped(packet, bit)
      expect(clientOpen(s.client, bad), `bit ${bit}`).toBeUndefined()
      expect(openPacket(hOrig, s.client.down, bad), `bit ${bit}`).toBeUndefined()
    }
  })

  it('an empty body is authenticated too (the tag covers the header)', () => {
    const s = session()
    const packet = sealPacket(CLIENT_TAG, s.client.up, 5, new Uint8Array(0), s.ephemeralPk)
    expect(relayOpen(s.relaySk, packet)).toEqual(new Uint8Array(0))
    for (let bit = 0; bit < packet.length * 8; bit++) expect(relayOpen(s.relaySk, flipped(packet, bit)), `bit ${bit}`).toBeUndefined()
  })

  it('truncated or extended packets do not open', () => {
    const s = session()
    const packet = sealPacket(CLIENT_TAG, s.client.up, 8, rng.bytes(50), s.ephemeralPk)
    for (let n = 0; n < packet.length; n++) expect(relayOpen(s.relaySk, packet.subarray(0, n)), `length ${n}`).toBeUndefined()
    const longer = new Uint8Array(packet.length + 1)
    longer.set(packet)
    expect(relayOpen(s.relaySk, longer)).toBeUndefined()
  })

  it('a packet sealed for another relay key does not open', () => {
    const s = session()
    const otherRelaySk = key32()
    const packet = sealPacket(CLIENT_TAG, s.client.up, 0, rng.bytes(20), s.ephemeralPk)
    expect(relayOpen(otherRelaySk, packet)).toBeUndefined()
    expect(relayOpen(s.relaySk, packet)).toBeDefined()
    // The client's keys for another relay differ, so neither relay opens the other's packets.
    const { keys } = clientKeys(boxPublicKey(otherRelaySk), key32())
    expect(keys.up).not.toEqual(s.client.up)
  })

  it("a packet of another session (another one-time key) does not open with this session's keys", () => {
    const relaySk = key32()
    const s1 = session(relaySk)
    const s2 = session(relaySk)
    const body = rng.bytes(20)
    const p1 = sealPacket(CLIENT_TAG, s1.client.up, 0, body, s1.ephemeralPk)
    const h1 = peekHeader(p1)!
    expect(openPacket(h1, s2.client.up, p1)).toBeUndefined()
    // An attacker swapping in session 2's one-time key: the relay derives session 2's keys, which do not open it.
    const swapped = p1.slice()
    swapped.set(s2.ephemeralPk, 1)
    expect(relayOpen(relaySk, swapped)).toBeUndefined()
    // Relay → client: session 1's packets do not open for session 2.
    const down1 = sealPacket(RELAY_TAG, relayKeys(relaySk, s1.ephemeralPk).down, 0, body, SALT)
    expect(clientOpen(s2.client, down1)).toBeUndefined()
    expect(clientOpen(s1.client, down1)).toEqual(body)
  })

  it('keys do not cross directions: a packet does not open with the other direction’s key or tag', () => {
    const s = session()
    const body = rng.bytes(20)
    const up = sealPacket(CLIENT_TAG, s.client.up, 3, body, s.ephemeralPk)
    expect(openPacket(peekHeader(up)!, s.client.down, up)).toBeUndefined()
    const down = sealPacket(RELAY_TAG, s.client.down, 3, body, SALT)
    expect(openPacket(peekHeader(down)!, s.client.up, down)).toBeUndefined()
    // A down packet sealed (wrongly) under the up key does not open as an up packet either: the tag is in the nonce.
    const downUnderUp = sealPacket(RELAY_TAG, s.client.up, 3, body, SALT)
    expect(clientOpen(s.client, downUnderUp)).toBeUndefined()
  })

  it('random garbage never opens — property', () => {
    const s = session()
    const relay = relayKeys(s.relaySk, s.ephemeralPk)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom(CLIENT_TAG, RELAY_TAG, 0), (bytes, tag) => {
        const p = bytes.slice()
        if (p.length > 0 && tag !== 0) p[0] = tag
        const h = peekHeader(p)
        if (!h) return
        expect(openPacket(h, h.tag === CLIENT_TAG ? relay.up : relay.down, p)).toBeUndefined()
      }),
      { numRuns: 300 },
    )
  })
})

describe('datagram-crypto: peekHeader', () => {
  it('rejects packets shorter than header + tag, accepts exactly header + tag', () => {
    expect(peekHeader(new Uint8Array(0))).toBeUndefined()
    for (const [tag, size] of [
      [CLIENT_TAG, CLIENT_HEADER_BYTES],
      [RELAY_TAG, RELAY_HEADER_BYTES],
    ] as const) {
      for (let n = 1; n < size + AEAD_TAG_BYTES; n++) {
        const p = new Uint8Array(n)
        p[0] = tag
        expect(peekHeader(p), `tag ${tag.toString(16)} length ${n}`).toBeUndefined()
      }
      const p = new Uint8Array(size + AEAD_TAG_BYTES)
      p[0] = tag
      p[size - 1] = 7
      expect(peekHeader(p)).toMatchObject({ tag, pn: 7, headerBytes: size })
    }
  })

  it('rejects every unknown tag', () => {
    for (let tag = 0; tag < 256; tag++) {
      const p = new Uint8Array(200)
      p[0] = tag
      const h = peekHeader(p)
      if (tag === CLIENT_TAG || tag === RELAY_TAG) expect(h?.tag).toBe(tag)
      else expect(h, `tag 0x${tag.toString(16)}`).toBeUndefined()
    }
  })

  it('reads the packet number big-endian from the end of the header, and copies the one-time key', () => {
    const s = session()
    const packet = sealPacket(CLIENT_TAG, s.client.up, 0x01020304, new Uint8Array(3), s.ephemeralPk)
    expect([...packet.subarray(CLIENT_HEADER_BYTES - 4, CLIENT_HEADER_BYTES)]).toEqual([1, 2, 3, 4])
    const h = peekHeader(packet)!
    expect(h.pn).toBe(0x01020304)
    packet[1]! ^= 0xff
    expect(h.ephemeralPk![0]).toBe(s.ephemeralPk[0]) // a copy, not a view
  })
})

describe('datagram-crypto: nonces', () => {
  it('the same body under different packet numbers gives different ciphertexts and tags', () => {
    const s = session()
    const body = new Uint8Array(64) // all zeros: the ciphertext is the key stream itself
    const seen = new Set<string>()
    for (let pn = 0; pn < 64; pn++) {
      const p = sealPacket(CLIENT_TAG, s.client.up, pn, body, s.ephemeralPk)
      const ct = Buffer.from(p.subarray(CLIENT_HEADER_BYTES)).toString('hex')
      expect(seen.has(ct), `pn ${pn}`).toBe(false)
      seen.add(ct)
    }
    // Packet numbers that differ only in their high bits, too.
    const a = sealPacket(RELAY_TAG, s.client.down, 1, body, SALT)
    const b = sealPacket(RELAY_TAG, s.client.down, 1 + 2 ** 24, body, SALT)
    expect(a.subarray(RELAY_HEADER_BYTES)).not.toEqual(b.subarray(RELAY_HEADER_BYTES))
  })

  it('the direction is in the nonce: same key, same number, same body, different tag byte → different ciphertext', () => {
    const s = session()
    const body = new Uint8Array(32)
    const up = sealPacket(CLIENT_TAG, s.client.up, 9, body, s.ephemeralPk)
    const down = sealPacket(RELAY_TAG, s.client.up, 9, body, SALT)
    expect(up.subarray(CLIENT_HEADER_BYTES, CLIENT_HEADER_BYTES + 32)).not.toEqual(down.subarray(RELAY_HEADER_BYTES, RELAY_HEADER_BYTES + 32))
  })

  it('sealing is deterministic for a given (key, number, body)', () => {
    const s = session()
    const body = rng.bytes(50)
    expect(sealPacket(CLIENT_TAG, s.client.up, 77, body, s.ephemeralPk)).toEqual(sealPacket(CLIENT_TAG, s.client.up, 77, body, s.ephemeralPk))
  })

  it('a packet whose header number was changed does not open (the number is both nonce and associated data)', () => {
    const s = session()
    const packet = sealPacket(RELAY_TAG, s.client.down, 10, rng.bytes(10), SALT)
    const moved = packet.slice()
    new DataView(moved.buffer).setUint32(RELAY_HEADER_BYTES - 4, 11)
    expect(clientOpen(s.client, moved)).toBeUndefined()
  })
})
