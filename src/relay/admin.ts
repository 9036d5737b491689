/**
 * The relay's admin listener (loopback by default): Prometheus metrics and
 * a small JSON API for operators. Nothing here shows message content or
 * public keys; mailboxes appear as their ids (hashes of the owner's key).
 *
 *   GET  /metrics            Prometheus text format
 *   GET  /stats              counters and store totals, JSON
 *   GET  /mailboxes?limit=N  the largest mailboxes: id, messages, arriving, bytes
 *   POST /purge-expired      delete expired envelopes and tombstones now
 *   GET  /access             access mode, allowed and banned keys
 *   POST /access/ban?key=K   (and unban, allow, disallow): kept in the relay's LevelDB
 */
import http from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { ChaparError } from '../protocol/errors.js'
import type { GroupCommit } from '../queue/group-commit.js'
import { type AccessList, type AccessListName, parseKey } from './access.js'
import type { Logger } from './log.js'
import type { Relay } from './relay-engine.js'
import type { UdpRelayServer } from './udp-server.js'

export const METRIC_PREFIX = 'chapar_'
/** Most mailboxes one /mailboxes answer lists. */
export const MAX_MAILBOX_LISTING = 10_000

export interface AdminDeps {
  relay: Relay
  access?: AccessList | undefined
  commit: GroupCommit
  udp?: UdpRelayServer | undefined
  log?: Logger
}

/** A counter that mirrors a monotonic number kept elsewhere. */
function mirrored(registry: Registry, name: string, help: string, read: () => number): void {
  let last = 0
  new Counter({
    name: METRIC_PREFIX + name,
    help,
    registers: [registry],
    collect() {
      const now = read()
      if (now > last) this.inc(now - last)
      last = now
    },
  })
}

/** A labelled counter mirroring a map of monotonic numbers. */
function mirroredMap(registry: Registry, name: string, help: string, label: string, read: () => Map<string, number>, known: readonly string[]): void {
  const last = new Map<string, number>()
  const counter = new Counter({
    name: METRIC_PREFIX + name,
    help,
    labelNames: [label],
    registers: [registry],
    collect() {
      for (const [k, v] of read()) {
        const d = v - (last.get(k) ?? 0)
        if (d > 0) this.inc({ [label]: k }, d)
        last.set(k, v)
      }
    },
  })
  // Series exist from the first scrape, at 0, so rate() and alerts see them before the first event.
  for (const k of known) counter.inc({ [label]: k }, 0)
}

const REFUSAL_REASONS = ['rate-limited', 'quota', 'too-large', 'expired', 'invalid', 'unauthenticated', 'forbidden', 'busy', 'internal'] as const

function gauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name: METRIC_PREFIX + name,
    help,
    registers: [registry],
    collect() {
      this.set(read())
    },
  })
}

/** Every metric the relay exports, read from the engine's counters at scrape time. */
export function relayMetrics(deps: AdminDeps): Registry {
  const { relay, commit, udp } = deps
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: METRIC_PREFIX })
  const c = relay.counters
  gauge(registry, 'connections_open', 'Connections open now (WebSocket and datagram sessions)', () => c.open)
  mirrored(registry, 'connections_total', 'Connections accepted (WebSocket and datagram sessions)', () => c.connections)
  mirroredMap(registry, 'frames_in_total', 'Frames received, by type (unknown: undecodable)', 'type', () => relay.framesIn, ['PUT', 'QUERY', 'AUTH', 'LIST', 'GET', 'DONE', 'unknown'])
  mirroredMap(registry, 'frames_out_total', 'Frames sent, by type', 'type', () => relay.framesOut, ['HELLO', 'AUTH_OK', 'STORED', 'HAVE', 'INDEX', 'CHUNK', 'ERROR'])
  mirrored(registry, 'bytes_in_total', 'Frame bytes received', () => c.bytes_in)
  mirrored(registry, 'messages_accepted_total', 'Envelopes stored whole and fsynced for the first time', () => c.envelopes_stored)
  mirrored(registry, 'messages_duplicate_total', 'Envelopes offered again after they were stored or delivered (acked, not stored twice)', () => c.duplicates)
  mirroredMap(registry, 'refusals_total', 'Refusals and errors sent, by reason (rate-limited, quota, too-large, expired, invalid, unauthenticated, busy, internal)', 'reason', () => relay.refused, REFUSAL_REASONS)
  mirrored(registry, 'chunks_stored_total', 'Chunks written', () => c.chunks_stored)
  mirrored(registry, 'chunks_served_total', 'Chunks sent to recipients', () => c.chunks_served)
  mirrored(registry, 'messages_delivered_total', 'Envelopes deleted after their recipient confirmed them (DONE)', () => c.done)
  gauge(registry, 'stored_bytes', 'Bytes of envelopes held, including those still arriving', () => relay.store.total.bytes)
  gauge(registry, 'stored_messages', 'Whole envelopes held', () => relay.store.total.messages)
  gauge(registry, 'mailboxes', 'Mailboxes holding anything', () => relay.store.mailboxCount)
  gauge(registry, 'inflight_ops', 'PUT and QUERY operations in progress', () => relay.inFlightOps)
  gauge(registry, 'commit_queue_ops', 'Store operations waiting for the next fsync batch', () => commit.queued)
  mirrored(registry, 'fsync_batches_total', 'Group-commit batches written and fsynced', () => commit.batches)
  const batchOps = new Histogram({
    name: METRIC_PREFIX + 'fsync_batch_ops',
    help: 'Store operations per fsync batch',
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
    registers: [registry],
  })
  const batchSeconds = new Histogram({
    name: METRIC_PREFIX + 'fsync_seconds',
    help: 'Time to write and fsync one batch',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  })
  const previous = commit.onBatch
  commit.onBatch = (ops, ms) => {
    previous?.(ops, ms)
    batchOps.observe(ops)
    batchSeconds.observe(ms / 1000)
  }
  if (udp) {
    const u = udp.listener.counters
    gauge(registry, 'udp_sessions', 'Datagram sessions open now', () => udp.listener.sessionCount)
    mirrored(registry, 'udp_packets_in_total', 'UDP packets received', () => u.packets_in)
    mirrored(registry, 'udp_packets_dropped_total', 'UDP packets dropped (malformed, unknown session, over limits)', () => u.packets_dropped)
    mirrored(registry, 'udp_new_keys_refused_total', 'Datagram handshakes refused by the new-key rate limit', () => u.new_keys_refused)
  }
  return registry
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body, null, 2) + '\n')
}

/** The relay's totals for `GET /stats` and `chapar admin stats`. */
export function relayStats(deps: AdminDeps): Record<string, unknown> {
  const { relay, commit, udp } = deps
  return {
    ...relay.store.stats(),
    connections_open: relay.counters.open,
    counters: relay.counters,
    refused: Object.fromEntries(relay.refused),
    frames_in: Object.fromEntries(relay.framesIn),
    frames_out: Object.fromEntries(relay.framesOut),
    fsync_batches: commit.batches,
    ...(udp ? { udp: udp.listener.counters } : {}),
  }
}

export interface AdminServer {
  readonly url: string
  close(): Promise<void>
}

export function listenAdmin(deps: AdminDeps, options: { host: string; port: number }): Promise<AdminServer> {
  const registry = relayMetrics(deps)
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://admin')
      const route = `${req.method} ${url.pathname}`
      try {
        switch (route) {
          case 'GET /metrics':
            res.writeHead(200, { 'content-type': registry.contentType })
            res.end(await registry.metrics())
            return
          case 'GET /stats':
            return json(res, 200, relayStats(deps))
          case 'GET /mailboxes': {
            const raw = url.searchParams.get('limit') ?? '100'
            const limit = Number(raw)
            if (!Number.isInteger(limit) || limit < 1 || limit > MAX_MAILBOX_LISTING) {
              return json(res, 400, { error: 'bad-request', message: `limit must be a whole number 1..${MAX_MAILBOX_LISTING}, got "${raw}"` })
            }
            const all = deps.relay.store.mailboxes()
            return json(res, 200, { mailboxes: all.length, largest: all.slice(0, limit) })
          }
          case 'POST /purge-expired': {
            const r = await deps.relay.sweep()
            deps.log?.info(r, 'purged expired on request')
            return json(res, 200, r)
          }
          case 'GET /access':
            return json(res, 200, deps.access?.view() ?? { mode: 'open', allow: { config: [], admin: [] }, deny: { config: [], admin: [] } })
          case 'POST /access/ban':
          case 'POST /access/unban':
          case 'POST /access/allow':
          case 'POST /access/disallow': {
            if (!deps.access) return json(res, 404, { error: 'not-found', message: 'this relay has no access list' })
            const verb = url.pathname.slice('/access/'.length)
            const list: AccessListName = verb === 'ban' || verb === 'unban' ? 'deny' : 'allow'
            const present = verb === 'ban' || verb === 'allow'
            try {
              const key = url.searchParams.get('key') ?? ''
              const changed = await deps.access.set(list, key, present)
              // A ban also closes the key's open connections (access.set has checked the key).
              const cut = verb === 'ban' ? { disconnected: deps.relay.disconnectKey(parseKey(key)) } : {}
              deps.log?.info({ action: verb, changed, ...cut }, 'access list changed')
              return json(res, 200, { changed, ...cut, ...deps.access.view() })
            } catch (err) {
              if (err instanceof ChaparError) return json(res, 400, { error: 'bad-request', message: err.message })
              throw err
            }
          }
          default:
            return json(res, 404, { error: 'not-found', message: `no ${route}; try GET /metrics, GET /stats, GET /mailboxes, POST /purge-expired, GET /access, POST /access/ban?key=…` })
        }
      } catch (err) {
        deps.log?.error({ route, error: (err as Error).message }, 'admin request failed')
        if (!res.headersSent) json(res, 500, { error: 'internal', message: (err as Error).message })
        else res.destroy()
      }
    })()
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      const addr = server.address()
      const port = typeof addr === 'object' && addr ? addr.port : options.port
      const host = options.host.includes(':') ? `[${options.host}]` : options.host
      resolve({
        url: `http://${host}:${port}`,
        close: () =>
          new Promise<void>((res) => {
            server.closeAllConnections()
            server.close(() => res())
          }),
      })
    })
  })
}
