/**
 * Group commit: everything written while one fsynced batch is in flight
 * joins the next batch, so many writers share one fsync. There is no timer:
 * the batch window is exactly the duration of the previous fsync, which is
 * as short as it can be when idle and as wide as it needs to be under load.
 */
import { type BatchOp, type Db, writeBatch } from './db.js'

interface Pending {
  ops: BatchOp[]
  waiters: Array<{ resolve: () => void; reject: (err: unknown) => void }>
}

export class GroupCommit {
  private next: Pending | null = null
  private inFlight = false
  /** Batches and ops committed, for metrics and benchmarks. */
  batches = 0
  ops = 0
  /** Called after each batch is durable, with its op count and how long the write and fsync took (metrics). */
  onBatch: ((ops: number, ms: number) => void) | undefined

  /**
   * `durable`, if given, is awaited before each batch is written: the
   * simulator uses it to make an fsync take virtual time, and a crashed
   * relay's batches never complete (so its store keeps only what was
   * acked before the crash).
   */
  constructor(
    private readonly db: Db,
    private readonly sync = true,
    private readonly durable?: () => Promise<void>,
  ) {}

  /** Resolves once `ops` are durably on disk, as one atomic unit with whatever shares their batch. */
  write(ops: readonly BatchOp[]): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.next) this.next = { ops: [], waiters: [] }
      for (const op of ops) this.next.ops.push(op)
      this.next.waiters.push({ resolve, reject })
      if (!this.inFlight) void this.flush()
    })
  }

  /** Ops waiting for the next batch (metrics). */
  get queued(): number {
    return this.next?.ops.length ?? 0
  }

  /** Resolves once nothing is queued or being written (graceful shutdown). */
  async drain(): Promise<void> {
    while (this.inFlight || this.next) await this.write([]).catch(() => {})
  }

  private async flush(): Promise<void> {
    while (this.next) {
      const batch = this.next
      this.next = null
      this.inFlight = true
      try {
        if (this.durable && batch.ops.length > 0) await this.durable()
        const t0 = performance.now()
        await writeBatch(this.db, batch.ops, this.sync)
        if (batch.ops.length > 0) {
          this.batches++
          this.onBatch?.(batch.ops.length, performance.now() - t0)
        }
        this.ops += batch.ops.length
        for (const w of batch.waiters) w.resolve()
      } catch (err) {
        for (const w of batch.waiters) w.reject(err)
      } finally {
        this.inFlight = false
      }
    }
  }
}
