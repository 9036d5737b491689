/** The WebSocket transport on the client side: a Link over `ws`, with strict limits and a heartbeat. */
import WebSocket from 'ws'
import { ChaparError, ErrorCode, InputError } from '../protocol/errors.js'
import { toHex } from '../protocol/bytes.js'
import { CHUNK_BYTES, decodeFrame, FrameType, HELLO_UPLOAD_LOGIN, MAX_FRAME_BYTES } from '../protocol/frames.js'
import { inRanges, type Ranges } from '../protocol/ranges.js'
import type { Link } from '../protocol/env.js'

export const CONNECT_TIMEOUT_MS = 20_000
export const HEARTBEAT_MS = 15_000
/**
 * Silence (no byte from the relay: no frame, pong or ping) after which the
 * connection is taken as dead. Any byte, not whole frames or our own pongs:
 * during a long upload our ping waits behind our own data, while the
 * relay's pings (ws-server.ts) come through. Several heartbeats long: on a
 * lossy link a pong waits behind TCP retransmissions of earlier data, and
 * the simulator showed a one-beat limit cutting connections that were slow
 * but alive (every reconnect then costs a handshake at the same loss).
 */
export const DEAD_AFTER_MS = 60_000

/** Accept ws:// and wss:// URLs only; one-line error otherwise. */
export function parseRelayUrl(s: string): string {
  let u: URL
  try {
    u = new URL(s)
  } catch {
    throw new InputError(`relay "${s}" is not a URL; expected ws://host:port or wss://host:port`)
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new InputError(`relay "${s}" must be a ws:// or wss:// URL`)
  return u.toString().replace(/\/$/, '')
}

export interface WsConnection {
  link: Link
  /** Frames arrive in order or the connection dies (true for WebSocket). */
  reliable?: boolean
  /** The transport closes the link when the peer is gone; the engine keeps no timeouts of its own (see SessionOptions). */
  transportTimeouts?: boolean
  /** The transport logs in itself where the relay asks uploads to (each stream of a striped connection has its own challenge). */
  transportLogin?: boolean
  onFrame(fn: (frame: Uint8Array) => void): void
  onClose(fn: (reason: string) => void): void
}

/**
 * The frames and the close of a connection, held until the driver attaches
 * its handlers: frames can arrive in the same read as the upgrade response,
 * before the caller has its WsConnection. Used by connectWs and by the
 * simulator's WebSocket model.
 */
export class FrameHandoff {
  private early: Uint8Array[] = []
  private frameFn: ((frame: Uint8Array) => void) | undefined
  private closeFn: ((reason: string) => void) | undefined
  private closedReason: string | undefined

  frame(f: Uint8Array): void {
    if (this.frameFn) this.frameFn(f)
    else this.early.push(f)
  }

  /** The connection closed; only the first reason counts. */
  close(reason: string): void {
    if (this.closedReason !== undefined) return
    this.closedReason = reason
    this.closeFn?.(reason)
  }

  readonly onFrame = (fn: (frame: Uint8Array) => void): void => {
    this.frameFn = fn
    for (const f of this.early.splice(0)) fn(f)
  }

  readonly onClose = (fn: (reason: string) => void): void => {
    this.closeFn = fn
    if (this.closedReason !== undefined) fn(this.closedReason)
  }
}

/** Open a connection; rejects with a ChaparError(DISCONNECTED/TIMEOUT) if it cannot. */
export function connectWs(url: string, timeoutMs = CONNECT_TIMEOUT_MS): Promise<WsConnection> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES, handshakeTimeout: timeoutMs })
    ws.binaryType = 'nodebuffer'
    const handoff = new FrameHandoff()
    let heardAt = Date.now()
    const heartbeat = setInterval(() => {
      if (Date.now() - heardAt > DEAD_AFTER_MS) {
        ws.terminate()
        return
      }
      // Not before the upgrade is done: ws throws on a ping while CONNECTING
      // (seen over a real link at 80% loss, where the upgrade takes > 15 s).
      if (ws.readyState === WebSocket.OPEN) ws.ping()
    }, HEARTBEAT_MS)
    heartbeat.unref()
    // Listen to the socket only once ws reads it ('open'): a 'data' listener
    // added at 'upgrade' would start the flow before ws's own, and the
    // frames that came with the upgrade response would be lost to it.
    let socket: import('node:net').Socket | undefined
    ws.on('upgrade', (res) => {
      socket = res.socket
    })
    ws.on('open', () => {
      heardAt = Date.now()
      socket?.on('data', () => {
        heardAt = Date.now()
      })
    })
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      heardAt = Date.now()
      if (!isBinary) {
        ws.terminate()
        return
      }
      handoff.frame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    })
    const finish = (reason: string): void => {
      clearInterval(heartbeat)
      handoff.close(reason)
    }
    ws.on('close', (code, reason) => finish(`closed (${code}${reason.length ? ' ' + reason.toString() : ''})`))
    ws.on('error', (err) => {
      finish(err.message)
      reject(new ChaparError(ErrorCode.DISCONNECTED, `cannot reach ${url}: ${err.message}`, { cause: err }))
    })
    ws.on('open', () => {
      resolve({
        reliable: true,
        link: {
          send: (frame) => {
            if (ws.readyState === WebSocket.OPEN) ws.send(frame, { binary: true })
          },
          close: (reason) => {
            if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000, (reason ?? '').slice(0, 100))
            setTimeout(() => ws.terminate(), 1000).unref()
          },
        },
        onFrame: handoff.onFrame,
        onClose: handoff.onClose,
      })
    })
  })
}

/** Bytes of PUT frames a stream of a striped connection may have unanswered: two chunks. */
export const STRIPE_BYTES = 2 * CHUNK_BYTES
/** A PUT unanswered this long is also written to an idle stream (connectWsStriped). */
export const HEDGE_AFTER_MS = 8_000

interface QueuedPut {
  frame: Uint8Array
  /** Envelope id, hex, and the chunk's index in it. */
  id: string
  index: number
  /** The engine's priority for it (Link.send): higher goes first. */
  priority: number
  /** When it was written to a stream (Date.now()), and whether a copy went on another (hedge). */
  sentAt?: number
  hedged?: boolean
}

interface Stream {
  conn: WsConnection
  /** Its HELLO came (and, where the relay asks for it, its AUTH went): it may carry PUTs. */
  ready: boolean
  /** PUTs written to this stream and not yet answered, by envelope id, oldest first. */
  puts: Map<string, QueuedPut[]>
  bytes: number
  /** QUERYs written to this stream and not yet answered, by envelope id. */
  queries: Map<string, Uint8Array>
}

/**
 * Insert into a queue kept highest priority first: after every entry of its
 * priority (FIFO within one), or, for `ahead` (a PUT handed back by a dead
 * stream, older than anything queued since), before them.
 */
function enqueue(queue: QueuedPut[], put: QueuedPut, ahead = false): void {
  let i = queue.findIndex((q) => (ahead ? q.priority <= put.priority : q.priority < put.priority))
  if (i < 0) i = queue.length
  queue.splice(i, 0, put)
}

/**
 * An upload connection striped over `streams` WebSockets to one relay. One
 * TCP connection at 50% loss each way spends most of its time in
 * retransmission timeouts that double with each loss (bench:loss: four
 * 64 KiB chunks in two minutes); several connections back off
 * independently, so their sum keeps moving (GridFTP's parallel streams, for
 * the same reason). The engine sees one reliable Link:
 *   - It is ready when the first WebSocket opens; the others join as they
 *     open, so a slow handshake costs nothing.
 *   - PUTs are pulled, not dealt: a stream takes the next queued PUT
 *     (highest priority first, as the engine asked) while its unanswered
 *     PUTs are under STRIPE_BYTES, so the streams that move carry more and
 *     a stuck one holds two chunks at most. The relay answers each PUT on
 *     the stream it came by (HAVE, STORED, or ERROR with the id); other
 *     frames go at once on the least loaded stream, or, while none is
 *     open, when the next one opens.
 *   - Chunks the relay has said it holds (HAVE) and envelopes it has
 *     stored (STORED), on any stream, are not sent again: hedged copies
 *     and PUTs handed back by a dead stream are dropped for them.
 *   - A PUT unanswered for HEDGE_AFTER_MS is also written to an idle
 *     stream, once (see `hedge`).
 *   - A stream that dies hands its unanswered PUTs back to the queue and
 *     its unanswered QUERYs to another stream (both are idempotent: at
 *     worst the relay gets a chunk twice), and is replaced, up to `streams`
 *     replacements per connection. The Link closes when no stream is left
 *     or opening.
 * For uploads only: a mailbox session's AUTH and LIST must share one
 * connection, and the relay handles its frames in order.
 */
export function connectWsStriped(url: string, streams: number, timeoutMs = CONNECT_TIMEOUT_MS, login?: (challenge: Uint8Array) => Uint8Array): Promise<WsConnection> {
  if (!(Number.isInteger(streams) && streams >= 1)) throw new RangeError(`streams must be a whole number ≥ 1, got ${streams}`)
  if (streams === 1) return connectWs(url, timeoutMs)
  return new Promise((resolve, reject) => {
    const open: Stream[] = []
    const queue: QueuedPut[] = []
    /** Frames other than PUT sent while no stream was open, for the next one that opens. */
    const pendingControl: Uint8Array[] = []
    /** What the relay has said it holds: chunks by envelope (the latest HAVE), and whole envelopes. */
    const held = new Map<string, Ranges>()
    const stored = new Set<string>()
    const done = (p: QueuedPut): boolean => {
      if (stored.has(p.id)) return true
      const h = held.get(p.id)
      return h !== undefined && inRanges(h, p.index)
    }
    const handoff = new FrameHandoff()
    let opening = 0
    let replacements = streams
    let settled = false
    let closed = false
    const closeAll = (reason: string): void => {
      if (closed) return
      closed = true
      clearInterval(hedger)
      queue.length = 0
      pendingControl.length = 0
      for (const s of open) s.conn.link.close(reason)
      handoff.close(reason)
    }
    const leastLoaded = (ready = false): Stream | undefined => open.reduce<Stream | undefined>((best, s) => ((!ready || s.ready) && (!best || s.bytes < best.bytes) ? s : best), undefined)
    const write = (s: Stream, put: QueuedPut): void => {
      const list = s.puts.get(put.id) ?? []
      list.push(put)
      s.puts.set(put.id, list)
      s.bytes += put.frame.length
      s.conn.link.send(put.frame)
    }
    const pump = (): void => {
      while (!closed && queue.length > 0) {
        const s = leastLoaded(true)
        if (!s || s.bytes >= STRIPE_BYTES) return
        const put = queue.shift()!
        if (!done(put)) write(s, { ...put, sentAt: Date.now(), hedged: false })
      }
    }
    /**
     * Hedging: a PUT unanswered for HEDGE_AFTER_MS while a stream stands
     * idle is written there too, once; the first answer wins (a PUT is
     * idempotent). A TCP connection stuck in its backoff no longer holds a
     * report hostage, and the last chunks of a file are not left to the
     * slowest stream. Only idle streams take copies, so the cost is bounded
     * by what would otherwise go unused.
     */
    const hedge = (): void => {
      if (closed || queue.length > 0) return
      const now = Date.now()
      for (const s of open)
        for (const list of s.puts.values())
          for (const put of list) {
            if (put.hedged || now - (put.sentAt ?? now) < HEDGE_AFTER_MS || done(put)) continue
            const idle = open.find((t) => t !== s && t.ready && t.bytes === 0)
            if (!idle) return
            put.hedged = true
            write(idle, { ...put, sentAt: now, hedged: true })
          }
    }
    const hedger = setInterval(hedge, 1_000)
    hedger.unref()
    /** Forget the PUTs on `s` that `which` picks out of those of envelope `id`; how many went. */
    const forget = (s: Stream, id: string, which: (p: QueuedPut, i: number) => boolean): number => {
      const list = s.puts.get(id)
      if (!list) return 0
      const gone = list.filter(which)
      for (const p of gone) s.bytes -= p.frame.length
      const kept = list.filter((p, i) => !which(p, i))
      if (kept.length === 0) s.puts.delete(id)
      else s.puts.set(id, kept)
      return gone.length
    }
    /**
     * HAVE on `s`: the answer to a QUERY written there, or to one PUT. The
     * relay answers a PUT with the chunks it now holds, that one among
     * them, so every PUT on `s` of a chunk it holds is answered, whichever
     * copy the HAVE was for.
     */
    const onHave = (s: Stream, id: string, have: Ranges): void => {
      held.set(id, have)
      s.queries.delete(id)
      forget(s, id, (p) => inRanges(have, p.index))
    }
    /** STORED: the envelope is whole on the relay's disk; any PUT of it still out is moot. */
    const onStored = (s: Stream, id: string): void => {
      stored.add(id)
      held.delete(id)
      s.queries.delete(id)
      forget(s, id, () => true)
    }
    const onFrame = (s: Stream, bytes: Uint8Array): void => {
      const type = bytes[0]
      if (type === FrameType.HELLO && !s.ready) {
        // PUTs wait for a stream's HELLO: a relay that takes uploads only
        // from logged-in keys says so there, and this stream logs in first.
        try {
          const f = decodeFrame(bytes)
          if (f.type === FrameType.HELLO && login && (f.flags ?? 0) & HELLO_UPLOAD_LOGIN) s.conn.link.send(login(f.challenge))
        } catch {
          // The engine decodes it too, and closes on garbage.
        }
        s.ready = true
      }
      if (type === FrameType.HAVE || type === FrameType.STORED || type === FrameType.ERROR) {
        try {
          const f = decodeFrame(bytes)
          if (f.type === FrameType.HAVE) onHave(s, toHex(f.id), f.have)
          else if (f.type === FrameType.STORED) for (const id of f.ids) onStored(s, toHex(id))
          else if (f.type === FrameType.ERROR && f.id) {
            const id = toHex(f.id)
            if (!s.queries.delete(id)) forget(s, id, (_, i) => i === 0)
          }
        } catch {
          // Not ours to judge: the engine decodes it too, and closes on garbage.
        }
      }
      handoff.frame(bytes)
      pump()
    }
    const onStreamClosed = (s: Stream, reason: string): void => {
      const i = open.indexOf(s)
      if (closed || i < 0) return
      open.splice(i, 1)
      const back = [...s.puts.values()].flat().filter((p) => !done(p))
      back.sort((a, b) => (a.sentAt ?? 0) - (b.sentAt ?? 0))
      for (let j = back.length - 1; j >= 0; j--) enqueue(queue, { frame: back[j]!.frame, id: back[j]!.id, index: back[j]!.index, priority: back[j]!.priority }, true)
      const queries = new Set(s.queries.values())
      if (replacements > 0) {
        replacements--
        openOne()
      }
      if (open.length === 0 && opening === 0) return closeAll(reason)
      for (const q of queries) sendControl(q)
      pump()
    }
    const sendControl = (frame: Uint8Array): void => {
      const s = leastLoaded()
      if (!s) {
        pendingControl.push(frame) // between streams: for the next to open
        return
      }
      if (frame[0] === FrameType.QUERY) {
        const q = decodeFrame(frame)
        if (q.type === FrameType.QUERY) for (const id of q.ids) s.queries.set(toHex(id), frame)
      }
      s.conn.link.send(frame)
    }
    const link: Link = {
      send: (frame, priority = 0) => {
        if (closed) return
        const f = frame[0] === FrameType.PUT ? decodeFrame(frame) : undefined
        if (f?.type === FrameType.PUT) {
          enqueue(queue, { frame, id: toHex(f.id), index: f.index, priority })
          return pump()
        }
        sendControl(frame)
      },
      close: (reason) => closeAll(reason ?? 'closed'),
    }
    const openOne = (): void => {
      opening++
      connectWs(url, timeoutMs).then(
        (conn) => {
          opening--
          if (closed) {
            conn.link.close('not needed')
            return
          }
          const s: Stream = { conn, ready: false, puts: new Map(), bytes: 0, queries: new Map() }
          open.push(s)
          conn.onFrame((f) => onFrame(s, f))
          conn.onClose((reason) => onStreamClosed(s, reason))
          for (const f of pendingControl.splice(0)) sendControl(f)
          if (!settled) {
            settled = true
            resolve({ reliable: true, ...(login ? { transportLogin: true } : {}), link, onFrame: handoff.onFrame, onClose: handoff.onClose })
          }
          pump()
        },
        (err: unknown) => {
          opening--
          if (open.length > 0 || opening > 0 || closed) return
          if (!settled) {
            settled = true
            closed = true
            clearInterval(hedger)
            reject(err)
          } else closeAll((err as Error).message)
        },
      )
    }
    for (let i = 0; i < streams; i++) openOne()
  })
}
