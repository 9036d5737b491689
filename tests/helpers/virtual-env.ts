/**
 * A virtual clock and timers for driving the engines without waiting: time
 * moves only when the test advances it, and real I/O (memory-level) is
 * allowed to settle between steps. A seeded PRNG makes every run the same.
 */
import type { Env } from '../../src/protocol/env.js'

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface Timer {
  at: number
  seq: number
  fn: () => void
}

export class VirtualEnv implements Env {
  now = 1_800_000_000_000
  private seq = 0
  private readonly pending = new Map<number, Timer>()
  readonly random: () => number

  constructor(seed: number) {
    this.random = mulberry32(seed)
  }

  clock = { now: () => this.now }
  readonly timers: Env['timers'] = {
      setTimeout: (fn, ms) => {
        const id = ++this.seq
        this.pending.set(id, { at: this.now + Math.max(0, ms), seq: id, fn })
        return id
      },
      clearTimeout: (h) => {
        this.pending.delete(h as number)
      },
  }

  randomBytes = (n: number): Uint8Array => {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.random() * 256)
    return out
  }

  /** Let pending promises and real I/O callbacks run. */
  async settle(): Promise<void> {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
  }

  /** Advance virtual time in steps, firing due timers in order and settling I/O after each. */
  async advance(ms: number, step = 50): Promise<void> {
    const end = this.now + ms
    while (this.now < end) {
      this.now = Math.min(end, this.now + step)
      for (;;) {
        const due = [...this.pending.values()].filter((t) => t.at <= this.now).sort((a, b) => a.at - b.at || a.seq - b.seq)
        if (due.length === 0) break
        for (const t of due) {
          this.pending.delete(t.seq)
          t.fn()
        }
        await this.settle()
      }
      await this.settle()
    }
  }
}
