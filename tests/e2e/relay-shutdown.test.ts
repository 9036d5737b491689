/**
 * SIGTERM in the middle of uploads: the relay stops accepting connections,
 * lets the PUTs it already read reach disk and be acked, then closes. Every
 * envelope it acked is there after a restart, and the process exits 0.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import WebSocket from 'ws'
import { generateIdentity, type Identity } from '../../src/client/identity.js'
import { toHex } from '../../src/protocol/bytes.js'
import { authMessage, relayOrigin } from '../../src/protocol/auth.js'
import { Kind, seal } from '../../src/protocol/envelope.js'
import { decodeFrame, encodeFrame, type Frame, FrameType } from '../../src/protocol/frames.js'
import { messageId } from '../../src/protocol/hash.js'
import { sign } from '../../src/protocol/signature.js'
import { assertBuilt, type RelayProc, startRelay, waitFor } from './cli-helpers.js'

const ENVELOPES = 400
let dir: string
const relays: RelayProc[] = []

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-shutdown-'))
})

afterAll(async () => {
  for (const r of relays) if (r.child.exitCode === null) r.child.kill('SIGKILL')
  await rm(dir, { recursive: true, force: true })
})

function connect(url: string): Promise<{ ws: WebSocket; frames: Frame[]; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false })
    const frames: Frame[] = []
    const closed = new Promise<void>((r) => ws.on('close', () => r()))
    ws.on('message', (d: Buffer) => frames.push(decodeFrame(new Uint8Array(d))))
    ws.on('open', () => resolve({ ws, frames, closed }))
    ws.on('error', reject)
  })
}

async function listAll(url: string, who: Identity): Promise<string[]> {
  const c = await connect(url)
  await waitFor(() => c.frames.length > 0, 5000, 'HELLO')
  const hello = c.frames[0] as Extract<Frame, { type: typeof FrameType.HELLO }>
  const origin = relayOrigin(url)
  c.ws.send(encodeFrame({ type: FrameType.AUTH, signPublicKey: who.address.signPublicKey, signature: sign(authMessage(hello.challenge, origin), who.signSecretKey), origin }))
  c.ws.send(encodeFrame({ type: FrameType.LIST, max: 512 }))
  await waitFor(() => c.frames.some((f) => f.type === FrameType.INDEX), 5000, 'INDEX')
  const index = c.frames.find((f) => f.type === FrameType.INDEX) as Extract<Frame, { type: typeof FrameType.INDEX }>
  c.ws.close()
  return index.entries.map((e) => toHex(e.id))
}

it('acks only what is on disk, finishes the work it read, refuses new connections, exits 0', async () => {
  const data = path.join(dir, 'data')
  const relay = await startRelay(data)
  relays.push(relay)
  const bob = generateIdentity()
  const alice = generateIdentity()
  const puts = Array.from({ length: ENVELOPES }, (_, i) => {
    const env = seal({ from: { address: alice.address, signSecretKey: alice.signSecretKey }, to: bob.address, content: { kind: Kind.report, text: `report ${i} ` + 'x'.repeat(2000) }, createdAt: Date.now(), expiresAt: Date.now() + 86_400_000 })
    return encodeFrame({ type: FrameType.PUT, id: messageId(env), mailbox: bob.mailbox, expiresAt: Date.now() + 86_400_000, size: env.length, index: 0, data: env })
  })
  const up = await connect(relay.url)
  for (const p of puts) up.ws.send(p)
  // SIGTERM as soon as the first acks come back: the rest are in flight.
  await waitFor(() => up.frames.some((f) => f.type === FrameType.STORED), 10_000, 'first STORED')
  relay.child.kill('SIGTERM')
  await waitFor(() => relay.lines.some((l) => l.includes('"stopping: no new connections"')), 5000, 'stopping')
  const late = new WebSocket(relay.url)
  const lateResult = await new Promise<string>((resolve) => {
    late.on('open', () => resolve('open'))
    late.on('error', (err) => resolve((err as NodeJS.ErrnoException).code ?? err.message))
  })
  expect(lateResult).toBe('ECONNREFUSED')
  expect(await relay.exited).toBe(0)
  await up.closed

  const acked = up.frames.filter((f) => f.type === FrameType.STORED).flatMap((f) => (f as Extract<Frame, { type: typeof FrameType.STORED }>).ids.map(toHex))
  const stopped = relay.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'stopped')
  expect(stopped).toMatchObject({ signal: 'SIGTERM', unfinished_ops: 0, usage_saved: true })
  expect(acked.length).toBeGreaterThan(0)
  console.log(`SIGTERM after the first ack: ${acked.length} of ${ENVELOPES} acked before the close`)

  const again = await startRelay(data)
  relays.push(again)
  // The usage counts saved at the clean stop are read back instead of a scan, and agree with what is stored.
  const opened = again.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'store open')
  expect(opened).toMatchObject({ usage_from: 'snapshot' })
  const held = new Set<string>()
  // LIST shows up to 512; ENVELOPES is below that.
  for (const id of await listAll(again.url, bob)) held.add(id)
  for (const id of acked) expect(held.has(id)).toBe(true)
  expect(opened.messages).toBe(held.size)
  again.child.kill('SIGTERM')
  expect(await again.exited).toBe(0)
}, 60_000)
