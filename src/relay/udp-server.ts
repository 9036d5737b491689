/** The relay's UDP server: one socket, packets handed to a DatagramListener (which holds the sessions). */
import dgram from 'node:dgram'
import { isIPv6 } from 'node:net'
import { formatUdpUrl } from '../protocol/udp-url.js'
import { systemEnv } from '../protocol/env.js'
import { DatagramListener } from './datagram-listener.js'
import type { Relay } from './relay-engine.js'

/** Largest packet read; anything longer is not ours. */
const MAX_PACKET_BYTES = 65_535

export interface UdpRelayServer {
  readonly url: string
  readonly port: number
  readonly listener: DatagramListener<{ address: string; port: number }>
  close(): Promise<void>
}

export function listenUdp(relay: Relay, options: { host: string; port: number; secretKey: Uint8Array; mtu?: number; rateKbps?: number }): Promise<UdpRelayServer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type: isIPv6(options.host.replace(/^\[|\]$/g, '')) ? 'udp6' : 'udp4', recvBufferSize: 4 * 1024 * 1024 })
    const listener = new DatagramListener<{ address: string; port: number }>(relay, {
      env: systemEnv,
      secretKey: options.secretKey,
      ...(options.mtu !== undefined ? { mtu: options.mtu } : {}),
      ...(options.rateKbps !== undefined ? { rateKbps: options.rateKbps } : {}),
      send: (to, packet) => socket.send(packet, to.port, to.address, () => {}),
      peerOf: (a) => a.address,
    })
    socket.on('message', (msg, rinfo) => {
      if (msg.length > MAX_PACKET_BYTES) return
      listener.receive(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), { address: rinfo.address, port: rinfo.port })
    })
    socket.once('error', reject)
    socket.bind(options.port, options.host.replace(/^\[|\]$/g, ''), () => {
      socket.off('error', reject)
      socket.on('error', () => {}) // per-packet send errors (ICMP unreachable) are the sessions' timeouts' business
      const port = socket.address().port
      resolve({
        url: formatUdpUrl(options.host.replace(/^\[|\]$/g, ''), port, listener.publicKey),
        port,
        listener,
        close: () =>
          new Promise<void>((res) => {
            listener.stop(true)
            // Let the CLOSE packets leave.
            setTimeout(() => socket.close(() => res()), 50)
          }),
      })
    })
  })
}
