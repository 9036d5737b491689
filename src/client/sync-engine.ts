/**
 * The client's sync engine for one relay connection.
 *
 * Theory of operation. The engine is a state machine with no I/O of its
 * own: the driver feeds it frames (`receive`) and link loss (`closed`), and
 * it writes frames to the `Link` it was given, reads time from `env.clock`
 * and arms one periodic tick on `env.timers`. A session has one of two
 * roles, and the driver opens one connection for each:
 *
 *   upload:   outbox → PUT chunks (window of bytes in flight) → STORED/HAVE
 *             → outbox marks the relay as holding the envelope.
 *             A multi-chunk envelope already started to this relay
 *             (OutboxRecord.started) begins with QUERY, so after any break
 *             only the chunks the relay lacks are sent again. Never AUTHs:
 *             the relay must not learn who sends to which mailbox.
 *   mailbox:  AUTH → LIST → INDEX → GET missing chunks (window of chunks)
 *             → CHUNK, persisted as they come → verify + decrypt → one
 *             fsynced batch (inbox item + receipt in the outbox) → DONE →
 *             LIST again. The receipts leave on an upload connection.
 *
 * Every request is idempotent and re-sent when unanswered for
 * RESEND_AFTER_MS; acks state what the relay holds, not what changed, so a
 * lost or duplicated ack changes nothing. Frames are handled one at a time
 * in arrival order (a promise chain), so store reads and writes never
 * interleave within a session; sessions to several relays share the stores
 * and hold a per-id lock for the whole of a download.
 */
import { toHex, fromHex } from '../protocol/bytes.js'
import type { Env, Link, TimerHandle } from '../protocol/env.js'
import { Kind, MAX_ENVELOPE_BYTES, open, Priority, RECEIPT_TTL_MS } from '../protocol/envelope.js'
import { ChaparError, ErrorCode, ProtocolError, RETRYABLE_CODES } from '../protocol/errors.js'
import { formatAddress } from '../protocol/address.js'
import {
  CHUNK_BYTES,
  chunkCount,
  chunkLength,
  decodeFrame,
  encodeFrame,
  type Frame,
  FrameType,
  HELLO_UPLOAD_LOGIN,
  type IndexEntry,
  MAX_IDS_PER_FRAME,
  PROTOCOL_VERSION,
} from '../protocol/frames.js'
import { messageId } from '../protocol/hash.js'
import { type Ranges, rangesFromIndices } from '../protocol/ranges.js'
import { sign } from '../protocol/signature.js'
import { equal } from '../protocol/bytes.js'
import { authMessage, relayOrigin } from '../protocol/auth.js'
import type { Inbox, InboxItem } from '../queue/inbox.js'
import type { Outbox, OutboxRecord } from '../queue/outbox.js'
import { compose } from './compose.js'
import type { FileSink } from './files.js'
import type { Identity } from './identity.js'

export const HELLO_TIMEOUT_MS = 20_000
/**
 * With requests outstanding and no frame at all for this long, the
 * connection is taken as dead. Longer than the ws heartbeats' 60 s: on a
 * lossy link TCP backs off for tens of seconds and then recovers. Chosen
 * with the simulator (README, "What the simulator found"): 90 s beat 45 s
 * and 180 s.
 */
export const IDLE_TIMEOUT_MS = 90_000
export const RESEND_AFTER_MS = 15_000
export const TICK_MS = 1_000
/** The tick never comes sooner than this after the last one. */
const MIN_TICK_MS = 250
export const UPLOAD_WINDOW_BYTES = 1024 * 1024
export const DOWNLOAD_WINDOW_CHUNKS = 16
export const LIST_MAX = 32
export const POLL_INTERVAL_MS = 10_000
/** While uploads are under way, newly queued envelopes are looked for this often. */
export const RESCAN_BUSY_MS = 2_000
const DEFER_MS = 500
export { RECEIPT_TTL_MS }
const HOUR_MS = 3600_000
/** A download with no new chunk for this long gives up its lock if another session wants it (a relay trickling chunks must not hold a message hostage). */
export const STALL_MS = 30_000
/** DONEs per id per session before a relay that keeps listing it is taken to ignore them. */
export const MAX_DONE_RETRIES = 5
/** How long a session leaves a stalled id to other sessions before trying it again. */
export const STALL_BACKOFF_MS = 60_000


export type SyncEvent =
  | { type: 'connected'; relay: string }
  | { type: 'accepted'; relay: string; ids: string[] }
  | { type: 'progress'; relay: string; id: string; done: number; total: number; direction: 'up' | 'down' }
  | { type: 'received'; relay: string; id: string; as: 'report' | 'receipt' | 'quarantined' | 'duplicate' }
  | { type: 'delivered'; ids: string[] }
  | { type: 'rejected'; relay: string; id: string; code: string; message: string }
  | { type: 'drained'; relay: string }

export interface ClientContext {
  me: Identity
  outbox: Outbox
  inbox: Inbox
  files: FileSink
  env: Env
  /** Ids being downloaded right now (shared by the sessions of one sync). */
  locks: Map<string, DownloadLock>
  verify?: (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean
  onEvent?: (e: SyncEvent) => void
}

export type SessionRole = 'upload' | 'mailbox'

/** Who is downloading an id, and whether another session is waiting for it. */
export interface DownloadLock {
  owner: unknown
  wanted: boolean
}

export interface SessionOptions {
  /** `upload` sends the outbox without identifying itself; `mailbox` logs in and fetches. */
  role: SessionRole
  /** Finish once nothing is left to upload (upload) or the mailbox is drained (mailbox); otherwise keep polling until stopped. */
  untilEmpty: boolean
  /**
   * The link delivers every frame in order or dies (a WebSocket over TCP):
   * requests are never re-sent on it — TCP already retransmits, and a
   * re-sent 1 MiB window only queues behind the first — and the idle
   * timeout alone tells a dead link. Default false: a lossy frame link.
   */
  reliable?: boolean
  /**
   * The transport tells a dead peer from a slow one itself and closes the
   * link (the datagram transport, which rides out blackouts on one
   * connection): the engine then sets no HELLO or idle limit of its own.
   */
  transportTimeouts?: boolean
  /** The transport logs uploads in where the relay asks (striped ws): the engine does not. */
  transportLogin?: boolean
}

export interface SessionResult {
  uploaded: number
  received: number
  rejected: Array<{ id: string; code: string; message: string }>
}

interface Upload {
  rec: OutboxRecord
  envelope: Uint8Array
  chunks: number
  /** Chunks the relay reported holding. */
  acked: Set<number>
  /** Chunks sent and not yet acked, with when they were sent. */
  sent: Map<number, number>
  /** A QUERY is outstanding (multi-chunk envelopes ask before sending). */
  queriedAt: number | undefined
}

interface Download {
  id: Uint8Array
  hex: string
  size: number
  chunks: number
  expiresAt: number
  have: Set<number>
  requested: Map<number, number>
  finishing: boolean
  /** Started from chunks already on disk (perhaps another relay's): a hash failure gets one clean re-fetch. */
  resumed: boolean
  lastProgressAt: number
}

export class SyncSession {
  readonly done: Promise<SessionResult>
  private resolveDone!: (r: SessionResult) => void
  private rejectDone!: (e: unknown) => void
  private finished = false
  private chain: Promise<void> = Promise.resolve()
  private tick: TimerHandle | undefined
  private tickAt = 0
  /** Nothing was outstanding at the last tick. */
  private quiet = false
  private readonly startedAt: number
  private lastFrameAt: number
  private helloSeen = false
  private challenge: Uint8Array | undefined
  private authSentAt: number | undefined
  private authed = false
  private maxEnvelope = MAX_ENVELOPE_BYTES
  /** What AUTH is bound to: the relay this session meant to dial. */
  private readonly origin: string

  private readonly uploads = new Map<string, Upload>()
  private queue: OutboxRecord[] = []
  private readonly skip = new Set<string>()
  private needScan = true
  private uploadsIdle = false
  /** This relay takes uploads only from logged-in keys (HELLO_UPLOAD_LOGIN), and this session logs in for them. */
  private uploadLogin = false
  /**
   * The latest retryable refusal of an upload (quota, rate limit): those
   * messages wait in the outbox, and once nothing else is left to upload the
   * session ends with this, so the driver reconnects after the retry-after.
   */
  private refusal: { code: ErrorCode; message: string; until: number } | undefined

  private readonly downloads = new Map<string, Download>()
  private listSentAt: number | undefined
  private nextListAt: number | undefined
  private drained = false
  private doneIds: Uint8Array[] = []
  private deferred = false
  private lastScanAt = 0
  /** The outbox generation the last scan saw. */
  private scannedGeneration = -1
  /** Listed ids this session will not take (too large, served bytes that failed their hash, DONE ignored). */
  private readonly unusable = new Set<string>()
  /** DONEs sent per id: a relay that keeps listing an id after DONE is asked again, a few times, slowly. */
  private readonly doneSent = new Map<string, number>()
  /** Ids this session gave up for stalling, and until when it leaves them to others. */
  private readonly stalled = new Map<string, number>()
  /** Locks this session holds in ctx.locks. */
  private readonly held = new Set<string>()

  private readonly result: SessionResult = { uploaded: 0, received: 0, rejected: [] }

  constructor(
    private readonly ctx: ClientContext,
    readonly relay: string,
    private readonly link: Link,
    private readonly options: SessionOptions,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.resolveDone = resolve
      this.rejectDone = reject
    })
    // Callers may only await `done` after other work; never let a rejection go unhandled meanwhile.
    this.done.catch(() => {})
    this.origin = relayOrigin(relay)
    this.startedAt = this.now()
    this.lastFrameAt = this.startedAt
    this.arm()
    // PUT is self-describing: uploads need nothing from HELLO, so they go out
    // with the connection's first bytes (on the datagram transport, in its
    // very first packets) rather than a round trip later.
    if (options.role === 'upload') {
      this.enqueue(() => this.pumpUploads())
      // Something queued while this session uploads: look within RESCAN_BUSY_MS, not at the next poll.
      this.unwatch = ctx.outbox.watch(() => {
        if (!this.uploadsIdle) this.wakeBy(Math.max(this.now(), this.lastScanAt + RESCAN_BUSY_MS + 1))
      })
    }
  }

  private unwatch: (() => void) | undefined

  /** Did the relay ever answer on this connection? (The driver resets its backoff if so.) */
  get connectedOnce(): boolean {
    return this.helloSeen
  }

  private now(): number {
    return this.ctx.env.clock.now()
  }

  private emit(e: SyncEvent): void {
    this.ctx.onEvent?.(e)
  }

  private send(f: Frame, priority?: number): void {
    if (this.finished) return
    const now = this.now()
    // The first request after a quiet spell starts the idle clock afresh.
    if (this.quiet) {
      this.quiet = false
      this.lastFrameAt = Math.max(this.lastFrameAt, now)
    }
    this.link.send(encodeFrame(f), priority)
    // Its resend (or, on a reliable link, the idle check) is due: make sure the tick comes by then.
    const due = this.options.reliable ? IDLE_TIMEOUT_MS : RESEND_AFTER_MS
    if (this.tickAt > now + due) this.arm(due)
  }

  /**
   * The periodic check, armed for the earliest deadline it has to check
   * (a resend, the idle limit, the next poll) rather than every second, so
   * a waiting client — or a simulation of thousands — does not wake in vain.
   */
  private arm(delay = TICK_MS): void {
    if (this.tick !== undefined) this.ctx.env.timers.clearTimeout(this.tick)
    this.tickAt = this.now() + delay
    this.tick = this.ctx.env.timers.setTimeout(() => {
      this.tick = undefined
      this.enqueue(async () => {
        await this.onTick()
        if (!this.finished && this.tick === undefined) this.arm(this.nextTickDelay())
      })
    }, delay)
  }

  /** Make sure the tick comes by `t`. */
  private wakeBy(t: number): void {
    if (!this.finished && this.tickAt > t) this.arm(Math.max(0, t - this.now()))
  }

  /**
   * Time until the earliest deadline the tick checks (never under
   * MIN_TICK_MS, never over the poll interval). Only deadlines the tick acts
   * on count: one it would pass over unchanged would make it spin.
   */
  private nextTickDelay(): number {
    const now = this.now()
    let next = now + POLL_INTERVAL_MS
    const at = (t: number | undefined): void => {
      if (t !== undefined && t < next) next = t
    }
    const own = !this.options.transportTimeouts
    if (own && !this.helloSeen) at(this.startedAt + HELLO_TIMEOUT_MS)
    const awaitingAuth = (this.options.role === 'mailbox' || this.uploadLogin) && this.helloSeen && !this.authed
    const resend = !this.options.reliable
    if (resend && awaitingAuth && this.authSentAt !== undefined) at(this.authSentAt + RESEND_AFTER_MS)
    if (own && this.outstanding()) at(this.lastFrameAt + IDLE_TIMEOUT_MS)
    for (const u of this.uploads.values()) {
      if (resend && u.queriedAt !== undefined) at(u.queriedAt + RESEND_AFTER_MS)
      if (resend) for (const t of u.sent.values()) at(t + RESEND_AFTER_MS)
    }
    for (const d of this.downloads.values()) {
      if (resend) for (const t of d.requested.values()) at(t + RESEND_AFTER_MS)
      if (!d.finishing && this.ctx.locks.get(d.hex)?.wanted) at(d.lastProgressAt + STALL_MS)
    }
    if (resend && this.listSentAt !== undefined) at(this.listSentAt + RESEND_AFTER_MS)
    if (this.authed) at(this.nextListAt)
    if (!this.options.untilEmpty && this.options.role === 'upload' && this.uploadsIdle && this.ctx.outbox.generation !== this.scannedGeneration) at(this.lastScanAt + POLL_INTERVAL_MS + 1)
    if (this.options.role === 'upload' && !this.uploadsIdle && this.ctx.outbox.generation !== this.scannedGeneration) at(this.lastScanAt + RESCAN_BUSY_MS + 1)
    return Math.max(MIN_TICK_MS, next - now + 1)
  }

  private outstanding(): boolean {
    const awaitingAuth = this.options.role === 'mailbox' && this.helloSeen && !this.authed
    return this.uploads.size > 0 || this.downloads.size > 0 || this.listSentAt !== undefined || awaitingAuth
  }

  /** Feed one frame from the link. */
  receive(bytes: Uint8Array): void {
    if (this.finished) return
    this.lastFrameAt = this.now()
    let frame: Frame
    try {
      frame = decodeFrame(bytes, this.maxEnvelope)
    } catch (err) {
      this.fail(err)
      return
    }
    this.enqueue(() => this.handle(frame))
  }

  /** The driver lost the link. */
  closed(reason = 'connection closed'): void {
    this.fail(new ChaparError(ErrorCode.DISCONNECTED, reason))
  }

  /** Stop cleanly (continuous mode): resolves `done` with what was achieved. */
  stop(): void {
    this.finish()
  }

  private enqueue(step: () => Promise<void> | void): void {
    this.chain = this.chain
      .then(async () => {
        if (!this.finished) await step()
      })
      .catch((err) => this.fail(err))
  }

  private fail(err: unknown): void {
    if (this.finished) return
    this.end(err instanceof Error ? err.message : String(err))
    this.rejectDone(err)
  }

  private finish(): void {
    if (this.finished) return
    this.end('done')
    this.resolveDone(this.result)
  }

  private end(reason: string): void {
    this.finished = true
    this.unwatch?.()
    if (this.tick !== undefined) this.ctx.env.timers.clearTimeout(this.tick)
    // A step of this session may still be running (the link died mid-step);
    // it takes no new lock once finished, and releases only locks it owns.
    for (const hex of [...this.held]) this.unlock(hex)
    this.downloads.clear()
    this.link.close(reason)
  }

  private lock(hex: string): boolean {
    if (this.finished) return false
    const other = this.ctx.locks.get(hex)
    if (other) {
      other.wanted = true
      return false
    }
    this.ctx.locks.set(hex, { owner: this, wanted: false })
    this.held.add(hex)
    return true
  }

  private unlock(hex: string): void {
    if (this.ctx.locks.get(hex)?.owner === this) this.ctx.locks.delete(hex)
    this.held.delete(hex)
  }

  private async handle(f: Frame): Promise<void> {
    switch (f.type) {
      case FrameType.HELLO:
        return this.onHello(f)
      case FrameType.AUTH_OK:
        if (!equal(f.mailbox, this.ctx.me.mailbox)) throw new ProtocolError(ErrorCode.BAD_FRAME, 'relay confirmed the wrong mailbox')
        if (this.authed) return // a repeated AUTH_OK
        this.authed = true
        if (this.options.role === 'mailbox' && this.listSentAt === undefined && !this.drained) this.sendList()
        this.checkComplete()
        return
      case FrameType.STORED:
        return this.onStored(f.ids)
      case FrameType.HAVE:
        return this.onHave(toHex(f.id), f.have)
      case FrameType.INDEX:
        return this.onIndex(f.entries, f.more)
      case FrameType.CHUNK:
        return this.onChunk(f)
      case FrameType.ERROR:
        return this.onError(f)
      default:
        throw new ProtocolError(ErrorCode.BAD_FRAME, `unexpected frame 0x${f.type.toString(16)} from relay`)
    }
  }

  private async onHello(f: Extract<Frame, { type: typeof FrameType.HELLO }>): Promise<void> {
    if (f.version !== PROTOCOL_VERSION) throw new ProtocolError(ErrorCode.BAD_FRAME, `relay speaks protocol v${f.version}, this client v${PROTOCOL_VERSION}`)
    if (this.helloSeen) return
    this.helloSeen = true
    this.maxEnvelope = Math.min(MAX_ENVELOPE_BYTES, f.maxEnvelope)
    this.emit({ type: 'connected', relay: this.relay })
    if (this.options.role === 'upload' && (f.flags ?? 0) & HELLO_UPLOAD_LOGIN && !this.options.transportLogin) {
      // An allowlist relay: log in before the PUTs (it handles a
      // connection's frames in order); PUTs it refused before are re-sent.
      this.uploadLogin = true
      this.challenge = f.challenge.slice()
      this.sendAuth()
    }
    if (this.options.role === 'mailbox') {
      this.challenge = f.challenge.slice()
      this.sendAuth()
      // The relay handles a connection's frames in order, so the LIST can
      // follow the AUTH at once: one round trip fewer on every sync.
      this.sendList()
    }
  }

  private sendAuth(): void {
    if (!this.challenge) return
    this.authSentAt = this.now()
    const signature = sign(authMessage(this.challenge, this.origin), this.ctx.me.signSecretKey)
    this.send({ type: FrameType.AUTH, signPublicKey: this.ctx.me.address.signPublicKey, signature, origin: this.origin })
  }

  // ---- upload ----------------------------------------------------------

  private inFlightBytes(): number {
    let n = 0
    for (const u of this.uploads.values()) for (const i of u.sent.keys()) n += chunkLength(u.envelope.length, i)
    return n
  }

  private async pumpUploads(): Promise<void> {
    if (this.options.role !== 'upload' || this.finished) return
    if (this.needScan) {
      this.needScan = false
      this.lastScanAt = this.now()
      this.scannedGeneration = this.ctx.outbox.generation
      const pending = await this.ctx.outbox.pendingFor(this.relay, this.now())
      this.queue = pending.filter((r) => !this.uploads.has(r.id) && !this.skip.has(r.id))
    }
    let budget = UPLOAD_WINDOW_BYTES - this.inFlightBytes()
    // Highest priority first: an urgent report queued while a video is part
    // sent opens before the video's next chunks go. Within a priority, keep
    // sending envelopes already started before opening new ones.
    const top = this.queue.length > 0 ? this.queue[0]!.priority : -1
    for (const u of [...this.uploads.values()].sort((a, b) => b.rec.priority - a.rec.priority)) {
      if (u.rec.priority < top) break
      budget = this.sendChunks(u, budget)
    }
    // A record of higher priority than everything under way opens even with the window full.
    let topOpen = -1
    for (const u of this.uploads.values()) topOpen = Math.max(topOpen, u.rec.priority)
    while (this.queue.length > 0 && (budget > 0 || this.queue[0]!.priority > topOpen)) {
      const rec = this.queue.shift()!
      if (this.uploads.has(rec.id) || this.skip.has(rec.id)) continue
      const envelope = await this.ctx.outbox.envelope(rec.id)
      if (!envelope) continue // delivered or expired meanwhile
      const u: Upload = { rec, envelope, chunks: chunkCount(envelope.length), acked: new Set(), sent: new Map(), queriedAt: undefined }
      this.uploads.set(rec.id, u)
      // Overtaking with the window full: room for its first chunk.
      if (budget <= 0) budget = CHUNK_BYTES
      topOpen = Math.max(topOpen, rec.priority)
      if (u.chunks > 1 && rec.started !== undefined && !rec.started.includes(this.relay)) {
        // Never sent to this relay: nothing to ask about, the chunks go at once.
        await this.ctx.outbox.markStarted(rec.id, this.relay)
        budget = this.sendChunks(u, budget)
      } else if (u.chunks > 1) {
        u.queriedAt = this.now()
        this.send({ type: FrameType.QUERY, ids: [fromHex(rec.id)] }, rec.priority)
        budget -= CHUNK_BYTES // a QUERY reserves room for its first chunks
      } else {
        budget = this.sendChunks(u, budget)
      }
    }
    // Then the lower-priority uploads the loop above held back.
    if (top >= 0) for (const u of [...this.uploads.values()].sort((a, b) => b.rec.priority - a.rec.priority)) if (u.rec.priority < top) budget = this.sendChunks(u, budget)
    this.uploadsIdle = this.uploads.size === 0 && this.queue.length === 0 && !this.needScan
    if (this.uploadsIdle && this.refusal) {
      const r = this.refusal
      this.fail(new ChaparError(r.code, `relay ${this.relay} refused: ${r.message}`, { retryAfterMs: Math.max(0, r.until - this.now()) }))
      return
    }
    this.checkComplete()
  }

  private sendChunks(u: Upload, budget: number): number {
    if (u.queriedAt !== undefined) return budget
    for (let i = 0; i < u.chunks && budget > 0; i++) {
      if (u.acked.has(i) || u.sent.has(i)) continue
      this.sendChunk(u, i)
      budget -= chunkLength(u.envelope.length, i)
    }
    return budget
  }

  private sendChunk(u: Upload, i: number): void {
    const start = i * CHUNK_BYTES
    u.sent.set(i, this.now())
    this.send({
      type: FrameType.PUT,
      id: fromHex(u.rec.id),
      mailbox: fromHex(u.rec.mailbox),
      expiresAt: u.rec.expires_at,
      size: u.envelope.length,
      index: i,
      data: u.envelope.subarray(start, start + chunkLength(u.envelope.length, i)),
    }, u.rec.priority)
  }

  private async onStored(idBytes: Uint8Array[]): Promise<void> {
    const ids = idBytes.map(toHex)
    const mine = ids.filter((id) => this.uploads.has(id))
    for (const id of mine) this.uploads.delete(id)
    if (mine.length > 0) {
      await this.ctx.outbox.markAccepted(mine, this.relay, this.now())
      this.result.uploaded += mine.length
      this.emit({ type: 'accepted', relay: this.relay, ids: mine })
    }
    await this.pumpUploads()
  }

  private async onHave(id: string, have: Ranges): Promise<void> {
    const u = this.uploads.get(id)
    if (!u) return
    u.queriedAt = undefined
    for (const [a, b] of have) for (let i = a; i < b; i++) {
      u.acked.add(i)
      u.sent.delete(i)
    }
    // Every chunk is there but no STORED came (it was lost, or completion is
    // still committing): ask again after the resend interval.
    if (u.acked.size === u.chunks) u.queriedAt = this.now()
    this.emit({ type: 'progress', relay: this.relay, id, done: u.acked.size, total: u.chunks, direction: 'up' })
    await this.pumpUploads()
  }

  private async onError(f: Extract<Frame, { type: typeof FrameType.ERROR }>): Promise<void> {
    // PUTs sent before this session's login reached an allowlist relay: send them again after it.
    if (f.code === ErrorCode.FORBIDDEN && f.id && this.uploadLogin && !this.authed) {
      if (!this.uploads.delete(toHex(f.id))) return
      this.needScan = true
      await this.pumpUploads()
      return
    }
    // A refusal of one upload that may pass later (quota, rate limit): it
    // stays queued; the others go on, and then the session ends (pumpUploads).
    if (RETRYABLE_CODES.has(f.code) && f.id && this.options.role === 'upload') {
      const id = toHex(f.id)
      if (!this.uploads.delete(id)) return
      this.skip.add(id)
      const until = this.now() + (f.retryAfterMs ?? RESEND_AFTER_MS)
      if (!this.refusal || until > this.refusal.until) this.refusal = { code: f.code, message: f.message, until }
      await this.pumpUploads()
      return
    }
    // Otherwise a refusal that may pass later (busy) ends this session with
    // the relay's retry-after: the driver reconnects no sooner than that.
    if (RETRYABLE_CODES.has(f.code) || !f.id) {
      throw new ChaparError(f.code, `relay ${this.relay} refused: ${f.message}`, f.retryAfterMs !== undefined ? { retryAfterMs: f.retryAfterMs } : {})
    }
    const id = toHex(f.id)
    if (this.uploads.delete(id)) {
      this.skip.add(id)
      this.result.rejected.push({ id, code: f.code, message: f.message })
      this.emit({ type: 'rejected', relay: this.relay, id, code: f.code, message: f.message })
      await this.pumpUploads()
      return
    }
    const d = this.downloads.get(id)
    if (d) {
      // The relay no longer has it (expired or deleted meanwhile): forget it and relist.
      this.dropDownload(d)
      if (this.downloads.size === 0) this.afterBatch()
    }
  }

  // ---- download --------------------------------------------------------

  private sendList(): void {
    this.listSentAt = this.now()
    this.nextListAt = undefined
    this.send({ type: FrameType.LIST, max: LIST_MAX })
  }

  private async onIndex(entries: IndexEntry[], more: boolean): Promise<void> {
    if (this.listSentAt === undefined) return // a duplicate INDEX
    this.listSentAt = undefined
    let actionable = 0
    const now = this.now()
    for (const e of entries) {
      if (this.finished) return // the link died while this step waited on the store
      const hex = toHex(e.id)
      if (this.unusable.has(hex)) continue
      actionable++
      if (this.downloads.has(hex)) continue
      const dones = this.doneSent.get(hex) ?? 0
      if (dones > 0) {
        // Listed again after our DONE: the DONE was lost, or the relay ignores
        // it. Say it again, but list again only after a pause, and give up on
        // the id after a few tries rather than spin.
        if (dones >= MAX_DONE_RETRIES) {
          this.unusable.add(hex)
          actionable--
          continue
        }
        this.markDone(e.id)
        this.deferred = true
        continue
      }
      if ((this.stalled.get(hex) ?? 0) > now) {
        this.deferred = true
        continue
      }
      if (e.size > this.maxEnvelope || e.size === 0) {
        // Nothing sane can be done with it; leave it on the relay for its TTL and say so.
        this.unusable.add(hex)
        actionable--
        this.reject(hex, ErrorCode.TOO_LARGE, `mailbox entry of ${e.size} bytes`)
        continue
      }
      // Held from here until the message is stored or given up, so two
      // sessions never write the same partial chunks.
      if (!this.lock(hex)) {
        this.deferred = true // another session is fetching it right now; look again shortly
        continue
      }
      let have: Set<number>
      const chunks = chunkCount(e.size)
      try {
        if (await this.ctx.inbox.has(hex)) {
          this.unlock(hex)
          this.markDone(e.id)
          this.emit({ type: 'received', relay: this.relay, id: hex, as: 'duplicate' })
          continue
        }
        have = new Set(chunks > 1 ? await this.ctx.inbox.chunksHeld(hex, e.size) : [])
      } catch (err) {
        this.unlock(hex)
        throw err
      }
      if (this.finished) return // end() released the lock
      const d: Download = {
        id: e.id.slice(),
        hex,
        size: e.size,
        chunks,
        expiresAt: e.expiresAt,
        have,
        requested: new Map(),
        finishing: false,
        resumed: have.size > 0,
        lastProgressAt: this.now(),
      }
      this.downloads.set(hex, d)
      // Every chunk already on disk (the last sync stopped between the last chunk and the inbox write).
      if (chunks > 1 && have.size === chunks) await this.finishDownload(d, await this.ctx.inbox.assemble(hex, d.size))
    }
    if (actionable === 0) {
      // Empty, or nothing here this session can take (reported in `rejected`):
      // drained as far as it can go. Listing again would only spin.
      this.drained = true
      this.emit({ type: 'drained', relay: this.relay })
      if (!this.options.untilEmpty) this.nextListAt = this.now() + POLL_INTERVAL_MS
      this.checkComplete()
      return
    }
    this.drained = false
    void more // a full page is followed by another LIST once this one is handled
    if (this.downloads.size === 0) this.afterBatch()
    else this.pumpDownloads()
  }

  private reject(id: string, code: string, message: string): void {
    this.result.rejected.push({ id, code, message })
    this.emit({ type: 'rejected', relay: this.relay, id, code, message })
  }

  private dropDownload(d: Download): void {
    if (this.downloads.get(d.hex) === d) this.downloads.delete(d.hex)
    this.unlock(d.hex)
  }

  /** DONE will be sent for `id`. */
  private markDone(id: Uint8Array): void {
    const hex = toHex(id)
    this.doneIds.push(id.slice())
    this.doneSent.set(hex, (this.doneSent.get(hex) ?? 0) + 1)
  }

  private pumpDownloads(): void {
    let inFlight = 0
    for (const d of this.downloads.values()) inFlight += d.requested.size
    for (const d of this.downloads.values()) {
      if (inFlight >= DOWNLOAD_WINDOW_CHUNKS) break
      const want: number[] = []
      for (let i = 0; i < d.chunks && inFlight < DOWNLOAD_WINDOW_CHUNKS; i++) {
        if (d.have.has(i) || d.requested.has(i)) continue
        want.push(i)
        d.requested.set(i, this.now())
        inFlight++
      }
      if (want.length > 0) this.send({ type: FrameType.GET, id: d.id, want: rangesFromIndices(want) })
    }
  }

  private async onChunk(f: Extract<Frame, { type: typeof FrameType.CHUNK }>): Promise<void> {
    const hex = toHex(f.id)
    const d = this.downloads.get(hex)
    if (!d || d.finishing || d.have.has(f.index)) return
    if (f.size !== d.size) throw new ProtocolError(ErrorCode.BAD_FRAME, 'chunk size disagrees with the mailbox index')
    d.requested.delete(f.index)
    d.lastProgressAt = this.now()
    if (d.chunks === 1) {
      d.have.add(0)
      await this.finishDownload(d, f.data)
    } else {
      await this.ctx.inbox.putChunk(hex, d.size, d.chunks, f.index, f.data.slice())
      if (this.finished) return
      d.have.add(f.index)
      this.emit({ type: 'progress', relay: this.relay, id: hex, done: d.have.size, total: d.chunks, direction: 'down' })
      if (d.have.size === d.chunks) await this.finishDownload(d, await this.ctx.inbox.assemble(hex, d.size))
    }
    if (this.downloads.size === 0) this.afterBatch()
    else this.pumpDownloads()
  }

  /** Verify, decrypt, store (with its receipt) in one fsynced batch, then DONE. The session holds the id's lock. */
  private async finishDownload(d: Download, envelope: Uint8Array): Promise<void> {
    d.finishing = true
    let keep = false
    try {
      if (!equal(messageId(envelope), d.id)) {
        // Not the message that was listed. Nothing is recorded under the id
        // and no DONE is sent, so a relay cannot poison dedup for the real one.
        if (d.chunks > 1) await this.ctx.inbox.dropPartial(d.hex)
        if (d.resumed && !this.finished) {
          // Some chunks came from disk, perhaps left by another relay's bad
          // copy: fetch every chunk again from this relay before judging it.
          d.resumed = false
          d.finishing = false
          d.have.clear()
          d.requested.clear()
          d.lastProgressAt = this.now()
          keep = true
          return
        }
        this.unusable.add(d.hex)
        this.reject(d.hex, ErrorCode.BAD_ENVELOPE, 'relay served bytes that do not hash to the listed id; will fetch again next sync')
        return
      }
      if (this.finished) return
      if (await this.ctx.inbox.has(d.hex)) {
        this.emit({ type: 'received', relay: this.relay, id: d.hex, as: 'duplicate' })
      } else {
        await this.store(d, envelope)
      }
      this.markDone(d.id)
    } finally {
      if (!keep) this.dropDownload(d)
    }
  }

  private async store(d: Download, envelope: Uint8Array): Promise<void> {
    const now = this.now()
    const { inbox, outbox, me } = this.ctx
    const quarantine = async (code: string, reason: string): Promise<void> => {
      await inbox.apply(await inbox.quarantineOps({ id: d.hex, code, reason, received_at: now, bytes: envelope.length }))
      this.emit({ type: 'received', relay: this.relay, id: d.hex, as: 'quarantined' })
    }
    let opened
    try {
      opened = open(envelope, { address: me.address, boxSecretKey: me.boxSecretKey }, this.ctx.verify)
    } catch (err) {
      // open() is pure: whatever it throws is about these bytes, never about our disk or link.
      if (err instanceof ChaparError) return quarantine(err.code, err.message)
      return quarantine(ErrorCode.BAD_ENVELOPE, `malformed envelope: ${(err as Error).message}`)
    }
    const from = formatAddress(opened.from)
    if (opened.content.kind === Kind.receipt) {
      const content = opened.content
      const delivered = await outbox.exclusive(async () => {
        const r = await outbox.deliveredOps(content.ids.map(toHex), from, now)
        await inbox.apply([...r.ops, ...(await inbox.receiptOps(d.hex, from, now))])
        return r.delivered
      })
      this.emit({ type: 'received', relay: this.relay, id: d.hex, as: 'receipt' })
      if (delivered.length > 0) this.emit({ type: 'delivered', ids: delivered })
      return
    }
    const c = opened.content
    const item: InboxItem = {
      id: d.hex,
      from,
      created_at: opened.createdAt,
      received_at: now,
      priority: opened.priority,
      bytes: envelope.length,
      ...(c.text !== undefined ? { text: c.text } : {}),
      ...(c.ref ? { ref: toHex(c.ref) } : {}),
    }
    if (c.file) {
      item.file = await this.ctx.files.save(d.hex, c.file.name, c.file.data)
      item.file_name = c.file.name
      item.file_bytes = c.file.data.length
    }
    const receipt = compose({
      outbox,
      me,
      to: opened.from,
      content: { kind: Kind.receipt, ids: [d.id] },
      now,
      ttlMs: Math.ceil((now + RECEIPT_TTL_MS) / HOUR_MS) * HOUR_MS - now,
      priority: Priority.urgent,
      randomBytes: this.ctx.env.randomBytes,
    })
    await inbox.apply([...(await inbox.itemOps(item)), ...receipt.ops])
    outbox.noteQueued() // only now can an upload session's scan see the receipt
    this.result.received++
    this.emit({ type: 'received', relay: this.relay, id: d.hex, as: 'report' })
  }

  /** A listing is fully handled: tell the relay what we hold, then ask for more. */
  private afterBatch(): void {
    while (this.doneIds.length > 0) this.send({ type: FrameType.DONE, ids: this.doneIds.splice(0, MAX_IDS_PER_FRAME) })
    if (this.authed && this.listSentAt === undefined) {
      if (this.deferred) {
        this.nextListAt = this.now() + DEFER_MS
        this.wakeBy(this.nextListAt)
      }
      else this.sendList()
    }
    this.deferred = false
    this.enqueue(() => this.pumpUploads())
  }

  // ---- time ------------------------------------------------------------

  private async onTick(): Promise<void> {
    const now = this.now()
    const own = !this.options.transportTimeouts
    if (own && !this.helloSeen && now - this.startedAt > HELLO_TIMEOUT_MS) {
      throw new ChaparError(ErrorCode.TIMEOUT, `no HELLO from ${this.relay} in ${HELLO_TIMEOUT_MS / 1000}s`)
    }
    const awaitingAuth = (this.options.role === 'mailbox' || this.uploadLogin) && this.helloSeen && !this.authed
    const outstanding = this.outstanding()
    if (!outstanding) this.quiet = true
    const resend = !this.options.reliable
    if (resend && awaitingAuth && this.authSentAt !== undefined && now - this.authSentAt > RESEND_AFTER_MS) this.sendAuth()
    if (own && outstanding && now - this.lastFrameAt > IDLE_TIMEOUT_MS) {
      throw new ChaparError(ErrorCode.TIMEOUT, `no answer from ${this.relay} in ${IDLE_TIMEOUT_MS / 1000}s`)
    }
    if (resend) {
      for (const u of this.uploads.values()) {
        if (u.queriedAt !== undefined && now - u.queriedAt > RESEND_AFTER_MS) {
          u.queriedAt = now
          this.send({ type: FrameType.QUERY, ids: [fromHex(u.rec.id)] })
        }
        for (const [i, at] of u.sent) if (now - at > RESEND_AFTER_MS) this.sendChunk(u, i)
      }
      for (const d of this.downloads.values()) for (const [i, at] of d.requested) if (now - at > RESEND_AFTER_MS) d.requested.delete(i)
    }
    for (const d of [...this.downloads.values()]) {
      if (!d.finishing && now - d.lastProgressAt > STALL_MS && this.ctx.locks.get(d.hex)?.wanted) {
        // No new chunk for a while and another session (another relay) is waiting: let it try.
        this.dropDownload(d)
        this.stalled.set(d.hex, now + STALL_BACKOFF_MS)
        if (this.downloads.size === 0) this.afterBatch()
      }
    }
    if (this.downloads.size > 0) this.pumpDownloads()
    if (resend && this.listSentAt !== undefined && now - this.listSentAt > RESEND_AFTER_MS) this.sendList()
    if (this.authed && this.nextListAt !== undefined && now >= this.nextListAt) this.sendList()
    if (!this.options.untilEmpty && this.uploadsIdle && now - this.lastScanAt > POLL_INTERVAL_MS && this.ctx.outbox.generation !== this.scannedGeneration) {
      this.lastScanAt = now
      this.needScan = true
      await this.pumpUploads()
    } else if (this.options.role === 'upload' && !this.uploadsIdle && now - this.lastScanAt > RESCAN_BUSY_MS && this.ctx.outbox.generation !== this.scannedGeneration) {
      // Queued while uploads are under way (in this process): look now, not
      // when the queue runs dry, so an urgent report overtakes a long upload.
      this.lastScanAt = now
      this.needScan = true
      await this.pumpUploads()
    }
  }

  private checkComplete(): void {
    if (!this.options.untilEmpty || this.finished) return
    const done =
      this.options.role === 'upload'
        ? this.uploadsIdle
        : this.authed && this.drained && this.downloads.size === 0 && this.doneIds.length === 0 && this.listSentAt === undefined
    if (done) this.finish()
  }
}
