import { describe, expect, it } from 'vitest'
import { compose } from '../../src/client/compose.js'
import { Kind, Priority, seal } from '../../src/protocol/envelope.js'
import { formatAddress } from '../../src/protocol/address.js'
import { FrameType } from '../../src/protocol/frames.js'
import { toHex } from '../../src/protocol/bytes.js'
import { messageId } from '../../src/protocol/hash.js'
import { generateIdentity } from '../../src/client/identity.js'
import { jsonValue } from '../../src/queue/db.js'
import { OutboxState } from '../../src/queue/outbox.js'
import { connect, makeClient, makeRelay, syncWith, type TestClient, type Wire } from '../helpers/pair.js'
import type { Relay } from '../../src/relay/relay-engine.js'

const DAY = 24 * 3600_000

async function queue(from: TestClient, to: TestClient, text: string, extra: { file?: Uint8Array; priority?: number; ttlMs?: number } = {}) {
  const c = compose({
    outbox: from.outbox,
    me: from.me,
    to: to.me.address,
    content: { kind: Kind.report, text, ...(extra.file ? { file: { name: 'evidence.bin', data: extra.file } } : {}) },
    now: Date.now(),
    ttlMs: extra.ttlMs ?? DAY,
    priority: extra.priority ?? Priority.normal,
  })
  await from.outbox.add(c.record, c.envelope)
  return c.record.id
}

async function reports(c: TestClient) {
  return (await c.outbox.list()).filter((r) => r.kind === 'report')
}

/** The relay's key for chunk 0 of envelope `id` (c!<mailbox>!<id>!<index>, src/queue/mailbox.ts): exactly one must exist. */
async function chunk0Key(relay: Relay, id: string): Promise<string> {
  const found: string[] = []
  for await (const k of relay.store.db.keys({ gte: 'c!', lt: 'c!\xff' })) if (k.endsWith(`!${id}!${'0'.repeat(8)}`)) found.push(k)
  expect(found, `chunk 0 of ${id} on the relay`).toHaveLength(1)
  return found[0]!
}

/** Flip byte `at` of chunk 0 of `id` on the relay's disk; returns the original bytes. */
async function corruptChunk0(relay: Relay, id: string, at: number): Promise<Uint8Array> {
  const key = await chunk0Key(relay, id)
  const stored = await relay.store.db.get(key)
  expect(stored).toBeDefined()
  const original = new Uint8Array(stored!) // a copy: Buffer#slice would be a view
  const bad = original.slice()
  bad[at] = bad[at]! ^ 0xff
  await relay.store.db.put(key, bad)
  return original
}

describe('sync engine against the relay engine', () => {
  it('delivers reports, returns signed receipts, and marks them delivered', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const ids = [await queue(alice, bob, 'one'), await queue(alice, bob, 'two'), await queue(alice, bob, 'three')]

    const upWire: Wire = { up: [], down: [] }
    const up = await connect(alice, relay, 'ws://r1', { wire: upWire }).done
    expect(up.uploaded).toBe(3)
    expect((await reports(alice)).map((r) => r.state)).toEqual(['accepted', 'accepted', 'accepted'])
    // The upload connection never says who alice is.
    expect(upWire.up.map((f) => f.type).filter((t) => t !== FrameType.PUT && t !== FrameType.QUERY)).toEqual([])

    const downWire: Wire = { up: [], down: [] }
    const down = await connect(bob, relay, 'ws://r1', { role: 'mailbox', wire: downWire }).done
    expect(downWire.up.some((f) => f.type === FrameType.PUT)).toBe(false) // receipts leave on an upload connection
    expect(downWire.up.slice(0, 2).map((f) => f.type)).toEqual([FrameType.AUTH, FrameType.LIST]) // LIST does not wait for AUTH_OK
    await connect(bob, relay, 'ws://r1').done
    expect(down.received).toBe(3)
    const items = await bob.inbox.items()
    expect(items.map((i) => i.text).sort()).toEqual(['one', 'three', 'two'])
    expect(new Set(items.map((i) => i.id))).toEqual(new Set(ids))
    expect(items.every((i) => i.from === formatAddress(alice.me.address))).toBe(true)
    // bob's receipts are queued and already accepted by the relay
    const receipts = (await bob.outbox.list()).filter((r) => r.kind === 'receipt')
    expect(receipts).toHaveLength(3)
    expect(receipts.every((r) => r.relays.includes('ws://r1'))).toBe(true)
    // A receipt's expiry says nothing about the report it answers: same lifetime for all, on the hour.
    for (const r of receipts) {
      expect(r.expires_at % 3600_000).toBe(0)
      expect(r.expires_at - Date.now()).toBeGreaterThan(13 * DAY)
    }

    await connect(alice, relay, 'ws://r1', { role: 'mailbox' }).done
    const final = await reports(alice)
    expect(final.map((r) => r.state)).toEqual([OutboxState.delivered, OutboxState.delivered, OutboxState.delivered])
    expect(await alice.outbox.envelope(ids[0]!)).toBeUndefined() // bytes dropped once delivered
    expect((await relay.store.stats()).messages).toBe(0) // mailboxes emptied after DONE
  })

  it('hands each message to every relay and the recipient keeps one copy', async () => {
    const r1 = await makeRelay()
    const r2 = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    await queue(alice, bob, 'via two relays')
    await Promise.all([connect(alice, r1, 'ws://r1').done, connect(alice, r2, 'ws://r2').done])
    expect((await reports(alice))[0]!.relays.sort()).toEqual(['ws://r1', 'ws://r2'])
    await Promise.all([syncWith(bob, r1, 'ws://r1'), syncWith(bob, r2, 'ws://r2')])
    expect(await bob.inbox.items()).toHaveLength(1)
    // Both relays deleted the report from bob's mailbox (one served it, the other was told DONE).
    for (const r of [r1, r2]) expect((await r.store.list(bob.me.mailbox, 10, Date.now())).entries).toEqual([])
  })

  it('uploads urgent messages first', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const normal = await queue(alice, bob, 'normal')
    const low = await queue(alice, bob, 'low', { priority: Priority.low })
    const urgent = await queue(alice, bob, 'urgent', { priority: Priority.urgent })
    const wire: Wire = { up: [], down: [] }
    await connect(alice, relay, 'ws://r1', { wire }).done
    const order = wire.up.filter((f) => f.type === FrameType.PUT).map((f) => toHex((f as { id: Uint8Array }).id))
    expect(order).toEqual([urgent, normal, low])
  })

  it('resumes a large upload after the link breaks, sending only the missing chunks', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const file = new Uint8Array(40 * 64 * 1024)
    for (let i = 0; i < file.length; i++) file[i] = (i * 31) & 0xff
    await queue(alice, bob, 'video', { file })
    const first: Wire = { up: [], down: [] }
    await expect(connect(alice, relay, 'ws://r1', { wire: first, cutAfterUp: 25 }).done).rejects.toThrow(/cut by test/)
    const sentFirst = first.up.filter((f) => f.type === FrameType.PUT).length
    expect(sentFirst).toBeGreaterThan(10)
    // Never sent to this relay: the chunks went at once, with no QUERY first; the outbox remembers it started.
    expect(first.up.some((f) => f.type === FrameType.QUERY)).toBe(false)
    expect((await reports(alice))[0]!.started).toEqual(['ws://r1'])
    const second: Wire = { up: [], down: [] }
    await connect(alice, relay, 'ws://r1', { wire: second }).done
    expect(second.up[0]!.type).toBe(FrameType.QUERY) // started before: ask what the relay holds
    const resentIdx = second.up.filter((f) => f.type === FrameType.PUT).map((f) => (f as { index: number }).index)
    const chunks = 41
    expect(resentIdx.length).toBeLessThan(chunks) // not a restart
    expect(sentFirst + resentIdx.length).toBeLessThanOrEqual(chunks + 16) // at most one window re-sent
    expect((await reports(alice))[0]!.state).toBe('accepted')
    await connect(bob, relay, 'ws://r1', { role: 'mailbox' }).done
    const [item] = await bob.inbox.items()
    expect(item!.file_bytes).toBe(file.length)
    expect(bob.files.files.get(item!.file!)).toEqual(file)
  })

  it('a multi-chunk envelope asks first (QUERY) when the record does not say where it started (written before `started` existed); a fresh one goes at once to each new relay', async () => {
    const r1 = await makeRelay()
    const r2 = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const id = await queue(alice, bob, 'photo', { file: new Uint8Array(3 * 64 * 1024).fill(7) })
    const legacy = (await alice.outbox.get(id))!
    delete legacy.started
    await alice.db.put('o!' + id, jsonValue(legacy))
    const w1: Wire = { up: [], down: [] }
    await connect(alice, r1, 'ws://r1', { wire: w1 }).done
    expect(w1.up[0]!.type).toBe(FrameType.QUERY)
    expect((await alice.outbox.get(id))!.started).toBeUndefined()

    const id2 = await queue(alice, bob, 'photo 2', { file: new Uint8Array(3 * 64 * 1024).fill(8) })
    await connect(alice, r1, 'ws://r1').done
    expect((await alice.outbox.get(id2))!.started).toEqual(['ws://r1'])
    const w2: Wire = { up: [], down: [] }
    await connect(alice, r2, 'ws://r2', { wire: w2 }).done
    expect(w2.up.filter((f) => f.type === FrameType.QUERY)).toHaveLength(1) // the legacy record only
    expect(w2.up.find((f) => f.type === FrameType.PUT && toHex((f as { id: Uint8Array }).id) === id2)).toBeDefined()
    expect((await alice.outbox.get(id2))!.started).toEqual(['ws://r1', 'ws://r2'])
    expect((await alice.outbox.get(id2))!.relays.sort()).toEqual(['ws://r1', 'ws://r2'])
  })

  it('resumes a large download from the chunks already on disk', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const file = new Uint8Array(30 * 64 * 1024).fill(7)
    await queue(alice, bob, 'big', { file })
    await connect(alice, relay, 'ws://r1').done
    await expect(connect(bob, relay, 'ws://r1', { role: 'mailbox', cutAfterUp: 4 }).done).rejects.toThrow()
    const id = (await reports(alice))[0]!.id
    const held = await bob.inbox.chunksHeld(id)
    expect(held.length).toBeGreaterThan(0)
    const wire: Wire = { up: [], down: [] }
    await connect(bob, relay, 'ws://r1', { role: 'mailbox', wire }).done
    const again = wire.down.filter((f) => f.type === FrameType.CHUNK).map((f) => (f as { index: number }).index)
    for (const i of held) expect(again).not.toContain(i)
    expect(await bob.inbox.items()).toHaveLength(1)
    expect(await bob.inbox.chunksHeld(id)).toEqual([]) // partial chunks cleaned up
  })

  it('quarantines a message whose signature does not verify, and still clears it from the relay', async () => {
    const relay = await makeRelay()
    const mallory = await makeClient()
    const bob = await makeClient()
    const alice = generateIdentity()
    const now = Date.now()
    // Mallory claims to be alice but signs with her own key.
    const env = seal({
      from: { address: alice.address, signSecretKey: mallory.me.signSecretKey },
      to: bob.me.address,
      content: { kind: Kind.report, text: 'forged' },
      createdAt: now,
      expiresAt: now + DAY,
    })
    const id = toHex(messageId(env))
    await mallory.outbox.add(
      { id, to: formatAddress(bob.me.address), kind: 'report', state: 'queued', relays: [], bytes: env.length, priority: 1, created_at: now, expires_at: now + DAY, mailbox: toHex(env.subarray(4, 36)) },
      env,
    )
    await connect(mallory, relay, 'ws://r1').done
    await syncWith(bob, relay, 'ws://r1')
    expect(await bob.inbox.items()).toEqual([])
    const q = await bob.inbox.quarantined()
    expect(q).toHaveLength(1)
    expect(q[0]!.code).toBe('BAD_SIGNATURE')
    expect((await bob.outbox.list()).length).toBe(0) // no receipt for a forgery
    expect((await relay.store.stats()).messages).toBe(0)
  })

  it('a relay refusal is reported per message and the rest still goes through', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    await queue(alice, bob, 'fine')
    // Corrupt one queued envelope so the relay's hash check refuses it.
    const bad = await queue(alice, bob, 'will be corrupted')
    const env = (await alice.outbox.envelope(bad))!
    env[env.length - 1] = env[env.length - 1]! ^ 1
    await alice.db.put('b!' + bad, env)
    const result = await connect(alice, relay, 'ws://r1').done
    expect(result.uploaded).toBe(1)
    expect(result.rejected).toEqual([expect.objectContaining({ id: bad, code: 'BAD_ENVELOPE' })])
    expect((await alice.outbox.get(bad))!.state).toBe('queued') // kept, never silently dropped
  })

  it('finishes a download whose chunks are all on disk already (killed between the last chunk and the inbox write)', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const file = new Uint8Array(5 * 64 * 1024).fill(3)
    const id = await queue(alice, bob, 'all chunks held', { file })
    const env = (await alice.outbox.envelope(id))!
    await connect(alice, relay, 'ws://r1').done
    const chunks = Math.ceil(env.length / (64 * 1024))
    for (let i = 0; i < chunks; i++) await bob.inbox.putChunk(id, env.length, chunks, i, env.slice(i * 64 * 1024, (i + 1) * 64 * 1024))
    const wire: Wire = { up: [], down: [] }
    await connect(bob, relay, 'ws://r1', { role: 'mailbox', wire }).done
    expect(wire.up.some((f) => f.type === FrameType.GET)).toBe(false)
    expect((await bob.inbox.items()).map((i) => i.id)).toEqual([id])
    expect((await relay.store.stats()).messages).toBe(0)
  })

  it('a relay serving bytes that do not hash to the id: nothing recorded, no DONE, fetched again once it serves the real bytes', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const small = await queue(alice, bob, 'small')
    const big = await queue(alice, bob, 'big', { file: new Uint8Array(3 * 64 * 1024).fill(9) })
    await connect(alice, relay, 'ws://r1').done
    // Flip a byte in chunk 0 of each, on the relay's disk.
    const originals = new Map<string, Uint8Array>()
    for (const id of [small, big]) originals.set(id, await corruptChunk0(relay, id, 200))
    const first = await connect(bob, relay, 'ws://r1', { role: 'mailbox' }).done // ends: it does not spin on what it cannot take
    expect(first.rejected.map((r) => [r.id, r.code]).sort()).toEqual([[small, 'BAD_ENVELOPE'], [big, 'BAD_ENVELOPE']].sort())
    expect(await bob.inbox.items()).toEqual([])
    expect(await bob.inbox.quarantined()).toEqual([]) // not poisoned: the id was never proven
    expect(await bob.inbox.chunksHeld(big)).toEqual([])
    expect((await relay.store.stats()).messages).toBe(2) // no DONE
    for (const [id, data] of originals) await relay.store.db.put(await chunk0Key(relay, id), data)
    const second = await connect(bob, relay, 'ws://r1', { role: 'mailbox' }).done
    expect(second.rejected).toEqual([])
    expect((await bob.inbox.items()).map((i) => i.text).sort()).toEqual(['big', 'small'])
    expect((await relay.store.stats()).messages).toBe(0)
  })

  it('two relays serving the same large message: one session downloads it, the other waits and clears its copy', async () => {
    const r1 = await makeRelay()
    const r2 = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const file = new Uint8Array(20 * 64 * 1024).map((_, i) => i & 0xff)
    await queue(alice, bob, 'big twice', { file })
    await Promise.all([connect(alice, r1, 'ws://r1').done, connect(alice, r2, 'ws://r2').done])
    const w1: Wire = { up: [], down: [] }
    const w2: Wire = { up: [], down: [] }
    await Promise.all([connect(bob, r1, 'ws://r1', { role: 'mailbox', wire: w1 }).done, connect(bob, r2, 'ws://r2', { role: 'mailbox', wire: w2 }).done])
    const served = [w1, w2].map((w) => w.down.filter((f) => f.type === FrameType.CHUNK).length)
    expect(served[0]! + served[1]!).toBe(21) // every chunk fetched once, from one relay
    const [item] = await bob.inbox.items()
    expect(bob.files.files.get(item!.file!)).toEqual(file)
    for (const r of [r1, r2]) expect((await r.store.stats()).messages).toBe(0)
  })

  it('a link that dies while a listing is being handled leaves no lock behind, and the next session drains', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    await queue(alice, bob, 'one')
    await queue(alice, bob, 'two')
    await connect(alice, relay, 'ws://r1').done
    const has = bob.inbox.has.bind(bob.inbox)
    let first: ReturnType<typeof connect> | undefined
    bob.inbox.has = async (id: string) => {
      first?.session.closed('link dropped') // lands while the session waits on its store
      return has(id)
    }
    first = connect(bob, relay, 'ws://r1', { role: 'mailbox' })
    await expect(first.done).rejects.toThrow(/link dropped/)
    await new Promise((r) => setTimeout(r, 50)) // let the interrupted step run out
    bob.inbox.has = has
    expect([...bob.ctx.locks.keys()]).toEqual([])
    await connect(bob, relay, 'ws://r1', { role: 'mailbox' }).done
    expect(await bob.inbox.items()).toHaveLength(2)
  })

  it("one relay's corrupt chunks left on disk do not spoil another relay's good copy", async () => {
    const rA = await makeRelay()
    const rB = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    const id = await queue(alice, bob, 'big', { file: new Uint8Array(6 * 64 * 1024).fill(5) })
    await Promise.all([connect(alice, rA, 'ws://a').done, connect(alice, rB, 'ws://b').done])
    await corruptChunk0(rA, id, 100)
    // A serves a couple of chunks (one of them corrupt), then hangs up.
    const putChunk = bob.inbox.putChunk.bind(bob.inbox)
    let n = 0
    let a: ReturnType<typeof connect> | undefined
    bob.inbox.putChunk = async (...args: Parameters<typeof putChunk>) => {
      await putChunk(...args)
      if (++n === 2) a?.session.closed('A hung up')
    }
    a = connect(bob, rA, 'ws://a', { role: 'mailbox' })
    await expect(a.done).rejects.toThrow(/A hung up/)
    bob.inbox.putChunk = putChunk
    expect((await bob.inbox.chunksHeld(id)).length).toBeGreaterThan(0)
    const b = await connect(bob, rB, 'ws://b', { role: 'mailbox' }).done
    expect(b.rejected).toEqual([])
    expect((await bob.inbox.items()).map((i) => i.id)).toEqual([id])
  })

  it('a relay that ignores DONE is asked a few times, slowly, and the session still ends', async () => {
    const relay = await makeRelay()
    const alice = await makeClient()
    const bob = await makeClient()
    await queue(alice, bob, 'sticky')
    await connect(alice, relay, 'ws://r1').done
    relay.store.done = async () => 0 // deletes nothing
    const wire: Wire = { up: [], down: [] }
    await connect(bob, relay, 'ws://r1', { role: 'mailbox', wire }).done
    expect(await bob.inbox.items()).toHaveLength(1)
    const lists = wire.up.filter((f) => f.type === FrameType.LIST).length
    expect(lists).toBeGreaterThan(2)
    expect(lists).toBeLessThanOrEqual(8)
  })
})
