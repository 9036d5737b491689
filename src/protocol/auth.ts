/**
 * Mailbox login. The relay sends a random challenge in HELLO; the client
 * answers AUTH = Ed25519(sk, AUTH_DOMAIN ‖ challenge ‖ origin), where
 * `origin` is the relay it meant to dial, as scheme://host:port. The relay
 * accepts only origins it is configured to answer for, so a hostile relay
 * cannot forward an honest relay's challenge to a client and replay the
 * answer there to read or DONE that client's mail (a relay-in-the-middle).
 */
import { concat, utf8 } from './bytes.js'
import { InputError } from './errors.js'

/** Domain separation for the mailbox-ownership proof. */
export const AUTH_DOMAIN = utf8('chapar/v1/auth\0')
/** Longest origin an AUTH may carry. */
export const MAX_ORIGIN_BYTES = 255

const DEFAULT_PORTS: Record<string, number> = { 'ws:': 80, 'wss:': 443 }

/**
 * A relay URL reduced to what AUTH signs: lowercase scheme and host, the
 * port always explicit, no path. `ws://Relay.example` → `ws://relay.example:80`.
 */
export function relayOrigin(url: string): string {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw new InputError(`not a relay URL: "${url}"`)
  }
  const port = u.port !== '' ? Number(u.port) : DEFAULT_PORTS[u.protocol]
  if (port === undefined || u.hostname === '') throw new InputError(`relay URL needs a host and port: "${url}"`)
  const origin = `${u.protocol}//${u.hostname.toLowerCase()}:${port}`
  if (utf8(origin).length > MAX_ORIGIN_BYTES) throw new InputError(`relay URL is too long: "${url}"`)
  return origin
}

/** The bytes an AUTH signature covers. */
export function authMessage(challenge: Uint8Array, origin: string): Uint8Array {
  return concat([AUTH_DOMAIN, challenge, utf8(origin)])
}
