/** The relay engine fed frames directly: what a hostile or confused client gets back. */
import { describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { generateIdentity } from '../../src/client/identity.js'
import { AUTH_DOMAIN } from '../../src/protocol/auth.js'
import { concat } from '../../src/protocol/bytes.js'
import { Kind, seal } from '../../src/protocol/envelope.js'
import { decodeFrame, encodeFrame, type Frame, FrameType, MAX_FRAME_BYTES } from '../../src/protocol/frames.js'
import { messageId } from '../../src/protocol/hash.js'
import { sign } from '../../src/protocol/signature.js'
import { listenWs } from '../../src/relay/ws-server.js'
import type { Relay } from '../../src/relay/relay-engine.js'
import { makeRelay } from '../helpers/pair.js'

const flush = () => new Promise((r) => setTimeout(r, 30))

async function open(existing?: Relay) {
  const relay = existing ?? (await makeRelay())
  const got: Frame[] = []
  let closed: string | undefined
  const s = relay.connect({ send: (b) => got.push(decodeFrame(b)), close: (r) => (closed = r ?? '') })
  const hello = got[0] as Extract<Frame, { type: typeof FrameType.HELLO }>
  const send = (f: Frame) => s.receive(encodeFrame(f))
  return { relay, got, send, hello, closed: () => closed, raw: (b: Uint8Array) => s.receive(b) }
}

function auth(hello: Extract<Frame, { type: typeof FrameType.HELLO }>, who = generateIdentity()) {
  return { who, frame: { type: FrameType.AUTH, signPublicKey: who.address.signPublicKey, signature: sign(concat([AUTH_DOMAIN, hello.challenge]), who.signSecretKey) } as Frame }
}

function envelopeFor(to = generateIdentity(), expiresAt = Date.now() + 3600_000) {
  const from = generateIdentity()
  const env = seal({ from: { address: from.address, signSecretKey: from.signSecretKey }, to: to.address, content: { kind: Kind.report, text: 'hi' }, createdAt: Date.now(), expiresAt })
  return { to, env, id: messageId(env), expiresAt }
}

const errors = (got: Frame[]) => got.filter((f) => f.type === FrameType.ERROR) as Array<Extract<Frame, { type: typeof FrameType.ERROR }>>

describe('relay engine', () => {
  it('greets with a fresh challenge', async () => {
    const a = await open()
    const b = await open()
    expect(a.hello.type).toBe(FrameType.HELLO)
    expect(a.hello.challenge).not.toEqual(b.hello.challenge)
  })

  it('answers a malformed frame with ERROR BAD_FRAME and closes', async () => {
    const c = await open()
    c.raw(new Uint8Array([0x10, 1, 2, 3]))
    expect(errors(c.got)[0]!.code).toBe('BAD_FRAME')
    expect(c.closed()).toBeDefined()
  })

  it('refuses mailbox operations before AUTH and a forged AUTH', async () => {
    const c = await open()
    c.send({ type: FrameType.LIST, max: 10 })
    expect(errors(c.got).map((e) => e.code)).toEqual(['UNAUTHENTICATED'])
    const other = generateIdentity()
    c.send({ type: FrameType.AUTH, signPublicKey: other.address.signPublicKey, signature: sign(concat([AUTH_DOMAIN, c.hello.challenge]), generateIdentity().signSecretKey) })
    expect(errors(c.got).map((e) => e.code)).toEqual(['UNAUTHENTICATED', 'UNAUTHENTICATED'])
    const replay = await open() // a signature over another connection's challenge is no good here
    replay.send(auth(c.hello).frame)
    expect(errors(replay.got).map((e) => e.code)).toEqual(['UNAUTHENTICATED'])
  })

  it('stores, lists only to the owner, serves and deletes on DONE', async () => {
    const m = envelopeFor()
    const up = await open()
    up.send({ type: FrameType.PUT, id: m.id, mailbox: m.to.mailbox, expiresAt: m.expiresAt, size: m.env.length, index: 0, data: m.env })
    await flush()
    expect(up.got.at(-1)).toMatchObject({ type: FrameType.STORED, ids: [m.id] })

    const stranger = await open(up.relay)
    stranger.send(auth(stranger.hello).frame)
    stranger.send({ type: FrameType.LIST, max: 10 })
    stranger.send({ type: FrameType.GET, id: m.id, want: [[0, 1]] })
    stranger.send({ type: FrameType.DONE, ids: [m.id] })
    await flush()
    expect(stranger.got.find((f) => f.type === FrameType.INDEX)).toMatchObject({ entries: [] })
    expect(stranger.got.some((f) => f.type === FrameType.CHUNK)).toBe(false)
    expect(errors(stranger.got).map((e) => e.code)).toEqual(['BAD_INPUT'])
    expect((await up.relay.store.stats()).messages).toBe(1)

    const relay = up.relay
    const owner = await open(relay)
    owner.send(auth(owner.hello, m.to).frame)
    owner.send({ type: FrameType.LIST, max: 10 })
    owner.send({ type: FrameType.GET, id: m.id, want: [[0, 1]] })
    owner.send({ type: FrameType.DONE, ids: [m.id] })
    owner.send({ type: FrameType.LIST, max: 10 })
    await flush()
    const indexes = owner.got.filter((f) => f.type === FrameType.INDEX) as Array<Extract<Frame, { type: typeof FrameType.INDEX }>>
    expect(indexes[0]!.entries.map((e) => e.id)).toEqual([m.id])
    expect(indexes[1]!.entries).toEqual([]) // the LIST after DONE sees the deletion
    expect(owner.got.find((f) => f.type === FrameType.CHUNK)).toMatchObject({ index: 0, size: m.env.length })
    // A late re-send of a delivered message is "stored" (idempotent), not delivered again.
    up.send({ type: FrameType.PUT, id: m.id, mailbox: m.to.mailbox, expiresAt: m.expiresAt, size: m.env.length, index: 0, data: m.env })
    await flush()
    expect(up.got.filter((f) => f.type === FrameType.STORED)).toHaveLength(2)
    expect((await relay.store.stats()).messages).toBe(0)
  })

  it('refuses an expired envelope and one under a false id, with the id in the ERROR', async () => {
    const c = await open()
    const old = envelopeFor(undefined, Date.now() - 1000)
    c.send({ type: FrameType.PUT, id: old.id, mailbox: old.to.mailbox, expiresAt: old.expiresAt, size: old.env.length, index: 0, data: old.env })
    const m = envelopeFor()
    const lie = m.id.slice()
    lie[0] = lie[0]! ^ 1
    c.send({ type: FrameType.PUT, id: lie, mailbox: m.to.mailbox, expiresAt: m.expiresAt, size: m.env.length, index: 0, data: m.env })
    await flush()
    const errs = errors(c.got)
    expect(errs.map((e) => e.code).sort()).toEqual(['BAD_ENVELOPE', 'EXPIRED'])
    expect(errs.find((e) => e.code === 'EXPIRED')!.id).toEqual(old.id)
    expect(errs.find((e) => e.code === 'BAD_ENVELOPE')!.id).toEqual(lie)
    expect((await c.relay.store.stats()).messages).toBe(0)
  })
})

describe('relay ws server limits', () => {
  it('closes on text frames and on frames over maxPayload, and survives both', async () => {
    const relay = await makeRelay()
    const server = await listenWs(relay, { host: '127.0.0.1', port: 0 })
    try {
      const closeCode = (payload: string | Buffer) =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(server.url, { perMessageDeflate: false })
          ws.on('open', () => ws.send(payload))
          ws.on('close', (code) => resolve(code))
          ws.on('error', () => {})
        })
      expect(await closeCode('hello')).toBe(1003)
      expect(await closeCode(Buffer.alloc(MAX_FRAME_BYTES + 1))).toBe(1009)
      // still serving
      const hello = await new Promise<Frame>((resolve) => {
        const ws = new WebSocket(server.url, { perMessageDeflate: false })
        ws.on('message', (d: Buffer) => {
          resolve(decodeFrame(new Uint8Array(d)))
          ws.close()
        })
      })
      expect(hello.type).toBe(FrameType.HELLO)
    } finally {
      await server.close()
    }
  })
})
