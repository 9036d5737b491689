/**
 * Group read: every point read issued in the same turn of the event loop
 * becomes one `getMany`, so a burst of PUTs costs one trip to LevelDB's
 * thread pool instead of one each. The flush is a microtask, not a timer,
 * so the engines stay free of timers (DESIGN §2) and the simulator stays
 * deterministic.
 */
import type { Db } from './db.js'

type Value = Uint8Array | undefined

interface Waiter {
  at: number
  n: number
  resolve: (values: Value[]) => void
  reject: (err: unknown) => void
}

export class GroupRead {
  private keys: string[] = []
  private waiters: Waiter[] = []

  constructor(private readonly db: Db) {}

  getMany(keys: readonly string[]): Promise<Value[]> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ at: this.keys.length, n: keys.length, resolve, reject })
      for (const k of keys) this.keys.push(k)
      if (this.waiters.length === 1) queueMicrotask(() => this.flush())
    })
  }

  private flush(): void {
    const keys = this.keys
    const waiters = this.waiters
    this.keys = []
    this.waiters = []
    this.db.getMany(keys).then(
      (values) => {
        for (const w of waiters) w.resolve(values.slice(w.at, w.at + w.n))
      },
      (err: unknown) => {
        for (const w of waiters) w.reject(err)
      },
    )
  }
}
