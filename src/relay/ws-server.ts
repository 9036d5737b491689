/** The relay's WebSocket server: strict limits, heartbeats, one RelaySession per socket. */
import http from 'node:http'
import { WebSocketServer, type WebSocket } from 'ws'
import { MAX_FRAME_BYTES } from '../protocol/frames.js'
import type { Relay } from './relay-engine.js'

export const HEARTBEAT_MS = 30_000
/**
 * A socket silent (no byte at all) this long is cut. Any byte, not whole
 * frames: at 50% loss a 64 KiB PUT takes longer than this to arrive, and the
 * client's pong waits behind its own queued PUTs (bench:loss saw uploads
 * that were moving cut every minute). Two heartbeats, not one: the
 * simulator showed a one-beat limit resetting live uploads.
 */
export const DEAD_AFTER_MS = 2 * HEARTBEAT_MS
/** Stop reading from a socket whose outgoing buffer is above this (a slow reader). */
export const HIGH_WATER_BYTES = 8 * 1024 * 1024

export interface RelayServer {
  readonly url: string
  readonly port: number
  close(): Promise<void>
}

export function listenWs(relay: Relay, options: { host: string; port: number }): Promise<RelayServer> {
  return new Promise((resolve, reject) => {
    const server = http.createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' })
      res.end('chapar relay: connect with a WebSocket client\n')
    })
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES, clientTracking: true })
    const heardAt = new WeakMap<WebSocket, number>()
    const heartbeat = setInterval(() => {
      const now = Date.now()
      for (const ws of wss.clients) {
        if (now - (heardAt.get(ws) ?? now) > DEAD_AFTER_MS) {
          ws.terminate()
          continue
        }
        ws.ping()
      }
    }, HEARTBEAT_MS)
    heartbeat.unref()

    wss.on('connection', (ws, req) => {
      heardAt.set(ws, Date.now())
      req.socket.on('data', () => heardAt.set(ws, Date.now()))
      const session = relay.connect({
        send: (frame) => {
          if (ws.readyState !== ws.OPEN) return
          if (ws.bufferedAmount > HIGH_WATER_BYTES) {
            ws.terminate() // a reader this slow is gone or hostile; it will reconnect and resume
            return
          }
          ws.send(frame, { binary: true })
        },
        close: (reason) => ws.close(1008, (reason ?? '').slice(0, 100)),
      })
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        heardAt.set(ws, Date.now())
        if (!isBinary) {
          ws.close(1003, 'binary frames only')
          return
        }
        session.receive(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      })
      ws.on('close', () => session.close())
      ws.on('error', () => session.close())
    })

    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      const addr = server.address()
      const port = typeof addr === 'object' && addr ? addr.port : options.port
      const host = options.host.includes(':') ? `[${options.host}]` : options.host
      resolve({
        url: `ws://${host}:${port}`,
        port,
        close: () =>
          new Promise<void>((res) => {
            clearInterval(heartbeat)
            for (const ws of wss.clients) ws.terminate()
            wss.close(() => server.close(() => res()))
          }),
      })
    })
  })
}
