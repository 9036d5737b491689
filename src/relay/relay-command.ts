/** `chapar relay`: the relay on its embedded LevelDB store, behind a WebSocket server and, with --udp-port, a UDP one. */
import { networkInterfaces } from 'node:os'
import path from 'node:path'
import { relayOrigin } from '../protocol/auth.js'
import { parseDuration } from '../protocol/duration.js'
import { systemEnv } from '../protocol/env.js'
import { InputError } from '../protocol/errors.js'
import { openDiskDb } from '../queue/db.js'
import { GroupCommit } from '../queue/group-commit.js'
import { MailboxStore } from '../queue/mailbox.js'
import { Relay } from './relay-engine.js'
import { listenWs } from './ws-server.js'
import { listenUdp, type UdpRelayServer } from './udp-server.js'
import { relayUdpKey } from './relay-key.js'
import { datagramOptions } from '../protocol/udp-url.js'

export const SWEEP_INTERVAL_MS = 60_000

function log(msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(JSON.stringify({ t: new Date().toISOString(), msg, ...fields }) + '\n')
}

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

export async function cmdRelay(opts: {
  host: string
  port: string
  data: string
  maxEnvelope?: string
  maxTtl?: string
  publicUrl?: string[]
  udpPort?: string
  udpRate?: string
  mtu?: string
  verbose?: boolean
}): Promise<number> {
  const udpPort = opts.udpPort === undefined ? undefined : Number(opts.udpPort)
  if (udpPort !== undefined && !(Number.isInteger(udpPort) && udpPort >= 0 && udpPort <= 65535)) throw new InputError(`--udp-port must be an integer 0..65535, got "${opts.udpPort}"`)
  const datagram = datagramOptions({ ...(opts.udpRate !== undefined ? { rate: opts.udpRate } : {}), ...(opts.mtu !== undefined ? { mtu: opts.mtu } : {}) }, '--udp-rate')
  const port = Number(opts.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InputError(`--port must be an integer 0..65535, got "${opts.port}"`)
  const maxEnvelope = opts.maxEnvelope === undefined ? undefined : Number(opts.maxEnvelope)
  if (maxEnvelope !== undefined && !(Number.isSafeInteger(maxEnvelope) && maxEnvelope >= 1024)) {
    throw new InputError(`--max-envelope must be a whole number of bytes ≥ 1024, got "${opts.maxEnvelope}"`)
  }
  const publicUrls = opts.publicUrl ?? []
  for (const u of publicUrls) {
    if (!/^(wss?|udp):\/\//i.test(u)) throw new InputError(`--public-url must be a ws://, wss:// or udp:// URL, got "${u}"`)
    relayOrigin(u)
  }
  const maxTtlMs = opts.maxTtl === undefined ? undefined : parseDuration(opts.maxTtl)
  const dataDir = path.resolve(opts.data)
  let db
  try {
    db = await openDiskDb(dataDir)
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED') throw new InputError(`${dataDir} is in use by another relay`)
    throw new InputError(`cannot open relay data in ${dataDir}: ${(err as Error).message}`)
  }
  const commit = new GroupCommit(db, true)
  const relay = new Relay(new MailboxStore(db, commit), systemEnv, {
    ...(maxEnvelope ? { maxEnvelope } : {}),
    ...(maxTtlMs !== undefined ? { maxTtlMs } : {}),
    origins: authOrigins(opts.host, port, publicUrls, udpPort),
  })
  relay.onEvent = (e) => {
    if (e.type === 'error') log('refused', { code: e.code, reason: e.message })
    else if (opts.verbose && e.type === 'stored') log('stored', { id: e.id, size: e.size })
    else if (opts.verbose && e.type === 'deleted') log('delivered', { count: e.count })
  }
  let server
  try {
    server = await listenWs(relay, { host: opts.host, port })
  } catch (err) {
    await db.close()
    throw new InputError(`cannot listen on ${opts.host}:${port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  let udp: UdpRelayServer | undefined
  if (udpPort !== undefined) {
    try {
      udp = await listenUdp(relay, { host: opts.host, port: udpPort, secretKey: await relayUdpKey(db, systemEnv.randomBytes), ...datagram })
    } catch (err) {
      await server.close()
      await db.close()
      throw new InputError(`cannot listen on udp ${opts.host}:${udpPort}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  if (port === 0 || udpPort === 0) relay.origins = new Set(authOrigins(opts.host, server.port, publicUrls, udp?.port))
  const stats = await relay.store.stats()
  log('relay listening', { url: server.url, ...(udp ? { udp_url: udp.url } : {}), data: dataDir, auth_origins: [...(relay.origins ?? [])], ...stats })
  const sweep = async (): Promise<void> => {
    try {
      const r = await relay.sweep()
      if (r.expired || r.tombstones) log('swept', r)
    } catch (err) {
      log('sweep failed', { error: (err as Error).message })
    }
  }
  await sweep()
  const sweeper = setInterval(() => void sweep(), SWEEP_INTERVAL_MS)
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      log('stopping', { signal: sig, ...relay.counters, ...(udp ? { udp: udp.listener.counters } : {}), commits: commit.batches })
      resolve()
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
  })
  clearInterval(sweeper)
  await udp?.close()
  await server.close()
  await db.close()
  return 0
}
