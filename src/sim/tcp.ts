/**
 * The WebSocket transport as the simulator carries it: a TCP connection
 * modelled segment by segment over a `Path`, so that loss costs what it
 * costs TCP. Modelled: the three-way handshake with SYN retransmission, the
 * HTTP upgrade round trip, MSS-sized segments (MTU − 40), cumulative ACKs
 * for every segment, slow start and congestion avoidance, fast retransmit
 * on three duplicate ACKs with NewReno partial-ACK recovery, the RFC 6298
 * retransmission timer (1 s initial, 200 ms floor, doubling to 120 s),
 * RTT samples from every ACK as TCP timestamps give them (so a backed-off
 * timer comes back down after the first ACK, as on Linux), abort after 15
 * timeouts in a row, FIN/RST, WebSocket framing overhead, and both ends' ws
 * heartbeats (ping/pong in the stream; a missed pong cuts the connection,
 * as connectWs and the relay's ws server do). Not modelled:
 * SACK (so recovery from several losses in one window is slower than
 * Linux's), delayed ACKs, tail-loss probes, receive-window limits below
 * 1 MiB, TLS. The engines on either end see exactly what they
 * see over `ws`: whole frames, in order, or a closed connection.
 */
import type { Link } from '../protocol/env.js'
import { RttEstimator } from '../protocol/rtt.js'
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { DEAD_AFTER_MS, FrameHandoff, HEARTBEAT_MS as CLIENT_HEARTBEAT_MS, type WsConnection } from '../client/ws-transport.js'
import type { Path, Pipe } from './link.js'
import type { Scheduler } from './scheduler.js'

export const HEADER_BYTES = 40
const SYN_BYTES = 60
const INITIAL_RTO_MS = 1000
const MIN_RTO_MS = 200
const MAX_RTO_MS = 120_000
const MAX_TIMEOUTS = 15
const RWND_BYTES = 1024 * 1024
/** ws's handshakeTimeout in connectWs: TCP and upgrade must finish within it. */
export const CONNECT_TIMEOUT_MS = 20_000
const UPGRADE_REQUEST_BYTES = 260
const UPGRADE_RESPONSE_BYTES = 130

/** WebSocket frame header: 2 bytes, + 2 or 8 for the length, + 4 for the client's mask. */
export function wsOverhead(len: number, masked: boolean): number {
  return 2 + (len > 65535 ? 8 : len > 125 ? 2 : 0) + (masked ? 4 : 0)
}

/** ws heartbeats as connectWs and the relay's ws server run them: see ws-transport.ts and ws-server.ts. */
import { DEAD_AFTER_MS as SERVER_DEAD_AFTER_MS, HEARTBEAT_MS as SERVER_HEARTBEAT_MS } from '../relay/ws-server.js'

type Control = 'upgrade' | 'accept' | 'ping' | 'pong'

interface StreamItem {
  end: number
  data: Uint8Array | Control
}

function itemBytes(data: StreamItem['data'], masked: boolean): number {
  switch (data) {
    case 'upgrade':
      return UPGRADE_REQUEST_BYTES
    case 'accept':
      return UPGRADE_RESPONSE_BYTES
    case 'ping':
    case 'pong':
      return wsOverhead(0, masked)
    default:
      return data.length + wsOverhead(data.length, masked)
  }
}

/** One end of a connection: it sends its stream and receives the peer's. */
class Half {
  peer!: Half
  closed = false
  // sending
  private readonly items: StreamItem[] = []
  private streamEnd = 0
  private sndUna = 0
  private sndNxt = 0
  private cwnd: number
  private ssthresh = Number.POSITIVE_INFINITY
  private dupAcks = 0
  /** Until the ACK passes `recover`, no new fast retransmit; `fastRecovery` marks NewReno recovery (not the slow start after a timeout). */
  private recover = -1
  private fastRecovery = false
  private readonly rtt = new RttEstimator()
  private rto = INITIAL_RTO_MS
  private timeouts = 0
  private rtoTimer: number | undefined
  /** When each unacked segment (by its first byte) was last sent. */
  private readonly sentAt = new Map<number, { t: number }>()
  // receiving
  private rcvNxt = 0
  private readonly ooo = new Map<number, number>()

  /** Everything the peer sent except ws pings and pongs, which the heartbeat handles. */
  onItem: (data: Uint8Array | 'upgrade' | 'accept') => void = () => {}
  onClosed: (reason: string) => void = () => {}
  private heardAt: number
  private beatTimer: number | undefined

  constructor(
    private readonly sched: Scheduler,
    private readonly out: Pipe,
    private readonly mss: number,
    private readonly masked: boolean,
  ) {
    this.cwnd = 10 * mss
    this.heardAt = sched.now
  }

  write(data: StreamItem['data']): void {
    if (this.closed) return
    this.streamEnd += itemBytes(data, this.masked)
    this.items.push({ end: this.streamEnd, data })
    this.pump()
  }

  private flight(): number {
    return this.sndNxt - this.sndUna
  }

  private pump(): void {
    while (!this.closed && this.sndNxt < this.streamEnd && this.flight() < Math.min(this.cwnd, RWND_BYTES)) {
      const len = Math.min(this.mss, this.streamEnd - this.sndNxt)
      this.transmit(this.sndNxt, len)
      this.sndNxt += len
    }
    if (this.flight() > 0 && this.rtoTimer === undefined) this.armRto()
  }

  private transmit(seq: number, len: number): void {
    this.sentAt.set(seq, { t: this.sched.now })
    const peer = this.peer
    this.out.send(len + HEADER_BYTES, () => peer.onSegment(seq, len), true) // quiet unless it completes a frame (deliverUpTo wakes)
  }

  private armRto(): void {
    if (this.rtoTimer !== undefined) this.sched.timers.clearTimeout(this.rtoTimer)
    this.rtoTimer = this.sched.at(
      this.sched.now + this.rto,
      () => {
        this.rtoTimer = undefined
        this.onRto()
      },
      true,
    )
  }

  private onRto(): void {
    if (this.closed || this.flight() === 0) return
    if (++this.timeouts > MAX_TIMEOUTS) {
      this.abort('connection timed out')
      return
    }
    this.ssthresh = Math.max(this.flight() / 2, 2 * this.mss)
    this.cwnd = this.mss
    this.rto = Math.min(this.rto * 2, MAX_RTO_MS)
    this.recover = this.sndNxt
    this.fastRecovery = false
    this.dupAcks = 0
    // Go back to the first unacked byte; the receiver's cumulative ACK skips what it already holds.
    this.sndNxt = this.sndUna
    const len = Math.min(this.mss, this.streamEnd - this.sndNxt)
    this.transmit(this.sndNxt, len)
    this.sndNxt += len
    this.armRto()
  }

  onSegment(seq: number, len: number): void {
    if (this.closed) {
      this.reset()
      return
    }
    const end = seq + len
    if (end > this.rcvNxt) {
      if (seq <= this.rcvNxt) {
        this.rcvNxt = end
        // Fill in what arrived out of order and now joins on.
        for (let merged = true; merged; ) {
          merged = false
          for (const [s, e] of this.ooo) {
            if (s > this.rcvNxt) continue
            this.ooo.delete(s)
            if (e > this.rcvNxt) this.rcvNxt = e
            merged = true
          }
        }
        this.peer.deliverUpTo(this.rcvNxt, this)
      } else if (!this.ooo.has(seq) || this.ooo.get(seq)! < end) {
        this.ooo.set(seq, end)
      }
    }
    const ack = this.rcvNxt
    const peer = this.peer
    this.out.send(HEADER_BYTES, () => peer.onAck(ack), true) // an ACK only moves TCP state
  }

  /** The receiver has everything up to `upTo` of this side's stream: hand over the complete items. */
  deliverUpTo(upTo: number, receiver: Half): void {
    while (this.items.length > 0 && this.items[0]!.end <= upTo) {
      const item = this.items.shift()!
      if (receiver.closed) return
      this.sched.wake()
      receiver.receiveItem(item.data)
    }
  }

  private receiveItem(data: StreamItem['data']): void {
    if (data === 'ping') {
      this.write('pong')
      return
    }
    this.heardAt = this.sched.now
    if (data !== 'pong') this.onItem(data)
  }

  /**
   * ws's heartbeat on this end: a ping every `everyMs`; silence (no frame,
   * no pong) for more than `deadAfterMs` cuts the connection, as
   * ws-transport.ts (client) and ws-server.ts (relay) do.
   */
  startHeartbeat(everyMs: number, deadAfterMs: number, reason: string): void {
    this.heardAt = this.sched.now
    const beat = (): void => {
      this.beatTimer = this.sched.at(this.sched.now + everyMs, () => {
        this.beatTimer = undefined
        if (this.closed) return
        if (this.sched.now - this.heardAt > deadAfterMs) {
          this.abort(reason) // ws.terminate()
          return
        }
        this.write('ping')
        beat()
      })
    }
    beat()
  }

  onAck(ack: number): void {
    if (this.closed) return
    if (ack > this.sndUna) {
      const s = this.sentAt.get(this.sndUna)
      const acked = ack - this.sndUna
      // With timestamps the echo dates the transmission that got through, retransmission or not.
      if (s) this.sampleRtt(this.sched.now - s.t)
      for (const k of this.sentAt.keys()) if (k < ack) this.sentAt.delete(k)
      this.sndUna = ack
      if (this.sndNxt < ack) this.sndNxt = ack
      this.timeouts = 0
      this.dupAcks = 0
      if (this.fastRecovery && ack < this.recover) {
        // NewReno: a partial ACK in fast recovery means the next hole is lost too.
        const len = Math.min(this.mss, this.streamEnd - this.sndUna)
        if (len > 0) {
          this.transmit(this.sndUna, len)
          if (this.sndNxt < this.sndUna + len) this.sndNxt = this.sndUna + len
        }
      } else {
        if (this.recover >= 0 && ack >= this.recover) {
          this.recover = -1
          this.fastRecovery = false
        }
        // Slow start (also going back over the window after a timeout) or congestion avoidance.
        this.cwnd += this.cwnd < this.ssthresh ? Math.min(acked, this.mss) : (this.mss * this.mss) / this.cwnd
      }
      if (this.flight() > 0) this.armRto()
      else if (this.rtoTimer !== undefined) {
        this.sched.timers.clearTimeout(this.rtoTimer)
        this.rtoTimer = undefined
      }
      this.pump()
    } else if (ack === this.sndUna && this.flight() > 0) {
      if (++this.dupAcks === 3 && this.recover < 0) {
        this.ssthresh = Math.max(this.flight() / 2, 2 * this.mss)
        this.cwnd = this.ssthresh
        this.recover = this.sndNxt
        this.fastRecovery = true
        this.transmit(this.sndUna, Math.min(this.mss, this.streamEnd - this.sndUna))
        this.armRto()
      }
    }
  }

  private sampleRtt(r: number): void {
    this.rtt.sample(r)
    this.rto = Math.min(MAX_RTO_MS, Math.max(MIN_RTO_MS, this.rtt.srtt! + Math.max(1, 4 * this.rtt.rttvar)))
  }

  /** Seed the RTT estimate from the handshake. */
  handshakeRtt(r: number): void {
    this.sampleRtt(r)
  }

  /** Close this end and tell the peer (FIN; one try, like the rest of a lossy world). */
  close(reason: string): void {
    if (this.closed) return
    this.shut(reason)
    const peer = this.peer as Half | undefined
    if (peer) this.out.send(HEADER_BYTES, () => peer.onFin(reason))
  }

  private reset(): void {
    const peer = this.peer as Half | undefined
    if (peer) this.out.send(HEADER_BYTES, () => peer.onFin('connection reset'))
  }

  onFin(reason: string): void {
    if (this.closed) return
    this.shut(reason)
  }

  /** Give up locally (timeouts), and reset the peer if it is still there. */
  abort(reason: string): void {
    if (this.closed) return
    this.shut(reason)
    this.reset()
  }

  /** Close without telling anyone (the process died; the host's FIN is sent by the caller if at all). */
  shut(reason: string): void {
    this.closed = true
    this.sched.wake()
    if (this.beatTimer !== undefined) this.sched.timers.clearTimeout(this.beatTimer)
    this.beatTimer = undefined
    if (this.rtoTimer !== undefined) this.sched.timers.clearTimeout(this.rtoTimer)
    this.rtoTimer = undefined
    this.items.length = 0
    this.ooo.clear()
    this.sentAt.clear()
    this.onClosed(reason)
  }
}

/** A relay's listening side, as the simulated network sees it. */
export interface Listener {
  /** Is a process listening? (false while a relay is crashed: SYNs get RST) */
  up(): boolean
  /** A connection was upgraded to WebSocket: hand the relay engine its link; returns the frame sink. */
  accept(link: Link): { receive(frame: Uint8Array): void; close(): void }
  /** Every open server half, so a crash can drop them. */
  halves: Set<ServerEnd>
}

export interface ServerEnd {
  kill(): void
}

/**
 * Dial `listener` over `path` the way connectWs does: resolves once the
 * WebSocket is open, rejects with ChaparError(DISCONNECTED) on RST or
 * TIMEOUT after CONNECT_TIMEOUT_MS.
 */
export function dialTcp(sched: Scheduler, path: Path, listener: Listener, label: string): Promise<WsConnection> {
  return new Promise((resolve, reject) => {
    const mss = path.mtu - HEADER_BYTES
    const client = new Half(sched, path.up, mss, true)
    let server: Half | undefined
    let state: 'syn' | 'upgrading' | 'open' | 'failed' = 'syn'
    let synTimer: number | undefined
    let synRto = INITIAL_RTO_MS
    let synSentAt = sched.now
    let synAgain = false
    const fail = (err: ChaparError): void => {
      if (state === 'open' || state === 'failed') return
      state = 'failed'
      if (synTimer !== undefined) sched.timers.clearTimeout(synTimer)
      sched.timers.clearTimeout(deadline)
      client.abort(err.message)
      reject(err)
    }
    const deadline = sched.at(sched.now + CONNECT_TIMEOUT_MS, () => fail(new ChaparError(ErrorCode.TIMEOUT, `opening ${label} timed out`)))

    const onSynAck = (): void => {
      if (state !== 'syn') return
      state = 'upgrading'
      if (synTimer !== undefined) sched.timers.clearTimeout(synTimer)
      if (!synAgain) client.handshakeRtt(sched.now - synSentAt)
      client.write('upgrade')
    }
    const sendSyn = (): void => {
      synSentAt = sched.now
      path.up.send(SYN_BYTES, () => {
        if (!listener.up()) {
          path.down.send(HEADER_BYTES, () => fail(new ChaparError(ErrorCode.DISCONNECTED, `cannot reach ${label}: connection refused`)))
          return
        }
        if (!server) server = makeServer(sched, path, listener, client)
        if (server.closed) {
          // That socket is gone (its relay crashed and came back): the port answers RST.
          path.down.send(HEADER_BYTES, () => fail(new ChaparError(ErrorCode.DISCONNECTED, `cannot reach ${label}: connection reset`)))
          return
        }
        path.down.send(SYN_BYTES, onSynAck, true)
      }, true)
      synTimer = sched.at(
        sched.now + synRto,
        () => {
          synAgain = true
          synRto *= 2
          sendSyn()
        },
        true,
      )
    }

    const handoff = new FrameHandoff()
    client.onItem = (data) => {
      if (data === 'accept') {
        if (state !== 'upgrading') return
        state = 'open'
        sched.timers.clearTimeout(deadline)
        client.startHeartbeat(CLIENT_HEARTBEAT_MS, DEAD_AFTER_MS, 'heartbeat timed out')
        resolve({
          reliable: true,
          link: { send: (frame) => client.write(frame.slice()), close: (reason) => client.close(reason ?? 'closed') },
          onFrame: handoff.onFrame,
          onClose: handoff.onClose,
        })
      } else if (data !== 'upgrade' && state === 'open') {
        handoff.frame(data)
      }
    }
    client.onClosed = (reason) => {
      if (state !== 'open') {
        fail(new ChaparError(ErrorCode.DISCONNECTED, `cannot reach ${label}: ${reason}`))
        return
      }
      handoff.close(reason)
    }
    sendSyn()
  })
}

function makeServer(sched: Scheduler, path: Path, listener: Listener, client: Half): Half {
  const server = new Half(sched, path.down, path.mtu - HEADER_BYTES, false)
  server.peer = client
  client.peer = server
  let session: { receive(frame: Uint8Array): void; close(): void } | undefined
  const end: ServerEnd = {
    kill: () => {
      // The process died: its kernel closes the socket and the client hears a FIN.
      server.close('relay process died')
    },
  }
  listener.halves.add(end)
  server.startHeartbeat(SERVER_HEARTBEAT_MS, SERVER_DEAD_AFTER_MS, 'no pong')
  server.onItem = (data) => {
    if (data === 'upgrade') {
      if (session) return
      server.write('accept')
      session = listener.accept({
        send: (frame) => server.write(frame.slice()),
        close: (reason) => server.close(reason ?? 'closed by relay'),
      })
    } else if (data !== 'accept') {
      session?.receive(data)
    }
  }
  server.onClosed = () => {
    listener.halves.delete(end)
    session?.close()
  }
  return server
}
