/** The WebSocket transport on the client side: a Link over `ws`, with strict limits and a heartbeat. */
import WebSocket from 'ws'
import { ChaparError, ErrorCode, InputError } from '../protocol/errors.js'
import { MAX_FRAME_BYTES } from '../protocol/frames.js'
import type { Link } from '../protocol/env.js'

export const CONNECT_TIMEOUT_MS = 20_000
export const HEARTBEAT_MS = 15_000
/**
 * Silence (no frame, no pong) after which the connection is taken as dead.
 * Several heartbeats long: on a lossy link a pong waits behind TCP
 * retransmissions of earlier data, and the simulator showed a one-beat
 * limit cutting connections that were slow but alive (every reconnect then
 * costs a handshake at the same loss).
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
    ws.on('pong', () => {
      heardAt = Date.now()
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
