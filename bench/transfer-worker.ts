/**
 * One field client's upload, run inside a network namespace by
 * bench/transfer.ts and tests/e2e/netns.test.ts: compose one report of
 * --size bytes, sync it to --relay (ws:// or udp://) with the real driver,
 * and print one JSON line: when the first PUT left, when the relay's
 * fsynced ack came back, the envelope's size, and the datagram
 * connection's own counters.
 *
 *   node dist/bench/transfer-worker.js --relay URL --size BYTES [--rate KBPS] [--timeout MS]
 */
import { runSync } from '../src/client/sync-driver.js'
import { connectRelay } from '../src/client/transports.js'
import { systemEnv } from '../src/protocol/env.js'
import { FrameType } from '../src/protocol/frames.js'
import { toHex } from '../src/protocol/bytes.js'
import { arg, fieldClient } from './field-client.js'

const relay = arg('relay')
const size = Number(arg('size'))
const rateKbps = Number(arg('rate', '512'))
const timeoutMs = Number(arg('timeout', '300000'))

let t0 = 0
let firstPutMs: number | undefined
let acceptedMs: number | undefined
const { ctx, reports } = await fieldClient([{ name: 'video.mp4', data: systemEnv.randomBytes(size) }], () => {
  if (acceptedMs === undefined) acceptedMs = performance.now() - t0
})
const report0 = reports[0]!
t0 = performance.now()
const conns: Array<{ stats?: { bytesSent: number; packetsSent: number; loss: number } }> = []
const report = await runSync(ctx, {
  relays: [relay],
  untilEmpty: true,
  timeoutMs,
  connect: async (url) => {
    const conn = await connectRelay(url, { rateKbps })
    conns.push(conn as (typeof conns)[number])
    const send = conn.link.send
    conn.link.send = (frame, priority) => {
      if (firstPutMs === undefined && frame[0] === FrameType.PUT && toHex(frame.subarray(1, 33)) === report0.id) firstPutMs = performance.now() - t0
      send(frame, priority)
    }
    return conn
  },
})
const stats = conns.map((x) => x.stats).filter((s) => s !== undefined)
process.stdout.write(
  JSON.stringify({
    ok: acceptedMs !== undefined,
    timed_out: report.timedOut,
    envelope_bytes: report0.envelopeBytes,
    first_put_ms: firstPutMs === undefined ? null : Math.round(firstPutMs),
    accepted_ms: acceptedMs === undefined ? null : Math.round(acceptedMs),
    connections: conns.length,
    datagram_bytes_sent: stats.reduce((n, s) => n + s.bytesSent, 0),
    datagram_packets_sent: stats.reduce((n, s) => n + s.packetsSent, 0),
    // The upload connection's (the one that sent the most): what the sender measured from the relay's acks.
    loss_estimate: stats.length ? stats.reduce((a, b) => (b.packetsSent > a.packetsSent ? b : a)).loss : null,
  }) + '\n',
)
process.exit(0)
