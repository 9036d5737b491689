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
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { decodeFrame, encodeFrame, type Frame, FrameType, MAX_IDS_PER_FRAME, PROTOCOL_VERSION } from '../protocol/frames.js'
import { mailboxId } from '../protocol/hash.js'
import { indicesOf } from '../protocol/ranges.js'
import { verify } from '../protocol/signature.js'
import { authMessage } from '../protocol/auth.js'
import type { MailboxStore } from '../queue/mailbox.js'

/** Chunks one GET may ask for; the client's window is smaller. */
export const MAX_CHUNKS_PER_GET = 64
export const MAX_LIST = 512
/** PUT/QUERY work one connection may have in progress before it is told to slow down. */
export const MAX_IN_FLIGHT_OPS = 4096
export const MAX_IN_FLIGHT_BYTES = 8 * 1024 * 1024
/** LIST/GET/DONE frames one connection may have queued. */
export const MAX_QUEUED_MAILBOX_OPS = 256

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
}

export type RelayEvent =
  | { type: 'stored'; id: string; size: number }
  | { type: 'deleted'; count: number }
  | { type: 'error'; code: string; message: string }

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
  }
  onEvent: ((e: RelayEvent) => void) | undefined

  constructor(
    readonly store: MailboxStore,
    readonly env: Env,
    options: RelayOptions = {},
  ) {
    this.maxEnvelope = Math.min(options.maxEnvelope ?? MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES)
    this.maxTtlMs = options.maxTtlMs ?? RELAY_MAX_TTL_MS
    this.origins = options.origins ? new Set(options.origins) : undefined
  }

  /** A new connection: the session greets it with HELLO at once. */
  connect(link: Link): RelaySession {
    this.counters.connections++
    return new RelaySession(this, link)
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

  constructor(
    private readonly relay: Relay,
    private readonly link: Link,
  ) {
    this.challenge = relay.env.randomBytes(32)
    this.send({ type: FrameType.HELLO, version: PROTOCOL_VERSION, challenge: this.challenge, maxEnvelope: relay.maxEnvelope })
  }

  private send(f: Frame): void {
    if (!this.closed) this.link.send(encodeFrame(f))
  }

  private error(code: ErrorCode, message: string, id?: Uint8Array): void {
    this.relay.counters.errors++
    this.relay.onEvent?.({ type: 'error', code, message })
    this.send({ type: FrameType.ERROR, code, id, message })
  }

  /** The connection went away. */
  close(): void {
    this.closed = true
  }

  receive(bytes: Uint8Array): void {
    if (this.closed) return
    const c = this.relay.counters
    c.frames_in++
    c.bytes_in += bytes.length
    let f: Frame
    try {
      f = decodeFrame(bytes, this.relay.maxEnvelope)
    } catch (err) {
      const e = err as ChaparError
      this.error(e.code ?? ErrorCode.BAD_FRAME, e.message)
      this.closed = true
      this.link.close(e.message)
      return
    }
    switch (f.type) {
      case FrameType.PUT:
      case FrameType.QUERY: {
        const bytes = f.type === FrameType.PUT ? f.data.length : 0
        if (this.inFlightOps >= MAX_IN_FLIGHT_OPS || this.inFlightBytes + bytes > MAX_IN_FLIGHT_BYTES) {
          // An honest client's window is far below this; it backs off and resends.
          this.error(ErrorCode.RETRY_LATER, 'too much in flight on this connection', f.type === FrameType.PUT ? f.id.slice() : undefined)
          return
        }
        this.inFlightOps++
        this.inFlightBytes += bytes
        const work = f.type === FrameType.PUT ? this.guard(this.onPut(f), f.id) : this.guard(this.onQuery(f.ids))
        void work.finally(() => {
          this.inFlightOps--
          this.inFlightBytes -= bytes
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
      if (err instanceof ChaparError) this.error(err.code, err.message, id?.slice())
      else this.error(ErrorCode.RETRY_LATER, `relay storage error: ${(err as Error).message}`, id?.slice())
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
    this.mailbox = mailboxId(pk)
    this.send({ type: FrameType.AUTH_OK, mailbox: this.mailbox })
  }

  private async onPut(f: Extract<Frame, { type: typeof FrameType.PUT }>): Promise<void> {
    const now = this.relay.env.clock.now()
    if (f.expiresAt > now + this.relay.maxTtlMs) {
      throw new ChaparError(ErrorCode.BAD_INPUT, `expiry is more than ${Math.floor(this.relay.maxTtlMs / 86_400_000)} days ahead`)
    }
    const result = await this.relay.store.put(f, now)
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
