/**
 * `chapar relay`: the relay on its embedded LevelDB store, behind a
 * WebSocket (and HTTP) server, with --udp-port a UDP one, and with
 * --admin-port a loopback admin listener for metrics.
 */
import { statfs } from 'node:fs/promises'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { networkInterfaces } from 'node:os'
import path from 'node:path'
import { relayOrigin } from '../protocol/auth.js'
import { systemEnv } from '../protocol/env.js'
import { RECEIPT_TTL_MS } from '../protocol/envelope.js'
import { InputError } from '../protocol/errors.js'
import { CHUNK_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION } from '../protocol/frames.js'
import { jsonValue, openDiskDb } from '../queue/db.js'
import { GroupCommit } from '../queue/group-commit.js'
import { MAILBOX_FORMAT, MailboxStore } from '../queue/mailbox.js'
import { AccessList } from './access.js'
import { type AdminServer, listenAdmin } from './admin.js'
import { loadRelayConfig, printableConfig, type RelayConfig } from './config.js'
import { type Logger, relayLogger } from './log.js'
import { Relay } from './relay-engine.js'
import { relayUdpKey } from './relay-key.js'
import { listenUdp, type UdpRelayServer } from './udp-server.js'
import { listenWs, type RelayServer } from './ws-server.js'

export const SWEEP_INTERVAL_MS = 60_000

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]', ''])
const LOOPBACK = new Set(['127.0.0.1', '::1', '[::1]', 'localhost'])

/**
 * The origins a mailbox login (AUTH) may name: the --public-url list, plus
 * the address the relay listens on (every interface address when it listens
 * on a wildcard), plus `localhost` for loopback. A client that dialled some
 * other relay signed some other origin, so its login cannot be replayed here.
 */
export function authOrigins(host: string, port: number, publicUrls: readonly string[], udpPort?: number): string[] {
  const hosts = new Set<string>()
  if (WILDCARDS.has(host)) {
    for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) hosts.add(a.family === 'IPv6' ? `[${a.address.split('%')[0]}]` : a.address)
    hosts.add('localhost')
  } else {
    hosts.add(host.includes(':') && !host.startsWith('[') ? `[${host}]` : host)
    if (LOOPBACK.has(host)) hosts.add('localhost').add('127.0.0.1')
  }
  const out = new Set([...hosts].map((h) => relayOrigin(`ws://${h}:${port}`)))
  if (udpPort !== undefined) for (const h of hosts) out.add(relayOrigin(`udp://${h}:${udpPort}`))
  for (const u of publicUrls) out.add(relayOrigin(u))
  return [...out]
}

/** How often the data directory's filesystem is checked against the disk high-water mark. */
export const DISK_CHECK_MS = 5_000
/**
 * Refusal lines logged per second at most: a flood is refused tens of
 * thousands of times a second, and one synchronous line each would turn it
 * into a disk-filling attack (tests/e2e/hostile.test.ts wrote 28 MB a run).
 */
export const REFUSAL_LOG_LINES_PER_SECOND = 20

/**
 * At most `perSecond` events logged per second; the rest are counted by
 * reason and reported in one line when the next second's budget opens.
 */
export class LogBudget {
  private windowStart = 0
  private used = 0
  private suppressed: Record<string, number> = {}
  private reportTimer: NodeJS.Timeout | undefined

  constructor(
    private readonly perSecond: number,
    private readonly report: (suppressed: Record<string, number>) => void,
    private readonly now: () => number = Date.now,
  ) {}

  take(reason: string): boolean {
    const t = this.now()
    if (t - this.windowStart >= 1000) {
      this.flush()
      this.windowStart = t
      this.used = 0
    }
    if (this.used < this.perSecond) {
      this.used++
      return true
    }
    this.suppressed[reason] = (this.suppressed[reason] ?? 0) + 1
    // Report even if nothing else is refused after this burst.
    this.reportTimer ??= setTimeout(() => {
      this.reportTimer = undefined
      this.flush()
    }, 1000).unref()
    return false
  }

  private flush(): void {
    if (Object.keys(this.suppressed).length === 0) return
    const s = this.suppressed
    this.suppressed = {}
    this.report(s)
  }
}

/** /healthz proves the store writable with a real fsynced write, at most this often (it is public). */
export const HEALTH_PROBE_MS = 1_000
const HEALTH_KEY = 'h!probe'

export interface RelayFlags {
  config?: string
  printConfig?: boolean
  [flag: string]: unknown
}

/** Everything a running relay is made of, for `cmdRelay` and tests. */
export interface RunningRelay {
  config: RelayConfig
  relay: Relay
  url: string
  udpUrl: string | undefined
  adminUrl: string | undefined
  /** Stop as on SIGTERM: stop accepting, finish work in flight, close. */
  stop(signal?: string): Promise<void>
}

export async function cmdRelay(flags: RelayFlags): Promise<number> {
  const config = loadRelayConfig({ file: flags.config, env: process.env, flags: commanderFlags(flags) })
  if (flags.printConfig) {
    process.stdout.write(JSON.stringify(printableConfig(config), null, 2) + '\n')
    return 0
  }
  const log = relayLogger(config.log.level)
  const running = await startRelay(config, log)
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      process.off('SIGINT', onInt)
      process.off('SIGTERM', onTerm)
      void running.stop(sig).then(resolve)
    }
    const onInt = (): void => stop('SIGINT')
    const onTerm = (): void => stop('SIGTERM')
    process.once('SIGINT', onInt)
    process.once('SIGTERM', onTerm)
  })
  return 0
}

/** The flags the user gave (commander fills in none: relay flags have no defaults, the schema does). */
function commanderFlags(flags: RelayFlags): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(flags)) if (v !== undefined && k !== 'config' && k !== 'printConfig') out[k] = v
  return out
}

export async function startRelay(config: RelayConfig, log: Logger): Promise<RunningRelay> {
  const dataDir = path.resolve(config.data)
  let db
  try {
    db = await openDiskDb(dataDir, { maxOpenFiles: config.store.maxOpenFiles })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED') throw new InputError(`${dataDir} is in use by another relay`)
    throw new InputError(`cannot open relay data in ${dataDir}: ${(err as Error).message}`)
  }
  const commit = new GroupCommit(db, true)
  const store = new MailboxStore(db, commit)
  try {
    let lastLog = Date.now()
    const started = Date.now()
    const { migrated, usage } = await store.open((moved) => {
      if (Date.now() - lastLog < 5_000) return
      lastLog = Date.now()
      log.info({ envelopes: moved }, 'migrating the store to the current format')
    })
    if (migrated > 0) log.info({ envelopes: migrated, format: MAILBOX_FORMAT }, 'store migrated')
    log.info({ ms: Date.now() - started, usage_from: usage, ...store.stats() }, 'store open')
  } catch (err) {
    await db.close().catch(() => {})
    throw new InputError(`cannot open relay data in ${dataDir}: ${(err as Error).message}`)
  }
  const access = new AccessList(config.access.mode, config.access, db)
  await access.load()

  let diskFull = false
  const checkDisk = async (): Promise<void> => {
    try {
      const s = await statfs(dataDir)
      const used = 1 - s.bavail / s.blocks
      const full = used > config.quotas.diskHighWater
      if (full !== diskFull) log.warn({ used: Math.round(used * 1000) / 1000, high_water: config.quotas.diskHighWater }, full ? 'disk past high-water mark: refusing new envelopes' : 'disk below high-water mark again')
      diskFull = full
    } catch (err) {
      log.error({ error: (err as Error).message }, 'cannot read disk usage')
    }
  }
  await checkDisk()
  const diskTimer = setInterval(() => void checkDisk(), DISK_CHECK_MS)
  diskTimer.unref()

  if (config.maxTtl < RECEIPT_TTL_MS + 3600_000) {
    // Receipts ask for 14 days (rounded up to the hour): a relay below that refuses every one, and senders never learn their reports arrived.
    log.warn({ max_ttl_ms: config.maxTtl, receipt_ttl_ms: RECEIPT_TTL_MS }, 'maxTtl is under the 14 days receipts ask for: this relay will refuse every delivery receipt')
  }
  const q = config.quotas
  const relay = new Relay(store, systemEnv, {
    maxEnvelope: config.maxEnvelope,
    maxTtlMs: config.maxTtl,
    origins: authOrigins(config.host, config.port, config.publicUrls, config.udp.port ?? undefined),
    limits: { perSender: config.limits.perSender ?? undefined, perMailbox: config.limits.perMailbox ?? undefined, perConnection: config.limits.perConnection ?? undefined },
    quotas: { mailboxBytes: q.mailboxBytes ?? undefined, mailboxMessages: q.mailboxMessages ?? undefined, totalBytes: q.totalBytes ?? undefined, diskFull: () => diskFull },
    access,
  })
  const refusals = new LogBudget(REFUSAL_LOG_LINES_PER_SECOND, (suppressed) => log.info({ suppressed }, 'refusals not logged (over the log budget; all are counted in metrics)'))
  relay.onEvent = (e) => {
    if (e.type === 'error') {
      if (refusals.take(e.reason)) log.info({ conn: e.conn, code: e.code, reason: e.reason, ...(e.retryAfterMs !== undefined ? { retry_after_ms: e.retryAfterMs } : {}), message: e.message }, 'refused')
    } else if (config.log.envelopes && e.type === 'stored') log.info({ id: e.id, size: e.size }, 'stored')
    else if (config.log.envelopes && e.type === 'deleted') log.info({ count: e.count }, 'delivered')
  }

  // /healthz: one real fsynced write at most every HEALTH_PROBE_MS, shared by concurrent requests.
  let probe: { at: number; result: Promise<string | undefined> } | undefined
  const healthy = (): Promise<string | undefined> => {
    const now = Date.now()
    if (!probe || now - probe.at > HEALTH_PROBE_MS) {
      probe = {
        at: now,
        result: commit.write([{ type: 'put', key: HEALTH_KEY, value: jsonValue(now) }]).then(
          () => undefined,
          (err: Error) => err.message,
        ),
      }
    }
    return probe.result
  }
  let udp: UdpRelayServer | undefined
  const info = (): Record<string, unknown> => ({
    software: 'chapar',
    protocol_version: PROTOCOL_VERSION,
    transports: { ws: server.url, ...(udp ? { udp: udp.url } : {}) },
    max_envelope_bytes: relay.maxEnvelope,
    max_frame_bytes: MAX_FRAME_BYTES,
    chunk_bytes: CHUNK_BYTES,
    ttl_ms: { min: 1, max: relay.maxTtlMs },
    access: config.access.mode,
    limits: {
      per_sender: config.limits.perSender,
      per_mailbox: config.limits.perMailbox,
      per_connection: config.limits.perConnection,
    },
    quotas: { mailbox_bytes: q.mailboxBytes, mailbox_messages: q.mailboxMessages, total_bytes: q.totalBytes, disk_high_water: q.diskHighWater },
  })
  const httpRoutes = (req: IncomingMessage, res: ServerResponse): boolean => {
    const route = `${req.method} ${(req.url ?? '/').split('?')[0]}`
    if (route === 'GET /healthz') {
      void healthy().then((problem) => {
        const body = { ok: !problem, store: problem ?? 'writable', disk: diskFull ? 'past high-water mark' : 'ok' }
        res.writeHead(problem ? 503 : 200, { 'content-type': 'application/json' })
        res.end(JSON.stringify(body) + '\n')
      })
      return true
    }
    if (route === 'GET /info') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(info(), null, 2) + '\n')
      return true
    }
    return false
  }

  let server: RelayServer
  try {
    server = await listenWs(relay, {
      host: config.host,
      port: config.port,
      heartbeatMs: config.timeouts.heartbeat,
      idleMs: config.timeouts.idle,
      headersTimeoutMs: config.timeouts.headers,
      requestTimeoutMs: config.timeouts.request,
      maxConnections: config.limits.maxConnections,
      trustProxy: config.trustProxy,
      http: httpRoutes,
      log,
    })
  } catch (err) {
    clearInterval(diskTimer)
    await db.close()
    throw new InputError(`cannot listen on ${config.host}:${config.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  if (config.udp.port !== null) {
    try {
      udp = await listenUdp(relay, { host: config.host, port: config.udp.port, secretKey: await relayUdpKey(db, systemEnv.randomBytes), rateKbps: config.udp.rate, mtu: config.udp.mtu })
    } catch (err) {
      clearInterval(diskTimer)
      await server.close()
      await db.close()
      throw new InputError(`cannot listen on udp ${config.host}:${config.udp.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  let admin: AdminServer | undefined
  if (config.admin.port !== null) {
    try {
      admin = await listenAdmin({ relay, commit, udp, log, access }, { host: config.admin.host, port: config.admin.port })
    } catch (err) {
      clearInterval(diskTimer)
      await udp?.close()
      await server.close()
      await db.close()
      throw new InputError(`cannot listen on admin ${config.admin.host}:${config.admin.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  if (config.port === 0 || config.udp.port === 0) relay.origins = new Set(authOrigins(config.host, server.port, config.publicUrls, udp?.port))
  log.info(
    { url: server.url, ...(udp ? { udp_url: udp.url } : {}), ...(admin ? { admin_url: admin.url } : {}), data: dataDir, auth_origins: [...(relay.origins ?? [])], ...store.stats() },
    'relay listening',
  )
  const sweep = async (): Promise<void> => {
    try {
      const r = await relay.sweep()
      if (r.expired || r.tombstones) log.info(r, 'swept')
    } catch (err) {
      log.error({ error: (err as Error).message }, 'sweep failed')
    }
  }
  await sweep()
  const sweeper = setInterval(() => void sweep(), SWEEP_INTERVAL_MS)

  let stopping: Promise<void> | undefined
  const stop = (signal = 'stop'): Promise<void> =>
    (stopping ??= (async () => {
      log.info({ signal, open: relay.counters.open, inflight_ops: relay.inFlightOps }, 'stopping: no new connections')
      clearInterval(sweeper)
      clearInterval(diskTimer)
      await server.stopAccepting()
      // Let PUTs already received reach disk and be acked, up to the shutdown timeout.
      const until = Date.now() + config.timeouts.shutdown
      while (relay.inFlightOps > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
      await commit.drain()
      await udp?.close()
      await server.close()
      await admin?.close()
      // The usage counts, so that the next start need not scan the store (skipped if work is still unfinished).
      const usageSaved = await store.saveUsage().catch((err: unknown) => {
        log.error({ error: (err as Error).message }, 'cannot save usage counts')
        return false
      })
      await db.close()
      log.info({ signal, usage_saved: usageSaved, ...relay.counters, ...(udp ? { udp: udp.listener.counters } : {}), commits: commit.batches, unfinished_ops: relay.inFlightOps }, 'stopped')
    })())
  return { config, relay, url: server.url, udpUrl: udp?.url, adminUrl: admin?.url, stop }
}
