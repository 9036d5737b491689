/**
 * Uploads striped over several WebSockets (connectWsStriped), against an
 * in-process relay on real sockets: chunks spread over the streams, a
 * stream that dies hands its work to the others without a reconnect, PUTs
 * a stream never answers are hedged onto another, a QUERY written to a
 * stream that died is asked again on another (or on the next to open),
 * PUTs go highest priority first, and chunks the relay said it holds are
 * not sent again when the stream that carried them dies unanswered.
 */
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { compose } from '../../src/client/compose.js'
import { runSync } from '../../src/client/sync-driver.js'
import { DEFAULT_WS_STREAMS } from '../../src/client/transports.js'
import { connectWsStriped, HEDGE_AFTER_MS } from '../../src/client/ws-transport.js'
import { Kind, Priority } from '../../src/protocol/envelope.js'
import { CHUNK_BYTES, decodeFrame, encodeFrame, FrameType, type Frame } from '../../src/protocol/frames.js'
import { inRanges } from '../../src/protocol/ranges.js'
import { ErrorCode } from '../../src/protocol/errors.js'
import type { Relay } from '../../src/relay/relay-engine.js'
import { listenWs, type RelayServer } from '../../src/relay/ws-server.js'
import { makeClient, makeRelay, type TestClient } from '../helpers/pair.js'

const servers: RelayServer[] = []
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close()
})

/**
 * A relay whose connections are recorded: the frame types each one
 * received, and a way to cut it. `onSend` may drop (return false) what the
 * relay writes to a connection.
 */
async function startRelay(
  onFrame?: (conn: number, type: number, cut: () => void, bytes: Uint8Array) => boolean,
  onSend?: (conn: number, bytes: Uint8Array, send: () => void) => boolean,
) {
  const relay: Relay = await makeRelay()
  const connections: number[][] = []
  const connect = relay.connect.bind(relay)
  relay.connect = (inner) => {
    const n0 = connections.length
    const link = onSend ? { ...inner, send: (b: Uint8Array) => (onSend(n0, b, () => inner.send(b)) ? inner.send(b) : undefined) } : inner
    const session = connect(link)
    const n = connections.length
    const types: number[] = []
    connections.push(types)
    const receive = session.receive.bind(session)
    session.receive = (bytes) => {
      types.push(bytes[0]!)
      // The hook may swallow the frame (return false), as a link that dies mid-request would.
      if (onFrame && !onFrame(n, bytes[0]!, () => link.close('cut by test'), bytes)) return
      receive(bytes)
    }
    return session
  }
  const server = await listenWs(relay, { host: '127.0.0.1', port: 0 })
  servers.push(server)
  return { relay, server, connections }
}

async function queuePhoto(from: TestClient, to: TestClient, bytes: number) {
  const data = new Uint8Array(bytes)
  for (let i = 0; i < data.length; i++) data[i] = (i * 131) & 0xff
  const c = compose({ outbox: from.outbox, me: from.me, to: to.me.address, content: { kind: Kind.report, file: { name: 'photo.jpg', data } }, now: Date.now(), ttlMs: 86_400_000, priority: Priority.normal })
  await from.outbox.add(c.record, c.envelope)
  return { id: c.record.id, data }
}

const puts = (types: number[]): number => types.filter((t) => t === FrameType.PUT).length

describe('connectWsStriped', () => {
  it(`an upload goes over ${DEFAULT_WS_STREAMS} WebSockets by default; the chunks spread over them and the photo arrives whole, stored once`, async () => {
    const { relay, server, connections } = await startRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const { id, data } = await queuePhoto(alice, bob, 1_000_000)
    const retries: string[] = []
    const up = await runSync(alice.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 30_000, onRetry: (_r, err, _d, role) => retries.push(`${role}: ${err.message}`) })
    expect(up.ok).toBe(true)
    expect(retries).toEqual([])
    expect((await alice.outbox.get(id))!.relays).toEqual([server.url])
    const uploading = connections.filter((t) => puts(t) > 0)
    expect(uploading.length).toBeGreaterThanOrEqual(2)
    expect(uploading.length).toBeLessThanOrEqual(DEFAULT_WS_STREAMS)
    // Nothing sent twice: 16 chunks of 64 KiB, each once.
    expect(uploading.reduce((n, t) => n + puts(t), 0)).toBe(16)
    expect((await relay.store.stats()).messages).toBe(1)
    expect((await runSync(bob.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 30_000, connect: undefined })).ok).toBe(true)
    const [item] = await bob.inbox.items()
    expect(bob.files.files.get(item!.file!)).toEqual(data)
  })

  it('a stream cut mid-upload hands its unanswered chunks to the others: the same connection finishes, with no reconnect', async () => {
    let cutOne = false
    const { relay, server, connections } = await startRelay((conn, type, cut) => {
      // The first stream to carry a PUT dies on it, before the relay stores anything it carried.
      if (type === FrameType.PUT && !cutOne) {
        cutOne = true
        cut()
        return false
      }
      return conn >= 0
    })
    const alice = await makeClient()
    const bob = await makeClient()
    const { id } = await queuePhoto(alice, bob, 1_000_000)
    const retries: string[] = []
    const up = await runSync(alice.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 30_000, onRetry: (_r, err, _d, role) => retries.push(`${role}: ${err.message}`) })
    expect(up.ok).toBe(true)
    expect(retries).toEqual([])
    expect(cutOne).toBe(true)
    expect((await alice.outbox.get(id))!.state).toBe('accepted')
    expect((await relay.store.stats()).messages).toBe(1)
    // A replacement stream opened: more upload connections than the default, and every chunk arrived.
    expect(connections.filter((t) => puts(t) > 0).length).toBeGreaterThanOrEqual(2)
  })

  it('PUTs a stream never answers (a TCP connection stuck in its backoff) are hedged onto an idle stream, and the upload finishes', async () => {
    // The relay swallows every PUT that comes by its first connection, which stays open.
    const { relay, server, connections } = await startRelay((conn, type) => !(conn === 0 && type === FrameType.PUT))
    const alice = await makeClient()
    const bob = await makeClient()
    const { id } = await queuePhoto(alice, bob, 1_000_000)
    const t0 = Date.now()
    const retries: string[] = []
    const up = await runSync(alice.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 40_000, onRetry: (_r, err, _d, role) => retries.push(`${role}: ${err.message}`) })
    expect(up.ok).toBe(true)
    expect(retries).toEqual([])
    expect(puts(connections[0]!)).toBeGreaterThan(0) // the stuck stream did take chunks
    expect(Date.now() - t0).toBeLessThan(HEDGE_AFTER_MS + 10_000) // not the engine's 90 s idle timeout
    expect((await alice.outbox.get(id))!.state).toBe('accepted')
    expect((await relay.store.stats()).messages).toBe(1)
  }, 60_000)

  it('a QUERY written to a stream that dies is asked again on another, and its answer arrives', async () => {
    let cutOne = false
    const { server } = await startRelay((_conn, type, cut) => {
      if (type === FrameType.QUERY && !cutOne) {
        cutOne = true
        cut()
        return false
      }
      return true
    })
    const conn = await connectWsStriped(server.url, 3)
    const frames: Frame[] = []
    conn.onFrame((f) => frames.push(decodeFrame(f)))
    // Let the other streams open, so the QUERY has somewhere to go.
    await new Promise((r) => setTimeout(r, 300))
    const id = new Uint8Array(32).fill(9)
    conn.link.send(encodeFrame({ type: FrameType.QUERY, ids: [id] }))
    const deadline = Date.now() + 5_000
    while (!frames.some((f) => f.type === FrameType.HAVE) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(cutOne).toBe(true)
    expect(frames.find((f) => f.type === FrameType.HAVE)).toMatchObject({ type: FrameType.HAVE, have: [] })
    conn.link.close('done')
  })

  it('a QUERY sent while no stream is open waits for the next one to open, and is answered', async () => {
    let cutOne = false
    const { server } = await startRelay((conn, type, cut) => {
      if (conn === 0 && type === FrameType.QUERY && !cutOne) {
        cutOne = true
        cut()
        return false
      }
      return true
    })
    // A proxy in front of the relay that holds every connection but the first for 800 ms: when the first dies, none is open.
    const target = new URL(server.url)
    let accepted = 0
    const proxy = net.createServer((sock) => {
      const delay = accepted++ === 0 ? 0 : 800
      setTimeout(() => {
        const up = net.connect(Number(target.port), target.hostname)
        sock.pipe(up).pipe(sock)
        sock.on('error', () => up.destroy())
        up.on('error', () => sock.destroy())
      }, delay)
    })
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r))
    try {
      const conn = await connectWsStriped(`ws://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, 2)
      const frames: Frame[] = []
      conn.onFrame((f) => frames.push(decodeFrame(f)))
      conn.link.send(encodeFrame({ type: FrameType.QUERY, ids: [new Uint8Array(32).fill(7)] }))
      const deadline = Date.now() + 5_000
      while (!frames.some((f) => f.type === FrameType.HAVE) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      expect(cutOne).toBe(true)
      expect(frames.find((f) => f.type === FrameType.HAVE)).toMatchObject({ type: FrameType.HAVE, have: [] })
      conn.link.close('done')
    } finally {
      proxy.close()
    }
  })

  it('PUTs leave highest priority first: one queued behind a file goes out next', async () => {
    const order: string[] = []
    const { server } = await startRelay((_conn, type, _cut, bytes) => {
      if (type === FrameType.PUT) {
        const f = decodeFrame(bytes)
        if (f.type === FrameType.PUT) order.push(`${f.id[0]}:${f.index}`)
      }
      return true
    })
    const conn = await connectWsStriped(server.url, 2)
    conn.onFrame(() => {})
    const put = (tag: number, size: number, index: number) =>
      encodeFrame({ type: FrameType.PUT, id: new Uint8Array(32).fill(tag), mailbox: new Uint8Array(32).fill(3), expiresAt: Date.now() + 3_600_000, size, index, data: new Uint8Array(CHUNK_BYTES).fill(tag) })
    // 19 chunks of a 20-chunk file (never whole, so never checked), then the first chunk of an urgent one.
    for (let i = 0; i < 19; i++) conn.link.send(put(1, 20 * CHUNK_BYTES, i), 0)
    conn.link.send(put(2, 2 * CHUNK_BYTES, 0), 2)
    const deadline = Date.now() + 10_000
    while (order.length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(order).toHaveLength(20)
    // At most two streams × two chunks of the file were on their way before it.
    expect(order.indexOf('2:0')).toBeLessThanOrEqual(4)
    conn.link.close('done')
  })

  it('chunks another stream said the relay holds are not sent again when the stream that carried them dies unanswered', async () => {
    // Connection 0 carries PUTs to the relay, which stores them, but its answers are lost; once a HAVE on
    // another connection shows the relay holds them, connection 0 is cut, and the other connections'
    // answers are held back 300 ms meanwhile, so the upload is still under way when it dies.
    const carried: number[] = []
    let cut0: (() => void) | undefined
    let cutting = false
    const { relay, server, connections } = await startRelay(
      (conn, type, cut, bytes) => {
        if (conn === 0 && type === FrameType.PUT) {
          cut0 = cut
          const f = decodeFrame(bytes)
          if (f.type === FrameType.PUT) carried.push(f.index)
        }
        return true
      },
      (conn, bytes, send) => {
        if (conn === 0) return bytes[0] !== FrameType.HAVE && bytes[0] !== FrameType.STORED
        if (cutting) {
          setTimeout(send, 300)
          return false
        }
        if (bytes[0] === FrameType.HAVE && carried.length > 0) {
          const f = decodeFrame(bytes)
          if (f.type === FrameType.HAVE && carried.every((i) => inRanges(f.have, i))) {
            cutting = true
            setTimeout(() => cut0?.(), 100)
          }
        }
        return true
      },
    )
    const alice = await makeClient()
    const bob = await makeClient()
    const { id } = await queuePhoto(alice, bob, 3_000_000)
    const up = await runSync(alice.ctx, { relays: [server.url], untilEmpty: true, timeoutMs: 30_000 })
    expect(up.ok).toBe(true)
    expect(cutting).toBe(true)
    expect(carried.length).toBeGreaterThan(0)
    expect((await alice.outbox.get(id))!.state).toBe('accepted')
    expect((await relay.store.stats()).messages).toBe(1)
    // 3 MB is 46 chunks, each sent once: none of those connection 0 carried went again.
    expect(connections.reduce((n, t) => n + puts(t), 0)).toBe(Math.ceil(3_000_000 / CHUNK_BYTES))
  })

  it('rejects like one WebSocket when no stream can open, and refuses a stream count that is not a whole number ≥ 1', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port
        s.close(() => resolve(p))
      })
    })
    await expect(connectWsStriped(`ws://127.0.0.1:${port}`, 4)).rejects.toMatchObject({ code: ErrorCode.DISCONNECTED })
    expect(() => connectWsStriped('ws://127.0.0.1:1', 0)).toThrow(RangeError)
    expect(() => connectWsStriped('ws://127.0.0.1:1', 1.5)).toThrow(RangeError)
  })
})
