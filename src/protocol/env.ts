/**
 * What the protocol engines are handed instead of touching the world
 * (DESIGN §2): a clock, timers and randomness. The real drivers pass
 * `systemEnv`; the simulator passes a virtual clock and a seeded PRNG.
 */
import { randomBytes as cryptoRandomBytes } from 'node:crypto'

export interface Clock {
  now(): number
}

export type TimerHandle = unknown

export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerHandle
  clearTimeout(handle: TimerHandle): void
}

export interface Env {
  clock: Clock
  timers: Timers
  randomBytes(n: number): Uint8Array
}

/** A bidirectional frame pipe handed to an engine; the driver owns the socket. */
export interface Link {
  /** `priority` (Priority in envelope.ts): a transport may let higher ones overtake queued lower ones. */
  send(frame: Uint8Array, priority?: number): void
  close(reason?: string): void
}

export const systemEnv: Env = {
  clock: { now: () => Date.now() },
  timers: {
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  },
  randomBytes: (n) => new Uint8Array(cryptoRandomBytes(n)),
}
