/**
 * `chapar sim` options: defaults, built-in profiles, scenario files and
 * validation. Every option can come from a flag, a `--scenario` JSON file
 * (same names, camelCase or kebab-case) or a `--profile`; flags win over the
 * file, which wins over the profile. Bad input is an InputError naming the
 * option.
 */
import { parseDuration } from '../protocol/duration.js'
import { InputError } from '../protocol/errors.js'
import { MAX_FILE_BYTES } from '../protocol/envelope.js'
import { GilbertLoss, type LossModelName } from './link.js'

export interface SimOptions {
  clients: number
  recipients: number
  relays: number
  messages: number
  size: number | 'mix'
  loss: number
  recipientLoss: number | undefined
  lossModel: LossModelName
  burst: number
  /** Loss swinging between min and max (profiles only). */
  lossVary: { min: number; max: number; periodMs: number } | undefined
  rttMs: number
  jitterMs: number
  bandwidthKbps: number
  mtu: number
  duplicate: number
  reorder: number
  outage: { upMs: number; downMs: number } | undefined
  relayCrashEveryMs: number | undefined
  relayRestartMs: number
  durationMs: number
  seed: number
  /** Field clients sync again this often until their reports are delivered. */
  pollMs: number
  ttlMs: number
  fsyncMs: number
  queueMs: number
  /** How connections travel: WebSocket over the TCP model, or the coded datagram transport. */
  transport: 'ws' | 'datagram'
  /** The datagram transport's pace; undefined = the link's bandwidth. */
  rateKbps: number | undefined
}

export const DEFAULTS: SimOptions = {
  clients: 10,
  recipients: 1,
  relays: 1,
  messages: 10,
  size: 2000,
  loss: 0.3,
  recipientLoss: undefined,
  lossModel: 'bernoulli',
  burst: 4,
  lossVary: undefined,
  rttMs: 600,
  jitterMs: 50,
  bandwidthKbps: 512,
  mtu: 1200,
  duplicate: 0,
  reorder: 0,
  outage: undefined,
  relayCrashEveryMs: undefined,
  relayRestartMs: 5_000,
  durationMs: 24 * 3600_000,
  seed: 1,
  pollMs: 10 * 60_000,
  ttlMs: 7 * 24 * 3600_000,
  fsyncMs: 2,
  queueMs: 2_000,
  transport: 'ws',
  rateKbps: undefined,
}

/** The situations field users face. */
export const PROFILES: Record<string, { description: string; options: Partial<SimOptions> }> = {
  'starlink-degraded': {
    description: 'a smuggled satellite terminal: 600 ms RTT, 512 kbit/s, loss swinging between 30% and 80% over 20 minutes',
    options: { rttMs: 600, jitterMs: 80, bandwidthKbps: 512, loss: 0.55, lossVary: { min: 0.3, max: 0.8, periodMs: 20 * 60_000 } },
  },
  'blackout-windows': {
    description: 'long outages with short windows: up 2 minutes, down 30 minutes, 40% loss when up',
    options: { rttMs: 800, jitterMs: 100, bandwidthKbps: 256, loss: 0.4, outage: { upMs: 2 * 60_000, downMs: 30 * 60_000 } },
  },
  'congested-mobile': {
    description: 'an overloaded mobile network: 300 ms RTT with 150 ms jitter, 128 kbit/s, bursty 30% loss, some reordering',
    options: { rttMs: 300, jitterMs: 150, bandwidthKbps: 128, loss: 0.3, lossModel: 'gilbert', burst: 6, reorder: 0.02, duplicate: 0.005 },
  },
}

type Raw = Record<string, unknown>

const NAMES: Record<string, keyof SimOptions> = {
  clients: 'clients',
  recipients: 'recipients',
  relays: 'relays',
  messages: 'messages',
  size: 'size',
  loss: 'loss',
  recipientLoss: 'recipientLoss',
  lossModel: 'lossModel',
  burst: 'burst',
  rtt: 'rttMs',
  jitter: 'jitterMs',
  bandwidth: 'bandwidthKbps',
  mtu: 'mtu',
  duplicate: 'duplicate',
  reorder: 'reorder',
  outage: 'outage',
  relayCrashEvery: 'relayCrashEveryMs',
  relayRestart: 'relayRestartMs',
  duration: 'durationMs',
  seed: 'seed',
  poll: 'pollMs',
  ttl: 'ttlMs',
  fsync: 'fsyncMs',
  queue: 'queueMs',
  transport: 'transport',
  rate: 'rateKbps',
}

/** Option names a sweep may vary. */
export const SWEEPABLE = ['loss', 'recipientLoss', 'burst', 'rtt', 'jitter', 'bandwidth', 'mtu', 'duplicate', 'reorder', 'clients', 'messages', 'size', 'relays', 'rate', 'transport']

const camel = (k: string): string => k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

function int(name: string, v: unknown, min: number, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) throw new InputError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`)
  return n
}

function fraction(name: string, v: unknown, max = 1): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > max) throw new InputError(`--${name} must be a number from 0 to ${max}, got ${JSON.stringify(v)}`)
  return n
}

function positive(name: string, v: unknown, max: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0 || n > max) throw new InputError(`--${name} must be a number above 0 and at most ${max}, got ${JSON.stringify(v)}`)
  return n
}

function duration(name: string, v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return Math.round(v * 1000) // plain numbers are seconds, as on the CLI
  if (typeof v !== 'string') throw new InputError(`--${name} must be a duration such as 90s, 10m or 24h, got ${JSON.stringify(v)}`)
  try {
    return parseDuration(v)
  } catch {
    throw new InputError(`--${name} must be a duration such as 90s, 10m or 24h, got ${JSON.stringify(v)}`)
  }
}

/** `up=30s,down=10m` (or an object with up and down). */
export function parseOutage(v: unknown): { upMs: number; downMs: number } {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Raw
    return { upMs: duration('outage up', o.up), downMs: duration('outage down', o.down) }
  }
  if (typeof v !== 'string') throw new InputError(`--outage must look like up=30s,down=10m, got ${JSON.stringify(v)}`)
  const parts = Object.fromEntries(v.split(',').map((p) => p.split('=').map((x) => x.trim()) as [string, string]))
  const keys = Object.keys(parts).sort().join(',')
  if (keys !== 'down,up') throw new InputError(`--outage must look like up=30s,down=10m, got "${v}"`)
  return { upMs: duration('outage up', parts.up), downMs: duration('outage down', parts.down) }
}

/** Set one option from raw input (a flag's string or a scenario's JSON value). */
function set(o: SimOptions, key: string, v: unknown): void {
  const name = NAMES[camel(key)]
  const flag = key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())
  switch (name) {
    case 'clients':
      o.clients = int(flag, v, 1, 100_000)
      break
    case 'recipients':
      o.recipients = int(flag, v, 1, 10_000)
      break
    case 'relays':
      o.relays = int(flag, v, 1, 16)
      break
    case 'messages':
      o.messages = int(flag, v, 0, 100_000)
      break
    case 'size':
      o.size = v === 'mix' ? 'mix' : int(flag, v, 1, MAX_FILE_BYTES)
      break
    case 'loss':
      o.loss = fraction(flag, v, 0.99)
      break
    case 'recipientLoss':
      o.recipientLoss = fraction(flag, v, 0.99)
      break
    case 'lossModel':
      if (v !== 'bernoulli' && v !== 'gilbert') throw new InputError(`--loss-model must be bernoulli or gilbert, got ${JSON.stringify(v)}`)
      o.lossModel = v
      break
    case 'burst':
      o.burst = positive(flag, v, 10_000)
      if (o.burst < 1) throw new InputError(`--burst is a mean burst length in packets, at least 1, got ${JSON.stringify(v)}`)
      break
    case 'rttMs':
      o.rttMs = fraction('rtt', v, 600_000)
      break
    case 'jitterMs':
      o.jitterMs = fraction('jitter', v, 600_000)
      break
    case 'bandwidthKbps':
      o.bandwidthKbps = positive('bandwidth', v, 10_000_000)
      break
    case 'mtu':
      o.mtu = int('mtu', v, 576, 65_535)
      break
    case 'duplicate':
      o.duplicate = fraction(flag, v, 0.5)
      break
    case 'reorder':
      o.reorder = fraction(flag, v, 0.5)
      break
    case 'outage':
      o.outage = parseOutage(v)
      break
    case 'relayCrashEveryMs':
      o.relayCrashEveryMs = duration('relay-crash-every', v)
      break
    case 'relayRestartMs':
      o.relayRestartMs = duration('relay-restart', v)
      break
    case 'durationMs':
      o.durationMs = duration('duration', v)
      break
    case 'seed':
      o.seed = int('seed', v, 0, 2 ** 32 - 1)
      break
    case 'pollMs':
      o.pollMs = duration('poll', v)
      break
    case 'ttlMs':
      o.ttlMs = duration('ttl', v)
      break
    case 'fsyncMs':
      o.fsyncMs = fraction('fsync', v, 10_000)
      break
    case 'queueMs':
      o.queueMs = duration('queue', v)
      break
    case 'transport':
      if (v !== 'ws' && v !== 'datagram') throw new InputError(`--transport must be ws or datagram, got ${JSON.stringify(v)}`)
      o.transport = v
      break
    case 'rateKbps':
      o.rateKbps = positive('rate', v, 10_000_000)
      break
    default:
      throw new InputError(`unknown simulation option "${key}"`)
  }
}

/** Apply raw options (flags or a scenario object) over `base`. */
export function applyOptions(base: SimOptions, raw: Raw, where = 'option'): SimOptions {
  const o: SimOptions = { ...base }
  for (const [k, v] of Object.entries(raw)) {
    if (v === undefined) continue
    try {
      set(o, k, v)
    } catch (err) {
      if (err instanceof InputError && where !== 'option') throw new InputError(`${where}: ${err.message.replace(/^--/, '')}`)
      throw err
    }
  }
  return validate(o)
}

export function withProfile(name: string): SimOptions {
  const p = PROFILES[name]
  if (!p) throw new InputError(`unknown profile "${name}": choose one of ${Object.keys(PROFILES).join(', ')}`)
  return { ...DEFAULTS, ...p.options }
}

/** Checks that span options. */
export function validate(o: SimOptions): SimOptions {
  if (o.lossModel === 'gilbert') {
    for (const [name, p] of [['loss', o.lossVary?.max ?? o.loss], ['recipient-loss', o.recipientLoss ?? o.loss]] as const) {
      const min = GilbertLoss.minBurst(p)
      if (o.burst < min - 1e-9) throw new InputError(`--burst ${o.burst} is too short for --${name} ${p} with the Gilbert model: bursts must average at least ${min.toFixed(2)} packets`)
    }
  }
  if (o.outage && o.outage.upMs < 1000) throw new InputError('--outage up= must be at least 1s')
  return o
}

/** A swept value as JSON: a number where it is one (loss=0.5), else the text (size=mix, transport=datagram). */
export function sweepValue(v: string): number | string {
  const n = Number(v)
  return v.trim() !== '' && Number.isFinite(n) ? n : v
}

/** Parse a `--sweep NAME=v1,v2,…` value. */
export function parseSweep(s: string): { name: string; values: string[] } {
  const m = /^([a-z-]+)=(.+)$/i.exec(s.trim())
  if (!m) throw new InputError(`--sweep must look like loss=0.3,0.5,0.8, got "${s}"`)
  const name = camel(m[1]!)
  if (!SWEEPABLE.includes(name)) throw new InputError(`--sweep can vary ${SWEEPABLE.join(', ')}; not "${m[1]}"`)
  const values = m[2]!.split(',').map((v) => v.trim()).filter(Boolean)
  if (values.length === 0) throw new InputError('--sweep needs at least one value')
  return { name, values }
}
