/**
 * The sync driver: the real-world side of a sync. For each relay it runs
 * two SyncSessions on two connections (WebSocket or datagram, by URL): an upload session that never
 * identifies itself, and a mailbox session that logs in and fetches (so a
 * relay cannot tie what a user sends to who the user is). When a link
 * fails it tries again forever (p-retry, full-jitter backoff) until the
 * sessions are done or the overall timeout fires.
 */
import pRetry from 'p-retry'
import { authMessage, relayOrigin } from '../protocol/auth.js'
import type { Timers } from '../protocol/env.js'
import { encodeFrame, FrameType } from '../protocol/frames.js'
import { sign } from '../protocol/signature.js'
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { fullJitterDelay } from './backoff.js'
import { type ClientContext, type SessionResult, type SessionRole, SyncSession } from './sync-engine.js'
import { connectRelay, DEFAULT_WS_STREAMS } from './transports.js'
import type { WsConnection } from './ws-transport.js'

export interface SyncOptions {
  relays: string[]
  untilEmpty: boolean
  timeoutMs?: number
  /** Called when an attempt fails and the driver will wait `delayMs` before the next. */
  onRetry?: (relay: string, error: Error, delayMs: number, role: SessionRole) => void
  /** Open a connection for one role (default: connectRelay, uploads striped over DEFAULT_WS_STREAMS WebSockets). */
  connect?: (url: string, role: SessionRole, login?: (challenge: Uint8Array) => Uint8Array) => Promise<WsConnection>
  random?: () => number
  signal?: AbortSignal
}

export interface RelayOutcome {
  relay: string
  /** Both connections ended cleanly (with --until-empty: outbox sent, mailbox drained). */
  ok: boolean
  uploaded: number
  received: number
  rejected: SessionResult['rejected']
  /** Connection attempts, both roles together. */
  attempts: number
  error?: string
}

type RoleOutcome = RelayOutcome

function merge(up: RoleOutcome, mail: RoleOutcome): RelayOutcome {
  const errors = [up.error && `upload: ${up.error}`, mail.error && `mailbox: ${mail.error}`].filter(Boolean)
  return {
    relay: up.relay,
    ok: up.ok && mail.ok,
    uploaded: up.uploaded,
    received: mail.received,
    rejected: [...up.rejected, ...mail.rejected],
    attempts: up.attempts + mail.attempts,
    ...(errors.length > 0 ? { error: errors.join('; ') } : {}),
  }
}

export interface SyncReport {
  ok: boolean
  timedOut: boolean
  relays: RelayOutcome[]
}

function sleep(timers: Timers, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const t = timers.setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = (): void => {
      timers.clearTimeout(t)
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** Settle with `p`, or reject as soon as `signal` aborts (closing what `p` opens late). */
function abortable(p: Promise<WsConnection>, signal: AbortSignal): Promise<WsConnection> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      reject(signal.reason)
      p.then((c) => c.link.close('aborted'), () => {})
    }
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (c) => {
        signal.removeEventListener('abort', onAbort)
        resolve(c)
      },
      (err) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

export async function runSync(ctx: ClientContext, options: SyncOptions): Promise<SyncReport> {
  const controller = new AbortController()
  const signal = controller.signal
  const timeoutError = new ChaparError(ErrorCode.TIMEOUT, 'sync timed out')
  // Time comes from the context's Env, so the simulator runs this same driver in virtual time.
  const timers = ctx.env.timers
  const timer = options.timeoutMs !== undefined ? timers.setTimeout(() => controller.abort(timeoutError), options.timeoutMs) : undefined
  const onOuterAbort = (): void => controller.abort(options.signal?.reason)
  options.signal?.addEventListener('abort', onOuterAbort, { once: true })
  const connect = options.connect ?? ((url: string, role: SessionRole, login?: (challenge: Uint8Array) => Uint8Array) => connectRelay(url, { wsStreams: role === 'upload' ? DEFAULT_WS_STREAMS : 1, login }))
  /** For an allowlist relay's upload streams: this identity's AUTH for a stream's challenge. */
  const loginFor = (relay: string) => {
    const origin = relayOrigin(relay)
    return (challenge: Uint8Array): Uint8Array =>
      encodeFrame({ type: FrameType.AUTH, signPublicKey: ctx.me.address.signPublicKey, signature: sign(authMessage(challenge, origin), ctx.me.signSecretKey), origin })
  }
  const random = options.random ?? Math.random

  /** One role's connection to one relay, retried until it ends cleanly. */
  const runRelay = async (relay: string, role: SessionRole, outcome: RoleOutcome): Promise<void> => {
    outcome.ok = false
    delete outcome.error
    let failures = 0
    let session: SyncSession | undefined
    const stop = (): void => session?.stop()
    signal.addEventListener('abort', stop, { once: true })
    try {
      await pRetry(
        async () => {
          outcome.attempts++
          const conn = await abortable(connect(relay, role, role === 'upload' ? loginFor(relay) : undefined), signal)
          if (signal.aborted) {
            conn.link.close('aborted')
            throw signal.reason
          }
          const s = new SyncSession(ctx, relay, conn.link, { role, untilEmpty: options.untilEmpty, reliable: conn.reliable ?? false, transportTimeouts: conn.transportTimeouts ?? false, transportLogin: conn.transportLogin ?? false })
          session = s
          conn.onFrame((f) => s.receive(f))
          conn.onClose((reason) => s.closed(reason))
          try {
            const result = await s.done
            outcome.uploaded += result.uploaded
            outcome.received += result.received
            for (const r of result.rejected) if (!outcome.rejected.some((x) => x.id === r.id)) outcome.rejected.push(r)
            return result
          } catch (err) {
            // A connection that got through resets the backoff: the link came back.
            if (s.connectedOnce) failures = 0
            throw err
          }
        },
        {
          retries: Number.POSITIVE_INFINITY,
          minTimeout: 0,
          maxTimeout: 0,
          factor: 1,
          signal,
          onFailedAttempt: async ({ error }) => {
            if (signal.aborted) return
            // Never sooner than a relay's retry-after (rate limit, quota, busy).
            const delay = Math.max(fullJitterDelay(failures++, random), error instanceof ChaparError ? (error.retryAfterMs ?? 0) : 0)
            options.onRetry?.(relay, error, delay, role)
            await sleep(timers, delay, signal).catch(() => {})
          },
        },
      )
      // p-retry resolves after abort too if the session was stopped cleanly.
      outcome.ok = !signal.aborted || !options.untilEmpty
    } catch (err) {
      outcome.error = (err as Error).message
    } finally {
      signal.removeEventListener('abort', stop)
    }
  }

  const fresh = (relay: string): RoleOutcome => ({ relay, ok: false, uploaded: 0, received: 0, rejected: [], attempts: 0 })
  const uploads = new Map(options.relays.map((relay) => [relay, fresh(relay)]))
  const mailboxes = new Map(options.relays.map((relay) => [relay, fresh(relay)]))
  // The first round runs both connections to every relay at once. A mailbox
  // session queues receipts for what it fetched, possibly after the upload
  // sessions finished, so with --until-empty further rounds run the upload
  // side again for the relays that have something pending.
  await Promise.all(options.relays.flatMap((relay) => [runRelay(relay, 'upload', uploads.get(relay)!), runRelay(relay, 'mailbox', mailboxes.get(relay)!)]))
  let round = options.untilEmpty ? [...options.relays] : []
  while (round.length > 0 && !signal.aborted) {
    const now = ctx.env.clock.now()
    const next: string[] = []
    for (const relay of round) {
      const o = uploads.get(relay)!
      const rejected = new Set(o.rejected.map((r) => r.id))
      const pending = (await ctx.outbox.pendingFor(relay, now)).filter((r) => !rejected.has(r.id))
      if (o.ok && pending.length > 0) next.push(relay)
    }
    round = next
    await Promise.all(round.map((relay) => runRelay(relay, 'upload', uploads.get(relay)!)))
  }
  const relays = options.relays.map((relay) => merge(uploads.get(relay)!, mailboxes.get(relay)!))
  if (timer !== undefined) timers.clearTimeout(timer)
  options.signal?.removeEventListener('abort', onOuterAbort)
  const timedOut = signal.aborted && signal.reason === timeoutError
  return { ok: relays.every((r) => r.ok && r.rejected.length === 0), timedOut, relays }
}
