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
 * address the latest authenticated packet came from, so a client whose
 * address changes (a mobile network's NAT) keeps its connection.
 */
import { toHex } from '../protocol/bytes.js'
import { AEAD_TAG_BYTES, CLIENT_TAG, type PacketKeys, openPacket, peekHeader, RELAY_HEADER_BYTES, RELAY_TAG, relayKeys, sealPacket } from '../protocol/datagram-crypto.js'
import { DatagramSession, decodeBody, encodeBody, DEFAULT_MTU, DEFAULT_RATE_KBPS } from '../protocol/datagram-session.js'
import type { Env, TimerHandle } from '../protocol/env.js'
import { boxPublicKey } from '../protocol/box.js'
import { MAX_FRAME_BYTES } from '../protocol/frames.js'
import type { Relay, RelaySession } from './relay-engine.js'

/** Sessions at most; a packet that would open one more is dropped. */
export const MAX_SESSIONS = 4096
/** A session silent this long is forgotten (longer than a client waits: DEAD_AFTER_MS). */
export const SESSION_IDLE_MS = 30 * 60_000
const SWEEP_MS = 30_000

interface Entry<A> {
  keys: PacketKeys
  session: DatagramSession
  relaySession: RelaySession
  addr: A
  lastHeardAt: number
}

export interface DatagramListenerOptions<A> {
  env: Env
  /** The relay's static X25519 secret key (its public half is in its udp:// URL). */
  secretKey: Uint8Array
  send(addr: A, packet: Uint8Array): void
  mtu?: number
  rateKbps?: number
  maxSessions?: number
}

export class DatagramListener<A> {
  readonly publicKey: Uint8Array
  private readonly sessions = new Map<string, Entry<A>>()
  private sweeper: TimerHandle | undefined
  private stopped = false
  readonly counters = { packets_in: 0, packets_dropped: 0, sessions_opened: 0, resets_sent: 0 }

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
      for (const e of [...this.sessions.values()]) if (now - e.lastHeardAt > SESSION_IDLE_MS) e.session.close('idle')
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
      e.addr = addr
      e.lastHeardAt = this.o.env.clock.now()
      e.session.receive(h.pn, body)
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
      this.o.send(addr, sealPacket(RELAY_TAG, keys.down, pn, encodeBody({ flags: 8, instance: 0, sendBase: 0 })))
      return
    }
    if (this.sessions.size >= (this.o.maxSessions ?? MAX_SESSIONS)) {
      this.counters.packets_dropped++
      return
    }
    this.open(id, keys, addr).session.receive(h.pn, body)
  }

  private open(id: string, keys: PacketKeys, addr: A): Entry<A> {
    this.counters.sessions_opened++
    let entry: Entry<A> | undefined
    const session = new DatagramSession({
      env: this.o.env,
      transmit: (pn, body) => this.o.send(entry!.addr, sealPacket(RELAY_TAG, keys.down, pn, body)),
      packetOverhead: RELAY_HEADER_BYTES + AEAD_TAG_BYTES,
      mtu: this.o.mtu ?? DEFAULT_MTU,
      rateKbps: this.o.rateKbps ?? DEFAULT_RATE_KBPS,
      maxFrameBytes: MAX_FRAME_BYTES,
      onFrame: (f) => entry?.relaySession.receive(f),
      onClose: () => {
        if (this.sessions.get(id) === entry) this.sessions.delete(id)
        entry?.relaySession.close()
      },
    })
    entry = { keys, session, relaySession: undefined as unknown as RelaySession, addr, lastHeardAt: this.o.env.clock.now() }
    this.sessions.set(id, entry)
    entry.relaySession = this.relay.connect({ send: (f) => session.send(f), close: (reason) => session.close(reason) })
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
