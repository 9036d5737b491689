/**
 * The datagram transport on the client side: a connection to a relay's
 * udp:// address carried by a DatagramSession (coded, paced, acked for
 * heavy loss). There is no handshake: the first packet already carries
 * frames, sealed for the relay's static key, which the URL names:
 *
 *   udp://host:port?key=<relay's public key, base64url>
 *
 * `chapar relay --udp-port N` prints that URL when it starts.
 */
import dgram from 'node:dgram'
import { isIPv6 } from 'node:net'
import { type DatagramTuning, parseUdpUrl } from '../protocol/udp-url.js'
import { AEAD_TAG_BYTES, CLIENT_HEADER_BYTES, CLIENT_TAG, clientKeys, openPacket, peekHeader, RELAY_TAG, sealPacket } from '../protocol/datagram-crypto.js'
import { DatagramSession, DEFAULT_MTU, DEFAULT_RATE_KBPS, type DatagramStats } from '../protocol/datagram-session.js'
import { type Env, systemEnv } from '../protocol/env.js'
import { MAX_FRAME_BYTES } from '../protocol/frames.js'
import { FrameHandoff, type WsConnection } from './ws-transport.js'

export interface DatagramOptions extends DatagramTuning {
  /** Called once when the connection ends, after the engine has been told. */
  onClosed?: () => void
  /**
   * What this client last measured on the way to each relay (by relay key):
   * a connection starts from it instead of the first-contact guess, so a
   * short report on a good link is not sent as if the link were terrible.
   */
  lossMemory?: Map<string, number>
}

/** The CLI's memory: one process is one client. */
const processLossMemory = new Map<string, number>()

export interface ClientDatagramConnection {
  conn: WsConnection & { stats: DatagramStats }
  /** Feed one packet that arrived from the relay. */
  receive(packet: Uint8Array): void
}

/**
 * The transport-independent half: a connection that sends sealed packets
 * through `transmit` and is fed the packets that come back. connectUdp puts
 * a socket under it; the simulator puts its lossy link.
 */
export function clientDatagramConnection(env: Env, relayKey: Uint8Array, transmit: (packet: Uint8Array) => void, options: DatagramOptions = {}): ClientDatagramConnection {
  const { ephemeralPk, keys } = clientKeys(relayKey, env.randomBytes(32))
  const handoff = new FrameHandoff()
  const memoryKey = Buffer.from(relayKey).toString('hex')
  const remembered = options.lossMemory?.get(memoryKey)
  const session: DatagramSession = new DatagramSession({
    ...(remembered !== undefined ? { initialLoss: remembered } : {}),
    env,
    transmit: (pn, body) => transmit(sealPacket(CLIENT_TAG, keys.up, pn, body, ephemeralPk)),
    packetOverhead: CLIENT_HEADER_BYTES + AEAD_TAG_BYTES,
    mtu: options.mtu ?? DEFAULT_MTU,
    rateKbps: options.rateKbps ?? DEFAULT_RATE_KBPS,
    maxFrameBytes: MAX_FRAME_BYTES,
    opener: true,
    onFrame: (f) => handoff.frame(f),
    onClose: (reason) => {
      const measured = session.measuredLoss
      if (measured !== undefined) options.lossMemory?.set(memoryKey, measured)
      handoff.close(reason)
      options.onClosed?.()
    },
  })
  return {
    conn: {
      reliable: true,
      transportTimeouts: true,
      link: { send: (frame, priority) => session.send(frame, priority), close: (reason) => session.close(reason) },
      onFrame: handoff.onFrame,
      onClose: handoff.onClose,
      stats: session.stats,
    },
    receive: (packet) => {
      const h = peekHeader(packet)
      if (!h || h.tag !== RELAY_TAG) return
      const body = openPacket(h, keys.down, packet)
      if (body) session.receive(h.pn, body) // anything else is forged, corrupted or stray: dropped unseen
    },
  }
}

/** Open a datagram connection to a relay. Resolves at once: there is no handshake to wait for. */
export async function connectUdp(url: string, options: DatagramOptions = {}): Promise<WsConnection> {
  const addr = parseUdpUrl(url)
  const socket = dgram.createSocket(isIPv6(addr.host) ? 'udp6' : 'udp4')
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject)
    socket.connect(addr.port, addr.host, () => {
      socket.off('error', reject)
      resolve()
    })
  })
  let open = true
  const c = clientDatagramConnection(
    systemEnv,
    addr.key,
    (packet) => {
      if (open) socket.send(packet, () => {})
    },
    {
      lossMemory: processLossMemory,
      ...options,
      onClosed: () => {
        options.onClosed?.()
        // Let the CLOSE packets leave before the socket goes.
        setTimeout(() => {
          open = false
          socket.close()
        }, 50).unref()
      },
    },
  )
  socket.on('message', (msg) => c.receive(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength)))
  // ICMP unreachable and the like: the session's own timeouts decide, as they would for silent loss.
  socket.on('error', () => {})
  return c.conn
}
