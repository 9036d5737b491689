/**
 * The relay's protocol engine: one `RelaySession` per connection, no I/O of
 * its own (the ws server feeds it frames and hands it a Link). PUT and
 * QUERY run concurrently so that many writers share each group commit;
 * mailbox operations (LIST, GET, DONE) run in arrival order, so a LIST sent
 * after a DONE never shows what the DONE removed.
 */
import { toHex } from '../protocol/bytes.js'
import type { Env, Link } from '../protocol/env.js'
import { MAX_ENVELOPE_BYTES, RELAY_MAX_TTL_MS } from '../protocol/envelope.js'
import { ChaparError, ErrorCode, refusalReason } from '../protocol/errors.js'
import { decodeFrame, encodeFrame, type Frame, FrameType, HELLO_UPLOAD_LOGIN, MAX_IDS_PER_FRAME, PROTOCOL_VERSION } from '../protocol/frames.js'
import { mailboxId } from '../protocol/hash.js'
import { indicesOf } from '../protocol/ranges.js'
import { verify } from '../protocol/signature.js'
import { authMessage } from '../protocol/auth.js'
import type { Admit, MailboxStore } from '../queue/mailbox.js'
import type { AccessList } from './access.js'
import { type BucketSpec, TokenBuckets } from './limits.js'

/** Chunks one GET may ask for; the client's window is smaller. */
export const MAX_CHUNKS_PER_GET = 64
export const MAX_LIST = 512
/** PUT/QUERY work one connection may have in progress before it is told to slow down. */
export const MAX_IN_FLIGHT_OPS = 4096
export const MAX_IN_FLIGHT_BYTES = 8 * 1024 * 1024
/** LIST/GET/DONE frames one connection may have queued. */
export const MAX_QUEUED_MAILBOX_OPS = 256
/** Retry-after of a refusal for too much in flight on one connection. */
export const BUSY_RETRY_MS = 1000
/** Retry-after of a quota refusal: a mailbox drains when its owner syncs, the disk when envelopes are fetched or expire. */
export const QUOTA_RETRY_MS = 5 * 60_000

const FRAME_NAMES: Record<number, string> = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]))

/** A frame type's name for metrics (`PUT`, `GET` …), or `unknown`. */
export function frameName(type: number | undefined): string {
  return (type !== undefined && FRAME_NAMES[type]) || 'unknown'
}

/** Token-bucket rate limits, in bytes per second; absent means unlimited. */
export interface RelayLimits {
  /** Upload bytes per sender: its signing key once the connection has logged in (AUTH), else its network address. */
  perSender?: BucketSpec | undefined
  /** Upload bytes into one mailbox, from everyone. */
  perMailbox?: BucketSpec | undefined
  /** Frame bytes of any kind on one connection. */
  perConnection?: BucketSpec | undefined
}

/** Storage quotas; a new envelope past any of them is refused with QUOTA (and a retry-after). */
export interface RelayQuotas {
  mailboxBytes?: number | undefined
  mailboxMessages?: number | undefined
  totalBytes?: number | undefined
  /** True while the disk is past its high-water mark (the relay polls the filesystem). */
  diskFull?: (() => boolean) | undefined
}

export interface RelayOptions {
  maxEnvelope?: number
  /** Longest expiry accepted, from now. */
  maxTtlMs?: number
  /**
   * The origins (scheme://host:port, see auth.ts) clients dial this relay
   * by; an AUTH for any other origin is refused. `chapar relay` always sets
   * these; leaving them out accepts any origin, which only in-process tests
   * and the simulator (one relay, no third party) may do.
   */
  origins?: readonly string[]
  limits?: RelayLimits
  quotas?: RelayQuotas
  /** Open (the default, when absent) or allowlist, and banned keys. */
  access?: AccessList
}

/** What a transport knows of a connection. */
export interface ConnectionInfo {
  /** The peer's network address (for per-sender limits before AUTH); never logged at the default level. */
  peer?: string | undefined
}

export interface RelayCounters {
  connections: number
  frames_in: number
  bytes_in: number
  chunks_stored: number
  envelopes_stored: number
  duplicates: number
  chunks_served: number
  done: number
  errors: number
  /** Connections open now. */
  open: number
}

export type RelayEvent =
  | { type: 'stored'; id: string; size: number }
  | { type: 'deleted'; count: number }
  /** A refusal or protocol error sent to connection `conn`; `reason` is refusalReason(code). */
  | { type: 'error'; conn: number; code: ErrorCode; reason: string; message: string; retryAfterMs?: number | undefined }

const BANNED = 'this key is banned from this relay'

export class Relay {
  readonly maxEnvelope: number
  readonly maxTtlMs: number
  /** See RelayOptions.origins; settable because a relay on port 0 learns its port after listening. */
  origins: ReadonlySet<string> | undefined
  readonly counters: RelayCounters = {
    connections: 0,
    frames_in: 0,
    bytes_in: 0,
    chunks_stored: 0,
    envelopes_stored: 0,
    duplicates: 0,
    chunks_served: 0,
    done: 0,
    errors: 0,
    open: 0,
  }
  /** Frames by type name, each way. */
  readonly framesIn = new Map<string, number>()
  readonly framesOut = new Map<string, number>()
  /** Refusals and errors sent, by reason (refusalReason). */
  readonly refused = new Map<string, number>()
  readonly limits: RelayLimits
  readonly quotas: RelayQuotas
  readonly access: AccessList | undefined
  private readonly senderBuckets: TokenBuckets | undefined
  private readonly mailboxBuckets: TokenBuckets | undefined
  private nextConn = 0
  /** Open connections (to close those of a key banned while connected). */
  private readonly sessions = new Set<RelaySession>()
  /** PUT/QUERY operations in progress, over all connections. */
  inFlightOps = 0
  onEvent: ((e: RelayEvent) => void) | undefined

  constructor(
    readonly store: MailboxStore,
    readonly env: Env,
    options: RelayOptions = {},
  ) {
    this.maxEnvelope = Math.min(options.maxEnvelope ?? MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES)
    this.maxTtlMs = options.maxTtlMs ?? RELAY_MAX_TTL_MS
    this.origins = options.origins ? new Set(options.origins) : undefined
    this.limits = options.limits ?? {}
    this.quotas = options.quotas ?? {}
    this.access = options.access
    this.senderBuckets = this.limits.perSender ? new TokenBuckets(this.limits.perSender) : undefined
    this.mailboxBuckets = this.limits.perMailbox ? new TokenBuckets(this.limits.perMailbox) : undefined
  }

  /** A new connection: the session greets it with HELLO at once. */
  connect(link: Link, info: ConnectionInfo = {}): RelaySession {
    this.counters.connections++
    this.counters.open++
    const session = new RelaySession(this, link, ++this.nextConn, info)
    this.sessions.add(session)
    return session
  }

  /** @internal The session closed. */
  forget(session: RelaySession): void {
    this.sessions.delete(session)
  }

  /**
   * Close every connection logged in as `keyHex` with FORBIDDEN: a ban
   * takes effect on open connections too, not only at the next login.
   * Returns how many were closed.
   */
  disconnectKey(keyHex: string): number {
    let n = 0
    for (const s of [...this.sessions]) {
      if (s.loggedInAs !== keyHex) continue
      s.refuseBanned()
      n++
    }
    return n
  }

  /** @internal Count a frame each way (metrics). */
  countFrame(map: Map<string, number>, type: number | undefined): void {
    const name = frameName(type)
    map.set(name, (map.get(name) ?? 0) + 1)
  }

  /**
   * Upload rate limits for `bytes` from `sender` into `mailbox`: 0 when
   * allowed (tokens taken), else the ms to wait. Both buckets are checked
   * before either is drawn, so a refusal costs the sender nothing.
   */
  rateCheck(sender: string, mailbox: string, bytes: number, now: number): number {
    const wait = Math.max(this.senderBuckets?.wait(sender, bytes, now) ?? 0, this.mailboxBuckets?.wait(mailbox, bytes, now) ?? 0)
    if (wait > 0) return wait
    this.senderBuckets?.take(sender, bytes, now)
    this.mailboxBuckets?.take(mailbox, bytes, now)
    return 0
  }

  /** The store's admission check for new envelopes: the quotas. */
  readonly admit: Admit = (_mailbox, size, box, total) => {
    const q = this.quotas
    const refuse = (what: string): never => {
      throw new ChaparError(ErrorCode.QUOTA, what, { retryAfterMs: QUOTA_RETRY_MS })
    }
    if (q.diskFull?.()) refuse('relay disk is past its high-water mark')
    if (q.totalBytes !== undefined && total.bytes + size > q.totalBytes) refuse('relay storage quota reached')
    if (q.mailboxBytes !== undefined && box.bytes + size > q.mailboxBytes) refuse(`mailbox quota reached (${q.mailboxBytes} bytes)`)
    if (q.mailboxMessages !== undefined && box.messages + box.arriving + 1 > q.mailboxMessages) refuse(`mailbox quota reached (${q.mailboxMessages} messages)`)
  }

  sweep(): ReturnType<MailboxStore['sweep']> {
    return this.store.sweep(this.env.clock.now())
  }
}

export class RelaySession {
  private readonly challenge: Uint8Array
  private mailbox: Uint8Array | undefined
  private ordered: Promise<void> = Promise.resolve()
  private stored: Uint8Array[] = []
  private closed = false
  private inFlightOps = 0
  private inFlightBytes = 0
  private queuedMailboxOps = 0
  /** Rate-limit key: the logged-in signing key, else the network address, else this connection. */
  private sender: string
  /** The signing key this connection logged in with, hex. */
  private key: string | undefined
  private readonly connBucket: TokenBuckets | undefined

  constructor(
    private readonly relay: Relay,
    private readonly link: Link,
    /** This connection's number, for logs. */
    readonly conn: number,
    info: ConnectionInfo = {},
  ) {
    this.sender = info.peer !== undefined ? 'addr:' + info.peer : 'conn:' + conn
    this.connBucket = relay.limits.perConnection ? new TokenBuckets(relay.limits.perConnection, 1) : undefined
    this.challenge = relay.env.randomBytes(32)
    const flags = relay.access?.mode === 'allowlist' ? HELLO_UPLOAD_LOGIN : 0
    this.send({ type: FrameType.HELLO, version: PROTOCOL_VERSION, challenge: this.challenge, maxEnvelope: relay.maxEnvelope, flags })
  }

  private send(f: Frame): void {
    if (this.closed) return
    this.relay.countFrame(this.relay.framesOut, f.type)
    this.link.send(encodeFrame(f))
  }

  private error(code: ErrorCode, message: string, id?: Uint8Array, retryAfterMs?: number): void {
    const r = this.relay
    r.counters.errors++
    const reason = refusalReason(code)
    r.refused.set(reason, (r.refused.get(reason) ?? 0) + 1)
    r.onEvent?.({ type: 'error', conn: this.conn, code, reason, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) })
    this.send({ type: FrameType.ERROR, code, id, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) })
  }

  /** The signing key this connection logged in with (hex), if it has. */
  get loggedInAs(): string | undefined {
    return this.key
  }

  /** The connection went away. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.relay.counters.open--
    this.relay.forget(this)
  }

  /** @internal Its key was banned: refuse and close (Relay.disconnectKey). */
  refuseBanned(): void {
    this.abort(ErrorCode.FORBIDDEN, BANNED)
  }

  /** Refuse and close: the peer sent something no honest client sends. */
  private abort(code: ErrorCode, message: string): void {
    this.error(code, message)
    this.close()
    this.link.close(message)
  }

  receive(bytes: Uint8Array): void {
    if (this.closed) return
    const r = this.relay
    const c = r.counters
    c.frames_in++
    c.bytes_in += bytes.length
    let f: Frame
    try {
      f = decodeFrame(bytes, r.maxEnvelope)
    } catch (err) {
      r.countFrame(r.framesIn, undefined)
      const e = err as ChaparError
      this.abort(e.code ?? ErrorCode.BAD_FRAME, e.message)
      return
    }
    r.countFrame(r.framesIn, f.type)
    if (this.connBucket) {
      const wait = this.connBucket.take('', bytes.length, r.env.clock.now())
      if (wait > 0) {
        this.error(ErrorCode.RATE_LIMITED, 'connection rate limit', f.type === FrameType.PUT ? f.id.slice() : undefined, wait)
        return
      }
    }
    switch (f.type) {
      case FrameType.PUT:
      case FrameType.QUERY: {
        const bytes = f.type === FrameType.PUT ? f.data.length : 0
        if (this.inFlightOps >= MAX_IN_FLIGHT_OPS || this.inFlightBytes + bytes > MAX_IN_FLIGHT_BYTES) {
          // An honest client's window is far below this; it backs off and resends.
          this.error(ErrorCode.RETRY_LATER, 'too much in flight on this connection', f.type === FrameType.PUT ? f.id.slice() : undefined, BUSY_RETRY_MS)
          return
        }
        if (f.type === FrameType.PUT && r.access && !r.access.mayUpload(this.key)) {
          const why = this.key === undefined ? 'this relay takes uploads only from allowlisted keys: log in (AUTH) first' : 'this key may not upload here'
          this.error(ErrorCode.FORBIDDEN, why, f.id.slice())
          return
        }
        if (f.type === FrameType.PUT) {
          const wait = r.rateCheck(this.sender, toHex(f.mailbox), bytes, r.env.clock.now())
          if (wait > 0) {
            this.error(ErrorCode.RATE_LIMITED, 'upload rate limit', f.id.slice(), wait)
            return
          }
        }
        this.inFlightOps++
        this.inFlightBytes += bytes
        r.inFlightOps++
        const work = f.type === FrameType.PUT ? this.guard(this.onPut(f), f.id) : this.guard(this.onQuery(f.ids))
        void work.finally(() => {
          this.inFlightOps--
          this.inFlightBytes -= bytes
          r.inFlightOps--
        })
        return
      }
      case FrameType.AUTH:
        this.onAuth(f.signPublicKey, f.signature, f.origin)
        return
      case FrameType.LIST:
      case FrameType.GET:
      case FrameType.DONE: {
        if (!this.mailbox) {
          this.error(ErrorCode.UNAUTHENTICATED, 'AUTH first: mailbox operations need proof of the mailbox key')
          return
        }
        if (this.queuedMailboxOps >= MAX_QUEUED_MAILBOX_OPS) {
          this.error(ErrorCode.RETRY_LATER, 'too many mailbox requests queued on this connection')
          return
        }
        const mailbox = this.mailbox
        const frame = f
        this.queuedMailboxOps++
        this.ordered = this.ordered.then(async () => {
          try {
            await this.guard(this.onMailbox(frame, mailbox))
          } finally {
            this.queuedMailboxOps--
          }
        })
        return
      }
      default:
        this.error(ErrorCode.BAD_FRAME, `frame 0x${f.type.toString(16)} is not for a relay`)
    }
  }

  private async guard(p: Promise<void>, id?: Uint8Array): Promise<void> {
    try {
      await p
    } catch (err) {
      if (err instanceof ChaparError) this.error(err.code, err.message, id?.slice(), err.retryAfterMs)
      else this.error(ErrorCode.RETRY_LATER, `relay storage error: ${(err as Error).message}`, id?.slice(), BUSY_RETRY_MS)
    }
  }

  private onAuth(pk: Uint8Array, signature: Uint8Array, origin: string): void {
    const origins = this.relay.origins
    if (origins && !origins.has(origin)) {
      this.error(ErrorCode.UNAUTHENTICATED, `AUTH is for ${origin}, not this relay (${[...origins].join(', ')})`)
      return
    }
    if (!verify(authMessage(this.challenge, origin), signature, pk)) {
      this.error(ErrorCode.UNAUTHENTICATED, 'AUTH signature does not verify against the challenge')
      return
    }
    const key = toHex(pk)
    if (this.relay.access?.isBanned(key)) {
      this.abort(ErrorCode.FORBIDDEN, BANNED)
      return
    }
    this.key = key
    this.mailbox = mailboxId(pk)
    this.sender = 'key:' + key
    this.send({ type: FrameType.AUTH_OK, mailbox: this.mailbox })
  }

  private async onPut(f: Extract<Frame, { type: typeof FrameType.PUT }>): Promise<void> {
    const now = this.relay.env.clock.now()
    if (f.expiresAt > now + this.relay.maxTtlMs) {
      throw new ChaparError(ErrorCode.BAD_INPUT, `expiry is more than ${Math.floor(this.relay.maxTtlMs / 86_400_000)} days ahead`)
    }
    const result = await this.relay.store.put(f, now, this.relay.admit)
    const c = this.relay.counters
    if (result.kind === 'stored') {
      this.ackStored(f.id.slice())
      if (result.fresh) {
        c.chunks_stored++
        c.envelopes_stored++
        this.relay.onEvent?.({ type: 'stored', id: toHex(f.id), size: f.size })
      } else {
        c.duplicates++
      }
    } else {
      c.chunks_stored++
      this.send({ type: FrameType.HAVE, id: f.id, size: f.size, have: result.have })
    }
  }

  /** STOREDs resolved by the same group commit leave as one frame. */
  private ackStored(id: Uint8Array): void {
    this.stored.push(id)
    if (this.stored.length > 1) return
    queueMicrotask(() => {
      while (this.stored.length > 0) this.send({ type: FrameType.STORED, ids: this.stored.splice(0, MAX_IDS_PER_FRAME) })
    })
  }

  private async onQuery(ids: Uint8Array[]): Promise<void> {
    for (const id of ids) {
      const h = await this.relay.store.holding(id)
      if (h.kind === 'stored') this.ackStored(id.slice())
      else if (h.kind === 'partial') this.send({ type: FrameType.HAVE, id, size: h.size, have: h.have })
      else this.send({ type: FrameType.HAVE, id, size: 1, have: [] })
    }
  }

  private async onMailbox(f: Frame, mailbox: Uint8Array): Promise<void> {
    if (this.closed) return // nobody is listening: drop the queued work
    const now = this.relay.env.clock.now()
    if (f.type === FrameType.LIST) {
      const { entries, more } = await this.relay.store.list(mailbox, Math.min(f.max, MAX_LIST), now)
      this.send({ type: FrameType.INDEX, entries, more })
    } else if (f.type === FrameType.GET) {
      let n = 0
      for (const index of indicesOf(f.want)) {
        if (++n > MAX_CHUNKS_PER_GET) break
        const chunk = await this.relay.store.chunk(f.id, mailbox, index)
        if (!chunk) {
          this.error(ErrorCode.BAD_INPUT, 'no such envelope or chunk in your mailbox', f.id.slice())
          return
        }
        this.relay.counters.chunks_served++
        this.send({ type: FrameType.CHUNK, id: f.id, size: chunk.size, index, data: chunk.data })
      }
    } else if (f.type === FrameType.DONE) {
      const n = await this.relay.store.done(mailbox, f.ids, now)
      this.relay.counters.done += n
      if (n > 0) this.relay.onEvent?.({ type: 'deleted', count: n })
    }
  }
}
