/**
 * udp:// relay URLs (udp://host:port?key=<relay's X25519 public key,
 * base64url>) and the datagram transport's command-line tuning.
 */
import { isIPv6 } from 'node:net'
import { MAX_MTU, MIN_MTU } from './datagram-session.js'
import { InputError } from './errors.js'

export interface DatagramTuning {
  /** Largest packet (UDP payload), bytes. */
  mtu?: number
  /** Send pace, kbit/s. */
  rateKbps?: number
}

export interface UdpRelayAddress {
  host: string
  port: number
  /** The relay's static X25519 public key. */
  key: Uint8Array
}

/** Parse udp://host:port?key=…; one-line error otherwise. */
export function parseUdpUrl(s: string): UdpRelayAddress {
  let u: URL
  try {
    u = new URL(s)
  } catch {
    throw new InputError(`relay "${s}" is not a URL; expected udp://host:port?key=…`)
  }
  if (u.protocol !== 'udp:') throw new InputError(`relay "${s}" is not a udp:// URL`)
  const port = Number(u.port)
  if (u.hostname === '' || u.port === '' || !(port > 0 && port < 65536)) throw new InputError(`relay "${s}" needs a host and port: udp://host:port?key=…`)
  const k = u.searchParams.get('key')
  if (!k) throw new InputError(`relay "${s}" needs the relay's key: udp://host:port?key=… (printed by \`chapar relay --udp-port\`)`)
  const key = new Uint8Array(Buffer.from(k, 'base64url'))
  if (key.length !== 32 || Buffer.from(key).toString('base64url') !== k) throw new InputError(`relay "${s}": key must be 32 bytes in base64url (43 characters)`)
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  return { host, port, key }
}

export function formatUdpUrl(host: string, port: number, key: Uint8Array): string {
  const h = isIPv6(host) ? `[${host}]` : host
  return `udp://${h}:${port}?key=${Buffer.from(key).toString('base64url')}`
}

/** --rate and --mtu for udp:// relays. */
export function datagramOptions(opts: { rate?: string; mtu?: string }, rateFlag = '--rate'): DatagramTuning {
  const o: DatagramTuning = {}
  if (opts.rate !== undefined) {
    const r = Number(opts.rate)
    if (!(Number.isFinite(r) && r >= 1 && r <= 10_000_000)) throw new InputError(`${rateFlag} must be a number of kbit/s from 1 to 10000000, got "${opts.rate}"`)
    o.rateKbps = r
  }
  if (opts.mtu !== undefined) {
    const m = Number(opts.mtu)
    if (!(Number.isInteger(m) && m >= MIN_MTU && m <= MAX_MTU)) throw new InputError(`--mtu must be a whole number of bytes from ${MIN_MTU} to ${MAX_MTU}, got "${opts.mtu}"`)
    o.mtu = m
  }
  return o
}

