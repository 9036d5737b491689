/**
 * Sealing the datagram transport's packets, with no handshake round trip.
 * The client knows the relay's static X25519 key (it is in the relay's
 * udp:// URL), makes a one-time key pair per connection and puts the
 * one-time public key in the clear header of every packet it sends. Both
 * sides derive two ChaCha20-Poly1305 keys (one per direction) from
 * X25519(one-time, static) with HKDF-SHA256, so the client's first packet
 * already carries data, and every packet is authenticated (a forged or
 * corrupted packet never reaches the decoder, where one bad symbol would
 * spoil a block) and encrypted (an observer sees sizes and timing only).
 *
 * Packet: header ‖ AEAD(body), the header being the additional data.
 *   client → relay: 0xC1 ‖ one-time public key (32) ‖ packet number (u32)
 *   relay → client: 0xC2 ‖ session salt (7) ‖ packet number (u32)
 * The nonce is the first byte, then seven zero bytes (client) or the salt
 * (relay), then the packet number. A client's key is its own connection's,
 * and its packet numbers never repeat. A relay may open a session for one
 * client key more than once (after a restart, or when an old first packet
 * is replayed to it): each such session draws a fresh random salt, so its
 * nonces never meet another's.
 */
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto'
import { boxBeforeStrict, boxPublicKey, ephemeralBox } from './box.js'
import { utf8 } from './bytes.js'

export const CLIENT_TAG = 0xc1
export const RELAY_TAG = 0xc2
export const CLIENT_HEADER_BYTES = 1 + 32 + 4
export const SALT_BYTES = 7
export const RELAY_HEADER_BYTES = 1 + SALT_BYTES + 4
export const AEAD_TAG_BYTES = 16
const INFO = utf8('chapar/v1/udp')

export interface PacketKeys {
  /** Seals client → relay packets. */
  up: Uint8Array
  /** Seals relay → client packets. */
  down: Uint8Array
}

function derive(shared: Uint8Array, ephemeralPk: Uint8Array, relayPk: Uint8Array): PacketKeys {
  const salt = new Uint8Array(64)
  salt.set(ephemeralPk)
  salt.set(relayPk, 32)
  const okm = new Uint8Array(hkdfSync('sha256', shared, salt, INFO, 64))
  return { up: okm.subarray(0, 32), down: okm.subarray(32) }
}

/** The client's side: a fresh one-time key pair and the keys it shares with the relay. */
export function clientKeys(relayPk: Uint8Array, ephemeralSk: Uint8Array): { ephemeralPk: Uint8Array; keys: PacketKeys } {
  const { publicKey, key } = ephemeralBox(relayPk, ephemeralSk)
  return { ephemeralPk: publicKey, keys: derive(key, publicKey, relayPk) }
}

/** The relay's side, from the one-time key in a client's header. Throws on a key OpenSSL refuses (low order): no slow fallback for strangers' keys. */
export function relayKeys(relaySk: Uint8Array, ephemeralPk: Uint8Array, relayPk = boxPublicKey(relaySk)): PacketKeys {
  return derive(boxBeforeStrict(ephemeralPk, relaySk), ephemeralPk, relayPk)
}

function nonce(tag: number, pn: number, salt?: Uint8Array): Uint8Array {
  const n = new Uint8Array(12)
  n[0] = tag
  if (tag === RELAY_TAG) n.set(salt!, 1)
  new DataView(n.buffer).setUint32(8, pn >>> 0)
  return n
}

function header(tag: number, pn: number, extra: Uint8Array): Uint8Array {
  const h = new Uint8Array(tag === CLIENT_TAG ? CLIENT_HEADER_BYTES : RELAY_HEADER_BYTES)
  h[0] = tag
  h.set(extra, 1)
  new DataView(h.buffer).setUint32(h.length - 4, pn >>> 0)
  return h
}

/**
 * header ‖ ciphertext ‖ tag. `extra` is the client's one-time public key
 * (client packets) or the relay session's salt (relay packets).
 */
export function sealPacket(tag: number, key: Uint8Array, pn: number, body: Uint8Array, extra: Uint8Array): Uint8Array {
  if (extra.length !== (tag === CLIENT_TAG ? 32 : SALT_BYTES)) throw new RangeError('sealPacket: wrong key or salt length for this direction')
  const h = header(tag, pn, extra)
  const cipher = createCipheriv('chacha20-poly1305', key, nonce(tag, pn, extra), { authTagLength: AEAD_TAG_BYTES })
  cipher.setAAD(h, { plaintextLength: body.length })
  const a = cipher.update(body)
  cipher.final()
  const out = new Uint8Array(h.length + a.length + AEAD_TAG_BYTES)
  out.set(h)
  out.set(a, h.length)
  out.set(cipher.getAuthTag(), h.length + a.length)
  return out
}

export interface PacketHeader {
  tag: number
  pn: number
  /** Client packets only. */
  ephemeralPk?: Uint8Array
  /** Relay packets only. */
  salt?: Uint8Array
  headerBytes: number
}

/** The clear header, or undefined if this is not a Chapar packet. */
export function peekHeader(packet: Uint8Array): PacketHeader | undefined {
  const tag = packet[0] ?? 0
  const size = tag === CLIENT_TAG ? CLIENT_HEADER_BYTES : tag === RELAY_TAG ? RELAY_HEADER_BYTES : 0
  if (size === 0 || packet.length < size + AEAD_TAG_BYTES) return undefined
  const pn = new DataView(packet.buffer, packet.byteOffset, packet.byteLength).getUint32(size - 4)
  return { tag, pn, headerBytes: size, ...(tag === CLIENT_TAG ? { ephemeralPk: packet.slice(1, 33) } : { salt: packet.slice(1, 1 + SALT_BYTES) }) }
}

/** The body, or undefined if the packet was not sealed with `key` (forged, corrupted, or another session's). */
export function openPacket(h: PacketHeader, key: Uint8Array, packet: Uint8Array): Uint8Array | undefined {
  const ct = packet.subarray(h.headerBytes, packet.length - AEAD_TAG_BYTES)
  try {
    const d = createDecipheriv('chacha20-poly1305', key, nonce(h.tag, h.pn, h.salt), { authTagLength: AEAD_TAG_BYTES })
    d.setAAD(packet.subarray(0, h.headerBytes), { plaintextLength: ct.length })
    d.setAuthTag(packet.subarray(packet.length - AEAD_TAG_BYTES))
    const a = d.update(ct)
    d.final()
    return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
  } catch {
    return undefined
  }
}
