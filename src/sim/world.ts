/**
 * One simulation run. Theory of operation: a `Scheduler` is the Env of
 * everything; field clients, recipients and relays are the real engines
 * and the real sync driver (`runSync`, with p-retry and full jitter) on
 * memory-level stores; every connection is the TCP model of tcp.ts over
 * each host's own lossy link. Field clients queue their reports at t = 0,
 * then sync until their outbox is empty, and again every `pollMs` until
 * every report of theirs is delivered; recipients sync continuously. A
 * relay crash drops its connections and every group-commit batch whose
 * virtual fsync had not finished; the restarted relay opens the store as it
 * was. The run stops when every report is in its recipient's inbox, or at
 * `durationMs` of virtual time.
 */
import { setMaxListeners } from 'node:events'
import { compose } from '../client/compose.js'
import { MemoryFileSink } from '../client/files.js'
import { generateIdentity, type Identity } from '../client/identity.js'
import { runSync } from '../client/sync-driver.js'
import type { WsConnection } from '../client/ws-transport.js'
import { boxPublicKey } from '../protocol/box.js'
import type { ClientContext, SyncEvent } from '../client/sync-engine.js'
import { toHex } from '../protocol/bytes.js'
import { Kind, Priority } from '../protocol/envelope.js'
import { FrameType } from '../protocol/frames.js'
import { openMemoryDb as openSimDb } from '../queue/db.js'
import { GroupCommit } from '../queue/group-commit.js'
import { Inbox } from '../queue/inbox.js'
import { Outbox } from '../queue/outbox.js'
import { MailboxStore } from '../queue/mailbox.js'
import { Relay } from '../relay/relay-engine.js'
import { BernoulliLoss, GilbertLoss, type LossProcess, PeriodicSchedule, ALWAYS_UP, type Path, Pipe, type Schedule } from './link.js'
import { summarize, type Summary } from './metrics.js'
import type { Rng } from './rng.js'
import { EPOCH_MS, Scheduler } from './scheduler.js'
import { dialTcp, type Listener, type ServerEnd } from './tcp.js'
import type { SimOptions } from './options.js'
import { clientDatagramConnection } from '../client/udp-transport.js'
import { DatagramListener } from '../relay/datagram-listener.js'
import { IP_UDP_BYTES } from '../protocol/datagram-session.js'

/** Where a relay's datagram replies go: one client connection's end of its host's link. */
interface SimAddress {
  path: Path
  receive(packet: Uint8Array): void
}

export interface SimResult {
  sent: number
  /** Reports whose relay ack reached the sender (accept_latency_ms covers these). */
  accepted: number
  delivered: number
  delivery_ratio: number
  duplicates_at_app: number
  latency_ms: Summary
  accept_latency_ms: Summary
  wire_bytes: number
  payload_bytes: number
  wire_per_payload: number
  capacity_ratio: number
  relay_crashes: number
  seed: number
  virtual_ms: number
  events: number
  wall_ms: number
}

/** What a report chart needs: when each message was queued, accepted and delivered (virtual ms from start). */
export interface SimTrace {
  delivered_at: number[]
  latencies: number[]
}

export class SimInvariantError extends Error {
  constructor(message: string) {
    super(`simulation invariant broken: ${message}`)
    this.name = 'SimInvariantError'
  }
}

interface Host {
  name: string
  me: Identity
  ctx: ClientContext
  path: Path
  schedule: Schedule
  rng: Rng
  /** Reports this host sent, not yet delivered. */
  open: Set<string>
  /** Its reports' envelope bytes accepted, counted once per relay that accepted them. */
  acceptedBytes: number
  wireBytes: number
  /** The datagram transport's memory of the loss to each relay, as a real client process keeps it. */
  lossMemory: Map<string, number>
}

interface SimRelay {
  url: string
  listener: Listener
  /** The datagram transport's relay end (with --transport datagram). */
  datagram: DatagramListener<SimAddress> | undefined
  secretKey: Uint8Array
  up: boolean
  generation: number
  relay: Relay | undefined
}

/** Sizes for `--size mix`: mostly text reports, some photos. */
export function drawSize(size: SimOptions['size'], rng: Rng): number {
  if (size !== 'mix') return size
  const r = rng.next()
  if (r < 0.8) return 200 + rng.int(3800) // a text report
  return 50_000 + rng.int(250_000) // a photo
}

function lossProcess(rng: Rng, o: SimOptions, loss: number): LossProcess {
  const p = o.lossVary ? varyingLoss(o.lossVary) : () => loss
  return o.lossModel === 'gilbert' ? new GilbertLoss(rng, p, o.burst) : new BernoulliLoss(rng, p)
}

/** Loss that swings between min and max over `periodMs` (a degraded satellite link's weather). */
export function varyingLoss(v: NonNullable<SimOptions['lossVary']>): (now: number) => number {
  return (now) => {
    const phase = ((now - EPOCH_MS) % v.periodMs) / v.periodMs
    return v.min + (v.max - v.min) * (0.5 - 0.5 * Math.cos(2 * Math.PI * phase))
  }
}

export async function runSim(o: SimOptions, hooks: { onProgress?: (p: { virtualMs: number; delivered: number; sent: number; events: number }) => void } = {}): Promise<{ result: SimResult; trace: SimTrace }> {
  const wallStart = performance.now()
  const sched = new Scheduler(o.seed)
  const root = sched.rng

  // ---- relays
  const relays: SimRelay[] = []
  let crashes = 0
  for (let r = 0; r < o.relays; r++) {
    const db = await openSimDb()
    const secretKey = sched.randomBytes(32)
    const sr: SimRelay = {
      url: o.transport === 'datagram' ? `udp://relay-${r}.sim:7000` : `ws://relay-${r}.sim:7000`,
      datagram: undefined,
      secretKey,
      up: false,
      generation: 0,
      relay: undefined,
      listener: {
        up: () => sr.up,
        accept: (link) => {
          const session = sr.relay!.connect(link)
          return { receive: (f) => session.receive(f), close: () => session.close() }
        },
        halves: new Set<ServerEnd>(),
      },
    }
    const start = (): void => {
      const gen = ++sr.generation
      // An fsync takes virtual time; a crash means it never finishes.
      const durable = (): Promise<void> => new Promise((resolve) => sched.at(sched.now + o.fsyncMs, () => gen === sr.generation && sr.up && resolve()))
      const commit = new GroupCommit(db, true, durable)
      sr.relay = new Relay(new MailboxStore(db, commit), sched)
      if (o.transport === 'datagram') {
        sr.datagram = new DatagramListener<SimAddress>(sr.relay, {
          env: sched,
          secretKey: sr.secretKey,
          mtu: o.mtu - IP_UDP_BYTES,
          rateKbps: o.rateKbps ?? o.bandwidthKbps,
          send: (to, packet) => to.path.down.send(packet.length + IP_UDP_BYTES, () => to.receive(packet)),
        })
      }
      sr.up = true
    }
    start()
    const sweep = (): void => {
      if (sr.up) void sr.relay!.sweep().catch(() => {})
      sched.at(sched.now + 60_000, sweep)
    }
    sched.at(sched.now + 60_000, sweep)
    if (o.relayCrashEveryMs) {
      const crashRng = root.fork(`crash-${r}`)
      const crashLater = (): void => {
        sched.at(sched.now + Math.round(o.relayCrashEveryMs! * (0.5 + crashRng.next())), () => {
          sr.up = false
          sr.generation++
          crashes++
          for (const h of [...sr.listener.halves]) h.kill()
          sr.datagram?.stop(false)
          sched.at(sched.now + o.relayRestartMs, () => {
            start()
            crashLater()
          })
        })
      }
      crashLater()
    }
    relays.push(sr)
  }
  const urls = relays.map((r) => r.url)
  const byUrl = new Map(relays.map((r) => [r.url, r]))

  // ---- metrics
  const enqueuedAt = new Map<string, number>()
  const acceptedAt = new Map<string, number>()
  const deliveredAt = new Map<string, number>()
  const senderOf = new Map<string, Host>()
  const firstFrameAt = new Map<string, number>()
  const lastAcceptedAt = new Map<string, number>()
  const sizeOf = new Map<string, number>()
  let duplicates = 0
  let payloadBytes = 0

  const makeHost = async (name: string, field: boolean): Promise<Host> => {
    const rng = root.fork(name)
    const db = await openSimDb()
    const me = generateIdentity(sched.randomBytes)
    const outbox = new Outbox(db)
    const inbox = new Inbox(db, new GroupCommit(db))
    const loss = field ? o.loss : o.recipientLoss ?? o.loss
    const spec = { delayMs: o.rttMs / 2, jitterMs: o.jitterMs, bandwidthKbps: o.bandwidthKbps, queueMs: o.queueMs, duplicate: o.duplicate, reorder: o.reorder }
    const schedule: Schedule = field && o.outage ? new PeriodicSchedule(o.outage.upMs, o.outage.downMs, EPOCH_MS - Math.floor(rng.next() * (o.outage.upMs + o.outage.downMs))) : ALWAYS_UP
    const path: Path = {
      up: new Pipe(sched, rng.fork('up'), spec, lossProcess(rng.fork('up-loss'), o, loss), schedule),
      down: new Pipe(sched, rng.fork('down'), spec, lossProcess(rng.fork('down-loss'), o, loss), schedule),
      mtu: o.mtu,
    }
    const host: Host = {
      name,
      me,
      path,
      schedule,
      rng,
      open: new Set(),
      acceptedBytes: 0,
      wireBytes: 0,
      lossMemory: new Map(),
      ctx: undefined as unknown as ClientContext,
    }
    if (field) {
      path.up.onWire = (b) => (host.wireBytes += b)
      path.down.onWire = (b) => (host.wireBytes += b)
    }
    const onEvent = (e: SyncEvent): void => {
      const now = sched.now
      if (e.type === 'accepted') {
        for (const id of e.ids) {
          if (!enqueuedAt.has(id)) continue // a receipt
          if (!acceptedAt.has(id)) acceptedAt.set(id, now)
          host.acceptedBytes += sizeOf.get(id)!
          lastAcceptedAt.set(id, now)
        }
      } else if (e.type === 'received' && e.as === 'report') {
        if (deliveredAt.has(e.id)) duplicates++
        else {
          deliveredAt.set(e.id, now)
          senderOf.get(e.id)?.open.delete(e.id)
        }
      }
    }
    host.ctx = { me, outbox, inbox, files: new MemoryFileSink(), env: sched, locks: new Map(), onEvent }
    return host
  }

  const clients: Host[] = []
  for (let i = 0; i < o.clients; i++) clients.push(await makeHost(`client-${i}`, true))
  const recipients: Host[] = []
  for (let i = 0; i < o.recipients; i++) recipients.push(await makeHost(`recipient-${i}`, false))

  // ---- reports, all queued at the start
  for (let i = 0; i < clients.length; i++) {
    const c = clients[i]!
    const sizes = c.rng.fork('sizes')
    for (let j = 0; j < o.messages; j++) {
      const to = recipients[(i + j) % recipients.length]!
      const size = drawSize(o.size, sizes)
      const content = size <= 4096 ? { kind: Kind.report, text: 'x'.repeat(size) } : { kind: Kind.report, file: { name: `photo-${j}.jpg`, data: sizes.bytes(size) } }
      const composed = compose({ outbox: c.ctx.outbox, me: c.me, to: to.me.address, content, now: sched.now, ttlMs: o.ttlMs, priority: Priority.normal, randomBytes: sched.randomBytes })
      await c.ctx.outbox.add(composed.record, composed.envelope)
      enqueuedAt.set(composed.record.id, sched.now)
      sizeOf.set(composed.record.id, composed.envelope.length)
      senderOf.set(composed.record.id, c)
      c.open.add(composed.record.id)
      payloadBytes += composed.envelope.length
    }
  }
  const sent = enqueuedAt.size

  // ---- behaviour
  const stop = new AbortController()
  setMaxListeners(0, stop.signal) // every host's driver listens on it
  const dialDatagram = (h: Host, sr: SimRelay): WsConnection => {
    let c: ReturnType<typeof clientDatagramConnection> | undefined = undefined
    const addr: SimAddress = { path: h.path, receive: (packet) => c!.receive(packet) }
    c = clientDatagramConnection(
      sched,
      boxPublicKey(sr.secretKey),
      (packet) => h.path.up.send(packet.length + IP_UDP_BYTES, () => sr.up && sr.datagram?.receive(packet, addr)),
      { mtu: o.mtu - IP_UDP_BYTES, rateKbps: o.rateKbps ?? o.bandwidthKbps, lossMemory: h.lossMemory },
    )
    return c.conn
  }
  const connectFor = (h: Host, field: boolean) => async (url: string) => {
    const sr = byUrl.get(url)!
    const conn = o.transport === 'datagram' ? dialDatagram(h, sr) : await dialTcp(sched, h.path, sr.listener, url)
    if (field) {
      // Note when each report's first PUT leaves: a transfer's time starts there.
      const send = conn.link.send
      conn.link.send = (frame, priority) => {
        if (frame[0] === FrameType.PUT) {
          const id = toHex(frame.subarray(1, 33))
          if (enqueuedAt.has(id) && !firstFrameAt.has(id)) firstFrameAt.set(id, sched.now)
        }
        send(frame, priority)
      }
    }
    return conn
  }
  for (const c of clients) {
    const loop = async (): Promise<void> => {
      while (!stop.signal.aborted && c.open.size > 0) {
        await runSync(c.ctx, { relays: urls, untilEmpty: true, connect: connectFor(c, true), random: () => c.rng.next(), signal: stop.signal })
        if (stop.signal.aborted || c.open.size === 0) return
        await new Promise<void>((resolve) => sched.at(sched.now + o.pollMs, resolve))
      }
    }
    void loop()
  }
  for (const r of recipients) {
    void runSync(r.ctx, { relays: urls, untilEmpty: false, connect: connectFor(r, false), random: () => r.rng.next(), signal: stop.signal })
  }

  // ---- run
  const until = EPOCH_MS + o.durationMs
  await sched.run(until, {
    stop: () => deliveredAt.size >= sent,
    stepEvery: 20_000,
    onStep: () => hooks.onProgress?.({ virtualMs: sched.elapsed, delivered: deliveredAt.size, sent, events: sched.events }),
  })
  const virtualMs = Math.round(sched.elapsed)
  stop.abort()

  // ---- results
  const latencies = [...deliveredAt].map(([id, t]) => t - enqueuedAt.get(id)!)
  const acceptLatencies = [...acceptedAt].map(([id, t]) => t - enqueuedAt.get(id)!)
  let wire = 0
  // capacity_ratio's denominator: the time each field link was up while one
  // of its transfers was under way (first PUT → last acceptance), counting
  // overlapping transfers on one link once.
  // Milliseconds of up time, each weighted by the fraction of packets the
  // link carried then (1 − p(t)): loss that varies is integrated, not averaged.
  let upMs = 0
  const vary = o.lossVary ? varyingLoss(o.lossVary) : undefined
  const goodMs = (schedule: Schedule, a: number, b: number): number => {
    if (!vary) return schedule.upTime(a, b) * (1 - o.loss)
    let sum = 0
    const step = Math.max(1, Math.min(1000, (b - a) / 100))
    for (let t = a; t < b; t += step) {
      const e = Math.min(b, t + step)
      sum += schedule.upTime(t, e) * (1 - vary((t + e) / 2))
    }
    return sum
  }
  let acceptedBits = 0
  const spans = new Map<Host, Array<[number, number]>>()
  for (const [id, end] of lastAcceptedAt) {
    const start = firstFrameAt.get(id)
    const host = senderOf.get(id)
    if (start === undefined || !host) continue
    const list = spans.get(host) ?? []
    list.push([start, end])
    spans.set(host, list)
  }
  for (const c of clients) {
    wire += c.wireBytes
    acceptedBits += c.acceptedBytes * 8
    const list = (spans.get(c) ?? []).sort((a, b) => a[0] - b[0])
    let cur: [number, number] | undefined
    for (const [a, b] of list) {
      if (cur && a <= cur[1]) cur[1] = Math.max(cur[1], b)
      else {
        if (cur) upMs += goodMs(c.schedule, cur[0], cur[1])
        cur = [a, b]
      }
    }
    if (cur) upMs += goodMs(c.schedule, cur[0], cur[1])
  }
  const possibleBits = o.bandwidthKbps * upMs // kbit/s × ms = bits
  const capacity = possibleBits > 0 ? acceptedBits / possibleBits : 0
  const result: SimResult = {
    sent,
    accepted: acceptedAt.size,
    delivered: deliveredAt.size,
    delivery_ratio: round(sent === 0 ? 1 : deliveredAt.size / sent, 6),
    duplicates_at_app: duplicates,
    latency_ms: summarize(latencies),
    accept_latency_ms: summarize(acceptLatencies),
    wire_bytes: wire,
    payload_bytes: payloadBytes,
    wire_per_payload: round(payloadBytes === 0 ? 0 : wire / payloadBytes, 4),
    capacity_ratio: round(capacity, 4),
    relay_crashes: crashes,
    seed: o.seed,
    virtual_ms: virtualMs,
    events: sched.events,
    wall_ms: Math.round(performance.now() - wallStart),
  }
  checkInvariants(result)
  return { result, trace: { delivered_at: [...deliveredAt.values()].map((t) => t - EPOCH_MS).sort((a, b) => a - b), latencies: latencies.sort((a, b) => a - b) } }
}

export function checkInvariants(r: SimResult): void {
  if (r.duplicates_at_app !== 0) throw new SimInvariantError(`${r.duplicates_at_app} duplicate(s) reached an inbox`)
  if (r.delivered > r.sent) throw new SimInvariantError(`delivered ${r.delivered} > sent ${r.sent}`)
  if (r.capacity_ratio > 1) throw new SimInvariantError(`capacity_ratio ${r.capacity_ratio} > 1 (faster than the physical limit: the accounting is wrong)`)
}

function round(x: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
