/**
 * The relay's configuration: defaults, then a JSON file (`--config`), then
 * environment variables, then flags; each later source overrides the
 * earlier. The merged whole is validated by one zod schema, and a bad field
 * is named by its path (`limits.perSender.rate: …`) on one line.
 */
import { readFileSync } from 'node:fs'
import { z } from 'zod'
import { relayOrigin } from '../protocol/auth.js'
import { parseDuration } from '../protocol/duration.js'
import { MAX_ENVELOPE_BYTES, RELAY_MAX_TTL_MS } from '../protocol/envelope.js'
import { InputError } from '../protocol/errors.js'
import { MAX_MTU, MIN_MTU } from '../protocol/datagram-session.js'
import { RELAY_MAX_OPEN_FILES } from '../queue/db.js'
import { parseKey } from './access.js'

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 }

/** A byte count: a whole number, or a string such as `64MiB`, `1.5GB`, `512kib`. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(s.trim())
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined) throw new InputError(`bad size "${s}": use bytes or e.g. 64MiB, 1.5GB`)
  return Math.round(Number(m[1]) * unit)
}

const Size = z
  .union([z.number(), z.string()])
  .transform((v, ctx) => {
    try {
      const n = typeof v === 'number' ? v : parseSize(v)
      if (Number.isSafeInteger(n) && n >= 0) return n
      ctx.addIssue({ code: 'custom', message: `expected a whole number of bytes, got ${JSON.stringify(v)}` })
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message })
    }
    return z.NEVER
  })

/** A duration: a string such as `500ms`, `30s`, `10m`, `35d` (a bare number would be ambiguous in JSON). */
const Duration = z.string().transform((v, ctx) => {
  try {
    return parseDuration(v)
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message })
    return z.NEVER
  }
})

const Port = z.number().int().min(0).max(65535)

const Key = z.string().refine(
  (k) => {
    try {
      parseKey(k)
      return true
    } catch {
      return false
    }
  },
  { message: 'expected a chapar address (ch1.…) or a 64-hex-digit signing key' },
)

const PublicUrl = z.string().refine(
  (u) => {
    if (!/^(wss?|udp):\/\//i.test(u)) return false
    try {
      relayOrigin(u)
      return true
    } catch {
      return false
    }
  },
  { message: 'expected a ws://, wss:// or udp:// URL' },
)

/** A token bucket: `rate` bytes per second, up to `burst` bytes at once. */
const Bucket = z
  .object({
    rate: Size.pipe(z.number().min(1)),
    burst: Size.pipe(z.number().min(1)),
  })
  .strict()

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

export const RelayConfigSchema = z
  .object({
    /** Address of the public WebSocket and HTTP listener. */
    host: z.string().min(1).default('127.0.0.1'),
    port: Port.default(7000),
    /** LevelDB directory. */
    data: z.string().min(1).default('./data'),
    /** URLs clients dial this relay by; mailbox logins for other origins are refused. */
    publicUrls: z.array(PublicUrl).default([]),
    maxEnvelope: Size.pipe(z.number().min(1024).max(MAX_ENVELOPE_BYTES)).default(MAX_ENVELOPE_BYTES),
    maxTtl: Duration.pipe(z.number().max(10 * 365 * 86_400_000)).prefault(`${RELAY_MAX_TTL_MS / 86_400_000}d`),
    store: z
      .object({
        /** LevelDB table files kept open (and memory-mapped): bounds the store's share of RSS at about 2 MiB each. */
        maxOpenFiles: z.number().int().min(20).max(10_000).default(RELAY_MAX_OPEN_FILES),
      })
      .strict()
      .prefault({}),
    udp: z
      .object({
        /** Serve the datagram transport on this UDP port; null: off. */
        port: Port.nullable().default(null),
        /** Pace of replies per client, kbit/s. */
        rate: z.number().min(1).max(10_000_000).default(512),
        mtu: z.number().int().min(MIN_MTU).max(MAX_MTU).default(1200),
      })
      .strict()
      .prefault({}),
    access: z
      .object({
        /** open: anyone may upload (uploads never log in). allowlist: only connections logged in with an `allow` key. */
        mode: z.enum(['open', 'allowlist']).default('open'),
        /** Chapar addresses (ch1.…) or 64-hex signing keys. */
        allow: z.array(Key).default([]),
        /** Banned keys: no login, no upload, in either mode. */
        deny: z.array(Key).default([]),
      })
      .strict()
      .prefault({}),
    /** Behind a reverse proxy: take the client's address from X-Forwarded-For (only set this if the proxy always sets it). */
    trustProxy: z.boolean().default(false),
    limits: z
      .object({
        /** Upload bytes per sender: its signing key once it logged in, else its network address. null: no limit. */
        perSender: Bucket.nullable().default(null),
        /** Upload bytes into one mailbox. null: no limit. */
        perMailbox: Bucket.nullable().default(null),
        /** Frame bytes on one connection. null: no limit. */
        perConnection: Bucket.nullable().prefault({ rate: '16MiB', burst: '32MiB' }),
        /** Most open sockets on the public port. */
        maxConnections: z.number().int().min(1).default(20_000),
      })
      .strict()
      .prefault({}),
    quotas: z
      .object({
        /** Bytes one mailbox may hold (envelopes still arriving included). null: no quota. */
        mailboxBytes: Size.nullable().prefault('1GiB'),
        /** Whole envelopes one mailbox may hold. null: no quota. */
        mailboxMessages: z.number().int().min(1).nullable().default(100_000),
        /** Bytes the whole relay may hold. null: no quota. */
        totalBytes: Size.nullable().default(null),
        /** Refuse new envelopes while the data directory's filesystem is fuller than this fraction. */
        diskHighWater: z.number().gt(0).max(1).default(0.95),
      })
      .strict()
      .prefault({}),
    admin: z
      .object({
        /** Metrics and the admin API listen here; keep it on loopback or a private network. */
        host: z.string().min(1).default('127.0.0.1'),
        /** null: no admin listener. */
        port: Port.nullable().default(null),
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        /** Ping every client this often. */
        heartbeat: Duration.pipe(z.number().min(1000)).prefault('30s'),
        /** Cut a socket that sent no byte for this long (half-open, slowloris, dead link). */
        idle: Duration.pipe(z.number().min(1000)).prefault('60s'),
        /** Time to receive an HTTP request's headers (and a WebSocket upgrade). */
        headers: Duration.pipe(z.number().min(100)).prefault('10s'),
        /** Time to receive a whole plain HTTP request. */
        request: Duration.pipe(z.number().min(100)).prefault('30s'),
        /** On SIGTERM, how long to wait for work in flight before closing anyway. */
        shutdown: Duration.prefault('10s'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(LOG_LEVELS).default('info'),
        /** Also log every stored and delivered envelope (ids and sizes; still no content or keys). */
        envelopes: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
  })
  .strict()

export type RelayConfig = z.output<typeof RelayConfigSchema>
/** The shape of relay.json: every field optional. */
export type RelayConfigInput = z.input<typeof RelayConfigSchema>

/** How a setting is read from a flag or an environment variable. */
interface Setting {
  /** Path in the config object. */
  path: string
  /** Commander's property name for the flag. */
  flag: string
  env: string
  /** Turn the flag or variable's text into the config value (the schema still validates it). */
  parse: (s: string) => unknown
}

const asNumber = (s: string): unknown => (s.trim() !== '' && Number.isFinite(Number(s)) ? Number(s) : s)
const asNullablePort = (s: string): unknown => (s === 'off' || s === 'none' ? null : asNumber(s))
const asString = (s: string): unknown => s
const asSize = (s: string): unknown => (/^\d+$/.test(s.trim()) ? Number(s) : s)
const asBool = (s: string): unknown => (/^(1|true|yes|on)$/i.test(s) ? true : /^(0|false|no|off)$/i.test(s) ? false : s)
const asList = (s: string | string[]): unknown => (Array.isArray(s) ? s : s.split(',').map((x) => x.trim()).filter(Boolean))

/** Every setting a flag or an environment variable can override. */
export const SETTINGS: readonly Setting[] = [
  { path: 'host', flag: 'host', env: 'CHAPAR_RELAY_HOST', parse: asString },
  { path: 'port', flag: 'port', env: 'CHAPAR_RELAY_PORT', parse: asNumber },
  { path: 'data', flag: 'data', env: 'CHAPAR_RELAY_DATA', parse: asString },
  { path: 'publicUrls', flag: 'publicUrl', env: 'CHAPAR_RELAY_PUBLIC_URLS', parse: asList as (s: string) => unknown },
  { path: 'maxEnvelope', flag: 'maxEnvelope', env: 'CHAPAR_RELAY_MAX_ENVELOPE', parse: asSize },
  { path: 'maxTtl', flag: 'maxTtl', env: 'CHAPAR_RELAY_MAX_TTL', parse: asString },
  { path: 'udp.port', flag: 'udpPort', env: 'CHAPAR_RELAY_UDP_PORT', parse: asNullablePort },
  { path: 'udp.rate', flag: 'udpRate', env: 'CHAPAR_RELAY_UDP_RATE', parse: asNumber },
  { path: 'udp.mtu', flag: 'mtu', env: 'CHAPAR_RELAY_MTU', parse: asNumber },
  { path: 'access.mode', flag: 'access', env: 'CHAPAR_RELAY_ACCESS', parse: asString },
  { path: 'trustProxy', flag: 'trustProxy', env: 'CHAPAR_RELAY_TRUST_PROXY', parse: asBool },
  { path: 'admin.host', flag: 'adminHost', env: 'CHAPAR_RELAY_ADMIN_HOST', parse: asString },
  { path: 'admin.port', flag: 'adminPort', env: 'CHAPAR_RELAY_ADMIN_PORT', parse: asNullablePort },
  { path: 'log.level', flag: 'logLevel', env: 'CHAPAR_RELAY_LOG_LEVEL', parse: asString },
  { path: 'log.envelopes', flag: 'verbose', env: 'CHAPAR_RELAY_LOG_ENVELOPES', parse: asBool },
]

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.')
  let o = obj
  for (const k of keys.slice(0, -1)) {
    const next = o[k]
    if (typeof next !== 'object' || next === null || Array.isArray(next)) o[k] = {}
    o = o[k] as Record<string, unknown>
  }
  o[keys.at(-1)!] = value
}

function describeIssue(issue: z.core.$ZodIssue, source: string, given: ReadonlyMap<string, string>): string {
  const where = issue.path.length ? issue.path.join('.') : '(top level)'
  // A value from a flag or an environment variable is named by it.
  for (let n = issue.path.length; n > 0; n--) {
    const by = given.get(issue.path.slice(0, n).join('.'))
    if (by) {
      source = by
      break
    }
  }
  let msg = issue.message.replace(/^Invalid input: /, '')
  if (issue.code === 'unrecognized_keys') msg = `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`
  else if (issue.input !== undefined && issue.code !== 'custom') msg = msg.replace(/, received \w+$/, '') + `, got ${JSON.stringify(issue.input)?.slice(0, 80)}`
  return `${source}: ${where}: ${msg}`
}

/** Validate a merged config object; InputError naming the first bad field. */
export function validateRelayConfig(raw: unknown, source = 'relay config', given: ReadonlyMap<string, string> = new Map()): RelayConfig {
  const r = RelayConfigSchema.safeParse(raw, { reportInput: true })
  if (!r.success) throw new InputError(describeIssue(r.error.issues[0]!, source, given))
  return r.data
}

export interface ConfigSources {
  /** Path of a JSON config file. */
  file?: string | undefined
  env?: NodeJS.ProcessEnv
  /** Commander's parsed options (only those the user gave). */
  flags?: Record<string, unknown>
}

/** Defaults ← file ← environment ← flags, validated. */
export function loadRelayConfig(src: ConfigSources): RelayConfig {
  let merged: Record<string, unknown> = {}
  let source = 'relay config'
  if (src.file) {
    let text: string
    try {
      text = readFileSync(src.file, 'utf8')
    } catch (err) {
      throw new InputError(`cannot read config ${src.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    try {
      merged = JSON.parse(text) as Record<string, unknown>
    } catch (err) {
      throw new InputError(`config ${src.file} is not valid JSON: ${(err as Error).message}`)
    }
    if (typeof merged !== 'object' || merged === null || Array.isArray(merged)) throw new InputError(`config ${src.file} must hold a JSON object`)
    source = src.file
  }
  /** Config path → the environment variable or flag that set it. */
  const given = new Map<string, string>()
  for (const s of SETTINGS) {
    const v = src.env?.[s.env]
    if (v !== undefined && v !== '') {
      setPath(merged, s.path, s.parse(v))
      given.set(s.path, s.env)
    }
  }
  for (const s of SETTINGS) {
    const v = src.flags?.[s.flag]
    if (v !== undefined) {
      setPath(merged, s.path, typeof v === 'string' || Array.isArray(v) ? s.parse(v as string) : v)
      given.set(s.path, '--' + s.flag.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()))
    }
  }
  return validateRelayConfig(merged, source, given)
}

/** The effective config as JSON an operator can save and pass back with --config (durations and sizes in their canonical units). */
export function printableConfig(c: RelayConfig): Record<string, unknown> {
  const ms = (n: number): string => (n % 86_400_000 === 0 ? `${n / 86_400_000}d` : n % 3600_000 === 0 ? `${n / 3600_000}h` : n % 60_000 === 0 ? `${n / 60_000}m` : n % 1000 === 0 ? `${n / 1000}s` : `${n}ms`)
  return {
    ...c,
    maxTtl: ms(c.maxTtl),
    timeouts: Object.fromEntries(Object.entries(c.timeouts).map(([k, v]) => [k, ms(v)])),
  }
}
