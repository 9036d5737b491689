/**
 * Virtual time. The scheduler is the `Env` the real engines and the real
 * sync driver are handed in a simulation: a clock that moves only from
 * event to event, timers kept in a binary heap (ordered by time, then by
 * the order they were set, so ties are deterministic), and seeded random
 * bytes. After each event it lets the promise chains that event started run
 * to completion (memory-level and the engines settle through microtasks
 * only), so no wall-clock ordering ever leaks into a run.
 */
import type { Env, Timers } from '../protocol/env.js'
import { Rng } from './rng.js'

interface Event {
  at: number
  seq: number
  fn: () => void
  cancelled: boolean
  /** Starts no asynchronous work, so nothing needs settling after it. */
  quiet: boolean
}

/** Where virtual time starts: a fixed instant, so runs are identical. */
export const EPOCH_MS = Date.UTC(2026, 0, 1)

export class Scheduler implements Env {
  private heap: Event[] = []
  private seq = 0
  /** Events set and not yet run, by handle, so clearTimeout can find them. */
  private readonly live = new Map<number, Event>()
  private nowMs = EPOCH_MS
  /** Events run so far. */
  events = 0
  private woke = false
  readonly rng: Rng

  constructor(seed: number) {
    this.rng = new Rng(seed)
    const bytes = this.rng.fork('env.randomBytes')
    this.randomBytes = (n) => bytes.bytes(n)
  }

  /** Whole milliseconds, like Date.now(): the link model's event times are fractional, the protocol's clocks never are. */
  readonly clock = { now: (): number => Math.floor(this.nowMs) }
  readonly randomBytes: (n: number) => Uint8Array
  readonly timers: Timers = {
    setTimeout: (fn, ms) => this.at(this.nowMs + Math.max(0, ms), fn),
    clearTimeout: (h) => {
      const e = this.live.get(h as number)
      if (e) {
        e.cancelled = true
        this.live.delete(e.seq)
      }
    },
  }

  get now(): number {
    return this.nowMs
  }

  /** Milliseconds of virtual time since EPOCH_MS. */
  get elapsed(): number {
    return this.nowMs - EPOCH_MS
  }

  /**
   * Run `fn` at virtual time `t` (never in the past). Returns a handle for
   * clearTimeout. `quiet`: `fn` is synchronous through and through (a timer
   * of the link model, a packet that only moves TCP state), so the run loop
   * need not wait for promise chains after it.
   */
  at(t: number, fn: () => void, quiet = false): number {
    const e: Event = { at: Math.max(t, this.nowMs), seq: ++this.seq, fn, cancelled: false, quiet }
    this.live.set(e.seq, e)
    const h = this.heap
    h.push(e)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!before(e, h[p]!)) break
      h[i] = h[p]!
      i = p
    }
    h[i] = e
    return e.seq
  }

  private pop(): Event | undefined {
    const h = this.heap
    const top = h[0]
    const last = h.pop()
    if (h.length > 0 && last) {
      let i = 0
      for (;;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        let best = last
        if (l < h.length && before(h[l]!, best)) {
          m = l
          best = h[l]!
        }
        if (r < h.length && before(h[r]!, best)) m = r
        if (m === i) break
        h[i] = h[m]!
        i = m
      }
      h[i] = last
    }
    return top
  }

  /** A quiet event did hand work to promise-based code after all (a frame to an engine, a closed connection): settle after it. */
  wake(): void {
    this.woke = true
  }

  get pending(): number {
    return this.heap.length
  }

  /**
   * Run events until virtual time `until` (absolute) or `stop()` says so.
   * `onStep` is called every `stepEvery` events, e.g. for a progress line.
   */
  async run(until: number, opts: { stop?: () => boolean; onStep?: () => void; stepEvery?: number } = {}): Promise<void> {
    const stepEvery = opts.stepEvery ?? 10_000
    await settle()
    for (;;) {
      const e = this.heap[0]
      if (!e || e.at > until) break
      this.pop()
      if (e.cancelled) continue
      this.live.delete(e.seq)
      this.nowMs = e.at
      this.events++
      this.woke = false
      e.fn()
      if (!e.quiet || this.woke) await settle()
      if (opts.onStep && this.events % stepEvery === 0) opts.onStep()
      if (opts.stop?.()) return
    }
    if (this.nowMs < until && !opts.stop?.()) this.nowMs = until
  }
}

function before(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq)
}

/** Let every microtask chain started so far run out (one macrotask turn). */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}
