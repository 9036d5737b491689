/**
 * Token buckets for the relay's rate limits: one bucket per key (a sender,
 * a mailbox, a connection), refilled at `rate` units per second up to
 * `burst`. Buckets that are full again carry no state worth keeping, so the
 * map is pruned of them whenever it grows past `maxKeys`; a flood of fresh
 * keys therefore costs memory only while their buckets are actually drawn.
 */

export interface BucketSpec {
  /** Units (bytes or messages) per second. */
  rate: number
  /** Most units that can be spent at once after idling. */
  burst: number
}

interface Bucket {
  tokens: number
  at: number
}

/** Keys kept before full buckets are pruned. */
export const MAX_BUCKET_KEYS = 100_000

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>()

  constructor(
    readonly spec: BucketSpec,
    private readonly maxKeys = MAX_BUCKET_KEYS,
  ) {}

  /**
   * Take `n` units from `key`'s bucket at time `now` (ms). Returns 0 if they
   * were taken, else the ms until they would be there (nothing is taken).
   * A request larger than the burst is measured against a full bucket, so a
   * big envelope is slowed, never refused for ever.
   */
  take(key: string, n: number, now: number): number {
    const wait = this.wait(key, n, now)
    if (wait === 0) this.buckets.get(key)!.tokens -= Math.min(n, this.spec.burst)
    return wait
  }

  /** The ms until `n` units would be in `key`'s bucket (0: now); takes nothing. */
  wait(key: string, n: number, now: number): number {
    const { rate, burst } = this.spec
    let b = this.buckets.get(key)
    if (!b) {
      if (this.buckets.size >= this.maxKeys) this.prune(now)
      b = { tokens: burst, at: now }
      this.buckets.set(key, b)
    }
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate)
    b.at = now
    const need = Math.min(n, burst)
    return b.tokens >= need ? 0 : Math.ceil(((need - b.tokens) / rate) * 1000)
  }

  get size(): number {
    return this.buckets.size
  }

  /** Drop the buckets that have refilled by now; if none have, the oldest half. */
  private prune(now: number): void {
    const { rate, burst } = this.spec
    for (const [k, b] of this.buckets) if (b.tokens + ((now - b.at) / 1000) * rate >= burst) this.buckets.delete(k)
    if (this.buckets.size < this.maxKeys) return
    let n = Math.floor(this.buckets.size / 2)
    for (const k of this.buckets.keys()) {
      if (n-- <= 0) break
      this.buckets.delete(k)
    }
  }
}
