/**
 * The relay's public listener: WebSocket sessions (one RelaySession per
 * socket) and a few plain HTTP routes on the same port, with strict limits
 * and timeouts everywhere a slow or hostile peer could hold resources.
 */
import http from 'node:http'
import { WebSocketServer, type WebSocket } from 'ws'
import { MAX_FRAME_BYTES } from '../protocol/frames.js'
import type { Logger } from './log.js'
import type { BucketSpec } from './limits.js'
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
/** Largest HTTP request head (the upgrade request included). */
export const MAX_HEADER_BYTES = 8 * 1024
/** How often Node checks requests against the header and request timeouts. */
export const TIMEOUT_CHECK_MS = 1000

export interface WsServerOptions {
  host: string
  port: number
  heartbeatMs?: number
  /** Cut a socket that sent nothing for this long. */
  idleMs?: number
  /** Time to receive an HTTP request head, upgrades included. */
  headersTimeoutMs?: number
  /** Time to receive a whole plain HTTP request. */
  requestTimeoutMs?: number
  /** Most open sockets (WebSocket and HTTP); more are refused at accept. */
  maxConnections?: number | undefined
  /** Take the peer address from X-Forwarded-For (behind a reverse proxy that sets it). */
  trustProxy?: boolean
  /** Plain HTTP requests: return true if handled. */
  http?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean
  log?: Logger
}

export interface RelayServer {
  readonly url: string
  readonly port: number
  /** Stop accepting: close the listener, leave open sockets be. */
  stopAccepting(): Promise<void>
  /** Close every socket (going-away) and the listener. */
  close(): Promise<void>
}

function peerOf(req: http.IncomingMessage, trustProxy: boolean): string | undefined {
  if (trustProxy) {
    const xff = req.headers['x-forwarded-for']
    const last = (Array.isArray(xff) ? xff.join(',') : xff)?.split(',').at(-1)?.trim()
    if (last) return last
  }
  return req.socket.remoteAddress
}

/**
 * The per-connection limit applied to reading, not only to frames: bytes
 * read are drawn from a bucket that may go into debt, and a connection in
 * debt is not read from until the debt is paid (`onResume` then). The
 * engine's RATE_LIMITED refusals tell an honest client to slow down; not
 * reading is what stops a hostile one spending the relay's CPU on frames
 * that are only refused. Without it one connection pumping small PUTs kept
 * a core busy decoding, refusing and logging ~30,000 frames a second, and
 * new connections (the legitimate ones too) waited in an overflowing accept
 * queue (tests/e2e/hostile.test.ts). A debt is at most one read (64 KiB).
 */
function readShaper(ws: WebSocket, spec: BucketSpec | undefined, onResume: () => void): { read(bytes: number): void; stop(): void } | undefined {
  if (!spec) return undefined
  let credit = spec.burst
  let at = Date.now()
  let timer: NodeJS.Timeout | undefined
  return {
    read(bytes) {
      const now = Date.now()
      credit = Math.min(spec.burst, credit + ((now - at) / 1000) * spec.rate) - bytes
      at = now
      if (credit >= 0 || timer) return
      ws.pause()
      timer = setTimeout(() => {
        timer = undefined
        onResume()
        ws.resume()
      }, Math.ceil((-credit / spec.rate) * 1000))
    },
    stop() {
      clearTimeout(timer)
    },
  }
}

export function listenWs(relay: Relay, options: WsServerOptions): Promise<RelayServer> {
  const heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS
  const idleMs = options.idleMs ?? DEAD_AFTER_MS
  const log = options.log
  return new Promise((resolve, reject) => {
    const server = http.createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: options.headersTimeoutMs ?? 10_000,
        requestTimeout: options.requestTimeoutMs ?? 30_000,
        connectionsCheckingInterval: TIMEOUT_CHECK_MS,
        keepAliveTimeout: 5000,
      },
      (req, res) => {
        if (options.http?.(req, res)) return
        res.writeHead(426, { 'content-type': 'text/plain' })
        res.end('chapar relay: connect with a WebSocket client\n')
      },
    )
    if (options.maxConnections !== undefined) server.maxConnections = options.maxConnections
    server.on('clientError', (_err, socket) => socket.destroy())
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES, clientTracking: true })
    const heardAt = new WeakMap<WebSocket, number>()
    const heartbeat = setInterval(() => {
      const now = Date.now()
      for (const ws of wss.clients) {
        if (now - (heardAt.get(ws) ?? now) > idleMs) {
          ws.terminate()
          continue
        }
        ws.ping()
      }
    }, heartbeatMs)
    heartbeat.unref()

    wss.on('connection', (ws, req) => {
      const openedAt = Date.now()
      heardAt.set(ws, openedAt)
      const shape = readShaper(ws, relay.limits.perConnection, () => heardAt.set(ws, Date.now()))
      req.socket.on('data', (chunk: Buffer) => {
        heardAt.set(ws, Date.now())
        shape?.read(chunk.length)
      })
      const session = relay.connect(
        {
          send: (frame) => {
            if (ws.readyState !== ws.OPEN) return
            if (ws.bufferedAmount > HIGH_WATER_BYTES) {
              ws.terminate() // a reader this slow is gone or hostile; it will reconnect and resume
              return
            }
            ws.send(frame, { binary: true })
          },
          close: (reason) => ws.close(1008, (reason ?? '').slice(0, 100)),
        },
        { peer: peerOf(req, options.trustProxy ?? false) },
      )
      log?.info({ conn: session.conn, transport: 'ws', open: relay.counters.open }, 'connection opened')
      let bytesIn = 0
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        heardAt.set(ws, Date.now())
        bytesIn += data.length
        if (!isBinary) {
          ws.close(1003, 'binary frames only')
          return
        }
        session.receive(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
      })
      ws.on('close', (code) => {
        shape?.stop()
        session.close()
        log?.info({ conn: session.conn, transport: 'ws', code, seconds: Math.round((Date.now() - openedAt) / 100) / 10, bytes_in: bytesIn }, 'connection closed')
      })
      ws.on('error', (err) => {
        log?.info({ conn: session.conn, transport: 'ws', error: err.message }, 'connection error')
        session.close()
      })
    })

    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      const addr = server.address()
      const port = typeof addr === 'object' && addr ? addr.port : options.port
      const host = options.host.includes(':') ? `[${options.host}]` : options.host
      let listening = true
      const stopAccepting = (): Promise<void> =>
        new Promise<void>((res) => {
          if (!listening) return res()
          listening = false
          // server.close stops the listener; its callback waits for every socket, which close() ends.
          server.close(() => {})
          res()
        })
      resolve({
        url: `ws://${host}:${port}`,
        port,
        stopAccepting,
        close: () =>
          new Promise<void>((res) => {
            clearInterval(heartbeat)
            void stopAccepting()
            for (const ws of wss.clients) ws.close(1001, 'relay shutting down')
            server.closeIdleConnections()
            // Sockets that do not finish the close handshake promptly are cut.
            const cut = setTimeout(() => {
              for (const ws of wss.clients) ws.terminate()
              server.closeAllConnections()
            }, 1000)
            wss.close(() => {
              clearTimeout(cut)
              server.closeAllConnections()
              res()
            })
          }),
      })
    })
  })
}
