/**
 * One field client of `bench:loss`, run inside the client namespace by
 * bench/loss.ts. It queues --count messages of --size random bytes at once
 * (written offline, all waiting when the window opens), sends them to
 * --target with one system, and prints a JSON line for each message the far
 * side acknowledged:
 *
 *   {"ack":K,"ms":LATENCY}   K = 0..count-1, LATENCY = queued → acknowledged
 *
 * then {"done":true} when every message is acknowledged or given up. The
 * harness kills it at the time limit; the acks printed so far are the result.
 *
 *   chapar-udp, chapar-ws  Chapar's real sync driver (src/client), one report
 *                          per message; acknowledged = the relay's fsynced ack.
 *   mqtt-qos1              MQTT.js, QoS 1, persistent session (clean: false),
 *                          its own reconnect and resend; acknowledged = PUBACK.
 *   naive-retry            one HTTP POST per message, in turn, each wrapped in
 *                          p-retry with its default settings; acknowledged =
 *                          200 after the server's fsync.
 *
 *   node dist/bench/loss-worker.js --system S --target URL --count N --size BYTES --client I [--rate KBPS] [--ws-streams N]
 *
 * With CHAPAR_BENCH_TRACE=1 in its environment a Chapar worker also writes
 * every sync event and retry to stderr, with ms since its start.
 */
import mqtt from 'mqtt'
import pRetry from 'p-retry'
import { runSync } from '../src/client/sync-driver.js'
import { connectRelay, DEFAULT_WS_STREAMS, MAX_WS_STREAMS } from '../src/client/transports.js'
import { systemEnv } from '../src/protocol/env.js'
import { arg, fieldClient } from './field-client.js'

const system = arg('system')
const target = arg('target')
const count = Number(arg('count'))
const size = Number(arg('size'))
const client = Number(arg('client'))
const rateKbps = Number(arg('rate', '512'))
const wsStreams = Number(arg('ws-streams', String(DEFAULT_WS_STREAMS)))
if (!(Number.isInteger(wsStreams) && wsStreams >= 1 && wsStreams <= MAX_WS_STREAMS)) throw new RangeError(`--ws-streams must be a whole number 1–${MAX_WS_STREAMS}, got ${arg('ws-streams', '')}`)

/** Message k: its client and index in the first 8 bytes, then random bytes. */
function payload(k: number): Uint8Array {
  const b = systemEnv.randomBytes(size)
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  if (size >= 8) {
    v.setUint32(0, client)
    v.setUint32(4, k)
  }
  return b
}

const messages = Array.from({ length: count }, (_, k) => payload(k))
const acked = new Set<number>()
let t0 = 0
function ack(k: number): void {
  if (acked.has(k)) return
  acked.add(k)
  process.stdout.write(JSON.stringify({ ack: k, ms: Math.round(performance.now() - t0) }) + '\n')
  // Every message is acknowledged: that is the result; the client's other business (its mailbox, closing) is not measured.
  if (acked.size === count) finish()
}

function finish(): never {
  process.stdout.write(JSON.stringify({ done: true, acked: acked.size }) + '\n')
  process.exit(0)
}

async function chapar(): Promise<void> {
  const { ctx } = await fieldClient(
    messages.map((data, k) => ({ name: `report-${client}-${k}.bin`, data })),
    ack,
  )
  t0 = performance.now()
  const trace = process.env.CHAPAR_BENCH_TRACE ? (...a: unknown[]) => process.stderr.write(`${Math.round(performance.now() - t0)} ${a.map(String).join(' ')}\n`) : undefined
  if (trace) {
    const inner = ctx.onEvent!
    ctx.onEvent = (e) => {
      trace('event', JSON.stringify(e).slice(0, 200))
      inner(e)
    }
  }
  await runSync(ctx, { relays: [target], untilEmpty: true, timeoutMs: 24 * 3_600_000, connect: (url, role, login) => connectRelay(url, { rateKbps, wsStreams: role === 'upload' ? wsStreams : 1, login }), onRetry: (relay, err, delay, role) => trace?.('retry', role, Math.round(delay), (err as Error).message) })
}

async function mqttQos1(): Promise<void> {
  const c = mqtt.connect(target, { clientId: `chapar-bench-${client}-${process.pid}`, clean: false, protocolVersion: 4 })
  c.on('error', () => {
    // MQTT.js reconnects on its own (reconnectPeriod, default 1 s)
  })
  t0 = performance.now()
  await Promise.all(
    messages.map(
      (m, k) =>
        new Promise<void>((resolve) => {
          c.publish(`chapar-bench/${client}`, Buffer.from(m.buffer, m.byteOffset, m.byteLength), { qos: 1 }, (err) => {
            if (!err) ack(k)
            resolve()
          })
        }),
    ),
  )
  await c.endAsync()
}

async function naiveRetry(): Promise<void> {
  t0 = performance.now()
  for (const [k, m] of messages.entries()) {
    try {
      await pRetry(async () => {
        const res = await fetch(`${target}/messages/${client}-${k}`, { method: 'POST', body: m, headers: { 'content-type': 'application/octet-stream' } })
        await res.arrayBuffer()
        if (!res.ok) throw new Error(`HTTP ${res.status}`)
      })
      ack(k)
    } catch {
      // p-retry gave up on this one: the hurried developer moves on
    }
  }
}

const run = { 'chapar-udp': chapar, 'chapar-ws': chapar, 'mqtt-qos1': mqttQos1, 'naive-retry': naiveRetry }[system]
if (!run) throw new Error(`unknown --system ${system}`)
await run()
finish()
