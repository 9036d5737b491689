/**
 * The relay's side of the datagram transport, without sockets: packets in
 * (with an opaque reply address), packets out through `send`. One
 * DatagramSession and one RelaySession per client one-time key. The UDP
 * server (udp-server.ts) and the simulator both drive it.
 *
 * A packet whose one-time key is unknown opens a session only if it is the
 * start of a connection (its sender has had nothing acked yet); otherwise
 * the relay lost that session (a restart) and answers RESET, so the client
 * reconnects at once instead of waiting out a timeout. Replies go to the
 * address the newest authenticated packet came from, so a client whose
 * address changes (a mobile network's NAT) keeps its connection.
 *
 * Hostile traffic: the relay's key is public (it is in its URL), so anyone
 * can open a session, from a forged address too. So: a session sends at
 * most AMPLIFICATION_LIMIT bytes per byte received until its client acks a
 * relay packet (validation; a spoofer never sees them); unvalidated
 * sessions live UNVALIDATED_MS and are evicted first when the table is
 * full; unknown keys (an X25519 each) are rate-limited; low-order keys are
 * refused without the slow path; a replayed packet cannot move a session.
 */
import { toHex } from '../protocol/bytes.js'
import { AEAD_TAG_BYTES, CLIENT_TAG, SALT_BYTES, type PacketKeys, openPacket, peekHeader, RELAY_HEADER_BYTES, RELAY_TAG, relayKeys, sealPacket } from '../protocol/datagram-crypto.js'
import { DatagramSession, decodeBody, encodeBody, DEFAULT_MTU, DEFAULT_RATE_KBPS } from '../protocol/datagram-session.js'
import type { Env, TimerHandle } from '../protocol/env.js'
import { boxPublicKey } from '../protocol/box.js'
import { MAX_FRAME_BYTES } from '../protocol/frames.js'
import type { Relay, RelaySession } from './relay-engine.js'

/** Sessions at most; a packet that would open one more is dropped. */
export const MAX_SESSIONS = 4096
/** A session silent this long is forgotten (longer than a client waits: DEAD_AFTER_MS). */
export const SESSION_IDLE_MS = 30 * 60_000
/**
 * A session whose client has not yet acked a relay packet (so its address
 * may be spoofed) is dropped after this long, and is the first to go when
 * the table is full: one forged packet must not hold a slot for long.
 */
export const UNVALIDATED_MS = 60_000
/** Bytes sent per byte received to a client not yet validated (as QUIC's 3×). */
export const AMPLIFICATION_LIMIT = 3
/** Unknown one-time keys handled per second at most (each costs an X25519): a flood of junk keys is dropped past this. */
export const NEW_KEYS_PER_SECOND = 500
const SWEEP_MS = 10_000

interface Entry<A> {
  keys: PacketKeys
  session: DatagramSession
  relaySession: RelaySession
  addr: A
  openedAt: number
  lastHeardAt: number
  /** The largest packet number seen: only a newer packet may move `addr` (a replayed one must not). */
  maxPn: number
}

export interface DatagramListenerOptions<A> {
  env: Env
  /** The relay's static X25519 secret key (its public half is in its udp:// URL). */
  secretKey: Uint8Array
  send(addr: A, packet: Uint8Array): void
  mtu?: number
  rateKbps?: number
  maxSessions?: number
  /** The network address of a peer, for per-sender rate limits (the relay engine's ConnectionInfo.peer). */
  peerOf?: (addr: A) => string
}

export class DatagramListener<A> {
  readonly publicKey: Uint8Array
  private readonly sessions = new Map<string, Entry<A>>()
  private sweeper: TimerHandle | undefined
  private stopped = false
  readonly counters = { packets_in: 0, packets_dropped: 0, sessions_opened: 0, sessions_evicted: 0, resets_sent: 0, new_keys_refused: 0 }
  private keyTokens = NEW_KEYS_PER_SECOND
  private keyTokensAt = 0

  constructor(
    private readonly relay: Relay,
    private readonly o: DatagramListenerOptions<A>,
  ) {
    this.publicKey = boxPublicKey(o.secretKey)
    this.armSweep()
  }

  get sessionCount(): number {
    return this.sessions.size
  }

  private armSweep(): void {
    this.sweeper = this.o.env.timers.setTimeout(() => {
      const now = this.o.env.clock.now()
      for (const e of [...this.sessions.values()]) {
        if (now - e.lastHeardAt > SESSION_IDLE_MS) e.session.close('idle')
        else if (!e.session.validated && now - e.openedAt > UNVALIDATED_MS) {
          this.counters.sessions_evicted++
          e.session.abort('never validated')
        }
      }
      if (!this.stopped) this.armSweep()
    }, SWEEP_MS)
  }

  /** One packet from `addr`. */
  receive(packet: Uint8Array, addr: A): void {
    if (this.stopped) return
    this.counters.packets_in++
    const h = peekHeader(packet)
    if (!h || h.tag !== CLIENT_TAG || !h.ephemeralPk) {
      this.counters.packets_dropped++
      return
    }
    const id = toHex(h.ephemeralPk)
    const e = this.sessions.get(id)
    if (e) {
      const body = openPacket(h, e.keys.up, packet)
      if (!body) {
        this.counters.packets_dropped++
        return
      }
      if (h.pn > e.maxPn) {
        // Replies follow the client to a new address (a mobile NAT), on fresh packets only.
        e.maxPn = h.pn
        e.addr = addr
      }
      e.lastHeardAt = this.o.env.clock.now()
      e.session.receive(h.pn, body, packet.length)
      return
    }
    if (!this.takeKeyToken()) {
      this.counters.new_keys_refused++
      this.counters.packets_dropped++
      return
    }
    let keys: PacketKeys
    try {
      keys = relayKeys(this.o.secretKey, h.ephemeralPk, this.publicKey)
    } catch {
      this.counters.packets_dropped++
      return
    }
    const body = openPacket(h, keys.up, packet)
    if (!body) {
      this.counters.packets_dropped++
      return
    }
    let sendBase: number
    try {
      sendBase = decodeBody(body).sendBase
    } catch {
      this.counters.packets_dropped++
      return
    }
    if (sendBase !== 0) {
      // The client had blocks acked by a session this relay no longer has.
      this.counters.resets_sent++
      const pn = (new DataView(this.o.env.randomBytes(4).buffer).getUint32(0) | 0x80000000) >>> 0
      this.o.send(addr, sealPacket(RELAY_TAG, keys.down, pn, encodeBody({ flags: 8, instance: 0, sendBase: 0 }), this.o.env.randomBytes(SALT_BYTES)))
      return
    }
    if (this.sessions.size >= (this.o.maxSessions ?? MAX_SESSIONS)) {
      // Full: make room by dropping the oldest session never validated, if any.
      let victim: Entry<A> | undefined
      for (const e of this.sessions.values()) if (!e.session.validated && (!victim || e.openedAt < victim.openedAt)) victim = e
      if (!victim) {
        this.counters.packets_dropped++
        return
      }
      this.counters.sessions_evicted++
      victim.session.abort('evicted')
    }
    this.open(id, keys, addr, h.pn).session.receive(h.pn, body, packet.length)
  }

  private takeKeyToken(): boolean {
    const now = this.o.env.clock.now()
    this.keyTokens = Math.min(NEW_KEYS_PER_SECOND, this.keyTokens + ((now - this.keyTokensAt) * NEW_KEYS_PER_SECOND) / 1000)
    this.keyTokensAt = now
    if (this.keyTokens < 1) return false
    this.keyTokens--
    return true
  }

  private open(id: string, keys: PacketKeys, addr: A, pn: number): Entry<A> {
    this.counters.sessions_opened++
    let entry: Entry<A> | undefined
    const salt = this.o.env.randomBytes(SALT_BYTES)
    const session = new DatagramSession({
      env: this.o.env,
      transmit: (pn, body) => this.o.send(entry!.addr, sealPacket(RELAY_TAG, keys.down, pn, body, salt)),
      packetOverhead: RELAY_HEADER_BYTES + AEAD_TAG_BYTES,
      mtu: this.o.mtu ?? DEFAULT_MTU,
      rateKbps: this.o.rateKbps ?? DEFAULT_RATE_KBPS,
      maxFrameBytes: MAX_FRAME_BYTES,
      amplificationLimit: AMPLIFICATION_LIMIT,
      onFrame: (f) => entry?.relaySession.receive(f),
      onClose: () => {
        if (this.sessions.get(id) === entry) this.sessions.delete(id)
        entry?.relaySession.close()
      },
    })
    const now = this.o.env.clock.now()
    entry = { keys, session, relaySession: undefined as unknown as RelaySession, addr, openedAt: now, lastHeardAt: now, maxPn: pn }
    this.sessions.set(id, entry)
    entry.relaySession = this.relay.connect({ send: (f) => session.send(f), close: (reason) => session.close(reason) }, { peer: this.o.peerOf?.(addr) })
    return entry
  }

  /** Drop every session (a relay crash in the simulator, or shutdown). */
  stop(graceful: boolean): void {
    this.stopped = true
    if (this.sweeper !== undefined) this.o.env.timers.clearTimeout(this.sweeper)
    for (const e of [...this.sessions.values()]) {
      if (graceful) e.session.close('relay shutting down')
      else e.session.abort('relay stopped')
    }
    this.sessions.clear()
  }
}
