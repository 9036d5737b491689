/**
 * The client's durable outbox. A message leaves it only as `delivered` (a
 * signed receipt from the recipient came back) or `expired` (its TTL ran
 * out): records are kept with their final state, only the envelope bytes
 * are dropped. Every write is an fsynced LevelDB batch, so a `kill -9` at
 * any moment leaves either the old or the new state, never a half.
 */
import { type BatchOp, type Db, jsonValue, parseJson, scan, writeBatch } from './db.js'

export const OutboxState = {
  queued: 'queued',
  accepted: 'accepted',
  delivered: 'delivered',
  expired: 'expired',
} as const
export type OutboxState = (typeof OutboxState)[keyof typeof OutboxState]

export interface OutboxRecord {
  id: string
  /** Recipient address. */
  to: string
  /** `report`: tracked to delivery; `receipt`: our receipt for someone else's report. */
  kind: 'report' | 'receipt'
  state: OutboxState
  /** Relays that acked the envelope as fsynced. */
  relays: string[]
  /**
   * Relays that have been sent chunks of it. A multi-chunk envelope goes to
   * a relay not listed here at once, without first asking (QUERY) which
   * chunks it holds: one round trip less on a fresh upload. Records written
   * before this field existed lack it and always ask.
   */
  started?: string[]
  bytes: number
  priority: number
  created_at: number
  expires_at: number
  mailbox: string
  accepted_at?: number
  delivered_at?: number
  expired_at?: number
  /** What the user sent, for `chapar status`: text preview or file name. */
  summary?: string
}

const REC = 'o!'
const ENV = 'b!'

export function isFinal(r: OutboxRecord): boolean {
  return r.state === OutboxState.delivered || r.state === OutboxState.expired
}

export class Outbox {
  private tail: Promise<unknown> = Promise.resolve()
  private added = 0

  constructor(readonly db: Db) {}

  /**
   * Run `fn` with no other record update of this outbox interleaved. Record
   * updates are read-modify-write; sessions with several relays run them
   * concurrently, and without this a relay's ack can overwrite a delivery.
   * Callers applying `deliveredOps` must wrap the read and the write in it.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn)
    this.tail = run.catch(() => undefined)
    return run
  }

  /**
   * Counts envelopes queued through this Outbox once they are on disk (one
   * process holds a home's database, so that is every one): a session
   * polling for new work scans the store only when it changed, not every
   * few seconds.
   */
  get generation(): number {
    return this.added
  }

  /** Whoever commits `addOps` themselves calls this once the batch is durable. */
  noteQueued(): void {
    this.added++
    for (const fn of [...this.watchers]) fn()
  }

  private readonly watchers = new Set<() => void>()

  /** Call `fn` whenever an envelope is queued (a busy upload session looks sooner); returns the unsubscribe. */
  watch(fn: () => void): () => void {
    this.watchers.add(fn)
    return () => this.watchers.delete(fn)
  }

  /** Ops that enqueue an envelope; returned so callers can commit them with other writes atomically (then call noteQueued). */
  addOps(record: OutboxRecord, envelope: Uint8Array): BatchOp[] {
    return [
      { type: 'put', key: ENV + record.id, value: envelope },
      { type: 'put', key: REC + record.id, value: jsonValue(record) },
    ]
  }

  async add(record: OutboxRecord, envelope: Uint8Array): Promise<void> {
    await writeBatch(this.db, this.addOps(record, envelope), true)
    this.noteQueued()
  }

  async get(id: string): Promise<OutboxRecord | undefined> {
    const v = await this.db.get(REC + id)
    return v ? parseJson<OutboxRecord>(v) : undefined
  }

  async envelope(id: string): Promise<Uint8Array | undefined> {
    return (await this.db.get(ENV + id)) ?? undefined
  }

  async list(): Promise<OutboxRecord[]> {
    const out: OutboxRecord[] = []
    for await (const [, v] of scan(this.db, REC)) out.push(parseJson<OutboxRecord>(v))
    return out.sort((a, b) => a.created_at - b.created_at || (a.id < b.id ? -1 : 1))
  }

  /** What still has to reach `relay`, most urgent first, then oldest first. */
  async pendingFor(relay: string, now: number): Promise<OutboxRecord[]> {
    const all = await this.list()
    return all
      .filter((r) => !isFinal(r) && r.expires_at > now && !r.relays.includes(relay))
      .sort((a, b) => b.priority - a.priority || a.created_at - b.created_at || (a.id < b.id ? -1 : 1))
  }

  /**
   * Record that chunks of `id` are about to go to `relay`, so a later
   * session asks first. Not fsynced: if a crash loses it, the next session
   * sends every chunk again, which costs bytes, never correctness.
   */
  markStarted(id: string, relay: string): Promise<void> {
    return this.exclusive(async () => {
      const r = await this.get(id)
      if (!r || r.started === undefined || r.started.includes(relay)) return
      r.started.push(relay)
      await writeBatch(this.db, [{ type: 'put', key: REC + id, value: jsonValue(r) }], false)
    })
  }

  /** Record that `relay` holds these envelopes durably. Idempotent. */
  markAccepted(ids: readonly string[], relay: string, now: number): Promise<OutboxRecord[]> {
    return this.exclusive(() => this.markAcceptedNow(ids, relay, now))
  }

  private async markAcceptedNow(ids: readonly string[], relay: string, now: number): Promise<OutboxRecord[]> {
    const ops: BatchOp[] = []
    const changed: OutboxRecord[] = []
    for (const id of new Set(ids)) {
      const r = await this.get(id)
      if (!r || r.relays.includes(relay)) continue
      r.relays.push(relay)
      if (r.state === OutboxState.queued) {
        r.state = OutboxState.accepted
        r.accepted_at = now
      }
      ops.push({ type: 'put', key: REC + id, value: jsonValue(r) })
      changed.push(r)
    }
    await writeBatch(this.db, ops, true)
    return changed
  }

  /**
   * Ops marking reports delivered on a receipt signed by `signer` (their
   * address must equal the report's `to`, else the receipt is ignored).
   */
  async deliveredOps(ids: readonly string[], signer: string, now: number): Promise<{ ops: BatchOp[]; delivered: string[] }> {
    const ops: BatchOp[] = []
    const delivered: string[] = []
    for (const id of new Set(ids)) {
      const r = await this.get(id)
      if (!r || r.kind !== 'report' || r.to !== signer || r.state === OutboxState.delivered) continue
      r.state = OutboxState.delivered
      r.delivered_at = now
      ops.push({ type: 'put', key: REC + id, value: jsonValue(r) }, { type: 'del', key: ENV + id })
      delivered.push(id)
    }
    return { ops, delivered }
  }

  /** Expire everything past its TTL that was not delivered; reported, never silent. */
  expire(now: number): Promise<OutboxRecord[]> {
    return this.exclusive(() => this.expireNow(now))
  }

  private async expireNow(now: number): Promise<OutboxRecord[]> {
    const ops: BatchOp[] = []
    const expired: OutboxRecord[] = []
    for (const r of await this.list()) {
      if (isFinal(r) || r.expires_at > now) continue
      r.state = OutboxState.expired
      r.expired_at = now
      ops.push({ type: 'put', key: REC + r.id, value: jsonValue(r) }, { type: 'del', key: ENV + r.id })
      expired.push(r)
    }
    await writeBatch(this.db, ops, true)
    return expired
  }
}
