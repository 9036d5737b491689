/** The TCP model carries whole frames in order, exactly once, over a bad link — or says it could not. */
import { describe, expect, it } from 'vitest'
import { ALWAYS_UP, BernoulliLoss, type Path, PeriodicSchedule, Pipe, type Schedule } from '../../src/sim/link.js'
import { Scheduler } from '../../src/sim/scheduler.js'
import { CONNECT_TIMEOUT_MS, dialTcp, type Listener, wsOverhead } from '../../src/sim/tcp.js'
import type { WsConnection } from '../../src/client/ws-transport.js'

function makePath(sched: Scheduler, loss: number, extra: { duplicate?: number; reorder?: number; schedule?: Schedule } = {}): Path {
  const spec = { delayMs: 100, jitterMs: 20, bandwidthKbps: 1000, queueMs: 2000, duplicate: extra.duplicate ?? 0, reorder: extra.reorder ?? 0 }
  const pipe = (name: string) => new Pipe(sched, sched.rng.fork(name), spec, new BernoulliLoss(sched.rng.fork(name + '-loss'), () => loss), extra.schedule ?? ALWAYS_UP)
  return { up: pipe('up'), down: pipe('down'), mtu: 1200 }
}

/** A listener whose "relay" echoes every frame back with its first byte incremented. */
function echoListener(received: Uint8Array[], up = () => true): Listener {
  return {
    up,
    halves: new Set(),
    accept: (link) => ({
      receive: (f) => {
        received.push(f.slice())
        const back = f.slice()
        back[0] = (back[0]! + 1) & 0xff
        link.send(back)
      },
      close: () => {},
    }),
  }
}

const frame = (i: number, len: number) => new Uint8Array(len).map((_, j) => (i * 7 + j) & 0xff).fill(i & 0xff, 0, 1)

describe('TCP model', () => {
  for (const [loss, dup, reorder] of [
    [0, 0, 0],
    [0.3, 0.05, 0.05],
    [0.5, 0, 0],
  ] as const) {
    it(`delivers frames once and in order on each connection, at loss ${loss}, duplication ${dup}, reordering ${reorder}`, async () => {
      const sched = new Scheduler(11)
      const sizes = [10, 126, 1500, 5000, 20_000]
      const all = Array.from({ length: 20 }, (_, i) => frame(i, sizes[i % sizes.length]!))
      const echoed = new Set<number>()
      const connections: Array<{ sent: Uint8Array[]; atRelay: Uint8Array[] }> = []
      // What a driver does: dial until it gets through; on a broken connection, dial again and resend what was not answered.
      const dial = (): void => {
        const c = { sent: all.filter((f) => !echoed.has(f[0]!)), atRelay: [] as Uint8Array[] }
        dialTcp(sched, path, echoListener(c.atRelay), 'relay').then(
          (conn) => {
            connections.push(c)
            conn.onFrame((f) => echoed.add((f[0]! - 1) & 0xff))
            conn.onClose(() => sched.at(sched.now + 1000, dial))
            for (const f of c.sent) conn.link.send(f)
          },
          () => sched.at(sched.now + 1000, dial),
        )
      }
      const path = makePath(sched, loss, { duplicate: dup, reorder })
      dial()
      await sched.run(sched.now + 6 * 3600_000, { stop: () => echoed.size === all.length })
      expect(echoed.size).toBe(all.length)
      for (const c of connections) expect(c.atRelay).toEqual(c.sent.slice(0, c.atRelay.length)) // a prefix: in order, no gaps, no copies
      if (loss === 0) expect(connections).toHaveLength(1)
    })
  }

  it('is refused at once when nothing listens (a crashed relay), and times out when the link is down', async () => {
    const sched = new Scheduler(1)
    const outcomes: Array<[string, number]> = []
    const t0 = sched.now
    dialTcp(sched, makePath(sched, 0), echoListener([], () => false), 'down relay').catch((e: Error & { code?: string }) => outcomes.push([e.code!, sched.now - t0]))
    const dead = new PeriodicSchedule(1, 10 * 3600_000, t0 - 1) // down from the start, for hours
    dialTcp(sched, makePath(sched, 0, { schedule: dead }), echoListener([]), 'unreachable').catch((e: Error & { code?: string }) => outcomes.push([e.code!, sched.now - t0]))
    await sched.run(sched.now + 60_000)
    expect(outcomes[0]![0]).toBe('DISCONNECTED')
    expect(outcomes[0]![1]).toBeLessThan(500) // one round trip: SYN, RST
    expect(outcomes[1]).toEqual(['TIMEOUT', CONNECT_TIMEOUT_MS])
  })

  it('tells the client when the relay process dies', async () => {
    const sched = new Scheduler(2)
    const listener = echoListener([])
    let closed: string | undefined
    await dialAndRun(sched, makePath(sched, 0), listener, (c) => c.onClose((r) => (closed = r)))
    expect(listener.halves.size).toBe(1)
    for (const h of [...listener.halves]) h.kill()
    await sched.run(sched.now + 5000)
    expect(closed).toMatch(/relay process died/)
    expect(listener.halves.size).toBe(0)
  })

  it('puts on the wire what TCP and WebSocket would: payload plus framing plus 40 bytes a segment', async () => {
    const sched = new Scheduler(3)
    const path = makePath(sched, 0)
    const frames = Array.from({ length: 20 }, (_, i) => frame(i, 1000))
    await dialAndRun(sched, path, echoListener([]), (c) => {
      for (const f of frames) c.link.send(f)
    })
    await sched.run(sched.now + 60_000)
    const payload = frames.reduce((n, f) => n + f.length + wsOverhead(f.length, true), 0)
    const segments = Math.ceil(payload / 1160)
    const up = path.up.stats.bytes
    // handshake (SYN 60 + upgrade request 260 + 40) and per-segment headers; ACKs for the echoes go up too
    expect(up).toBeGreaterThanOrEqual(payload + 40 * segments + 60 + 260)
    expect(up).toBeLessThan(payload + 40 * segments + 60 + 300 + 40 * 40)
    expect(path.up.stats.lost).toBe(0)
  })
})

async function dialAndRun(sched: Scheduler, path: Path, listener: Listener, use: (c: WsConnection) => void): Promise<void> {
  let done = false
  dialTcp(sched, path, listener, 'relay').then((c) => {
    use(c)
    done = true
  })
  await sched.run(sched.now + 30_000, { stop: () => done })
  expect(done).toBe(true)
}
