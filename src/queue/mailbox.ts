/**
 * The relay's store: per-recipient mailboxes of envelopes kept as chunks.
 *
 * Theory of operation. A chunk is acked only after the group-committed,
 * fsynced batch holding it resolves. An envelope becomes visible in its
 * mailbox in the same batch as its last chunk, and only if the SHA-256 of
 * all its chunks equals the id it was offered under and its cleartext
 * header names the same mailbox and expiry: the relay never stores an
 * envelope under an id it did not compute. Chunks of one envelope may
 * arrive concurrently over several connections: the in-memory `partials`
 * map says which indices are taken, and completion waits for every earlier
 * chunk's commit before reading them back. After the recipient acks
 * (DONE), the envelope is deleted and a tombstone remembers its id until
 * it would have expired, so a late re-send is answered "stored" instead of
 * being delivered twice.
 *
 * Key layout (format 2). What a recipient's fetch reads is keyed by mailbox
 * first, so that LIST, GET and DONE read a few neighbouring blocks of the
 * LevelDB tables whatever the size of the store; what only knows an id
 * (a sender's PUT or QUERY, the expiry sweep) reads the id's record:
 *
 *   m!<id>                           the id's record (StoredMeta): every envelope, whole or arriving
 *   c!<mailbox>!<id>!<index>         chunk bytes
 *   d!<mailbox>!<id>                 a whole envelope's Delivery (size, expiry, listing time)
 *   x!<mailbox>!<received>!<id>      the mailbox's listing, oldest first; value: Listed
 *   e!<expires>!<id>                 expiry index (whole and arriving), for the sweep
 *   t!<id>, te!<until>!<id>          tombstone of a delivered id, and its expiry index
 *   v!mailbox-format                 2; absent on a store written before it (see migrate())
 *   v!usage-snapshot, s!<mailbox>    usage counts saved at a clean close, read and deleted at the next open
 *
 * Format 1 (before 2026-12) kept chunks under c!<id>!<index> and served a
 * fetch from the id's record: each GET was two reads at random places in
 * the store, and at a million messages a fetch took 2.5× as long.
 */
import { createHash } from 'node:crypto'
import { equal, toHex } from '../protocol/bytes.js'
import { decodeHeader, HEADER_BYTES, MIN_ENVELOPE_BYTES } from '../protocol/envelope.js'
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { chunkCount, type IndexEntry } from '../protocol/frames.js'
import { type Ranges, rangesFromIndices } from '../protocol/ranges.js'
import { fromHex } from '../protocol/bytes.js'
import { type BatchOp, type Db, jsonValue, pad, parseJson, scan, scanKeys } from './db.js'
import type { GroupCommit } from './group-commit.js'
import { GroupRead } from './group-read.js'

/** How long after its expiry a delivered id is still remembered (clock skew margin). */
export const TOMBSTONE_GRACE_MS = 24 * 3600_000

export interface StoredMeta {
  mailbox: string
  size: number
  expires_at: number
  received_at: number
  complete: boolean
}

export interface ChunkPut {
  id: Uint8Array
  mailbox: Uint8Array
  expiresAt: number
  size: number
  index: number
  data: Uint8Array
}

/** What a mailbox (or the whole store) holds. */
export interface Usage {
  /** Whole envelopes. */
  messages: number
  /** Envelopes admitted and still arriving (chunks missing, or being verified and committed). */
  arriving: number
  /** Bytes of both. */
  bytes: number
}

/**
 * Called before the first chunk of an envelope the store does not hold yet
 * is written, with what its mailbox and the store would hold after it:
 * throwing (a QUOTA refusal, say) refuses the envelope before anything is
 * stored. Later chunks of an envelope already admitted are not asked again.
 */
export type Admit = (mailbox: string, size: number, mailboxUsage: Usage, total: Usage) => void

/** `fresh`: this put completed the envelope (false: it was already stored or delivered). */
export type PutResult = { kind: 'stored'; fresh: boolean } | { kind: 'partial'; have: Ranges }

export type Holding = { kind: 'stored' } | { kind: 'partial'; size: number; have: Ranges } | { kind: 'none' }

/** d!<mailbox>!<id>: what serving and deleting a whole envelope needs, next to its chunks. */
interface Delivery {
  size: number
  expires_at: number
  received_at: number
}

/** x!<mailbox>!<received>!<id>: what LIST answers, without reading anything else. */
interface Listed {
  size: number
  expires_at: number
}

/** What check() finds: the store read whole, for tests and the kill test. */
export interface StoreCheck {
  keys: number
  /** Key counts by prefix ("m!", "c!", …). */
  prefixes: Record<string, number>
  /** Ids stored whole: record, every chunk, delivery, listing and expiry entries all present. */
  whole: Set<string>
  /** Ids still arriving (chunks missing). */
  arriving: Set<string>
  /** Ids delivered (tombstoned). */
  delivered: Set<string>
  /** Keys that belong to no consistent envelope, and envelopes missing a key. */
  problems: string[]
}

interface Partial {
  size: number
  mailbox: string
  expiresAt: number
  /** Indices taken: committed or being committed. */
  have: Set<number>
  /** Indices whose commit has resolved: the only ones ever reported to a sender. */
  durable: Set<number>
  commits: Map<number, Promise<void>>
}

const META = 'm!'
const CHUNK = 'c!'
const DELIVERY = 'd!'
const MBOX = 'x!'
const EXPIRY = 'e!'
const TOMB = 't!'
const TOMB_EXPIRY = 'te!'
const FORMAT_KEY = 'v!mailbox-format'
/** Present (with the count of s! entries) only between a clean close and the next open. */
const SNAPSHOT_KEY = 'v!usage-snapshot'
/** s!<mailbox> → [messages, arriving, bytes]: the usage counts written at a clean close. */
const SNAPSHOT = 's!'
export const MAILBOX_FORMAT = 2
/** Envelopes, and bytes of them, moved per batch at most when migrating from format 1. */
const MIGRATE_BATCH = 256
const MIGRATE_BATCH_BYTES = 16 * 1024 * 1024

const chunkKey = (mailbox: string, id: string, index: number): string => CHUNK + mailbox + '!' + id + '!' + pad(index, 8)
const deliveryKey = (mailbox: string, id: string): string => DELIVERY + mailbox + '!' + id
const listKey = (mailbox: string, receivedAt: number, id: string): string => MBOX + mailbox + '!' + pad(receivedAt) + '!' + id
const expiryKey = (expiresAt: number, id: string): string => EXPIRY + pad(expiresAt) + '!' + id

/** A JSON value, or undefined if the bytes are not JSON (a damaged key is judged by the caller). */
function parseJsonOr(b: Uint8Array): unknown {
  try {
    return parseJson<unknown>(b)
  } catch {
    return undefined
  }
}

export class MailboxStore {
  private readonly partials = new Map<string, Partial>()
  private readonly loading = new Map<string, Promise<Partial | undefined>>()
  /** The dedup lookups of concurrent PUTs share one LevelDB read. */
  private readonly reads: GroupRead
  /** Single-chunk envelopes being verified and committed, so a concurrent duplicate waits instead of listing it twice. */
  private readonly singles = new Map<string, Promise<PutResult>>()
  /** Per mailbox, and in all: kept in memory from `loadUsage()` on, for quotas and metrics. */
  private readonly usage = new Map<string, Usage>()
  readonly total: Usage = { messages: 0, arriving: 0, bytes: 0 }
  /**
   * Ids being deleted (DONE or expiry), until their batch commits: a
   * concurrent DONE or sweep of the same id waits for it instead of deleting
   * (and uncounting) it a second time.
   */
  private readonly deleting = new Map<string, Promise<void>>()
  /** The last PUT of each id in progress: the next one waits for it (see put). */
  private readonly perId = new Map<string, Promise<void>>()
  /** put, done and sweep calls in progress: the usage counts are saved only when none is. */
  private busy = 0
  /** Set by saveUsage: nothing may change the store after its counts were saved. */
  private closed = false

  constructor(
    readonly db: Db,
    private readonly commit: GroupCommit,
  ) {
    this.reads = new GroupRead(db)
  }

  private async meta(id: string): Promise<StoredMeta | undefined> {
    const v = await this.db.get(META + id)
    return v ? parseJson<StoredMeta>(v) : undefined
  }

  /** What the relay holds of `id`: whole (or already delivered), some chunks, or nothing. */
  async holding(idBytes: Uint8Array): Promise<Holding> {
    const id = toHex(idBytes)
    const [m, t] = await this.reads.getMany([META + id, TOMB + id])
    if (t) return { kind: 'stored' }
    if (!m) return { kind: 'none' }
    const meta = parseJson<StoredMeta>(m)
    if (meta.complete) return { kind: 'stored' }
    const p = await this.partial(id, meta)
    return { kind: 'partial', size: meta.size, have: rangesFromIndices(p?.durable ?? []) }
  }

  private async partial(id: string, meta: StoredMeta | undefined): Promise<Partial | undefined> {
    const cached = this.partials.get(id)
    if (cached) return cached
    if (!meta) return undefined
    let pending = this.loading.get(id)
    if (!pending) {
      pending = (async () => {
        const have = new Set<number>()
        const prefix = CHUNK + meta.mailbox + '!' + id + '!'
        for await (const k of scanKeys(this.db, prefix)) have.add(Number(k.slice(prefix.length)))
        const p: Partial = { size: meta.size, mailbox: meta.mailbox, expiresAt: meta.expires_at, have, durable: new Set(have), commits: new Map() }
        if (!this.partials.has(id)) this.partials.set(id, p)
        return this.partials.get(id)
      })()
      this.loading.set(id, pending)
      const forget = (): void => void this.loading.delete(id)
      pending.then(forget, forget) // (not .finally: its rejection would go unhandled and kill the relay)
    }
    return pending
  }

  /** What `mailbox` (hex) holds now. */
  mailboxUsage(mailbox: string): Usage {
    return this.usage.get(mailbox) ?? { messages: 0, arriving: 0, bytes: 0 }
  }

  /** Mailboxes holding anything. */
  get mailboxCount(): number {
    return this.usage.size
  }

  /** Every mailbox's usage, largest first (ids and counts only, for operators). */
  mailboxes(): Array<{ mailbox: string } & Usage> {
    return [...this.usage].map(([mailbox, u]) => ({ mailbox, ...u })).sort((a, b) => b.bytes - a.bytes || (a.mailbox < b.mailbox ? -1 : 1))
  }

  private account(mailbox: string, messages: number, arriving: number, bytes: number): void {
    const u = this.usage.get(mailbox) ?? { messages: 0, arriving: 0, bytes: 0 }
    u.messages += messages
    u.arriving += arriving
    u.bytes += bytes
    this.total.messages += messages
    this.total.arriving += arriving
    this.total.bytes += bytes
    if (u.messages <= 0 && u.arriving <= 0 && u.bytes <= 0) this.usage.delete(mailbox)
    else this.usage.set(mailbox, u)
  }

  /**
   * Store one chunk; resolves only once it (and, on completion, the whole
   * envelope) is fsynced. PUTs of one id run one after another: each reads
   * what the store holds of the id and then writes its record, and two
   * interleaved (a forged chunk claiming another size beside an honest
   * one-chunk envelope, say) could leave an acked envelope's record
   * overwritten by a partial one (found by tests/relay/fuzz.test.ts).
   * Different ids still share every group commit.
   */
  put(c: ChunkPut, now: number, admit?: Admit): Promise<PutResult> {
    const id = toHex(c.id)
    this.busy++
    const run = (this.perId.get(id) ?? Promise.resolve()).then(() => this.putNow(c, now, admit))
    const idle = (): void => void this.busy--
    run.then(idle, idle)
    const tail = run.then(
      () => {},
      () => {},
    )
    this.perId.set(id, tail)
    void tail.then(() => {
      if (this.perId.get(id) === tail) this.perId.delete(id)
    })
    return run
  }

  private async putNow(c: ChunkPut, now: number, admit?: Admit): Promise<PutResult> {
    this.assertOpen()
    if (c.expiresAt <= now) throw new ChaparError(ErrorCode.EXPIRED, 'envelope has expired')
    const id = toHex(c.id)
    const mailbox = toHex(c.mailbox)
    const [m, t] = await this.reads.getMany([META + id, TOMB + id])
    if (t) return { kind: 'stored', fresh: false }
    const meta = m ? parseJson<StoredMeta>(m) : undefined
    if (meta?.complete) return { kind: 'stored', fresh: false }
    if (meta && (meta.size !== c.size || meta.mailbox !== mailbox || meta.expires_at !== c.expiresAt)) {
      throw new ChaparError(ErrorCode.BAD_FRAME, 'chunk disagrees with earlier chunks of the same id')
    }
    const total = chunkCount(c.size)
    if (total === 1) return this.putSingle(id, c, now, admit)

    let p = await this.partial(id, meta)
    if (!p) {
      p = this.partials.get(id)
      if (!p) {
        admit?.(mailbox, c.size, this.mailboxUsage(mailbox), this.total)
        p = { size: c.size, mailbox, expiresAt: c.expiresAt, have: new Set(), durable: new Set(), commits: new Map() }
        this.partials.set(id, p)
        this.account(mailbox, 0, 1, c.size)
      }
    }
    if (p.size !== c.size || p.mailbox !== mailbox || p.expiresAt !== c.expiresAt) {
      throw new ChaparError(ErrorCode.BAD_FRAME, 'chunk disagrees with earlier chunks of the same id')
    }
    if (p.have.has(c.index)) {
      // Answer only once the first copy is durable (or share its failure).
      await p.commits.get(c.index)
      return this.partials.has(id) ? { kind: 'partial', have: rangesFromIndices(p.durable) } : { kind: 'stored', fresh: false }
    }
    p.have.add(c.index)
    if (p.have.size < total) {
      const metaValue: StoredMeta = { mailbox, size: c.size, expires_at: c.expiresAt, received_at: now, complete: false }
      const write = this.commit.write([
        { type: 'put', key: META + id, value: jsonValue(metaValue) },
        { type: 'put', key: expiryKey(c.expiresAt, id), value: new Uint8Array(0) },
        { type: 'put', key: chunkKey(mailbox, id, c.index), value: c.data.slice() },
      ])
      p.commits.set(c.index, write)
      try {
        await write
      } catch (err) {
        p.have.delete(c.index)
        p.commits.delete(c.index)
        if (p.have.size === 0 && this.partials.get(id) === p) {
          // Nothing of it is on disk or on its way there: forget it, and uncount it.
          this.partials.delete(id)
          this.account(mailbox, 0, -1, -c.size)
        }
        throw err
      }
      p.durable.add(c.index)
      return { kind: 'partial', have: rangesFromIndices(p.durable) }
    }
    // The last missing chunk: wait for every earlier chunk's commit, then verify the whole.
    // Register the completion before waiting, so a duplicate of this chunk waits for it too.
    const earlier = [...p.commits.values()]
    let settle!: { resolve: () => void; reject: (err: unknown) => void }
    const finished = new Promise<void>((resolve, reject) => (settle = { resolve, reject }))
    finished.catch(() => {}) // duplicates may await it; nobody has to (an unhandled rejection kills the relay)
    p.commits.set(c.index, finished)
    try {
      await Promise.all(earlier)
      const result = await this.complete(id, c, now, new Map([[c.index, c.data]]))
      settle.resolve()
      return result
    } catch (err) {
      settle.reject(err)
      p.have.delete(c.index)
      p.commits.delete(c.index)
      throw err
    }
  }

  /** A one-chunk envelope: concurrent copies of it share one verification and one listing. */
  private async putSingle(id: string, c: ChunkPut, now: number, admit?: Admit): Promise<PutResult> {
    for (let pending = this.singles.get(id); pending; pending = this.singles.get(id)) {
      try {
        await pending
        return { kind: 'stored', fresh: false }
      } catch {
        // That copy was bad (or its write failed): judge ours on its own bytes.
      }
    }
    const mailbox = toHex(c.mailbox)
    admit?.(mailbox, c.size, this.mailboxUsage(mailbox), this.total)
    // Counted from now, so concurrent puts see it against their quotas.
    this.account(mailbox, 0, 1, c.size)
    const mine = this.complete(id, c, now, new Map([[0, c.data]]))
    this.singles.set(id, mine)
    try {
      return await mine
    } catch (err) {
      this.account(mailbox, 0, -1, -c.size)
      throw err
    } finally {
      if (this.singles.get(id) === mine) this.singles.delete(id)
    }
  }

  private async complete(id: string, c: ChunkPut, now: number, fresh: Map<number, Uint8Array>): Promise<PutResult> {
    const total = chunkCount(c.size)
    const hash = createHash('sha256').update('chapar/v1/id\0')
    const mailbox = toHex(c.mailbox)
    let first: Uint8Array | undefined
    let length = 0
    for (let i = 0; i < total; i++) {
      const data = fresh.get(i) ?? (await this.db.get(chunkKey(mailbox, id, i)))
      if (!data) throw new ChaparError(ErrorCode.INTERNAL, `chunk ${i} of ${id} missing at completion`)
      if (i === 0) first = data.subarray(0, HEADER_BYTES)
      hash.update(data)
      length += data.length
    }
    let problem: string | undefined
    if (length !== c.size) problem = `assembled ${length} bytes, expected ${c.size}`
    else if (c.size < MIN_ENVELOPE_BYTES) problem = `envelope of ${c.size} bytes is too short`
    else if (!equal(new Uint8Array(hash.digest()), c.id)) problem = 'envelope does not hash to its id'
    else {
      try {
        const h = decodeHeader(first!)
        if (!equal(h.mailbox, c.mailbox) || h.expiresAt !== c.expiresAt) problem = 'envelope header disagrees with the offer'
      } catch (err) {
        problem = (err as Error).message
      }
    }
    if (problem) {
      await this.discard(id, mailbox, c.size, c.expiresAt)
      throw new ChaparError(ErrorCode.BAD_ENVELOPE, problem)
    }
    const metaValue: StoredMeta = { mailbox, size: c.size, expires_at: c.expiresAt, received_at: now, complete: true }
    const delivery: Delivery = { size: c.size, expires_at: c.expiresAt, received_at: now }
    const listed: Listed = { size: c.size, expires_at: c.expiresAt }
    const ops: BatchOp[] = [
      { type: 'put', key: META + id, value: jsonValue(metaValue) },
      { type: 'put', key: deliveryKey(mailbox, id), value: jsonValue(delivery) },
      { type: 'put', key: listKey(mailbox, now, id), value: jsonValue(listed) },
      { type: 'put', key: expiryKey(c.expiresAt, id), value: new Uint8Array(0) },
    ]
    for (const [i, data] of fresh) ops.push({ type: 'put', key: chunkKey(mailbox, id, i), value: data.slice() })
    await this.commit.write(ops)
    // Its bytes were counted when it was admitted (its first chunk).
    this.partials.delete(id)
    this.account(mailbox, 1, -1, 0)
    return { kind: 'stored', fresh: true }
  }

  private async discard(id: string, mailbox: string, size: number, expiresAt: number): Promise<void> {
    const p = this.partials.get(id)
    this.partials.delete(id)
    const ops: BatchOp[] = [
      { type: 'del', key: META + id },
      { type: 'del', key: expiryKey(expiresAt, id) },
    ]
    for (let i = 0; i < chunkCount(size); i++) ops.push({ type: 'del', key: chunkKey(mailbox, id, i) })
    await this.commit.write(ops)
    if (p) this.account(p.mailbox, 0, -1, -p.size)
  }

  /** Complete envelopes waiting in `mailbox`, oldest first. */
  async list(mailboxBytes: Uint8Array, max: number, now: number): Promise<{ entries: IndexEntry[]; more: boolean }> {
    const mailbox = toHex(mailboxBytes)
    const entries: IndexEntry[] = []
    let seen = 0
    let more = false
    for await (const [k, v] of scan(this.db, MBOX + mailbox + '!', max + 1)) {
      if (++seen > max) {
        more = true
        break
      }
      const m = parseJson<Listed>(v)
      if (m.expires_at <= now) continue
      entries.push({ id: fromHex(k.slice(k.lastIndexOf('!') + 1)), size: m.size, expiresAt: m.expires_at })
    }
    return { entries, more }
  }

  /** One chunk of a complete envelope in `mailbox` (the caller's authenticated mailbox). */
  async chunk(idBytes: Uint8Array, mailboxBytes: Uint8Array, index: number): Promise<{ size: number; data: Uint8Array } | undefined> {
    const id = toHex(idBytes)
    const mailbox = toHex(mailboxBytes)
    const [d, data] = await this.db.getMany([deliveryKey(mailbox, id), chunkKey(mailbox, id, index)])
    if (!d || !data) return undefined
    const { size } = parseJson<Delivery>(d)
    return index < chunkCount(size) ? { size, data } : undefined
  }

  /** The recipient holds these: delete them and remember their ids. Idempotent; other mailboxes' ids are ignored. */
  async done(mailboxBytes: Uint8Array, ids: readonly Uint8Array[], now: number): Promise<number> {
    this.busy++
    try {
      return await this.doneNow(mailboxBytes, ids, now)
    } finally {
      this.busy--
    }
  }

  private async doneNow(mailboxBytes: Uint8Array, ids: readonly Uint8Array[], now: number): Promise<number> {
    this.assertOpen()
    const mailbox = toHex(mailboxBytes)
    // Claim the ids first (synchronously), so a concurrent DONE or sweep of
    // the same id waits for this one rather than deleting it twice.
    const others: Promise<void>[] = []
    const claimed: string[] = []
    let release!: () => void
    const settled = new Promise<void>((resolve) => (release = resolve))
    for (const idBytes of ids) {
      const id = toHex(idBytes)
      const pending = this.deleting.get(id)
      if (pending) others.push(pending)
      else if (!claimed.includes(id)) {
        claimed.push(id)
        this.deleting.set(id, settled)
      }
    }
    try {
      const ops: BatchOp[] = []
      let n = 0
      let bytes = 0
      const deliveries = await this.db.getMany(claimed.map((id) => deliveryKey(mailbox, id)))
      for (const [i, id] of claimed.entries()) {
        const d = deliveries[i]
        if (!d) continue // not whole, or not in this mailbox
        const meta: StoredMeta = { mailbox, complete: true, ...parseJson<Delivery>(d) }
        ops.push(...this.deleteOps(id, meta))
        const until = Math.max(meta.expires_at, now) + TOMBSTONE_GRACE_MS
        ops.push({ type: 'put', key: TOMB + id, value: jsonValue({ until }) })
        ops.push({ type: 'put', key: TOMB_EXPIRY + pad(until) + '!' + id, value: new Uint8Array(0) })
        n++
        bytes += meta.size
      }
      await this.commit.write(ops)
      if (n > 0) this.account(mailbox, -n, 0, -bytes)
      await Promise.allSettled(others)
      return n
    } finally {
      for (const id of claimed) this.deleting.delete(id)
      release()
    }
  }

  /** Every key of an envelope, whole or arriving (deleting a key never written is harmless). */
  private deleteOps(id: string, meta: StoredMeta): BatchOp[] {
    const ops: BatchOp[] = [
      { type: 'del', key: META + id },
      { type: 'del', key: expiryKey(meta.expires_at, id) },
    ]
    if (meta.complete) ops.push({ type: 'del', key: deliveryKey(meta.mailbox, id) }, { type: 'del', key: listKey(meta.mailbox, meta.received_at, id) })
    for (let i = 0; i < chunkCount(meta.size); i++) ops.push({ type: 'del', key: chunkKey(meta.mailbox, id, i) })
    return ops
  }

  /** Delete expired envelopes (whole or partial) and tombstones past their time. */
  async sweep(now: number): Promise<{ expired: number; tombstones: number }> {
    this.busy++
    try {
      return await this.sweepNow(now)
    } finally {
      this.busy--
    }
  }

  private async sweepNow(now: number): Promise<{ expired: number; tombstones: number }> {
    this.assertOpen()
    const ops: BatchOp[] = []
    const freed: Array<{ id: string; meta: StoredMeta }> = []
    const claimed: string[] = []
    let release!: () => void
    const sweeping = new Promise<void>((resolve) => (release = resolve))
    let expired = 0
    let tombstones = 0
    try {
      for await (const k of scanKeys(this.db, EXPIRY)) {
        const [, at, id] = k.split('!')
        if (Number(at) > now) break
        if (this.deleting.has(id!)) continue // a DONE is deleting it right now
        this.deleting.set(id!, sweeping)
        claimed.push(id!)
        const meta = await this.meta(id!)
        if (meta) {
          ops.push(...this.deleteOps(id!, meta))
          freed.push({ id: id!, meta })
        } else ops.push({ type: 'del', key: k })
        this.partials.delete(id!)
        expired++
      }
      for await (const k of scanKeys(this.db, TOMB_EXPIRY)) {
        const [, at, id] = k.split('!')
        if (Number(at) > now) break
        ops.push({ type: 'del', key: k }, { type: 'del', key: TOMB + id })
        tombstones++
      }
      await this.commit.write(ops)
      for (const m of freed) this.account(m.meta.mailbox, m.meta.complete ? -1 : 0, m.meta.complete ? 0 : -1, -m.meta.size)
    } finally {
      for (const id of claimed) this.deleting.delete(id)
      release()
    }
    return { expired, tombstones }
  }

  /**
   * Make the store ready to serve, before the relay listens: bring a store
   * an older Chapar wrote up to this format (migrate), then count what every
   * mailbox holds (loadUsage). `onProgress` hears of a migration's progress.
   */
  async open(onProgress?: (moved: number) => void): Promise<{ migrated: number; usage: 'snapshot' | 'scan' }> {
    const migrated = await this.migrate(onProgress)
    const usage = (await this.loadSnapshot()) ? 'snapshot' : 'scan'
    if (usage === 'scan') await this.loadUsage()
    return { migrated, usage }
  }

  /**
   * Before closing the database: save the usage counts, so that the next
   * open reads them instead of scanning every record. Only when no put,
   * done or sweep is in progress (the counts then say exactly what is on
   * disk); returns whether it saved them. Nothing may be written to the
   * store after this. A relay that dies instead (SIGKILL, a crash) leaves no
   * snapshot, and the next open scans.
   */
  async saveUsage(): Promise<boolean> {
    if (this.busy > 0 || this.partials.size > this.durablePartials()) return false
    const ops: BatchOp[] = [{ type: 'put', key: SNAPSHOT_KEY, value: jsonValue(this.usage.size) }]
    for (const [mailbox, u] of this.usage) ops.push({ type: 'put', key: SNAPSHOT + mailbox, value: jsonValue([u.messages, u.arriving, u.bytes]) })
    this.closed = true
    try {
      await this.commit.write(ops)
    } catch (err) {
      this.closed = false
      throw err
    }
    return true
  }

  private assertOpen(): void {
    if (this.closed) throw new ChaparError(ErrorCode.RETRY_LATER, 'the relay is shutting down', { retryAfterMs: 1000 })
  }

  /** Partials with at least one chunk on disk (the scan counts those; a snapshot must agree). */
  private durablePartials(): number {
    let n = 0
    for (const p of this.partials.values()) if (p.durable.size > 0) n++
    return n
  }

  /**
   * Read the usage counts a clean close saved, and delete them (fsynced)
   * before anything else is written, so that they are never read twice.
   * False when there are none (or they do not add up): then scan.
   */
  private async loadSnapshot(): Promise<boolean> {
    const marker = await this.db.get(SNAPSHOT_KEY)
    const entries: Array<[string, unknown]> = []
    const ops: BatchOp[] = []
    for await (const [k, v] of scan(this.db, SNAPSHOT)) {
      ops.push({ type: 'del', key: k })
      entries.push([k.slice(SNAPSHOT.length), parseJsonOr(v)])
    }
    if (!marker && ops.length === 0) return false
    ops.push({ type: 'del', key: SNAPSHOT_KEY })
    await this.commit.write(ops)
    const counts = (x: unknown): x is [number, number, number] => Array.isArray(x) && x.length === 3 && x.every((n) => Number.isSafeInteger(n) && n >= 0)
    if (!marker || parseJsonOr(marker) !== entries.length || !entries.every(([, u]) => counts(u))) return false
    this.usage.clear()
    this.total.messages = this.total.arriving = this.total.bytes = 0
    for (const [mailbox, u] of entries) this.account(mailbox, ...(u as [number, number, number]))
    return true
  }

  /**
   * Format 1 → 2: move each envelope's chunks under its mailbox and write
   * its delivery and listing values, MIGRATE_BATCH envelopes (or
   * MIGRATE_BATCH_BYTES) per atomic batch (old keys deleted in the batch that writes the new ones), then
   * record the format. A migration cut short (a crash, a kill) is taken up
   * again at the next open: moving an envelope already moved writes the
   * same keys again. Returns how many envelopes were looked at (0 when the
   * store is already in this format). A store written by a newer format is
   * refused rather than misread.
   */
  private async migrate(onProgress?: (moved: number) => void): Promise<number> {
    const stamp = await this.db.get(FORMAT_KEY)
    const format = stamp ? parseJsonOr(stamp) : 1
    if (format === MAILBOX_FORMAT) return 0
    if (!(typeof format === 'number' && format < MAILBOX_FORMAT)) throw new Error(`this relay store is in mailbox format ${JSON.stringify(format)}, written by a newer Chapar; this one reads formats up to ${MAILBOX_FORMAT}`)
    let moved = 0
    let batch: Array<[string, StoredMeta]> = []
    let batchBytes = 0
    const flush = async (): Promise<void> => {
      const oldKeys: string[] = []
      const owners: Array<[string, StoredMeta, number]> = []
      for (const [id, m] of batch) {
        for (let i = 0; i < chunkCount(m.size); i++) {
          oldKeys.push(CHUNK + id + '!' + pad(i, 8))
          owners.push([id, m, i])
        }
      }
      const values = await this.db.getMany(oldKeys)
      const ops: BatchOp[] = []
      values.forEach((v, j) => {
        if (!v) return
        const [id, m, i] = owners[j]!
        ops.push({ type: 'put', key: chunkKey(m.mailbox, id, i), value: v }, { type: 'del', key: oldKeys[j]! })
      })
      for (const [id, m] of batch) {
        if (!m.complete) continue
        const delivery: Delivery = { size: m.size, expires_at: m.expires_at, received_at: m.received_at }
        const listed: Listed = { size: m.size, expires_at: m.expires_at }
        ops.push({ type: 'put', key: deliveryKey(m.mailbox, id), value: jsonValue(delivery) }, { type: 'put', key: listKey(m.mailbox, m.received_at, id), value: jsonValue(listed) })
      }
      await this.commit.write(ops)
      moved += batch.length
      batch = []
      batchBytes = 0
      onProgress?.(moved)
    }
    for await (const [k, v] of scan(this.db, META)) {
      const m = parseJson<StoredMeta>(v)
      batch.push([k.slice(META.length), m])
      batchBytes += m.size
      if (batch.length >= MIGRATE_BATCH || batchBytes >= MIGRATE_BATCH_BYTES) await flush()
    }
    if (batch.length > 0) await flush()
    await this.commit.write([{ type: 'put', key: FORMAT_KEY, value: jsonValue(MAILBOX_FORMAT) }])
    return moved
  }

  /**
   * Read the whole store and say what it holds and whether every envelope
   * is consistent: each id's record, chunks, delivery, listing and expiry
   * entries agree. For tests, the kill test and operators' diagnosis; it
   * reads every key, so it is not for a busy relay's hot path.
   */
  async check(): Promise<StoreCheck> {
    const prefixes: Record<string, number> = {}
    const metas = new Map<string, StoredMeta>()
    const chunks = new Map<string, number>()
    const deliveries = new Map<string, Delivery>()
    const listings = new Set<string>()
    const expiries = new Set<string>()
    const tombs = new Set<string>()
    const tombExpiries = new Set<string>()
    const problems: string[] = []
    let keys = 0
    for await (const [k, v] of this.db.iterator()) {
      keys++
      const p = k.slice(0, k.indexOf('!') + 1)
      prefixes[p] = (prefixes[p] ?? 0) + 1
      const parts = k.split('!')
      if (p === META) metas.set(parts[1]!, parseJson<StoredMeta>(v))
      else if (p === CHUNK) {
        const owner = parts[1] + '!' + parts[2]
        chunks.set(owner, (chunks.get(owner) ?? 0) + 1)
      } else if (p === DELIVERY) deliveries.set(parts[1] + '!' + parts[2], parseJson<Delivery>(v))
      else if (p === MBOX) listings.add(k)
      else if (p === EXPIRY) expiries.add(k)
      else if (p === TOMB) tombs.add(parts[1]!)
      else if (p === TOMB_EXPIRY) tombExpiries.add(parts[2]!)
    }
    const whole = new Set<string>()
    const arriving = new Set<string>()
    for (const [id, m] of metas) {
      const owner = m.mailbox + '!' + id
      const n = chunks.get(owner) ?? 0
      chunks.delete(owner)
      if (!expiries.delete(expiryKey(m.expires_at, id))) problems.push(`${id}: no expiry entry`)
      if (!m.complete) {
        const d = deliveries.get(owner)
        if (d) problems.push(`${id}: arriving, but has a delivery entry`)
        deliveries.delete(owner)
        if (n >= chunkCount(m.size)) problems.push(`${id}: arriving, but all ${n} chunks are stored`)
        arriving.add(id)
        continue
      }
      const d = deliveries.get(owner)
      deliveries.delete(owner)
      const listed = listKey(m.mailbox, m.received_at, id)
      const hasListing = listings.delete(listed)
      if (n !== chunkCount(m.size)) problems.push(`${id}: whole, but ${n} of ${chunkCount(m.size)} chunks are stored`)
      else if (!d || d.size !== m.size || d.expires_at !== m.expires_at || d.received_at !== m.received_at) problems.push(`${id}: whole, but its delivery entry is ${d ? 'wrong' : 'missing'}`)
      else if (!hasListing) problems.push(`${id}: whole, but not listed in its mailbox`)
      else whole.add(id)
    }
    for (const owner of chunks.keys()) problems.push(`chunks of ${owner} belong to no record`)
    for (const owner of deliveries.keys()) problems.push(`delivery entry ${owner} belongs to no record`)
    for (const k of listings) problems.push(`listing ${k} belongs to no whole envelope`)
    for (const k of expiries) problems.push(`expiry entry ${k} belongs to no record`)
    for (const id of tombs) if (!tombExpiries.delete(id)) problems.push(`tombstone ${id} has no expiry entry`)
    for (const id of tombExpiries) problems.push(`tombstone expiry entry for ${id} has no tombstone`)
    return { keys, prefixes, whole, arriving, delivered: tombs, problems }
  }

  /**
   * Count what every mailbox holds, from disk (one scan of the records),
   * before the relay serves anyone. From then on the counts are kept in
   * memory as envelopes come and go.
   */
  async loadUsage(): Promise<void> {
    this.usage.clear()
    this.total.messages = 0
    this.total.arriving = 0
    this.total.bytes = 0
    for await (const [, v] of scan(this.db, META)) {
      const m = parseJson<StoredMeta>(v)
      this.account(m.mailbox, m.complete ? 1 : 0, m.complete ? 0 : 1, m.size)
    }
  }

  /** Counts for metrics and `relay` logs (complete envelopes; bytes include envelopes still arriving). */
  stats(): { messages: number; bytes: number; mailboxes: number } {
    return { messages: this.total.messages, bytes: this.total.bytes, mailboxes: this.usage.size }
  }
}
