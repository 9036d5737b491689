import { createHash, randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { compose } from '../../src/client/compose.js'
import { generateIdentity } from '../../src/client/identity.js'
import { formatAddress } from '../../src/protocol/address.js'
import { toHex } from '../../src/protocol/bytes.js'
import { Kind, Priority } from '../../src/protocol/envelope.js'
import { messageId } from '../../src/protocol/hash.js'
import { parseJson, writeBatch } from '../../src/queue/db.js'
import { isFinal, Outbox, OutboxState, type OutboxRecord } from '../../src/queue/outbox.js'
import { BACKENDS, isDurable, keysUnder, type OpenDb, type StoreHarness } from '../helpers/level-stores.js'

const T0 = 1_700_000_000_000
const HOUR = 3600_000
const ALICE = 'ch1.alice'
const BOB = 'ch1.bob'

/** Stores hand back Buffers; compare plain bytes. */
const u8 = (b: Uint8Array | undefined): Uint8Array | undefined => (b === undefined ? undefined : new Uint8Array(b))

function idOf(label: string): string {
  return createHash('sha256').update(label).digest('hex')
}

function rec(label: string, over: Partial<OutboxRecord> = {}): OutboxRecord {
  return {
    id: idOf(label),
    to: BOB,
    kind: 'report',
    state: OutboxState.queued,
    relays: [],
    bytes: 100,
    priority: Priority.normal,
    created_at: T0,
    expires_at: T0 + 24 * HOUR,
    mailbox: 'aa'.repeat(32),
    ...over,
  }
}

function runOutboxTests(name: string, openDb: OpenDb): void {
  describe(`Outbox on ${name}`, () => {
    let h: StoreHarness
    let outbox: Outbox
    beforeEach(async () => {
      h = await openDb()
      outbox = new Outbox(h.db)
    })
    afterEach(async () => {
      await h.dispose()
    })

    it('markStarted lists each relay once, keeps the rest of the record, and leaves a record without `started` alone', async () => {
      await outbox.add(rec('s1', { started: [] }), new Uint8Array(10))
      await outbox.add(rec('s2'), new Uint8Array(10))
      await Promise.all([outbox.markStarted(idOf('s1'), 'udp://r1'), outbox.markStarted(idOf('s1'), 'udp://r1'), outbox.markAccepted([idOf('s1')], 'ws://r2', T0)])
      await outbox.markStarted(idOf('s1'), 'ws://r2')
      const s1 = (await outbox.get(idOf('s1')))!
      expect(s1.started).toEqual(['udp://r1', 'ws://r2'])
      expect(s1.relays).toEqual(['ws://r2']) // not overwritten by the concurrent update
      await outbox.markStarted(idOf('s2'), 'udp://r1')
      expect((await outbox.get(idOf('s2')))!.started).toBeUndefined()
      await outbox.markStarted(idOf('nothing'), 'udp://r1') // no record: nothing written
      expect(await outbox.get(idOf('nothing'))).toBeUndefined()
    })

    it('generation moves only once queued envelopes are durable, never at compose time', async () => {
      const g0 = outbox.generation
      const r = rec('gen1')
      const ops = outbox.addOps(r, new Uint8Array(60))
      expect(outbox.generation).toBe(g0) // composed, not written: a scan now would not find it
      await h.db.batch(ops.map((o) => ({ type: 'put' as const, key: o.key, value: o.value! })))
      outbox.noteQueued()
      expect(outbox.generation).toBe(g0 + 1)
      await outbox.add(rec('gen2'), new Uint8Array(60))
      expect(outbox.generation).toBe(g0 + 2)
    })

    async function addAll(...records: OutboxRecord[]): Promise<Map<string, Uint8Array>> {
      const envs = new Map<string, Uint8Array>()
      for (const r of records) {
        const env = new Uint8Array(randomBytes(50 + (r.id.charCodeAt(0) % 50)))
        envs.set(r.id, env)
        await outbox.add(r, env)
      }
      return envs
    }

    describe('add / get / envelope / list', () => {
      it('stores the record and its envelope byte for byte', async () => {
        const r = rec('a', { summary: 'hello' })
        const env = new Uint8Array(randomBytes(300))
        await outbox.add(r, env)
        expect(await outbox.get(r.id)).toEqual(r)
        expect(u8(await outbox.envelope(r.id))).toEqual(env)
        expect(await outbox.list()).toEqual([r])
      })

      it('answers undefined for unknown ids and an empty list for an empty store', async () => {
        expect(await outbox.get(idOf('nope'))).toBeUndefined()
        expect(await outbox.envelope(idOf('nope'))).toBeUndefined()
        expect(await outbox.list()).toEqual([])
        expect(await outbox.pendingFor('relay-a', T0)).toEqual([])
      })

      it('addOps returns exactly the two puts, committed atomically by the caller', async () => {
        const r = rec('ops')
        const env = new Uint8Array([1, 2, 3])
        const ops = outbox.addOps(r, env)
        expect(ops.map((o) => [o.type, o.key])).toEqual([
          ['put', 'b!' + r.id],
          ['put', 'o!' + r.id],
        ])
        expect(await outbox.get(r.id)).toBeUndefined()
        await writeBatch(h.db, ops, true)
        expect(await outbox.get(r.id)).toEqual(r)
        expect(u8(await outbox.envelope(r.id))).toEqual(env)
      })

      it('lists oldest first, ties broken by id', async () => {
        const a = rec('a', { created_at: T0 + 2 })
        const b = rec('b', { created_at: T0 + 1 })
        const c = rec('c', { created_at: T0 + 2 })
        const d = rec('d', { created_at: T0 })
        await addAll(a, b, c, d)
        const tied = [a, c].sort((x, y) => (x.id < y.id ? -1 : 1)).map((r) => r.id)
        expect((await outbox.list()).map((r) => r.id)).toEqual([d.id, b.id, ...tied])
      })

      it('re-adding the same id overwrites the record, never duplicates it', async () => {
        const r = rec('a')
        await outbox.add(r, new Uint8Array([1]))
        await outbox.add({ ...r, summary: 'v2' }, new Uint8Array([2]))
        expect(await outbox.list()).toEqual([{ ...r, summary: 'v2' }])
        expect(u8(await outbox.envelope(r.id))).toEqual(new Uint8Array([2]))
      })
    })

    describe('pendingFor', () => {
      it('orders urgent before normal before low, then oldest first', async () => {
        const lowOld = rec('low-old', { priority: Priority.low, created_at: T0 })
        const lowNew = rec('low-new', { priority: Priority.low, created_at: T0 + 50 })
        const normOld = rec('norm-old', { priority: Priority.normal, created_at: T0 + 1 })
        const normNew = rec('norm-new', { priority: Priority.normal, created_at: T0 + 40 })
        const urgOld = rec('urg-old', { priority: Priority.urgent, created_at: T0 + 10 })
        const urgNew = rec('urg-new', { priority: Priority.urgent, created_at: T0 + 30 })
        await addAll(lowNew, normNew, urgNew, lowOld, urgOld, normOld)
        const pending = await outbox.pendingFor('relay-a', T0 + 100)
        expect(pending.map((r) => r.id)).toEqual([urgOld, urgNew, normOld, normNew, lowOld, lowNew].map((r) => r.id))
      })

      it('excludes relays that accepted, final records, and records at or past their expiry', async () => {
        const now = T0 + 1000
        const queued = rec('queued', { created_at: T0 + 1 })
        const acceptedByA = rec('acc-a', { created_at: T0 + 2, state: OutboxState.accepted, relays: ['relay-a'] })
        const acceptedByB = rec('acc-b', { created_at: T0 + 3, state: OutboxState.accepted, relays: ['relay-b'] })
        const delivered = rec('delivered', { created_at: T0 + 4, state: OutboxState.delivered })
        const expired = rec('expired', { created_at: T0 + 5, state: OutboxState.expired })
        const expiresNow = rec('expires-now', { created_at: T0 + 6, expires_at: now })
        const pastTtl = rec('past-ttl', { created_at: T0 + 7, expires_at: now - 1 })
        const justAlive = rec('just-alive', { created_at: T0 + 8, expires_at: now + 1 })
        await addAll(queued, acceptedByA, acceptedByB, delivered, expired, expiresNow, pastTtl, justAlive)
        expect((await outbox.pendingFor('relay-a', now)).map((r) => r.id)).toEqual([queued.id, acceptedByB.id, justAlive.id])
        expect((await outbox.pendingFor('relay-b', now)).map((r) => r.id)).toEqual([queued.id, acceptedByA.id, justAlive.id])
        expect((await outbox.pendingFor('relay-c', now)).map((r) => r.id)).toEqual([queued.id, acceptedByA.id, acceptedByB.id, justAlive.id])
      })
    })

    describe('markAccepted', () => {
      it('moves queued → accepted with the relay recorded, persists it, and is idempotent', async () => {
        const r = rec('a')
        const other = rec('b')
        const envs = await addAll(r, other)
        const changed = await outbox.markAccepted([r.id], 'relay-a', T0 + 10)
        const afterFirst = { ...r, state: OutboxState.accepted, relays: ['relay-a'], accepted_at: T0 + 10 }
        expect(changed).toEqual([afterFirst])
        expect(await outbox.get(r.id)).toEqual(afterFirst)
        // Again, later, same relay: nothing changes, not even accepted_at.
        expect(await outbox.markAccepted([r.id], 'relay-a', T0 + 20)).toEqual([])
        expect(await outbox.get(r.id)).toEqual(afterFirst)
        // The other record is untouched and the envelope is kept (a relay ack deletes nothing).
        expect(await outbox.get(other.id)).toEqual(other)
        expect(u8(await outbox.envelope(r.id))).toEqual(envs.get(r.id))
      })

      it('adds a second relay without resetting accepted_at; ignores unknown ids', async () => {
        const r = rec('a')
        await addAll(r)
        await outbox.markAccepted([r.id], 'relay-a', T0 + 10)
        const changed = await outbox.markAccepted([idOf('unknown'), r.id], 'relay-b', T0 + 30)
        const expected = { ...r, state: OutboxState.accepted, relays: ['relay-a', 'relay-b'], accepted_at: T0 + 10 }
        expect(changed).toEqual([expected])
        expect(await outbox.get(r.id)).toEqual(expected)
        expect(await outbox.get(idOf('unknown'))).toBeUndefined()
        expect(await outbox.pendingFor('relay-a', T0 + 40)).toEqual([])
        expect(await outbox.pendingFor('relay-b', T0 + 40)).toEqual([])
        expect((await outbox.pendingFor('relay-c', T0 + 40)).map((x) => x.id)).toEqual([r.id])
      })

      it('never moves a final record back out of its final state', async () => {
        const d = rec('d', { state: OutboxState.delivered, delivered_at: T0 + 5 })
        const e = rec('e', { state: OutboxState.expired, expired_at: T0 + 5 })
        await addAll(d, e)
        await outbox.markAccepted([d.id, e.id], 'relay-a', T0 + 10)
        expect((await outbox.get(d.id))?.state).toBe(OutboxState.delivered)
        expect((await outbox.get(e.id))?.state).toBe(OutboxState.expired)
        expect((await outbox.get(d.id))?.accepted_at).toBeUndefined()
      })

      it('accepts a batch of ids in one call', async () => {
        const rs = ['a', 'b', 'c'].map((l, i) => rec(l, { created_at: T0 + i }))
        await addAll(...rs)
        const changed = await outbox.markAccepted(
          rs.map((r) => r.id),
          'relay-a',
          T0 + 9,
        )
        expect(changed.map((r) => r.id)).toEqual(rs.map((r) => r.id))
        expect((await outbox.list()).map((r) => [r.state, r.relays, r.accepted_at])).toEqual(rs.map(() => ['accepted', ['relay-a'], T0 + 9]))
      })
    })

    describe('deliveredOps', () => {
      it('honours only a receipt signed by the record’s `to` address', async () => {
        const toBob = rec('to-bob', { to: BOB })
        const toAlice = rec('to-alice', { to: ALICE, created_at: T0 + 1 })
        const envs = await addAll(toBob, toAlice)
        // Alice signs a receipt naming both: only the one addressed to Alice counts.
        const r1 = await outbox.deliveredOps([toBob.id, toAlice.id], ALICE, T0 + 50)
        expect(r1.delivered).toEqual([toAlice.id])
        expect(r1.ops).toEqual([
          { type: 'put', key: 'o!' + toAlice.id, value: expect.any(Uint8Array) },
          { type: 'del', key: 'b!' + toAlice.id },
        ])
        // deliveredOps only computes: nothing is written until the caller applies the ops.
        expect((await outbox.get(toAlice.id))?.state).toBe(OutboxState.queued)
        await writeBatch(h.db, r1.ops, true)
        expect(await outbox.get(toAlice.id)).toEqual({ ...toAlice, state: OutboxState.delivered, delivered_at: T0 + 50 })
        expect(await outbox.envelope(toAlice.id)).toBeUndefined()
        expect(await outbox.get(toBob.id)).toEqual(toBob)
        expect(u8(await outbox.envelope(toBob.id))).toEqual(envs.get(toBob.id))
      })

      it('ignores receipts for receipts, unknown ids and already delivered records', async () => {
        const receipt = rec('receipt', { kind: 'receipt' })
        const done = rec('done', { state: OutboxState.delivered, delivered_at: T0 + 1 })
        await addAll(receipt, done)
        const r = await outbox.deliveredOps([receipt.id, done.id, idOf('unknown')], BOB, T0 + 50)
        expect(r).toEqual({ ops: [], delivered: [] })
      })

      it('marks an accepted record delivered, keeping its relays and accepted_at', async () => {
        const r = rec('a')
        await addAll(r)
        await outbox.markAccepted([r.id], 'relay-a', T0 + 10)
        const { ops, delivered } = await outbox.deliveredOps([r.id], BOB, T0 + 20)
        expect(delivered).toEqual([r.id])
        await writeBatch(h.db, ops, true)
        const got = await outbox.get(r.id)
        expect(got).toEqual({ ...r, state: OutboxState.delivered, relays: ['relay-a'], accepted_at: T0 + 10, delivered_at: T0 + 20 })
        expect(isFinal(got!)).toBe(true)
        expect(await outbox.pendingFor('relay-b', T0 + 30)).toEqual([])
      })

      it('works on a real composed message: the recipient’s formatted address is the only valid signer', async () => {
        const me = generateIdentity()
        const them = generateIdentity()
        const c = compose({
          outbox,
          me,
          to: them.address,
          content: { kind: Kind.report, text: 'water levels rising at the east bridge' },
          now: T0,
          ttlMs: 24 * HOUR,
          priority: Priority.urgent,
        })
        await writeBatch(h.db, c.ops, true)
        expect(c.record.id).toBe(toHex(messageId(c.envelope)))
        expect(u8(await outbox.envelope(c.record.id))).toEqual(c.envelope)
        expect(await outbox.get(c.record.id)).toEqual(c.record)
        expect(c.record).toMatchObject({ to: formatAddress(them.address), kind: 'report', state: 'queued', mailbox: toHex(them.mailbox) })
        expect(await outbox.deliveredOps([c.record.id], formatAddress(me.address), T0 + 1)).toEqual({ ops: [], delivered: [] })
        expect(await outbox.deliveredOps([c.record.id], formatAddress(generateIdentity().address), T0 + 1)).toEqual({ ops: [], delivered: [] })
        const ok = await outbox.deliveredOps([c.record.id], formatAddress(them.address), T0 + 1)
        expect(ok.delivered).toEqual([c.record.id])
      })
    })

    describe('expire', () => {
      it('moves only non-final records at or past expires_at to expired, drops their envelopes, keeps the records', async () => {
        const now = T0 + 10 * HOUR
        const past = rec('past', { created_at: T0 + 1, expires_at: now - 1 })
        const atNow = rec('at-now', { created_at: T0 + 2, expires_at: now, state: OutboxState.accepted, relays: ['relay-a'], accepted_at: T0 + 3 })
        const future = rec('future', { created_at: T0 + 3, expires_at: now + 1 })
        const deliveredPast = rec('delivered-past', { created_at: T0 + 4, expires_at: now - 5, state: OutboxState.delivered, delivered_at: T0 + 9 })
        const expiredBefore = rec('expired-before', { created_at: T0 + 5, expires_at: now - 7, state: OutboxState.expired, expired_at: now - 7 })
        const envs = await addAll(past, atNow, future, deliveredPast, expiredBefore)

        const out = await outbox.expire(now)
        expect(out).toEqual([
          { ...past, state: OutboxState.expired, expired_at: now },
          { ...atNow, state: OutboxState.expired, expired_at: now },
        ])
        expect(await outbox.get(past.id)).toEqual({ ...past, state: OutboxState.expired, expired_at: now })
        expect(await outbox.get(atNow.id)).toEqual({ ...atNow, state: OutboxState.expired, expired_at: now })
        expect(await outbox.envelope(past.id)).toBeUndefined()
        expect(await outbox.envelope(atNow.id)).toBeUndefined()
        // Survivors and final records are untouched.
        expect(await outbox.get(future.id)).toEqual(future)
        expect(u8(await outbox.envelope(future.id))).toEqual(envs.get(future.id))
        expect(await outbox.get(deliveredPast.id)).toEqual(deliveredPast)
        expect(await outbox.get(expiredBefore.id)).toEqual(expiredBefore)
        // Records are kept: five ids listed, two envelopes dropped.
        expect((await outbox.list()).map((r) => r.state)).toEqual(['expired', 'expired', 'queued', 'delivered', 'expired'])
        expect((await keysUnder(h.db, 'b!')).sort()).toEqual([future.id, deliveredPast.id, expiredBefore.id].map((id) => 'b!' + id).sort())
        // Idempotent: nothing more to expire at the same time.
        expect(await outbox.expire(now)).toEqual([])
        expect(await outbox.get(past.id)).toEqual({ ...past, state: OutboxState.expired, expired_at: now })
        // Later, the survivor goes too.
        expect((await outbox.expire(now + 1)).map((r) => r.id)).toEqual([future.id])
        expect(await outbox.pendingFor('relay-z', now + 1)).toEqual([])
      })

      it('with nothing due writes nothing', async () => {
        const r = rec('a')
        const envs = await addAll(r)
        expect(await outbox.expire(T0)).toEqual([])
        expect(await outbox.get(r.id)).toEqual(r)
        expect(u8(await outbox.envelope(r.id))).toEqual(envs.get(r.id))
      })
    })

    it('stores each record as one JSON value under o!<id>', async () => {
      const r = rec('json')
      await addAll(r)
      const raw = await h.db.get('o!' + r.id)
      expect(raw).toBeDefined()
      expect(parseJson<OutboxRecord>(raw!)).toEqual(r)
      expect(await keysUnder(h.db, 'o!')).toEqual(['o!' + r.id])
    })

    if (isDurable(openDb)) {
      it('survives close and reopen with every state intact', async () => {
        const a = rec('a', { created_at: T0 + 1 })
        const b = rec('b', { created_at: T0 + 2, expires_at: T0 + 5 })
        const c = rec('c', { created_at: T0 + 3 })
        const envs = await addAll(a, b, c)
        await outbox.markAccepted([a.id], 'relay-a', T0 + 4)
        await outbox.expire(T0 + 6)
        const d = await outbox.deliveredOps([c.id], BOB, T0 + 7)
        await writeBatch(h.db, d.ops, true)
        const before = await outbox.list()
        const db = await h.reopen!()
        const reopened = new Outbox(db)
        expect(await reopened.list()).toEqual(before)
        expect(before.map((r) => r.state)).toEqual(['accepted', 'expired', 'delivered'])
        expect(u8(await reopened.envelope(a.id))).toEqual(envs.get(a.id))
        expect(await reopened.envelope(b.id)).toBeUndefined()
        expect(await reopened.envelope(c.id)).toBeUndefined()
      })
    }
  })
}

for (const [name, openDb] of BACKENDS) runOutboxTests(name, openDb)
