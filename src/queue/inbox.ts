/**
 * The client's inbox side: finished messages (genuine ones in the inbox,
 * failures in quarantine, receipts as markers), dedup by message id, and
 * the chunks of downloads in progress, persisted so a broken sync resumes.
 */
import { type BatchOp, type Db, jsonValue, pad, parseJson, scan, scanKeys, writeBatch } from './db.js'
import type { GroupCommit } from './group-commit.js'

export interface InboxItem {
  id: string
  from: string
  created_at: number
  received_at: number
  priority: number
  bytes: number
  text?: string
  /** Where the attachment was saved. */
  file?: string
  file_name?: string
  file_bytes?: number
  /** This is an attachment of report `ref` (sent as its own envelope, after the report's text). */
  ref?: string
}

export interface QuarantineItem {
  id: string
  code: string
  reason: string
  received_at: number
  bytes: number
}

const ITEM = 'i!'
const QUARANTINE = 'q!'
const RECEIPT = 'r!'
const PART_META = 'pm!'
const PART_CHUNK = 'pc!'

export class Inbox {
  constructor(
    readonly db: Db,
    private readonly commit: GroupCommit,
  ) {}

  /** Has this id been handled already (inbox, quarantine or receipt)? */
  async has(id: string): Promise<boolean> {
    const [a, b, c] = await this.db.getMany([ITEM + id, QUARANTINE + id, RECEIPT + id])
    return a !== undefined || b !== undefined || c !== undefined
  }

  async itemOps(item: InboxItem): Promise<BatchOp[]> {
    return [{ type: 'put', key: ITEM + item.id, value: jsonValue(item) }, ...(await this.clearPartOps(item.id))]
  }

  async quarantineOps(item: QuarantineItem): Promise<BatchOp[]> {
    return [{ type: 'put', key: QUARANTINE + item.id, value: jsonValue(item) }, ...(await this.clearPartOps(item.id))]
  }

  async receiptOps(id: string, from: string, receivedAt: number): Promise<BatchOp[]> {
    return [{ type: 'put', key: RECEIPT + id, value: jsonValue({ from, received_at: receivedAt }) }, ...(await this.clearPartOps(id))]
  }

  /** Deletes for a finished download's partial chunks (there are none for single-chunk messages). */
  private async clearPartOps(id: string): Promise<BatchOp[]> {
    const ops: BatchOp[] = []
    for await (const k of scanKeys(this.db, PART_CHUNK + id + '!')) ops.push({ type: 'del', key: k })
    if (ops.length > 0) ops.push({ type: 'del', key: PART_META + id })
    return ops
  }

  /** Persist one downloaded chunk (fsynced, group-committed). */
  async putChunk(id: string, size: number, chunks: number, index: number, data: Uint8Array): Promise<void> {
    await this.commit.write([
      { type: 'put', key: PART_META + id, value: jsonValue({ size, chunks }) },
      { type: 'put', key: PART_CHUNK + id + '!' + pad(index, 8), value: data },
    ])
  }

  /**
   * Indices of the chunks of `id` already on disk, for an envelope of
   * `size` bytes. Chunks kept for a different size (another relay's claim
   * about the same id) are dropped first.
   */
  async chunksHeld(id: string, size?: number): Promise<number[]> {
    const meta = size === undefined ? undefined : await this.db.get(PART_META + id)
    if (meta && parseJson<{ size: number }>(meta).size !== size) await this.dropPartial(id)
    const out: number[] = []
    const prefix = PART_CHUNK + id + '!'
    for await (const k of scanKeys(this.db, prefix)) out.push(Number(k.slice(prefix.length)))
    return out
  }

  /** Forget a download in progress (its bytes did not hash to its id). */
  async dropPartial(id: string): Promise<void> {
    await writeBatch(this.db, [...(await this.clearPartOps(id)), { type: 'del', key: PART_META + id }], true)
  }

  async assemble(id: string, size: number): Promise<Uint8Array> {
    const out = new Uint8Array(size)
    let o = 0
    for await (const [, v] of scan(this.db, PART_CHUNK + id + '!')) {
      out.set(v, o)
      o += v.length
    }
    if (o !== size) throw new Error(`assembled ${o} of ${size} bytes`)
    return out
  }

  async apply(ops: readonly BatchOp[]): Promise<void> {
    await writeBatch(this.db, ops, true)
  }

  async items(): Promise<InboxItem[]> {
    const out: InboxItem[] = []
    for await (const [, v] of scan(this.db, ITEM)) out.push(parseJson<InboxItem>(v))
    return out.sort((a, b) => a.received_at - b.received_at || a.created_at - b.created_at || (a.id < b.id ? -1 : 1))
  }

  async quarantined(): Promise<QuarantineItem[]> {
    const out: QuarantineItem[] = []
    for await (const [, v] of scan(this.db, QUARANTINE)) out.push(parseJson<QuarantineItem>(v))
    return out.sort((a, b) => a.received_at - b.received_at)
  }
}
