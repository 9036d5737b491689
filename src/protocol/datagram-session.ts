/**
 * One end of a datagram connection: an ordered, reliable stream of frames
 * over packets that may be lost, duplicated or reordered, built for heavy
 * loss (DESIGN §3). No I/O of its own: it is handed an Env and a `transmit`
 * function, and fed the bodies of packets that passed authentication
 * (datagram-crypto.ts does the sealing).
 *
 * Theory of operation.
 *   Sending: frames are written to a byte stream (u32 length ‖ frame). The
 *   stream is cut into blocks of up to MAX_BLOCK_SYMBOLS symbols when the
 *   pacer has room, so frames written together share a block and a lone
 *   report goes at once. Each block is coded (rlnc.ts): its source symbols
 *   first, then repair symbols, for as long as the receiver needs them.
 *   At most MAX_OPEN_BLOCKS blocks are open at a time.
 *   How much to send: acks of the other direction (on data packets while
 *   any are owed, alone otherwise) carry the receiver's base (every block
 *   below it is delivered), how many more symbols each open block needs,
 *   how many packets it has received and the largest packet number it
 *   saw. From those the sender knows, per block, the symbols still needed
 *   and which of its packets are still in flight, and estimates the loss
 *   rate p. A block is sent to until the symbols in flight are expected to
 *   cover what it needs (mean arrivals ≥ needed); when the pacer would
 *   otherwise idle, further repair goes out until the chance of decoding
 *   is ROUND_CONFIDENCE. Symbols no ack has covered within a timeout plus
 *   two mean gaps between acks (flightMs) count as lost, so a lost ack
 *   delays repair by that much at most, never a stall; the timeout stretches while the peer is
 *   silent (a blackout) instead of blasting into the void.
 *   Pacing: packets leave at `rateKbps`, whatever the loss: loss here is the
 *   medium, not congestion, and backing off on it would collapse at 80%.
 *   Receiving: symbols feed the block's decoder; a decoded block is
 *   delivered once every block before it is; acks go back piggybacked on
 *   data, alone every ACK_EVERY received packets, and in a burst sized to
 *   the reverse loss when a block completes. A packet for a block already
 *   delivered is answered with an ack: the sender evidently lacks one.
 *   A peer that claims to have had blocks acked that this end never
 *   received (it restarted and lost them) gets a RESET: the connection
 *   cannot continue, and the sync engine above starts a new one and resumes
 *   from what was persisted.
 */
import type { Env, TimerHandle } from './env.js'
import { ProtocolError, ErrorCode } from './errors.js'
import { RttEstimator } from './rtt.js'
import { BlockDecoder, BlockEncoder, MAX_BLOCK_SYMBOLS, MAX_SYMBOL_ID, symbolsFor } from './rlnc.js'

export const DEFAULT_MTU = 1200
export const MIN_MTU = 400
export const MAX_MTU = 65_000
/** The default pace: a degraded satellite terminal's share. */
export const DEFAULT_RATE_KBPS = 512
/** IPv4 + UDP headers, counted in the pace. */
export const IP_UDP_BYTES = 28
export const MAX_OPEN_BLOCKS = 8
/**
 * Source bytes in open blocks at most. Enough to keep the link busy across
 * rounds; more would only delay what a higher priority frame could overtake.
 */
export const MAX_OPEN_BYTES = 256 * 1024
/**
 * Loss assumed on first contact, before acks measure it: the field users'
 * links are bad, and over-sending a short report's first flight costs a
 * few kilobytes, while under-sending it costs round trips. A client then
 * starts each connection from what it last measured (LossMemory).
 */
export const INITIAL_LOSS = 0.8
export const MAX_LOSS_ESTIMATE = 0.95
export const INITIAL_RTO_MS = 1000
export const MIN_RTO_MS = 100
/** The longest wait between rounds while the peer is silent. */
export const MAX_SILENT_RTO_MS = 30_000
/** While the link seems down, a PING at least this often (spacing grows with the silence up to it). */
export const PROBE_INTERVAL_MS = 2_000
/**
 * Silence shorter than this never counts as the link being down. Under
 * bursty 80% loss (Gilbert–Elliott, bursts of 8) three seconds without an
 * ack came about once a minute, and each time the sender idled the link
 * for seconds while it probed; six seconds is rare there, and costs a real
 * blackout's first seconds of sending into the void only.
 */
export const MIN_SILENCE_MS = 6_000
/** Silence from a peer that was sending data after which the opener pings it (pingDue). */
export const PING_SILENCE_MS = 3_000
/**
 * No packet from the peer for this long while data waits: the connection
 * is dead. Long, because a connection costs nothing while the link is down:
 * it probes now and then (see `silent`), and carries on where it stopped
 * when a window opens, with no reconnect to pay for.
 */
export const DEAD_AFTER_MS = 20 * 60_000
/** Chance of decoding a round aims for when the link would otherwise idle. */
export const ROUND_CONFIDENCE = 0.95
/**
 * The opener (client) pings a connection that has sent nothing for this
 * long, and the peer answers. Without it, a client waiting for a reply
 * after its requests were acked would never learn that the relay restarted
 * (the restarted relay answers its ping with RESET) or vanished.
 */
export const KEEPALIVE_MS = 15_000
/** An opener that has heard nothing at all for this long gives up (a relay that is down, or a wrong key: its packets are dropped unseen). */
export const NO_ANSWER_MS = 10 * 60_000
/** Symbols from the peer may be this large whatever this end's own MTU (a peer with a larger --mtu). */
const MAX_PEER_SYMBOL_BYTES = 1500
/** Packets a session sends at most (its numbers are 32-bit on the wire, and must never repeat under one key). */
const MAX_PACKETS = 0x7fff0000
/** How far behind its schedule the pacer may catch up (a burst after idling is at most this long). */
export const PACE_SLACK_MS = 10
/** Standalone acks: one per this many packets received, if no data carries one. */
export const ACK_EVERY = 2
/** Acks owed wait at most this long for data to ride on. */
export const ACK_DELAY_MS = 20
const MAX_ACK_BURST = 8

const Flag = { SYMBOL: 1, ACK: 2, CLOSE: 4, RESET: 8, PING: 16, PAD: 32 } as const
const NOT_SEEN = 0xffff
/** flags, instance, sendBase, lossHint, rateHint | recvBase, received, largestPn, ackDelay, count, needed[] | block, blockBytes, esi(24). */
const FIXED_BODY_BYTES = 1 + 4 + 4 + 1 + 2
const ACK_BYTES = 4 + 4 + 4 + 2 + 1 + 2 * MAX_OPEN_BLOCKS
const SYMBOL_HEADER_BYTES = 4 + 4 + 3
/** Body bytes around a symbol's data, at most. */
export const BODY_OVERHEAD_BYTES = FIXED_BODY_BYTES + ACK_BYTES + SYMBOL_HEADER_BYTES

export interface Ack {
  recvBase: number
  received: number
  largestPn: number
  ackDelay: number
  needed: number[]
}

export interface Body {
  flags: number
  instance: number
  sendBase: number
  /** The sender's estimate of its own outgoing loss, in 255ths: the peer's first guess for the way back. */
  lossHint?: number
  /**
   * The sender's own pace in kbit/s (0: not said): the peer sends no faster,
   * so a client on a slow link (`sync --rate 64`) is not flooded by a relay
   * pacing at its own `--udp-rate`.
   */
  rateHint?: number
  ack?: Ack
  symbol?: { block: number; blockBytes: number; esi: number; data: Uint8Array }
  /**
   * Zero bytes after the ack (never with a symbol): a client pads the
   * packets that open a connection to a full MTU, so the relay, which may
   * answer an unvalidated address with only AMPLIFICATION_LIMIT × what it
   * received, can answer at all (QUIC pads its Initial packets likewise).
   */
  pad?: number
}

export function encodeBody(b: Body): Uint8Array {
  const n = b.ack ? b.ack.needed.length : 0
  const pad = b.symbol ? 0 : (b.pad ?? 0)
  const size = FIXED_BODY_BYTES + (b.ack ? 15 + 2 * n : 0) + (b.symbol ? SYMBOL_HEADER_BYTES + b.symbol.data.length : 0) + pad
  const out = new Uint8Array(size)
  const v = new DataView(out.buffer)
  let o = 0
  out[o++] = (b.flags & ~Flag.PAD) | (b.ack ? Flag.ACK : 0) | (b.symbol ? Flag.SYMBOL : 0) | (pad > 0 ? Flag.PAD : 0)
  v.setUint32(o, b.instance >>> 0)
  v.setUint32(o + 4, b.sendBase >>> 0)
  out[o + 8] = b.lossHint ?? 0
  v.setUint16(o + 9, Math.min(0xffff, Math.max(0, Math.round(b.rateHint ?? 0))))
  o += 11
  if (b.ack) {
    const a = b.ack
    v.setUint32(o, a.recvBase >>> 0)
    v.setUint32(o + 4, a.received >>> 0)
    v.setUint32(o + 8, a.largestPn >>> 0)
    v.setUint16(o + 12, Math.min(0xffff, a.ackDelay))
    out[o + 14] = n
    o += 15
    for (const x of a.needed) {
      v.setUint16(o, x)
      o += 2
    }
  }
  if (b.symbol) {
    const s = b.symbol
    v.setUint32(o, s.block >>> 0)
    v.setUint32(o + 4, s.blockBytes >>> 0)
    out[o + 8] = (s.esi >>> 16) & 0xff
    v.setUint16(o + 9, s.esi & 0xffff)
    out.set(s.data, o + SYMBOL_HEADER_BYTES)
  }
  return out
}

/** Strict: bounds-checked, no trailing garbage in the ack, at most MAX_OPEN_BLOCKS entries. */
export function decodeBody(bytes: Uint8Array): Body {
  const bad = (why: string): never => {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `bad datagram body: ${why}`)
  }
  if (bytes.length < FIXED_BODY_BYTES) bad('too short')
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const flags = bytes[0]!
  if (flags & ~0x3f) bad('unknown flags')
  const body: Body = { flags, instance: v.getUint32(1), sendBase: v.getUint32(5), lossHint: bytes[9]!, rateHint: v.getUint16(10) }
  let o = FIXED_BODY_BYTES
  if (flags & Flag.ACK) {
    if (bytes.length < o + 15) bad('ack cut short')
    const n = bytes[o + 14]!
    if (n > MAX_OPEN_BLOCKS) bad(`ack lists ${n} blocks`)
    if (bytes.length < o + 15 + 2 * n) bad('ack cut short')
    const needed: number[] = []
    for (let i = 0; i < n; i++) needed.push(v.getUint16(o + 15 + 2 * i))
    body.ack = { recvBase: v.getUint32(o), received: v.getUint32(o + 4), largestPn: v.getUint32(o + 8), ackDelay: v.getUint16(o + 12), needed }
    o += 15 + 2 * n
  }
  if (flags & Flag.SYMBOL) {
    if (bytes.length <= o + SYMBOL_HEADER_BYTES) bad('symbol cut short')
    const data = bytes.subarray(o + SYMBOL_HEADER_BYTES)
    const blockBytes = v.getUint32(o + 4)
    if (blockBytes === 0 || blockBytes > MAX_BLOCK_SYMBOLS * data.length) bad(`block of ${blockBytes} bytes in ${data.length}-byte symbols`)
    body.symbol = { block: v.getUint32(o), blockBytes, esi: (bytes[o + 8]! << 16) | v.getUint16(o + 9), data }
  } else if (flags & Flag.PAD) {
    if (o === bytes.length) bad('empty padding')
    for (let i = o; i < bytes.length; i++) if (bytes[i] !== 0) bad('padding that is not zero')
    body.pad = bytes.length - o
  } else if (o !== bytes.length) bad('trailing bytes')
  if (flags & Flag.PAD && flags & Flag.SYMBOL) bad('padding with a symbol')
  return body
}

/**
 * The smallest number of sends m with P(Binomial(m, q) ≥ need) ≥ confidence.
 * Cached: needs are at most MAX_BLOCK_SYMBOLS and q is bucketed to 1/100.
 */
const sendsCache = new Map<string, number>()
export function sendsFor(need: number, q: number, confidence: number): number {
  if (need <= 0) return 0
  const qb = Math.max(1, Math.min(100, Math.round(q * 100)))
  const key = `${need}/${qb}/${confidence}`
  let m = sendsCache.get(key)
  if (m !== undefined) return m
  const qq = qb / 100
  if (qq >= 1) m = need
  else {
    const lq = Math.log(qq)
    const lp = Math.log(1 - qq)
    m = Math.max(need, Math.floor(need / qq - 3 * Math.sqrt(need) / qq))
    for (; ; m++) {
      // P(X < need) for X ~ Bin(m, q), summed in log space.
      let below = 0
      let logC = 0 // log C(m, 0)
      for (let i = 0; i < need; i++) {
        below += Math.exp(logC + i * lq + (m - i) * lp)
        logC += Math.log((m - i) / (i + 1))
      }
      if (1 - below >= confidence) break
    }
  }
  sendsCache.set(key, m)
  return m
}

interface InFlight {
  pn: number
  at: number
}

interface OutBlock {
  id: number
  enc: BlockEncoder
  bytes: number
  nextEsi: number
  /** Symbols the receiver still needs, as of its last ack. */
  needed: number
  /** Symbols sent since the last ack that covers them. */
  inflight: InFlight[]
}

export interface DatagramSessionOptions {
  env: Env
  /** Put one packet on the wire: seal `body` under packet number `pn`. */
  transmit(pn: number, body: Uint8Array): void
  /** Bytes a packet adds around its body (clear header + AEAD tag). */
  packetOverhead: number
  mtu?: number
  rateKbps?: number
  /** The largest frame the peer may send. */
  maxFrameBytes: number
  onFrame(frame: Uint8Array): void
  onClose(reason: string): void
  /**
   * The client's end: until the peer is heard from, say so with empty
   * packets when there is no data to carry the news (a relay learns of a
   * connection only from its packets, and its HELLO must not wait for the
   * client's first frame).
   */
  opener?: boolean
  /**
   * Anti-amplification (the relay's side): until the peer has acked one of
   * this end's packets — proof that it receives at the address it sends
   * from, which a spoofer cannot give — send at most this many bytes per
   * byte received. Undefined: no limit (the client, which chose the peer).
   */
  amplificationLimit?: number
  /** The loss to assume until acks measure it (default INITIAL_LOSS); a client passes what it measured on its last connection. */
  initialLoss?: number
}

export interface DatagramStats {
  packetsSent: number
  packetsReceived: number
  symbolsSent: number
  bytesSent: number
  loss: number
  rttMs: number | undefined
}

export class DatagramSession {
  readonly symbolSize: number
  private readonly mtu: number
  private readonly env: Env
  private readonly rateKbps: number
  private readonly instance: number
  private peerInstance: number | undefined
  private nextPn: number
  private closed = false
  private timer: TimerHandle | undefined
  private timerAt = Number.POSITIVE_INFINITY

  // sending
  /**
   * Frames not yet in a block, one lane per priority (highest drained
   * first), each entry a whole length-prefixed frame. `partial` is the rest
   * of a frame a block cut in two: it goes first, so frames never interleave.
   */
  private lanes = new Map<number, Uint8Array[]>()
  private partial: Uint8Array | undefined
  private pendingBytes = 0
  private readonly out = new Map<number, OutBlock>()
  private nextBlock = 0
  private nextSendAt = 0
  private readonly sentAt = new Map<number, number>()
  private loss = INITIAL_LOSS
  private readonly rtt = new RttEstimator()
  private lastAckPn = -1
  private validatedPeer = false
  /** The last pump stopped at the amplification limit. */
  private heldBack = false
  private bytesIn = 0
  private bytesOut = 0
  private lastAckReceived = -1
  private lastAckAt: number | undefined
  /** Mean time between acks that bring news (each sample capped at the base timeout). */
  private ackGap = 0
  private lossMark: { pn: number; received: number } | undefined
  private lossSamples = 0
  /** The peer's pace (Body.rateHint), kbit/s. */
  private peerRate: number | undefined
  /** The peer's hint (Body.lossHint) of the loss on its way here, 0..1; undefined until heard. */
  private peerHint: number | undefined

  // receiving
  private recvBase = 0
  private readonly decoders = new Map<number, BlockDecoder>()
  private readonly ready = new Map<number, Uint8Array>()
  private stream: Uint8Array = new Uint8Array(0)
  private received = 0
  private largestPn = -1
  private largestAt = 0
  private firstPn = -1
  private acksOwed = 0
  private ackOwedSince: number | undefined
  private lastHeardAt: number
  private readonly createdAt: number
  private readonly firstOwnPn: number
  /** When data last started waiting after none did (silence is counted from here or the last packet heard, whichever is later). */
  private waitingSince = 0
  private nextProbeAt = 0
  private lastSentAt = Number.NEGATIVE_INFINITY
  private pingsLeft = 0
  /** When the peer last sent data (a symbol), and when this end last pinged. */
  private lastDataHeardAt = Number.NEGATIVE_INFINITY
  private lastPingAt = Number.NEGATIVE_INFINITY
  private lastDupBurstAt = Number.NEGATIVE_INFINITY
  private probesLeft = 0

  readonly stats: DatagramStats = { packetsSent: 0, packetsReceived: 0, symbolsSent: 0, bytesSent: 0, loss: INITIAL_LOSS, rttMs: undefined }

  constructor(private readonly o: DatagramSessionOptions) {
    this.env = o.env
    const mtu = o.mtu ?? DEFAULT_MTU
    if (!(Number.isInteger(mtu) && mtu >= MIN_MTU && mtu <= MAX_MTU)) throw new RangeError(`mtu must be ${MIN_MTU}..${MAX_MTU}, got ${mtu}`)
    this.mtu = mtu
    this.symbolSize = mtu - o.packetOverhead - BODY_OVERHEAD_BYTES
    this.rateKbps = o.rateKbps ?? DEFAULT_RATE_KBPS
    if (o.initialLoss !== undefined) this.loss = this.stats.loss = Math.min(MAX_LOSS_ESTIMATE, Math.max(0, o.initialLoss))
    if (!(this.rateKbps > 0)) throw new RangeError(`rate must be > 0 kbit/s, got ${this.rateKbps}`)
    const r = new DataView(o.env.randomBytes(8).buffer)
    this.instance = r.getUint32(0)
    // Packet numbers start at a random point below 2³¹, so a relay that restarted never reuses a (key, number) pair.
    this.nextPn = r.getUint32(4) >>> 1
    this.firstOwnPn = this.nextPn
    this.lastHeardAt = this.createdAt = this.now()
    if (o.opener) this.armAt(this.lastHeardAt)
  }

  /**
   * A keepalive is due (the opener only, once it has heard the peer): after
   * KEEPALIVE_MS of sending nothing, or as soon as a peer that was sending
   * data has gone silent for PING_SILENCE_MS (a relay killed mid-reply:
   * the restarted one answers the ping with RESET). Answers to pings carry
   * no data, so an idle connection is pinged every KEEPALIVE_MS, no more.
   */
  private pingDue(now: number): boolean {
    if (this.o.opener !== true || this.received === 0) return false
    if (this.pingsLeft > 0 || now - this.lastSentAt >= KEEPALIVE_MS) return true
    return this.lastDataHeardAt > this.lastPingAt && now - this.lastDataHeardAt >= this.pingSilenceMs()
  }

  private pingDueAt(): number {
    const regular = this.lastSentAt + KEEPALIVE_MS
    return this.lastDataHeardAt > this.lastPingAt ? Math.min(regular, this.lastDataHeardAt + this.pingSilenceMs()) : regular
  }

  /** An opener with nothing to send that has not heard from the peer yet. */
  private probing(): boolean {
    return this.o.opener === true && this.received === 0 && this.out.size === 0 && this.pendingBytes === 0
  }

  /**
   * Data waits and the peer has said nothing for a silence period: the
   * link is likely down (a blackout). Rather than send every block's repair
   * into the void each round, send small PINGs a second or two apart, and
   * go back to full speed at the first packet heard.
   */
  private silent(now: number): boolean {
    return this.out.size > 0 && now - this.quietSince() > this.silenceMs()
  }

  private quietSince(): number {
    return Math.max(this.lastHeardAt, this.waitingSince)
  }

  /**
   * Silence this long means the link is down, not just lossy: two timeouts,
   * and never under MIN_SILENCE_MS — at 80% loss and a short round trip the
   * gaps between acks are often many timeouts long.
   */
  private silenceMs(): number {
    return Math.max(MIN_SILENCE_MS, 2 * this.baseRto())
  }

  /** A peer that was sending data and stopped this long is pinged (a PING costs little, and a restarted relay answers it with RESET). */
  private pingSilenceMs(): number {
    return Math.max(PING_SILENCE_MS, 2 * this.baseRto())
  }

  private now(): number {
    return this.env.clock.now()
  }

  /** The peer has acked a packet of this end's (it receives at its address). */
  get validated(): boolean {
    return this.validatedPeer
  }

  private mayTransmit(size = 1): boolean {
    const limit = this.o.amplificationLimit
    return limit === undefined || this.validatedPeer || this.bytesOut + size <= limit * this.bytesIn
  }

  /** The loss measured on the way out, or undefined if no ack has measured it yet. */
  get measuredLoss(): number | undefined {
    return this.lossSamples > 0 ? this.loss : undefined
  }

  get isClosed(): boolean {
    return this.closed
  }

  /**
   * Queue one frame; it arrives whole, once, and in order with the frames
   * of its priority. A higher `priority` overtakes every queued frame of
   * lower priority not yet put into a block (an urgent report need not wait
   * behind a video's queued chunks).
   */
  send(frame: Uint8Array, priority = 0): void {
    if (this.closed) return
    if (this.out.size === 0 && this.pendingBytes === 0) this.waitingSince = this.now()
    const entry = new Uint8Array(4 + frame.length)
    new DataView(entry.buffer).setUint32(0, frame.length)
    entry.set(frame, 4)
    let lane = this.lanes.get(priority)
    if (!lane) {
      lane = []
      this.lanes.set(priority, lane)
      this.lanes = new Map([...this.lanes].sort((a, b) => b[0] - a[0]))
    }
    lane.push(entry)
    this.pendingBytes += entry.length
    // Frames written in one go share a block: form it on the next turn, not now.
    this.armAt(this.now())
  }

  /** Bytes queued or unacknowledged. */
  get backlog(): number {
    let n = this.pendingBytes
    for (const b of this.out.values()) n += b.bytes
    return n
  }

  /** Close: tell the peer (a few times, the packets may be lost) and stop. */
  close(reason = 'closed'): void {
    if (this.closed) return
    for (let i = 0; i < 3; i++) this.transmitBody({ flags: Flag.CLOSE, instance: this.instance, sendBase: this.sendBase(), ack: this.ack() }, false)
    this.finish(reason)
  }

  /** Tell the peer this connection cannot go on, and stop. */
  reset(reason: string): void {
    if (this.closed) return
    for (let i = 0; i < 3; i++) this.transmitBody({ flags: Flag.RESET, instance: this.instance, sendBase: this.sendBase() }, false)
    this.finish(reason)
  }

  /** Stop without a word to the peer (the process died, in the simulator). */
  abort(reason: string): void {
    if (!this.closed) this.finish(reason)
  }

  private finish(reason: string): void {
    this.closed = true
    if (this.timer !== undefined) this.env.timers.clearTimeout(this.timer)
    this.timer = undefined
    this.lanes.clear()
    this.partial = undefined
    this.out.clear()
    this.decoders.clear()
    this.ready.clear()
    this.o.onClose(reason)
  }

  /** Feed the body of one authenticated packet (`packetBytes`: its size on the wire, for the amplification limit). */
  receive(pn: number, bytes: Uint8Array, packetBytes = bytes.length + this.o.packetOverhead): void {
    if (this.closed) return
    let body: Body
    try {
      body = decodeBody(bytes)
    } catch (err) {
      this.reset((err as Error).message)
      return
    }
    const now = this.now()
    this.lastHeardAt = now
    this.bytesIn += packetBytes
    this.received++
    this.stats.packetsReceived++
    if (this.firstPn < 0 || pn < this.firstPn) this.firstPn = pn
    if (pn > this.largestPn) {
      this.largestPn = pn
      this.largestAt = now
    }
    if (body.lossHint !== undefined && body.lossHint > 0) this.peerHint = Math.min(MAX_LOSS_ESTIMATE, body.lossHint / 255)
    if (body.rateHint) this.peerRate = body.rateHint
    if (this.peerInstance === undefined) this.peerInstance = body.instance
    else if (body.instance !== this.peerInstance) return this.finish('peer restarted')
    if (body.flags & Flag.RESET) return this.finish('peer reset the connection')
    if (body.ack) this.onAck(body.ack)
    if (body.flags & Flag.CLOSE) return this.finish('closed by peer')
    // A keepalive: answer it, in a burst sized to the reverse loss.
    if (body.flags & Flag.PING) this.owe(this.ackBurst() * ACK_EVERY)
    if (body.sendBase > this.recvBase) return this.reset('peer lost blocks it took as delivered')
    if (body.symbol) {
      try {
        this.onSymbol(body.symbol)
      } catch (err) {
        this.reset((err as Error).message)
        return
      }
    }
    if (!this.closed) this.pump()
  }

  private onSymbol(s: NonNullable<Body['symbol']>): void {
    this.lastDataHeardAt = this.now()
    if (s.block < this.recvBase || this.ready.has(s.block)) {
      // The sender lacks an ack for a block this end has: answer with a burst
      // (one ack alone is lost as often as any packet), at most once per round trip.
      const now = this.now()
      if (now - this.lastDupBurstAt >= (this.rtt.srtt ?? INITIAL_RTO_MS)) {
        this.lastDupBurstAt = now
        this.owe(this.ackBurst() * ACK_EVERY)
      } else this.owe(1)
      return
    }
    this.owe(1)
    if (s.block >= this.recvBase + MAX_OPEN_BLOCKS) throw new ProtocolError(ErrorCode.BAD_FRAME, `block ${s.block} beyond the window at ${this.recvBase}`)
    // The peer picks the symbol size; this end bounds it (memory: blocks × k × size).
    if (s.data.length > Math.max(this.symbolSize, MAX_PEER_SYMBOL_BYTES)) throw new ProtocolError(ErrorCode.TOO_LARGE, `symbol of ${s.data.length} bytes`)
    let dec = this.decoders.get(s.block)
    const k = symbolsFor(s.blockBytes, s.data.length)
    if (!dec) {
      dec = new BlockDecoder(s.block, k, s.data.length)
      this.decoders.set(s.block, dec)
    } else if (dec.k !== k || dec.symbolSize !== s.data.length) {
      throw new ProtocolError(ErrorCode.BAD_FRAME, `block ${s.block} changed shape`)
    }
    if (s.esi > MAX_SYMBOL_ID) return
    dec.add(s.esi, s.data)
    if (!dec.complete) return
    this.decoders.delete(s.block)
    this.ready.set(s.block, dec.data().subarray(0, s.blockBytes))
    // A completed block is worth telling at once, more than once on a lossy reverse path.
    this.owe(this.ackBurst() * ACK_EVERY)
    this.deliver()
  }

  /**
   * The loss rate to plan with. Until acks have measured the outgoing
   * direction, the incoming one (gaps in the peer's packet numbers) is the
   * best guess: a relay answering a client on a bad link learns how bad
   * from the client's first few packets.
   */
  private plannedLoss(): number {
    if (this.lossSamples > 0) return this.loss
    const span = this.largestPn - this.firstPn + 1
    if (this.firstPn >= 0 && span >= 8) return Math.min(MAX_LOSS_ESTIMATE, Math.max(0, 1 - this.received / span))
    // The peer's own measure of the link (the way here; the way back is usually alike), else the prior.
    return this.peerHint ?? this.loss
  }

  private ackBurst(): number {
    const p = this.plannedLoss()
    return Math.min(MAX_ACK_BURST, Math.max(1, Math.ceil(Math.log(1 - ROUND_CONFIDENCE) / Math.log(Math.max(p, 0.01)))))
  }

  private owe(n: number): void {
    if (this.acksOwed === 0) this.ackOwedSince = this.now()
    this.acksOwed = Math.min(MAX_ACK_BURST * ACK_EVERY, Math.max(this.acksOwed, 0) + n)
  }

  private deliver(): void {
    while (this.ready.has(this.recvBase)) {
      const data = this.ready.get(this.recvBase)!
      this.ready.delete(this.recvBase)
      this.recvBase++
      const s = new Uint8Array(this.stream.length + data.length)
      s.set(this.stream)
      s.set(data, this.stream.length)
      this.stream = s
    }
    let o = 0
    const v = new DataView(this.stream.buffer, this.stream.byteOffset, this.stream.byteLength)
    while (this.stream.length - o >= 4) {
      const len = v.getUint32(o)
      if (len > this.o.maxFrameBytes) throw new ProtocolError(ErrorCode.TOO_LARGE, `frame of ${len} bytes > ${this.o.maxFrameBytes}`)
      if (this.stream.length - o - 4 < len) break
      const frame = this.stream.slice(o + 4, o + 4 + len)
      o += 4 + len
      this.o.onFrame(frame)
      if (this.closed) return
    }
    this.stream = this.stream.slice(o)
  }

  private onAck(a: Ack): void {
    const now = this.now()
    for (const id of [...this.out.keys()]) if (id < a.recvBase) this.out.delete(id)
    // An older ack, overtaken (the same largest packet with no more received is no news either).
    if (this.lastAckPn !== -1 && (a.largestPn < this.lastAckPn || (a.largestPn === this.lastAckPn && a.received <= this.lastAckReceived))) {
      this.idleAckGap()
      return
    }
    this.lastAckPn = a.largestPn
    this.lastAckReceived = a.received
    if (this.lastAckAt !== undefined) this.ackGap += 0.125 * (Math.min(now - this.lastAckAt, this.baseRto()) - this.ackGap)
    this.lastAckAt = now
    const sent = this.sentAt.get(a.largestPn)
    if (sent !== undefined) {
      this.validatedPeer = true // it acked a packet of ours: it receives where it sends from
      this.rtt.sample(Math.max(1, now - sent - a.ackDelay))
      this.stats.rttMs = Math.round(this.rtt.srtt!)
    }
    // Loss: packets the peer reports received against the numbers it could have seen.
    if (!this.lossMark) this.lossMark = { pn: a.largestPn, received: a.received }
    else {
      const span = a.largestPn - this.lossMark.pn
      if (span >= 16) {
        const got = a.received - this.lossMark.received
        const sample = Math.min(1, Math.max(0, 1 - got / span))
        const w = Math.min(1, span / 64) * 0.5
        this.loss = Math.min(MAX_LOSS_ESTIMATE, this.loss + w * (sample - this.loss))
        this.lossSamples++
        this.stats.loss = Math.round(this.loss * 1000) / 1000
        this.lossMark = { pn: a.largestPn, received: a.received }
      }
    }
    for (let i = 0; i < a.needed.length; i++) {
      const b = this.out.get(a.recvBase + i)
      if (!b) continue
      const n = a.needed[i]!
      if (n === 0) {
        this.out.delete(b.id)
        continue
      }
      b.needed = n === NOT_SEEN ? b.enc.k : Math.min(n, b.enc.k)
      b.inflight = b.inflight.filter((f) => f.pn > a.largestPn)
    }
    this.idleAckGap()
  }

  /** With nothing left in flight, the time until the next ack is idle time, not a gap between acks: don't sample it. */
  private idleAckGap(): void {
    if (this.out.size === 0) this.lastAckAt = undefined
  }

  private probeInterval(now: number): number {
    return Math.min(PROBE_INTERVAL_MS, Math.max(this.baseRto() / 2, (now - this.quietSince()) / 16))
  }

  private baseRto(): number {
    const { srtt, rttvar } = this.rtt
    return srtt === undefined ? INITIAL_RTO_MS : Math.max(MIN_RTO_MS, srtt + 4 * rttvar + ACK_DELAY_MS)
  }

  private rto(now: number): number {
    const base = this.baseRto()
    // While the peer is silent, wait longer between rounds (a blackout is not cured by shouting).
    const silence = now - this.quietSince()
    return silence > this.silenceMs() ? Math.min(MAX_SILENT_RTO_MS, Math.max(base, silence / 2)) : base
  }

  private sendBase(): number {
    for (const id of this.out.keys()) return id
    return this.nextBlock
  }

  private ack(): Ack | undefined {
    if (this.largestPn < 0) return undefined
    const needed: number[] = []
    let last = -1
    for (let i = 0; i < MAX_OPEN_BLOCKS; i++) {
      const id = this.recvBase + i
      const d = this.decoders.get(id)
      const n = d ? d.needed : this.ready.has(id) ? 0 : NOT_SEEN
      needed.push(n)
      if (n !== NOT_SEEN) last = i
    }
    needed.length = last + 1
    return { recvBase: this.recvBase, received: this.received, largestPn: this.largestPn, ackDelay: Math.max(0, Math.round(this.now() - this.largestAt)), needed }
  }

  /** Seal and send one packet; returns its size on the wire, or −1 if the amplification limit holds it back (nothing changes then). */
  private transmitBody(b: Body, limited = true): number {
    const bytes = encodeBody({ ...b, lossHint: this.lossSamples > 0 ? Math.max(1, Math.round(this.loss * 255)) : 0, rateHint: this.rateKbps })
    if (limited && !this.mayTransmit(bytes.length + this.o.packetOverhead)) return -1
    const pn = this.nextPn++
    this.sentAt.set(pn, this.now())
    if (this.sentAt.size > 4096) this.sentAt.delete(this.sentAt.keys().next().value!)
    this.stats.packetsSent++
    this.stats.bytesSent += bytes.length + this.o.packetOverhead
    this.bytesOut += bytes.length + this.o.packetOverhead
    this.lastSentAt = this.now()
    this.o.transmit(pn, bytes)
    return bytes.length + this.o.packetOverhead + IP_UDP_BYTES
  }

  /**
   * How long a symbol no ack has covered yet counts as in flight. The
   * timeout alone is too short when acks are sparse (at 80% loss the ones
   * that arrive are seconds apart, however often the peer sends them):
   * symbols would be presumed lost before any ack could say otherwise, and
   * sent for again. So add two mean gaps between acks.
   */
  private flightMs(rto: number): number {
    return rto + 2 * this.ackGap
  }

  /** Symbols in flight not yet presumed lost. */
  private live(b: OutBlock, now: number, rto: number): number {
    const limit = this.flightMs(rto)
    let n = 0
    for (const f of b.inflight) if (f.at + limit > now) n++
    return n
  }

  private wants(b: OutBlock, now: number, rto: number, confidence: number): boolean {
    const q = 1 - this.plannedLoss()
    const need = confidence > 0.5 ? sendsFor(b.needed, q, confidence) : Math.ceil(b.needed / q)
    return this.live(b, now, rto) < need
  }

  private formBlock(): OutBlock {
    const max = MAX_BLOCK_SYMBOLS * this.symbolSize
    const parts: Uint8Array[] = []
    let size = 0
    const next = (): Uint8Array | undefined => {
      if (this.partial) {
        const p = this.partial
        this.partial = undefined
        return p
      }
      for (const lane of this.lanes.values()) if (lane.length > 0) return lane.shift()
      return undefined
    }
    while (size < max) {
      const p = next()
      if (!p) break
      const take = Math.min(p.length, max - size)
      parts.push(take === p.length ? p : p.subarray(0, take))
      if (take < p.length) this.partial = p.subarray(take)
      size += take
    }
    this.pendingBytes -= size
    const data = new Uint8Array(size)
    let o = 0
    for (const p of parts) {
      data.set(p, o)
      o += p.length
    }
    const id = this.nextBlock++
    // A block of one symbol (a HELLO, an ack frame, a short report) travels in a packet its own size.
    const symbolSize = Math.max(1, Math.min(this.symbolSize, size))
    const b: OutBlock = { id, enc: new BlockEncoder(id, data, symbolSize), bytes: size, nextEsi: 0, needed: 0, inflight: [] }
    b.needed = b.enc.k
    this.out.set(id, b)
    return b
  }

  private openBytes(): number {
    let n = 0
    for (const b of this.out.values()) n += b.bytes
    return n
  }

  /** A new block may be formed: data is queued and the window (ids, count, bytes) has room. */
  private canForm(): boolean {
    // By id, not just by count: blocks decoded out of order leave `out`
    // early, and the receiver accepts ids below recvBase + MAX_OPEN_BLOCKS
    // only (sendBase ≤ recvBase).
    return this.pendingBytes > 0 && this.out.size < MAX_OPEN_BLOCKS && this.nextBlock < this.sendBase() + MAX_OPEN_BLOCKS && this.openBytes() < MAX_OPEN_BYTES
  }

  private pick(now: number, rto: number): OutBlock | undefined {
    for (const b of this.out.values()) if (this.wants(b, now, rto, 0.5)) return b
    if (this.canForm()) return this.formBlock()
    // The link would idle: spend it on the open blocks' chances of decoding this round.
    for (const b of this.out.values()) if (this.wants(b, now, rto, ROUND_CONFIDENCE)) return b
    return undefined
  }

  /** Acks owed are due now (enough of them, or the oldest has waited ACK_DELAY_MS for data to ride on). */
  private acksDue(now: number): boolean {
    return this.acksOwed >= ACK_EVERY || (this.acksOwed > 0 && now - (this.ackOwedSince ?? now) >= ACK_DELAY_MS)
  }

  private sendAckOnly(now: number): number {
    const bytes = this.transmitBody({ flags: 0, instance: this.instance, sendBase: this.sendBase(), ack: this.ack() })
    if (bytes < 0) return bytes
    this.acksOwed = Math.max(0, this.acksOwed - ACK_EVERY)
    if (this.acksOwed > 0) this.ackOwedSince = now
    return bytes
  }

  private pump(): void {
    if (this.closed) return
    const now = this.now()
    const rto = this.rto(now)
    // With data waiting, or (for the opener, which keeps pinging) at any time.
    if ((this.out.size > 0 || this.pendingBytes > 0 || (this.o.opener && this.received > 0)) && now - this.quietSince() > DEAD_AFTER_MS) {
      this.finish(`no packet from the peer in ${DEAD_AFTER_MS / 1000} s`)
      return
    }
    if (this.o.opener && this.received === 0 && now - this.createdAt > NO_ANSWER_MS) {
      this.finish(`no answer in ${NO_ANSWER_MS / 1000} s (is the relay up, and is the key in its URL right?)`)
      return
    }
    if (this.nextPn - this.firstOwnPn > MAX_PACKETS) {
      this.reset('packet numbers used up: reconnect')
      return
    }
    const quiet = this.silent(now) || this.probing()
    this.heldBack = false
    while (this.nextSendAt - now < 1) {
      let bytes: number
      if (quiet) {
        if (this.acksDue(now)) bytes = this.sendAckOnly(now)
        else if (now < this.nextProbeAt) break
        else if (this.out.size > 0) {
          // The link seems down with data waiting: one small PING at a time,
          // spaced (PROBE_INTERVAL_MS at most), so a window that opens is
          // noticed within seconds at a few dozen bytes a second. The peer
          // answers a PING with a burst of acks, and full speed resumes.
          bytes = this.transmitBody({ flags: Flag.PING, instance: this.instance, sendBase: this.sendBase(), ack: this.ack() })
          if (bytes >= 0) this.nextProbeAt = now + this.probeInterval(now)
        } else {
          // Opening: a few packets at once (any one will do), again a timeout later,
          // padded to the MTU so the relay may answer (see Body.pad).
          bytes = this.transmitBody({ flags: 0, instance: this.instance, sendBase: 0, pad: this.mtu - this.o.packetOverhead - FIXED_BODY_BYTES })
          if (bytes >= 0) {
            if (this.probesLeft <= 0) this.probesLeft = this.ackBurst()
            if (--this.probesLeft === 0) this.nextProbeAt = now + rto
          }
        }
      } else {
        const b = this.pick(now, rto)
        if (b) {
          const esi = b.nextEsi
          if (esi > MAX_SYMBOL_ID) return this.reset('block needed more symbols than a block can have')
          const pn = this.nextPn
          // An ack rides along only when one is owed: a client sending a photo
          // gets little back, and an ack it would repeat in every packet costs
          // about 2.5% of the link (the pace counts the bytes).
          const ack = this.acksOwed > 0 ? this.ack() : undefined
          bytes = this.transmitBody({ flags: 0, instance: this.instance, sendBase: this.sendBase(), ack, symbol: { block: b.id, blockBytes: b.bytes, esi, data: b.enc.symbol(esi) } })
          if (bytes >= 0) {
            b.nextEsi++
            b.inflight.push({ pn, at: now })
            this.stats.symbolsSent++
            this.acksOwed = Math.max(0, this.acksOwed - ACK_EVERY)
          }
        } else if (this.pingDue(now)) {
          // A burst sized to the loss (any one will do), paced like everything else.
          bytes = this.transmitBody({ flags: Flag.PING, instance: this.instance, sendBase: this.sendBase(), ack: this.ack() })
          if (bytes >= 0) {
            if (this.pingsLeft <= 0) this.pingsLeft = this.ackBurst()
            this.pingsLeft--
            this.lastPingAt = now
          }
        } else if (this.acksDue(now)) bytes = this.sendAckOnly(now)
        else break
      }
      if (bytes < 0) {
        this.heldBack = true // by the amplification limit: more must come in first (receive clears it)
        break
      }
      // The pace: this end's rate, or the peer's if it said it is slower.
      // Timers fire late (whole milliseconds, and later under load): a send
      // that is late keeps its slot, up to PACE_SLACK_MS, or the pace would
      // lose the lateness on every packet (a 9.6 ms gap taken as 10 ms was 4%
      // of the link at 1000 kbit/s, and 2.4 ms as 3 ms 20% at 4000).
      this.nextSendAt = Math.max(this.nextSendAt, now - PACE_SLACK_MS) + (bytes * 8) / Math.min(this.rateKbps, this.peerRate ?? Number.POSITIVE_INFINITY)
    }
    this.armAt(this.nextDeadline(now, rto, quiet))
  }

  /**
   * When the pump next has something to do. Every deadline here must be one
   * the pump then acts on, or the timer would spin.
   */
  private nextDeadline(now: number, rto: number, quiet: boolean): number {
    let next = Number.POSITIVE_INFINITY
    const at = (t: number): void => {
      if (t < next) next = t
    }
    if (this.out.size > 0 || this.pendingBytes > 0 || (this.o.opener && this.received > 0)) at(this.quietSince() + DEAD_AFTER_MS + 1)
    if (this.o.opener && this.received === 0) at(this.createdAt + NO_ANSWER_MS + 1)
    // Over the amplification limit: nothing goes out until more comes in (which pumps again).
    if (this.heldBack) return next
    if (this.acksOwed >= ACK_EVERY) at(this.nextSendAt)
    else if (this.acksOwed > 0) at(Math.max(this.nextSendAt, (this.ackOwedSince ?? now) + ACK_DELAY_MS))
    if (quiet) {
      at(Math.max(this.nextSendAt, this.nextProbeAt))
      return next
    }
    if (this.canForm()) at(this.nextSendAt)
    for (const b of this.out.values()) {
      if (this.wants(b, now, rto, ROUND_CONFIDENCE)) {
        at(this.nextSendAt)
        continue
      }
      // When a symbol in flight will be presumed lost, the block may want more.
      const limit = this.flightMs(rto)
      for (const f of b.inflight) if (f.at + limit > now) at(f.at + limit)
    }
    // Going quiet (the peer silent for a silence period) changes what goes out.
    if (this.out.size > 0) at(this.quietSince() + this.silenceMs() + 1)
    if (this.o.opener && this.received > 0) at(Math.max(this.nextSendAt, this.pingsLeft > 0 ? 0 : this.pingDueAt()))
    return next
  }

  private armAt(t: number): void {
    if (this.closed || !Number.isFinite(t)) return
    const now = this.now()
    if (this.timer !== undefined && this.timerAt <= t) return
    if (this.timer !== undefined) this.env.timers.clearTimeout(this.timer)
    this.timerAt = t
    this.timer = this.env.timers.setTimeout(() => {
      this.timer = undefined
      this.timerAt = Number.POSITIVE_INFINITY
      try {
        this.pump()
      } catch (err) {
        this.reset((err as Error).message)
      }
    }, Math.max(0, Math.ceil(t - now)))
  }
}
