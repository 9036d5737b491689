/**
 * Which transport a relay URL names: ws:// and wss:// go over WebSocket,
 * udp:// over the coded datagram transport. The sync driver and the CLI
 * see only this.
 */
import { InputError } from '../protocol/errors.js'
import { formatUdpUrl, parseUdpUrl } from '../protocol/udp-url.js'
import { connectUdp, type DatagramOptions } from './udp-transport.js'
import { connectWsStriped, parseRelayUrl as parseWsUrl, type WsConnection } from './ws-transport.js'

/** WebSocket connections an upload session stripes over by default (connectWsStriped). */
export const DEFAULT_WS_STREAMS = 4
/** Each is a TCP connection and a handshake at the same loss; more gains little (bench:loss) and looks like a flood to a relay. */
export const MAX_WS_STREAMS = 16

export interface RelayConnectOptions extends DatagramOptions {
  /** ws:// and wss:// only: WebSockets to stripe the connection over (uploads; 1 for a mailbox session). */
  wsStreams?: number
  /**
   * Upload connections to a relay that takes uploads only from logged-in
   * keys (HELLO_UPLOAD_LOGIN): the AUTH frame for a stream's challenge. A
   * striped connection logs each stream in itself; otherwise the engine does.
   */
  login?: ((challenge: Uint8Array) => Uint8Array) | undefined
}

/** Validate and normalise a relay URL; a one-line InputError otherwise. */
export function parseRelayUrl(s: string): string {
  if (/^udp:/i.test(s.trim())) {
    const a = parseUdpUrl(s.trim())
    return formatUdpUrl(a.host, a.port, a.key)
  }
  if (/^wss?:/i.test(s.trim())) return parseWsUrl(s.trim())
  throw new InputError(`relay "${s}" must be a ws://, wss:// or udp:// URL`)
}

export function connectRelay(url: string, options: RelayConnectOptions = {}): Promise<WsConnection> {
  return /^udp:/i.test(url) ? connectUdp(url, options) : connectWsStriped(url, options.wsStreams ?? 1, undefined, options.login)
}
