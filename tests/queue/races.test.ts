import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { generateIdentity } from '../../src/client/identity.js'
import { toHex } from '../../src/protocol/bytes.js'
import { Kind, seal } from '../../src/protocol/envelope.js'
import { ChaparError } from '../../src/protocol/errors.js'
import { CHUNK_BYTES } from '../../src/protocol/frames.js'
import { messageId } from '../../src/protocol/hash.js'
import { type Db, openMemoryDb, writeBatch } from '../../src/queue/db.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { MailboxStore } from '../../src/queue/mailbox.js'
import { Outbox, OutboxState } from '../../src/queue/outbox.js'
import { keysUnder, spyBatches } from '../helpers/level-stores.js'

const T0 = 1_700_000_000_000
const a = generateIdentity()
const b = generateIdentity()
function env(fileBytes: number) {
  const e = seal({ from: a, to: b.address, content: { kind: Kind.report, text: 'x', ...(fileBytes ? { file: { name: 'f', data: new Uint8Array(randomBytes(fileBytes)) } } : {}) }, createdAt: T0, expiresAt: T0 + 3600_000 })
  return { e, id: messageId(e) }
}
const put = (e: Uint8Array, id: Uint8Array, i: number) => ({ id, mailbox: b.mailbox, expiresAt: T0 + 3600_000, size: e.length, index: i, data: e.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES) })
const rec = (id: string) => ({ id, to: 'bob', kind: 'report' as const, state: OutboxState.queued, relays: [] as string[], bytes: 1, priority: 1, created_at: 1, expires_at: 1e15, mailbox: 'aa' })

function spyCommitted(db: Db): Set<string> {
  return spyBatches(db).committed
}

describe('a failed multi-chunk completion is a typed refusal, never an unhandled rejection', () => {
  it('wrong id at completion → BAD_ENVELOPE, nothing listed, no unhandled rejection', async () => {
    const db = await openMemoryDb()
    const s = new MailboxStore(db, new GroupCommit(db))
    const { e } = env(200_000)
    const wrong = new Uint8Array(randomBytes(32))
    for (const i of [0, 1, 2]) expect((await s.put(put(e, wrong, i), T0)).kind).toBe('partial')
    const err = await s.put(put(e, wrong, 3), T0).catch((x: unknown) => x)
    expect(err).toBeInstanceOf(ChaparError)
    expect((err as ChaparError).code).toBe('BAD_ENVELOPE')
    expect((await s.list(b.mailbox, 10, T0)).entries).toEqual([])
    expect(await s.holding(wrong)).toEqual({ kind: 'none' })
    expect(await keysUnder(db, 'c!')).toEqual([])
  })
})

describe('partial answers (HAVE) only claim committed chunks', () => {
  it('every index reported in a partial answer is already durable', async () => {
    const db = await openMemoryDb()
    const committed = spyCommitted(db)
    const s = new MailboxStore(db, new GroupCommit(db))
    const { e, id } = env(200_000)
    const hex = toHex(id)
    const violations: string[] = []
    await Promise.all([0, 1, 2].map((i) => s.put(put(e, id, i), T0).then((r) => {
      if (r.kind === 'partial') for (const [x, y] of r.have) for (let j = x; j < y; j++) if (!committed.has(`c!${toHex(b.mailbox)}!${hex}!${String(j).padStart(8, '0')}`)) violations.push(`ack of ${i} claims ${j}`)
    })))
    expect(violations).toEqual([])
  })
  it('a duplicate of the completing chunk never answers partial-with-everything', async () => {
    const db = await openMemoryDb()
    const s = new MailboxStore(db, new GroupCommit(db))
    const { e, id } = env(200_000)
    await Promise.all([0, 1, 2].map((i) => s.put(put(e, id, i), T0)))
    const rs = await Promise.all([s.put(put(e, id, 3), T0), s.put(put(e, id, 3), T0)])
    expect(rs).toEqual([{ kind: 'stored', fresh: true }, { kind: 'stored', fresh: false }])
  })
})

describe('concurrent duplicate single-chunk puts', () => {
  it('two concurrent puts of the same one-chunk envelope → one fresh, one listing', async () => {
    const db = await openMemoryDb()
    const s = new MailboxStore(db, new GroupCommit(db))
    const { e, id } = env(0)
    const rs = await Promise.all([s.put(put(e, id, 0), T0 + 1), s.put(put(e, id, 0), T0 + 2)])
    expect(rs.filter((r) => r.kind === 'stored' && r.fresh)).toHaveLength(1)
    expect((await s.list(b.mailbox, 10, T0 + 3)).entries).toHaveLength(1)
    await s.done(b.mailbox, [id], T0 + 4)
    expect(await keysUnder(db, 'x!')).toEqual([])
  })
})

describe('outbox updates from concurrent sessions', () => {
  it('concurrent markAccepted from two relays keeps both relays', async () => {
    const o = new Outbox(await openMemoryDb())
    await o.add(rec('x'), new Uint8Array([1]))
    await Promise.all([o.markAccepted(['x'], 'A', 2), o.markAccepted(['x'], 'B', 3)])
    expect((await o.get('x'))?.relays.sort()).toEqual(['A', 'B'])
  })
  it('a markAccepted racing a receipt never un-delivers the record', async () => {
    const o = new Outbox(await openMemoryDb())
    await o.add(rec('x'), new Uint8Array([1]))
    await o.markAccepted(['x'], 'A', 2)
    await o.exclusive(async () => {
      const d = await o.deliveredOps(['x'], 'bob', 4)
      void o.markAccepted(['x'], 'B', 3) // another relay's STORED arrives meanwhile
      await writeBatch(o.db, d.ops, true)
    })
    await o.exclusive(async () => {})
    expect((await o.get('x'))?.state).toBe('delivered')
    expect(await o.expire(1e16)).toEqual([])
  })
  it('markAccepted with a repeated id returns the record once', async () => {
    const o = new Outbox(await openMemoryDb())
    await o.add(rec('x'), new Uint8Array([1]))
    expect(await o.markAccepted(['x', 'x'], 'A', 2)).toHaveLength(1)
  })
})

describe('PUTs of one id that disagree, at the same time', () => {
  it('a forged chunk claiming another size cannot overwrite an honest one-chunk envelope it raced (found by the relay fuzz test)', async () => {
    const db = await openMemoryDb()
    const s = new MailboxStore(db, new GroupCommit(db))
    const { e, id } = env(0)
    const forged = { id, mailbox: b.mailbox, expiresAt: T0 + 3600_000, size: 2 * CHUNK_BYTES + 10, index: 2, data: new Uint8Array(10) }
    const [honest, other] = await Promise.allSettled([s.put(put(e, id, 0), T0), s.put(forged, T0)])
    expect(honest).toEqual({ status: 'fulfilled', value: { kind: 'stored', fresh: true } })
    expect(other.status === 'rejected' || other.value.kind === 'stored').toBe(true) // never a HAVE of the forged size
    expect(await s.holding(id)).toEqual({ kind: 'stored' })
    const back = await s.chunk(id, b.mailbox, 0)
    expect(toHex(back!.data)).toBe(toHex(e))
    expect((await s.list(b.mailbox, 10, T0)).entries.map((x) => toHex(x.id))).toEqual([toHex(id)])
  })
})
