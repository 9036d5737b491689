/**
 * Rate limits, quotas and access control in the relay engine: what is refused, with which
 * code and retry-after, and that nothing already accepted is touched.
 * Virtual time, so the token buckets refill exactly when the test says.
 */
import { describe, expect, it } from 'vitest'
import { generateIdentity, type Identity } from '../../src/client/identity.js'
import { authMessage } from '../../src/protocol/auth.js'
import { Kind, seal } from '../../src/protocol/envelope.js'
import { formatAddress } from '../../src/protocol/address.js'
import { CHUNK_BYTES, chunkCount, decodeFrame, encodeFrame, type Frame, FrameType, HELLO_UPLOAD_LOGIN } from '../../src/protocol/frames.js'
import { messageId } from '../../src/protocol/hash.js'
import { sign } from '../../src/protocol/signature.js'
import { AccessList } from '../../src/relay/access.js'
import { QUOTA_RETRY_MS, type RelayOptions } from '../../src/relay/relay-engine.js'
import { makeRelay } from '../helpers/pair.js'
import { VirtualEnv } from '../helpers/virtual-env.js'

type ErrorFrame = Extract<Frame, { type: typeof FrameType.ERROR }>

async function setup(options: RelayOptions) {
  const env = new VirtualEnv(1)
  const relay = await makeRelay(env, undefined, options)
  const connect = (peer?: string) => {
    const got: Frame[] = []
    const s = relay.connect({ send: (b) => got.push(decodeFrame(b)), close: () => {} }, { peer })
    const hello = got[0] as Extract<Frame, { type: typeof FrameType.HELLO }>
    const send = (f: Frame) => s.receive(encodeFrame(f))
    const login = (who: Identity) =>
      send({ type: FrameType.AUTH, signPublicKey: who.address.signPublicKey, signature: sign(authMessage(hello.challenge, 'ws://r'), who.signSecretKey), origin: 'ws://r' })
    return { got, send, login, errors: () => got.filter((f) => f.type === FrameType.ERROR) as ErrorFrame[], stored: () => got.filter((f) => f.type === FrameType.STORED).flatMap((f) => (f as Extract<Frame, { type: typeof FrameType.STORED }>).ids) }
  }
  const envelope = (to: Identity, textBytes = 10) => {
    const from = generateIdentity()
    const env_ = seal({ from: { address: from.address, signSecretKey: from.signSecretKey }, to: to.address, content: { kind: Kind.report, text: 'x'.repeat(textBytes) }, createdAt: env.now, expiresAt: env.now + 3600_000 })
    const id = messageId(env_)
    const puts = Array.from({ length: chunkCount(env_.length) }, (_, i): Frame => ({ type: FrameType.PUT, id, mailbox: to.mailbox, expiresAt: env.now + 3600_000, size: env_.length, index: i, data: env_.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES) }))
    return { id, size: env_.length, puts }
  }
  const settle = async () => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r))
  }
  return { env, relay, connect, envelope, settle }
}

describe('relay rate limits', () => {
  it('a connection over its byte rate gets RATE_LIMITED with the id and a retry-after, and is served again after it', async () => {
    const t = await setup({ limits: { perConnection: { rate: 10_000, burst: 20_000 } } })
    const bob = generateIdentity()
    const c = t.connect()
    const a = t.envelope(bob, 12_000)
    const b = t.envelope(bob, 12_000)
    c.send(a.puts[0]!)
    c.send(b.puts[0]!)
    await t.settle()
    expect(c.stored()).toEqual([a.id])
    const [e] = c.errors()
    expect(e).toMatchObject({ code: 'RATE_LIMITED', id: b.id })
    // The bucket holds ~8 KB; b's frame needs ~12 KB more at 10 KB/s.
    expect(e!.retryAfterMs).toBeGreaterThan(300)
    expect(e!.retryAfterMs).toBeLessThan(1500)
    expect(t.relay.refused.get('rate-limited')).toBe(1)
    t.env.now += e!.retryAfterMs!
    c.send(b.puts[0]!)
    await t.settle()
    expect(c.stored()).toEqual([a.id, b.id])
  })

  it('per sender: connections from one address share a bucket, another address has its own, and a login makes the key the sender', async () => {
    const t = await setup({ limits: { perSender: { rate: 1000, burst: 5000 } } })
    const bob = generateIdentity()
    const one = t.connect('10.0.0.1')
    const two = t.connect('10.0.0.1')
    const other = t.connect('10.0.0.2')
    const [a, b, c] = [t.envelope(bob, 3000), t.envelope(bob, 3000), t.envelope(bob, 3000)]
    one.send(a.puts[0]!)
    two.send(b.puts[0]!)
    other.send(c.puts[0]!)
    await t.settle()
    expect(one.stored()).toEqual([a.id])
    expect(two.errors().map((e) => e.code)).toEqual(['RATE_LIMITED'])
    expect(other.stored()).toEqual([c.id])
    // Logged in, the same address is a different sender (its key).
    two.login(generateIdentity())
    two.send(b.puts[0]!)
    await t.settle()
    expect(two.stored()).toEqual([b.id])
  })

  it('per mailbox: one recipient flooded from many senders is slowed, others are not', async () => {
    const t = await setup({ limits: { perMailbox: { rate: 1000, burst: 4000 } } })
    const bob = generateIdentity()
    const carol = generateIdentity()
    const sent = [t.envelope(bob, 3000), t.envelope(bob, 3000), t.envelope(carol, 3000)]
    const conns = sent.map(() => t.connect())
    sent.forEach((m, i) => conns[i]!.send(m.puts[0]!))
    await t.settle()
    expect(conns.map((c) => c.stored().length)).toEqual([1, 0, 1])
    expect(conns[1]!.errors()[0]).toMatchObject({ code: 'RATE_LIMITED', id: sent[1]!.id })
  })
})

describe('relay rate limits, together', () => {
  it("a refusal by the mailbox's bucket costs the sender nothing", async () => {
    const t = await setup({ limits: { perSender: { rate: 1000, burst: 6000 }, perMailbox: { rate: 1000, burst: 4000 } } })
    const bob = generateIdentity()
    const c = t.connect('10.0.0.9')
    const [a, b, other] = [t.envelope(bob, 3000), t.envelope(bob, 3000), t.envelope(generateIdentity(), 2000)]
    c.send(a.puts[0]!) // sender 6000 → ~2700 left, bob's mailbox 4000 → ~700
    c.send(b.puts[0]!) // refused by bob's mailbox bucket, not drawn from the sender's
    c.send(other.puts[0]!) // ~2300 B: fits only if b drew nothing from the sender
    await t.settle()
    expect(c.stored()).toEqual([a.id, other.id])
    expect(c.errors().map((e) => [e.code, e.id])).toEqual([['RATE_LIMITED', b.id]])
  })
})

describe('relay quotas', () => {
  it('a full mailbox refuses new envelopes with QUOTA and a retry-after; re-sends of stored ones are still acked; a DONE makes room', async () => {
    const t = await setup({ quotas: { mailboxMessages: 2 } })
    const bob = generateIdentity()
    const c = t.connect()
    const [a, b, x] = [t.envelope(bob), t.envelope(bob), t.envelope(bob)]
    c.send(a.puts[0]!)
    c.send(b.puts[0]!)
    await t.settle()
    c.send(x.puts[0]!)
    c.send(a.puts[0]!) // a duplicate: still "stored", the quota is not asked
    await t.settle()
    expect(c.stored()).toEqual([a.id, b.id, a.id])
    expect(c.errors()).toEqual([expect.objectContaining({ code: 'QUOTA', id: x.id, retryAfterMs: QUOTA_RETRY_MS })])
    expect(t.relay.store.stats()).toMatchObject({ messages: 2 })
    // Another mailbox is not affected.
    const carol = t.envelope(generateIdentity())
    c.send(carol.puts[0]!)
    const owner = t.connect()
    owner.login(bob)
    owner.send({ type: FrameType.DONE, ids: [a.id] })
    await t.settle()
    expect(c.stored()).toContainEqual(carol.id)
    c.send(x.puts[0]!)
    await t.settle()
    expect(c.stored().at(-1)).toEqual(x.id)
    expect(t.relay.refused.get('quota')).toBe(1)
  })

  it('a mailbox byte quota counts envelopes still arriving, and never strands one it admitted', async () => {
    const t = await setup({ quotas: { mailboxBytes: 250_000 } })
    const bob = generateIdentity()
    const c = t.connect()
    const big = t.envelope(bob, 200_000) // 4 chunks
    const next = t.envelope(bob, 100_000)
    c.send(big.puts[0]!)
    await t.settle()
    c.send(next.puts[0]!) // 200 KB arriving + 100 KB > 250 KB
    for (const p of big.puts.slice(1)) c.send(p) // the rest of the admitted one still goes in
    await t.settle()
    expect(c.errors().map((e) => [e.code, e.id])).toEqual([['QUOTA', next.id]])
    expect(c.stored()).toEqual([big.id])
    expect(t.relay.store.mailboxUsage(Buffer.from(bob.mailbox).toString('hex'))).toEqual({ messages: 1, arriving: 0, bytes: big.size })
  })

  it('the total quota and the disk high-water mark refuse new envelopes for everyone', async () => {
    let full = false
    const t = await setup({ quotas: { totalBytes: 5000, diskFull: () => full } })
    const c = t.connect()
    const a = t.envelope(generateIdentity(), 3000)
    const b = t.envelope(generateIdentity(), 3000)
    const d = t.envelope(generateIdentity())
    c.send(a.puts[0]!)
    c.send(b.puts[0]!)
    await t.settle()
    expect(c.errors().map((e) => [e.code, e.message])).toEqual([['QUOTA', 'relay storage quota reached']])
    full = true
    c.send(d.puts[0]!)
    await t.settle()
    expect(c.errors().at(-1)).toMatchObject({ code: 'QUOTA', id: d.id, message: 'relay disk is past its high-water mark' })
    c.send(a.puts[0]!) // what is stored is still acked
    await t.settle()
    expect(c.stored()).toEqual([a.id, a.id])
  })
})

describe('ERROR frames', () => {
  it('carry a retry-after when there is one, and decode without one', () => {
    const id = new Uint8Array(32).fill(7)
    const withWait = decodeFrame(encodeFrame({ type: FrameType.ERROR, code: 'RATE_LIMITED', id, message: 'slow down', retryAfterMs: 1234.2 }))
    expect(withWait).toMatchObject({ code: 'RATE_LIMITED', message: 'slow down', retryAfterMs: 1235 })
    const plain = decodeFrame(encodeFrame({ type: FrameType.ERROR, code: 'BAD_FRAME', id: undefined, message: 'no' }))
    expect(plain).not.toHaveProperty('retryAfterMs')
    expect(() => decodeFrame(new Uint8Array([...encodeFrame({ type: FrameType.ERROR, code: 'QUOTA', id, message: 'x' }), 0, 0]))).toThrow(/truncated/)
  })
})

describe('relay access', () => {
  it('open mode: HELLO asks for no login, anyone uploads; a banned key can neither log in nor upload', async () => {
    const banned = generateIdentity()
    const t = await setup({ access: new AccessList('open', { allow: [], deny: [formatAddress(banned.address)] }) })
    const c = t.connect()
    expect(c.got[0]).not.toHaveProperty('flags')
    const m = t.envelope(generateIdentity())
    c.send(m.puts[0]!)
    await t.settle()
    expect(c.stored()).toEqual([m.id])
    const b = t.connect()
    b.login(banned)
    b.send(t.envelope(generateIdentity()).puts[0]!)
    await t.settle()
    expect(b.errors().map((e) => [e.code, e.message])).toEqual([['FORBIDDEN', 'this key is banned from this relay']])
    expect(b.stored()).toEqual([])
    expect(t.relay.refused.get('forbidden')).toBe(1)
  })

  it('a ban closes the connections already logged in with that key, and only those', async () => {
    const access = new AccessList('open', { allow: [], deny: [] })
    const t = await setup({ access })
    const mallory = generateIdentity()
    const other = generateIdentity()
    const closed: string[] = []
    const open = (who: Identity) => {
      const got: Frame[] = []
      const s = t.relay.connect({ send: (b) => got.push(decodeFrame(b)), close: (why) => closed.push(`${who === mallory ? 'mallory' : 'other'}: ${why}`) })
      const hello = got[0] as Extract<Frame, { type: typeof FrameType.HELLO }>
      s.receive(encodeFrame({ type: FrameType.AUTH, signPublicKey: who.address.signPublicKey, signature: sign(authMessage(hello.challenge, 'ws://r'), who.signSecretKey), origin: 'ws://r' }))
      return got
    }
    const m1 = open(mallory)
    open(mallory)
    open(other)
    t.connect() // not logged in
    await t.settle()
    expect(t.relay.counters.open).toBe(4)
    expect(await access.set('deny', formatAddress(mallory.address), true)).toBe(true)
    expect(t.relay.disconnectKey(Buffer.from(mallory.address.signPublicKey).toString('hex'))).toBe(2)
    expect(closed).toEqual(['mallory: this key is banned from this relay', 'mallory: this key is banned from this relay'])
    expect(m1.filter((f) => f.type === FrameType.ERROR)).toMatchObject([{ code: 'FORBIDDEN', message: 'this key is banned from this relay' }])
    expect(t.relay.counters.open).toBe(2)
    expect(t.relay.disconnectKey(Buffer.from(mallory.address.signPublicKey).toString('hex'))).toBe(0)
  })

  it('allowlist mode: HELLO says so; PUTs need a login with an allowed key; keys added through the admin API count too', async () => {
    const member = generateIdentity()
    const later = generateIdentity()
    const access = new AccessList('allowlist', { allow: [Buffer.from(member.address.signPublicKey).toString('hex')], deny: [] })
    const t = await setup({ access })
    const c = t.connect()
    expect((c.got[0] as Extract<Frame, { type: typeof FrameType.HELLO }>).flags).toBe(HELLO_UPLOAD_LOGIN)
    const m = t.envelope(generateIdentity())
    c.send(m.puts[0]!) // before the login
    c.login(member)
    c.send(m.puts[0]!)
    await t.settle()
    expect(c.errors().map((e) => [e.code, e.id])).toEqual([['FORBIDDEN', m.id]])
    expect(c.stored()).toEqual([m.id])

    const stranger = t.connect()
    stranger.login(later) // logging in is fine: it may fetch its own mailbox
    stranger.send(m.puts[0]!)
    await t.settle()
    expect(stranger.got.some((f) => f.type === FrameType.AUTH_OK)).toBe(true)
    expect(stranger.errors().map((e) => [e.code, e.message])).toEqual([['FORBIDDEN', 'this key may not upload here']])
    expect(await access.set('allow', formatAddress(later.address), true)).toBe(true)
    stranger.send(m.puts[0]!)
    await t.settle()
    expect(stranger.stored()).toEqual([m.id])
    await expect(access.set('allow', Buffer.from(member.address.signPublicKey).toString('hex'), false)).rejects.toThrow(/config file's allow list/)
    await expect(access.set('deny', 'ch1.nonsense', true)).rejects.toThrow(/malformed address/)
    await expect(access.set('deny', 'bob', true)).rejects.toThrow(/not a chapar address \(ch1.…\) or a 64-hex-digit signing key/)
  })
})
