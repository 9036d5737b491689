/** The relay engine fed frames directly: what a hostile or confused client gets back. */
import { describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { generateIdentity } from '../../src/client/identity.js'
import { authMessage } from '../../src/protocol/auth.js'
import { Kind, seal } from '../../src/protocol/envelope.js'
import { decodeFrame, encodeFrame, type Frame, FrameType, MAX_FRAME_BYTES } from '../../src/protocol/frames.js'
import { messageId } from '../../src/protocol/hash.js'
import { sign } from '../../src/protocol/signature.js'
import { listenWs } from '../../src/relay/ws-server.js'
import { authOrigins } from '../../src/relay/relay-command.js'
import type { Relay } from '../../src/relay/relay-engine.js'
import { makeRelay } from '../helpers/pair.js'

const flush = () => new Promise((r) => setTimeout(r, 30))
const ORIGIN = 'ws://r1:80'

async function open(existing?: Relay) {
  const relay = existing ?? (await makeRelay(undefined, undefined, { origins: [ORIGIN] }))
  const got: Frame[] = []
  let closed: string | undefined
  const s = relay.connect({ send: (b) => got.push(decodeFrame(b)), close: (r) => (closed = r ?? '') })
  const hello = got[0] as Extract<Frame, { type: typeof FrameType.HELLO }>
  const send = (f: Frame) => s.receive(encodeFrame(f))
  return { relay, got, send, hello, closed: () => closed, raw: (b: Uint8Array) => s.receive(b) }
}

function auth(hello: Extract<Frame, { type: typeof FrameType.HELLO }>, who = generateIdentity(), origin = ORIGIN) {
  return {
    who,
    frame: { type: FrameType.AUTH, signPublicKey: who.address.signPublicKey, signature: sign(authMessage(hello.challenge, origin), who.signSecretKey), origin } as Frame,
  }
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
    c.send({ type: FrameType.AUTH, signPublicKey: other.address.signPublicKey, signature: sign(authMessage(c.hello.challenge, ORIGIN), generateIdentity().signSecretKey), origin: ORIGIN })
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

  it('refuses a login signed for another relay: a hostile relay cannot replay a challenge here', async () => {
    // Mallory's relay forwards this relay's challenge to bob, who thinks he
    // dialled ws://mallory and signs for that origin; the answer is no good here,
    // neither as signed nor relabelled with this relay's origin.
    const bob = generateIdentity()
    const honest = await open()
    const forBob = auth(honest.hello, bob, 'ws://mallory.example:7000').frame as Extract<Frame, { type: typeof FrameType.AUTH }>
    honest.send(forBob)
    honest.send({ ...forBob, origin: ORIGIN })
    honest.send({ type: FrameType.LIST, max: 10 })
    await flush()
    expect(errors(honest.got).map((e) => e.code)).toEqual(['UNAUTHENTICATED', 'UNAUTHENTICATED', 'UNAUTHENTICATED'])
    expect(errors(honest.got)[0]!.message).toMatch(/not this relay/)
    expect(honest.got.some((f) => f.type === FrameType.AUTH_OK || f.type === FrameType.INDEX)).toBe(false)
    // The same key signing for this relay's origin gets in.
    const ok = await open(honest.relay)
    ok.send(auth(ok.hello, bob).frame)
    expect(ok.got.at(-1)).toMatchObject({ type: FrameType.AUTH_OK, mailbox: bob.mailbox })
  })

  it('refuses an expiry beyond the relay\'s TTL cap', async () => {
    const relay = await makeRelay(undefined, undefined, { maxTtlMs: 24 * 3600_000 })
    const c = await open(relay)
    const far = envelopeFor(undefined, Date.now() + 2 * 24 * 3600_000)
    c.send({ type: FrameType.PUT, id: far.id, mailbox: far.to.mailbox, expiresAt: far.expiresAt, size: far.env.length, index: 0, data: far.env })
    const near = envelopeFor(undefined, Date.now() + 12 * 3600_000)
    c.send({ type: FrameType.PUT, id: near.id, mailbox: near.to.mailbox, expiresAt: near.expiresAt, size: near.env.length, index: 0, data: near.env })
    await flush()
    expect(errors(c.got)).toMatchObject([{ code: 'BAD_INPUT', id: far.id }])
    expect(c.got.find((f) => f.type === FrameType.STORED)).toMatchObject({ ids: [near.id] })
  })

  it('bounds the mailbox requests one connection may queue', async () => {
    const c = await open()
    c.send(auth(c.hello).frame)
    for (let i = 0; i < 300; i++) c.send({ type: FrameType.DONE, ids: [new Uint8Array(32).fill(i & 0xff)] })
    c.send({ type: FrameType.LIST, max: 10 })
    await flush()
    expect(errors(c.got).filter((e) => e.code === 'RETRY_LATER').length).toBe(300 + 1 - 256)
    c.send({ type: FrameType.LIST, max: 10 })
    await flush()
    expect(c.got.at(-1)).toMatchObject({ type: FrameType.INDEX, entries: [] })
  })

  it('tells a connection with too much in flight to retry later, and keeps serving it', async () => {
    const c = await open()
    const ids: Uint8Array[] = []
    for (let i = 0; i < 4200; i++) {
      const id = new Uint8Array(32)
      new DataView(id.buffer).setUint32(0, i)
      ids.push(id)
    }
    // 4,200 QUERY frames sent in one go, before the store answers any of them.
    for (const id of ids) c.send({ type: FrameType.QUERY, ids: [id] })
    await flush()
    const refused = errors(c.got).filter((e) => e.code === 'RETRY_LATER')
    expect(refused.length).toBe(4200 - 4096)
    expect(c.got.filter((f) => f.type === FrameType.HAVE)).toHaveLength(4096)
    c.send({ type: FrameType.QUERY, ids: [ids[0]!] })
    await flush()
    expect(c.got.filter((f) => f.type === FrameType.HAVE)).toHaveLength(4097)
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

describe('relay login origins', () => {
  it('a wildcard listener answers for every interface address; a named host for itself; --public-url adds more', () => {
    const wild = authOrigins('0.0.0.0', 7000, [])
    expect(wild).toContain('ws://127.0.0.1:7000')
    expect(wild).toContain('ws://localhost:7000')
    expect(wild.every((o) => o.endsWith(':7000'))).toBe(true)
    expect(authOrigins('10.1.2.3', 7000, ['wss://relay.example.org'])).toEqual(['ws://10.1.2.3:7000', 'wss://relay.example.org:443'])
    expect(authOrigins('::1', 7000, [])).toContain('ws://[::1]:7000')
  })
})
