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
 *   node dist/bench/loss-worker.js --system S --target URL --count N --size BYTES --client I [--rate KBPS]
 */
import mqtt from 'mqtt'
import pRetry from 'p-retry'
import { generateIdentity } from '../src/client/identity.js'
import { compose } from '../src/client/compose.js'
import { MemoryFileSink } from '../src/client/files.js'
import { runSync } from '../src/client/sync-driver.js'
import type { ClientContext } from '../src/client/sync-engine.js'
import { connectRelay } from '../src/client/transports.js'
import { Kind, Priority } from '../src/protocol/envelope.js'
import { systemEnv } from '../src/protocol/env.js'
import { openMemoryDb } from '../src/queue/db.js'
import { GroupCommit } from '../src/queue/group-commit.js'
import { Inbox } from '../src/queue/inbox.js'
import { Outbox } from '../src/queue/outbox.js'

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? process.argv[i + 1] : fallback
  if (v === undefined) throw new Error(`--${name} is required`)
  return v
}

const system = arg('system')
const target = arg('target')
const count = Number(arg('count'))
const size = Number(arg('size'))
const client = Number(arg('client'))
const rateKbps = Number(arg('rate', '512'))

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
  const db = await openMemoryDb()
  const me = generateIdentity(systemEnv.randomBytes)
  const to = generateIdentity(systemEnv.randomBytes)
  const outbox = new Outbox(db)
  const ids = new Map<string, number>()
  for (const [k, data] of messages.entries()) {
    const c = compose({ outbox, me, to: to.address, content: { kind: Kind.report, file: { name: `report-${client}-${k}.bin`, data } }, now: Date.now(), ttlMs: 86_400_000, priority: Priority.normal, randomBytes: systemEnv.randomBytes })
    await outbox.add(c.record, c.envelope)
    ids.set(c.record.id, k)
  }
  const ctx: ClientContext = {
    me,
    outbox,
    inbox: new Inbox(db, new GroupCommit(db)),
    files: new MemoryFileSink(),
    env: systemEnv,
    locks: new Map(),
    onEvent: (e) => {
      if (e.type === 'accepted') for (const id of e.ids) if (ids.has(id)) ack(ids.get(id)!)
    },
  }
  t0 = performance.now()
  await runSync(ctx, { relays: [target], untilEmpty: true, timeoutMs: 24 * 3_600_000, connect: (url) => connectRelay(url, { rateKbps }) })
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
