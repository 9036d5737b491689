/**
 * The packet link of the simulator: one `Pipe` per direction, each with its
 * own loss process, propagation delay and jitter, serialisation at a finite
 * bandwidth behind a bounded queue, duplication, reordering and an up/down
 * schedule. Packets are sizes and callbacks, not bytes: what they carry is
 * the transport model's business (tcp.ts).
 */
import type { Rng } from './rng.js'
import type { Scheduler } from './scheduler.js'

export type LossModelName = 'bernoulli' | 'gilbert'

/** Decides, packet by packet, whether the next one is lost. */
export interface LossProcess {
  drop(now: number): boolean
}

/** Independent losses with probability `p` (which may vary with time). */
export class BernoulliLoss implements LossProcess {
  constructor(
    private readonly rng: Rng,
    private readonly p: (now: number) => number,
  ) {}

  drop(now: number): boolean {
    return this.rng.next() < this.p(now)
  }
}

/**
 * Gilbert's two-state channel: every packet in the Bad state is lost, none
 * in the Good state. With long-run loss p and mean burst length b (packets
 * lost in a row), P(Bad→Good) = 1/b and P(Good→Bad) = p / (b (1 − p)),
 * which needs b ≥ p / (1 − p).
 */
export class GilbertLoss implements LossProcess {
  private bad: boolean

  constructor(
    private readonly rng: Rng,
    private readonly p: (now: number) => number,
    private readonly burst: number,
  ) {
    this.bad = rng.next() < p(0)
  }

  static minBurst(p: number): number {
    return p >= 1 ? Number.POSITIVE_INFINITY : p / (1 - p)
  }

  drop(now: number): boolean {
    const p = this.p(now)
    const toGood = 1 / this.burst
    const toBad = p >= 1 ? 1 : Math.min(1, p / (this.burst * (1 - p)))
    this.bad = this.bad ? this.rng.next() >= toGood : this.rng.next() < toBad
    return this.bad
  }
}

/** When a link is up. Times are absolute virtual ms. */
export interface Schedule {
  isUp(t: number): boolean
  /** Milliseconds of up time within [a, b). */
  upTime(a: number, b: number): number
}

export const ALWAYS_UP: Schedule = {
  isUp: () => true,
  upTime: (a, b) => Math.max(0, b - a),
}

/** Up for `upMs`, then down for `downMs`, repeating, shifted by `phaseMs`. */
export class PeriodicSchedule implements Schedule {
  private readonly period: number

  constructor(
    private readonly upMs: number,
    private readonly downMs: number,
    private readonly originMs: number,
  ) {
    this.period = upMs + downMs
  }

  isUp(t: number): boolean {
    return mod(t - this.originMs, this.period) < this.upMs
  }

  upTime(a: number, b: number): number {
    if (b <= a) return 0
    const upTo = (t: number): number => {
      const x = t - this.originMs
      const k = Math.floor(x / this.period)
      return k * this.upMs + Math.min(mod(x, this.period), this.upMs)
    }
    return upTo(b) - upTo(a)
  }
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n
}

export interface PipeSpec {
  /** One-way propagation delay. */
  delayMs: number
  jitterMs: number
  bandwidthKbps: number
  /** Longest a packet may wait in the send queue before it is dropped (a router's buffer). */
  queueMs: number
  duplicate: number
  reorder: number
}

export interface PipeStats {
  /** Packets and bytes put on the wire (lost ones included; tail-dropped ones not). */
  packets: number
  bytes: number
  lost: number
  tailDropped: number
  downDropped: number
  delivered: number
  duplicated: number
}

/** One direction of a link. */
export class Pipe {
  private busyUntil = 0
  private lastArrival = 0
  readonly stats: PipeStats = { packets: 0, bytes: 0, lost: 0, tailDropped: 0, downDropped: 0, delivered: 0, duplicated: 0 }
  /** Called for every packet put on the wire (for per-field-link accounting). */
  onWire: ((bytes: number) => void) | undefined

  constructor(
    private readonly sched: Scheduler,
    private readonly rng: Rng,
    readonly spec: PipeSpec,
    readonly loss: LossProcess,
    readonly schedule: Schedule,
  ) {}

  /** Send a packet of `bytes`; `deliver` runs at the far end if it arrives (`quiet`: synchronously only, see Scheduler.at). */
  send(bytes: number, deliver: () => void, quiet = false): void {
    const now = this.sched.now
    const s = this.stats
    if (!this.schedule.isUp(now)) {
      s.downDropped++
      return
    }
    const start = Math.max(now, this.busyUntil)
    if (start - now > this.spec.queueMs) {
      s.tailDropped++
      return
    }
    const done = start + (bytes * 8) / this.spec.bandwidthKbps // kbit/s = bit/ms
    this.busyUntil = done
    s.packets++
    s.bytes += bytes
    this.onWire?.(bytes)
    const lost = this.loss.drop(now)
    let arrive = done + this.spec.delayMs + this.rng.next() * this.spec.jitterMs
    if (this.spec.reorder > 0 && this.rng.next() < this.spec.reorder) {
      arrive += this.rng.next() * (this.spec.delayMs + this.spec.jitterMs + 1) // overtaken by later packets
    } else {
      arrive = Math.max(arrive, this.lastArrival) // jitter alone keeps order, as on one path
      this.lastArrival = arrive
    }
    if (lost) {
      s.lost++
      return
    }
    const copies = this.spec.duplicate > 0 && this.rng.next() < this.spec.duplicate ? 2 : 1
    if (copies === 2) s.duplicated++
    for (let i = 0; i < copies; i++) {
      this.sched.at(
        arrive + i,
        () => {
          if (!this.schedule.isUp(this.sched.now)) {
            s.downDropped++
            return
          }
          s.delivered++
          deliver()
        },
        quiet,
      )
    }
  }
}

/** Both directions between a host and a relay: `up` carries host → relay. */
export interface Path {
  up: Pipe
  down: Pipe
  mtu: number
}
