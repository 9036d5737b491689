/**
 * The sync driver: the real-world side of a sync. For each relay it opens a
 * WebSocket, runs a SyncSession on it, and when the link fails tries again
 * forever (p-retry, full-jitter backoff) until the sessions are done or the
 * overall timeout fires.
 */
import pRetry from 'p-retry'
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { fullJitterDelay } from './backoff.js'
import { type ClientContext, type SessionResult, SyncSession } from './sync-engine.js'
import { connectWs, type WsConnection } from './ws-transport.js'

export interface SyncOptions {
  relays: string[]
  untilEmpty: boolean
  timeoutMs?: number
  /** Called when an attempt fails and the driver will wait `delayMs` before the next. */
  onRetry?: (relay: string, error: Error, delayMs: number) => void
  connect?: (url: string) => Promise<WsConnection>
  random?: () => number
  signal?: AbortSignal
}

export interface RelayOutcome {
  relay: string
  ok: boolean
  uploaded: number
  received: number
  rejected: SessionResult['rejected']
  attempts: number
  error?: string
}

export interface SyncReport {
  ok: boolean
  timedOut: boolean
  relays: RelayOutcome[]
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = (): void => {
      clearTimeout(t)
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
  const timer = options.timeoutMs !== undefined ? setTimeout(() => controller.abort(timeoutError), options.timeoutMs) : undefined
  const onOuterAbort = (): void => controller.abort(options.signal?.reason)
  options.signal?.addEventListener('abort', onOuterAbort, { once: true })
  const connect = options.connect ?? ((url: string) => connectWs(url))
  const random = options.random ?? Math.random

  const runRelay = async (relay: string, outcome: RelayOutcome): Promise<void> => {
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
          const conn = await abortable(connect(relay), signal)
          if (signal.aborted) {
            conn.link.close('aborted')
            throw signal.reason
          }
          const s = new SyncSession(ctx, relay, conn.link, { untilEmpty: options.untilEmpty })
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
            const delay = fullJitterDelay(failures++, random)
            options.onRetry?.(relay, error, delay)
            await sleep(delay, signal).catch(() => {})
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

  const outcomes = new Map(options.relays.map((relay) => [relay, { relay, ok: false, uploaded: 0, received: 0, rejected: [], attempts: 0 } as RelayOutcome]))
  // One round syncs every relay at once. A session to one relay can queue new
  // uploads for the others (the receipts for what it fetched) after those
  // sessions finished, so with --until-empty further rounds run for the
  // relays that have something pending again.
  let round = [...options.relays]
  while (round.length > 0) {
    await Promise.all(round.map((relay) => runRelay(relay, outcomes.get(relay)!)))
    if (!options.untilEmpty || signal.aborted) break
    const now = ctx.env.clock.now()
    const next: string[] = []
    for (const relay of round) {
      const o = outcomes.get(relay)!
      const rejected = new Set(o.rejected.map((r) => r.id))
      const pending = (await ctx.outbox.pendingFor(relay, now)).filter((r) => !rejected.has(r.id))
      if (o.ok && pending.length > 0) next.push(relay)
    }
    round = next
  }
  const relays = [...outcomes.values()]
  if (timer) clearTimeout(timer)
  options.signal?.removeEventListener('abort', onOuterAbort)
  const timedOut = signal.aborted && signal.reason === timeoutError
  return { ok: relays.every((r) => r.ok && r.rejected.length === 0), timedOut, relays }
}
