import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { generateIdentity, type Identity } from '../../src/client/identity.js'
import { concat, toHex } from '../../src/protocol/bytes.js'
import { Kind, seal } from '../../src/protocol/envelope.js'
import { ChaparError, ErrorCode } from '../../src/protocol/errors.js'
import { CHUNK_BYTES, chunkCount } from '../../src/protocol/frames.js'
import { messageId } from '../../src/protocol/hash.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { type ChunkPut, MailboxStore, type PutResult, TOMBSTONE_GRACE_MS } from '../../src/queue/mailbox.js'
import { BACKENDS, isDurable, keysUnder, type OpenDb, type StoreHarness } from '../helpers/level-stores.js'

const T0 = 1_700_000_000_000
const HOUR = 3600_000
const sender = generateIdentity()

interface Sealed {
  envelope: Uint8Array
  id: Uint8Array
  hex: string
  to: Identity
  expiresAt: number
  chunks: number
}

/** A real sealed report to `to`: text only (one chunk) or with a file of `fileBytes` (several chunks). */
function sealed(to: Identity, opts: { fileBytes?: number; expiresAt?: number; text?: string } = {}): Sealed {
  const expiresAt = opts.expiresAt ?? T0 + 24 * HOUR
  const envelope = seal({
    from: { address: sender.address, signSecretKey: sender.signSecretKey },
    to: to.address,
    content: {
      kind: Kind.report,
      text: opts.text ?? 'status report',
      ...(opts.fileBytes ? { file: { name: 'photo.jpg', data: new Uint8Array(randomBytes(opts.fileBytes)) } } : {}),
    },
    createdAt: T0,
    expiresAt,
  })
  const id = messageId(envelope)
  return { envelope, id, hex: toHex(id), to, expiresAt, chunks: chunkCount(envelope.length) }
}

function chunkOf(s: Sealed, index: number, over: Partial<ChunkPut> = {}): ChunkPut {
  return {
    id: s.id,
    mailbox: s.to.mailbox,
    expiresAt: s.expiresAt,
    size: s.envelope.length,
    index,
    data: s.envelope.subarray(index * CHUNK_BYTES, Math.min((index + 1) * CHUNK_BYTES, s.envelope.length)),
    ...over,
  }
}

/** Byte equality without vitest's element-by-element deep diff (slow on 200 KB). */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length)
  expect(Buffer.compare(Buffer.from(actual), Buffer.from(expected)), 'bytes differ').toBe(0)
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<ChaparError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(ChaparError)
  expect((err as ChaparError).code).toBe(code)
  return err as ChaparError
}

/** Deterministic shuffle (mulberry32) so a failing order can be replayed from its seed. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  let a = seed >>> 0
  const rnd = (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

function runMailboxTests(name: string, openDb: OpenDb): void {
  describe(`MailboxStore on ${name}`, () => {
    let h: StoreHarness
    let store: MailboxStore
    let commit: GroupCommit
    let bob: Identity
    let carol: Identity
    beforeEach(async () => {
      h = await openDb()
      commit = new GroupCommit(h.db)
      store = new MailboxStore(h.db, commit)
      bob = generateIdentity()
      carol = generateIdentity()
    })
    afterEach(async () => {
      await h.dispose()
    })

    /** Every chunk of a complete envelope, read back through chunk() and joined. */
    async function readBack(s: Sealed, mailbox = s.to.mailbox): Promise<Uint8Array> {
      const parts: Uint8Array[] = []
      for (let i = 0; i < s.chunks; i++) {
        const c = await store.chunk(s.id, mailbox, i)
        expect(c?.size).toBe(s.envelope.length)
        parts.push(c!.data)
      }
      return concat(parts)
    }

    async function listed(mailbox: Uint8Array, now: number, max = 100): Promise<string[]> {
      return (await store.list(mailbox, max, now)).entries.map((e) => toHex(e.id))
    }

    /** No key of any kind mentions this id (record, chunks, delivery, listing, expiry). */
    async function noTraces(s: Sealed): Promise<void> {
      expect(await h.db.get('m!' + s.hex)).toBeUndefined()
      expect((await keysUnder(h.db, '')).filter((k) => k.includes(s.hex) && !k.startsWith('t'))).toEqual([])
      expect((await store.check()).problems).toEqual([])
    }

    describe('single-chunk envelopes', () => {
      it('put → stored, listed in its mailbox only, served only to that mailbox', async () => {
        const s = sealed(bob)
        expect(s.chunks).toBe(1)
        expect(await store.holding(s.id)).toEqual({ kind: 'none' })
        expect(await store.put(chunkOf(s, 0), T0 + 10)).toEqual({ kind: 'stored', fresh: true })
        expect(await store.list(bob.mailbox, 10, T0 + 20)).toEqual({
          entries: [{ id: expect.any(Uint8Array), size: s.envelope.length, expiresAt: s.expiresAt }],
          more: false,
        })
        expect(await listed(bob.mailbox, T0 + 20)).toEqual([s.hex])
        expect(await listed(carol.mailbox, T0 + 20)).toEqual([])
        const c = await store.chunk(s.id, bob.mailbox, 0)
        expect(c?.size).toBe(s.envelope.length)
        expect(new Uint8Array(c!.data)).toEqual(s.envelope)
        expect(await store.chunk(s.id, carol.mailbox, 0)).toBeUndefined()
        expect(await store.chunk(s.id, bob.mailbox, 1)).toBeUndefined()
        expect(await store.chunk(sealed(bob).id, bob.mailbox, 0)).toBeUndefined()
        expect(await store.holding(s.id)).toEqual({ kind: 'stored' })
        expect(await store.stats()).toEqual({ messages: 1, bytes: s.envelope.length, mailboxes: 1 })
      })

      it('stores a private copy of the chunk bytes (the caller may reuse its buffer)', async () => {
        const s = sealed(bob)
        const data = s.envelope.slice()
        await store.put(chunkOf(s, 0, { data }), T0)
        data.fill(0)
        expect(new Uint8Array((await store.chunk(s.id, bob.mailbox, 0))!.data)).toEqual(s.envelope)
      })

      it('a duplicate put answers stored (not fresh) without a second listing', async () => {
        const s = sealed(bob)
        expect(await store.put(chunkOf(s, 0), T0 + 10)).toEqual({ kind: 'stored', fresh: true })
        expect(await store.put(chunkOf(s, 0), T0 + 30)).toEqual({ kind: 'stored', fresh: false })
        expect(await store.put(chunkOf(s, 0), T0 + 50)).toEqual({ kind: 'stored', fresh: false })
        expect(await listed(bob.mailbox, T0 + 60)).toEqual([s.hex])
        expect(await keysUnder(h.db, 'x!')).toHaveLength(1)
        expect(await store.stats()).toEqual({ messages: 1, bytes: s.envelope.length, mailboxes: 1 })
      })

      it('lists oldest first and pages with `more`, skipping expired entries', async () => {
        const a = sealed(bob, { text: 'a' })
        const b = sealed(bob, { text: 'b', expiresAt: T0 + 2 * HOUR })
        const c = sealed(bob, { text: 'c' })
        await store.put(chunkOf(c, 0), T0 + 3)
        await store.put(chunkOf(a, 0), T0 + 1)
        await store.put(chunkOf(b, 0), T0 + 2)
        expect(await store.list(bob.mailbox, 2, T0 + 10)).toMatchObject({ more: true })
        expect(await listed(bob.mailbox, T0 + 10, 2)).toEqual([a.hex, b.hex])
        expect(await store.list(bob.mailbox, 3, T0 + 10)).toMatchObject({ more: false })
        expect(await listed(bob.mailbox, T0 + 10, 3)).toEqual([a.hex, b.hex, c.hex])
        // At b's expiry it is no longer offered, even before a sweep.
        expect(await listed(bob.mailbox, b.expiresAt, 3)).toEqual([a.hex, c.hex])
      })
    })

    describe('validation', () => {
      it('an expired put → EXPIRED, nothing stored', async () => {
        const s = sealed(bob, { expiresAt: T0 + HOUR })
        await expectCode(store.put(chunkOf(s, 0), s.expiresAt), ErrorCode.EXPIRED)
        await expectCode(store.put(chunkOf(s, 0), s.expiresAt + 1), ErrorCode.EXPIRED)
        expect(await store.holding(s.id)).toEqual({ kind: 'none' })
        await noTraces(s)
        expect(await store.put(chunkOf(s, 0), s.expiresAt - 1)).toEqual({ kind: 'stored', fresh: true })
      })

      it('an id that is not the hash of the bytes → BAD_ENVELOPE, nothing listed', async () => {
        const s = sealed(bob)
        const wrong = { ...s, id: new Uint8Array(randomBytes(32)) }
        wrong.hex = toHex(wrong.id)
        const err = await expectCode(store.put(chunkOf(wrong, 0), T0), ErrorCode.BAD_ENVELOPE)
        expect(err.message).toMatch(/hash/)
        expect(await listed(bob.mailbox, T0)).toEqual([])
        expect(await store.holding(wrong.id)).toEqual({ kind: 'none' })
        await noTraces(wrong)
      })

      it('a PUT naming another mailbox than the sealed header → BAD_ENVELOPE, listed nowhere', async () => {
        const s = sealed(bob)
        await expectCode(store.put(chunkOf(s, 0, { mailbox: carol.mailbox }), T0), ErrorCode.BAD_ENVELOPE)
        expect(await listed(bob.mailbox, T0)).toEqual([])
        expect(await listed(carol.mailbox, T0)).toEqual([])
        await noTraces(s)
      })

      it('a PUT naming another expiry than the sealed header → BAD_ENVELOPE', async () => {
        const s = sealed(bob)
        await expectCode(store.put(chunkOf(s, 0, { expiresAt: s.expiresAt + HOUR }), T0), ErrorCode.BAD_ENVELOPE)
        await expectCode(store.put(chunkOf(s, 0, { expiresAt: s.expiresAt - HOUR }), T0), ErrorCode.BAD_ENVELOPE)
        expect(await listed(bob.mailbox, T0)).toEqual([])
        await noTraces(s)
        // The honest offer still goes through afterwards.
        expect(await store.put(chunkOf(s, 0), T0)).toEqual({ kind: 'stored', fresh: true })
      })

      it('bytes that are not an envelope at all → BAD_ENVELOPE', async () => {
        const junk = new Uint8Array(randomBytes(400))
        const id = messageId(junk)
        await expectCode(store.put({ id, mailbox: bob.mailbox, expiresAt: T0 + HOUR, size: junk.length, index: 0, data: junk }, T0), ErrorCode.BAD_ENVELOPE)
        const tiny = new Uint8Array(10)
        await expectCode(store.put({ id: messageId(tiny), mailbox: bob.mailbox, expiresAt: T0 + HOUR, size: 10, index: 0, data: tiny }, T0), ErrorCode.BAD_ENVELOPE)
        expect(await listed(bob.mailbox, T0)).toEqual([])
      })
    })

    describe('multi-chunk envelopes', () => {
      it('partial puts report what is held; the last chunk completes and lists it once', async () => {
        const s = sealed(bob, { fileBytes: 200_000 })
        expect(s.envelope.length).toBeGreaterThan(3 * CHUNK_BYTES)
        expect(s.chunks).toBe(4)
        expect(await store.put(chunkOf(s, 2), T0 + 1)).toEqual({ kind: 'partial', have: [[2, 3]] })
        expect(await store.holding(s.id)).toEqual({ kind: 'partial', size: s.envelope.length, have: [[2, 3]] })
        expect(await store.put(chunkOf(s, 0), T0 + 2)).toEqual({ kind: 'partial', have: [[0, 1], [2, 3]] })
        // A duplicate of a held chunk is harmless and reports the same.
        expect(await store.put(chunkOf(s, 2), T0 + 3)).toEqual({ kind: 'partial', have: [[0, 1], [2, 3]] })
        expect(await store.holding(s.id)).toEqual({ kind: 'partial', size: s.envelope.length, have: [[0, 1], [2, 3]] })
        // Not visible to the recipient yet.
        expect(await listed(bob.mailbox, T0 + 3)).toEqual([])
        expect(await store.chunk(s.id, bob.mailbox, 0)).toBeUndefined()
        // Its bytes count already (quotas see what is arriving); it is not a message yet.
        expect(store.stats()).toEqual({ messages: 0, bytes: s.envelope.length, mailboxes: 1 })
        expect(await store.put(chunkOf(s, 3), T0 + 4)).toEqual({ kind: 'partial', have: [[0, 1], [2, 4]] })
        expect(await store.put(chunkOf(s, 1), T0 + 5)).toEqual({ kind: 'stored', fresh: true })
        expect(await store.holding(s.id)).toEqual({ kind: 'stored' })
        expect(await listed(bob.mailbox, T0 + 6)).toEqual([s.hex])
        expectSameBytes(await readBack(s), s.envelope)
        expect(await store.put(chunkOf(s, 0), T0 + 7)).toEqual({ kind: 'stored', fresh: false })
        expect(await keysUnder(h.db, 'x!')).toHaveLength(1)
        expect(await store.stats()).toEqual({ messages: 1, bytes: s.envelope.length, mailboxes: 1 })
      })

      it('chunks in random order, concurrently, with duplicates → exactly one fresh completion and one listing', async () => {
        await fc.assert(
          fc.asyncProperty(fc.integer(), fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 4, maxLength: 4 }), async (seed, copies) => {
            const to = generateIdentity()
            const s = sealed(to, { fileBytes: 200_000 })
            expect(s.chunks).toBe(4)
            const puts = shuffled(
              copies.flatMap((n, i) => Array.from({ length: n }, () => i)),
              seed,
            )
            const results: PutResult[] = await Promise.all(puts.map((i) => store.put(chunkOf(s, i), T0 + 100)))
            expect(results.filter((r) => r.kind === 'stored' && r.fresh)).toHaveLength(1)
            for (const r of results) {
              if (r.kind === 'partial') for (const [a, b] of r.have) expect(0 <= a && a < b && b <= 4).toBe(true)
            }
            expect(await listed(to.mailbox, T0 + 200)).toEqual([s.hex])
            expect((await keysUnder(h.db, 'x!' + toHex(to.mailbox))).length).toBe(1)
            expect(await store.holding(s.id)).toEqual({ kind: 'stored' })
            expectSameBytes(await readBack(s), s.envelope)
            // Late duplicates of any chunk: stored, never listed again.
            for (let i = 0; i < 4; i++) expect(await store.put(chunkOf(s, i), T0 + 300)).toEqual({ kind: 'stored', fresh: false })
            expect(await listed(to.mailbox, T0 + 400)).toEqual([s.hex])
          }),
          { numRuns: 25 },
        )
      })

      it('holding() shows partial ranges while chunks are still arriving', async () => {
        const s = sealed(bob, { fileBytes: 200_000 })
        await Promise.all([0, 1].map((i) => store.put(chunkOf(s, i), T0)))
        expect(await store.holding(s.id)).toEqual({ kind: 'partial', size: s.envelope.length, have: [[0, 2]] })
        await store.put(chunkOf(s, 3), T0)
        expect(await store.holding(s.id)).toEqual({ kind: 'partial', size: s.envelope.length, have: [[0, 2], [3, 4]] })
      })

      it('a chunk disagreeing with earlier chunks of the same id → BAD_FRAME, the partial is kept', async () => {
        const s = sealed(bob, { fileBytes: 200_000 })
        await store.put(chunkOf(s, 0), T0)
        await expectCode(store.put(chunkOf(s, 1, { expiresAt: s.expiresAt + 1 }), T0), ErrorCode.BAD_FRAME)
        await expectCode(store.put(chunkOf(s, 1, { mailbox: carol.mailbox }), T0), ErrorCode.BAD_FRAME)
        expect(await store.holding(s.id)).toEqual({ kind: 'partial', size: s.envelope.length, have: [[0, 1]] })
      })

      it('completing under a wrong id → BAD_ENVELOPE, the partial is discarded and nothing listed', async () => {
        const s = sealed(bob, { fileBytes: 200_000 })
        const wrong: Sealed = { ...s, id: new Uint8Array(randomBytes(32)) }
        wrong.hex = toHex(wrong.id)
        for (const i of [0, 1, 2]) expect((await store.put(chunkOf(wrong, i), T0)).kind).toBe('partial')
        const err = await expectCode(store.put(chunkOf(wrong, 3), T0), ErrorCode.BAD_ENVELOPE)
        expect(err.message).toBe('envelope does not hash to its id')
        expect(await listed(bob.mailbox, T0)).toEqual([])
        expect(await store.holding(wrong.id)).toEqual({ kind: 'none' })
        expect(await h.db.get('m!' + wrong.hex)).toBeUndefined()
        expect((await keysUnder(h.db, 'c!')).filter((k) => k.includes(wrong.hex))).toEqual([])
        expect(await keysUnder(h.db, 'x!')).toEqual([])
        // The same bytes under their true id are accepted afterwards.
        for (const i of [3, 1, 0]) expect((await store.put(chunkOf(s, i), T0)).kind).toBe('partial')
        expect(await store.put(chunkOf(s, 2), T0)).toEqual({ kind: 'stored', fresh: true })
        expect(await listed(bob.mailbox, T0)).toEqual([s.hex])
      })

      it('a header disagreeing with the PUT is caught at completion → BAD_ENVELOPE', async () => {
        const s = sealed(bob, { fileBytes: 150_000 })
        expect(s.chunks).toBe(3)
        const offer = { mailbox: carol.mailbox }
        for (const i of [1, 2]) expect((await store.put(chunkOf(s, i, offer), T0)).kind).toBe('partial')
        const err = await expectCode(store.put(chunkOf(s, 0, offer), T0), ErrorCode.BAD_ENVELOPE)
        expect(err.message).toBe('envelope header disagrees with the offer')
        expect(await listed(carol.mailbox, T0)).toEqual([])
        expect(await listed(bob.mailbox, T0)).toEqual([])
        expect(await store.holding(s.id)).toEqual({ kind: 'none' })
        await noTraces(s)
      })
    })

    describe('done()', () => {
      it('deletes the envelope and leaves a tombstone: a later put answers stored but is not listed again', async () => {
        const s = sealed(bob, { fileBytes: 100_000 })
        const keep = sealed(bob, { text: 'keep me' })
        for (let i = 0; i < s.chunks; i++) await store.put(chunkOf(s, i), T0 + 1)
        await store.put(chunkOf(keep, 0), T0 + 2)
        expect(await listed(bob.mailbox, T0 + 3)).toEqual([s.hex, keep.hex])

        expect(await store.done(bob.mailbox, [s.id], T0 + 10)).toBe(1)
        expect(await listed(bob.mailbox, T0 + 11)).toEqual([keep.hex])
        expect(await store.chunk(s.id, bob.mailbox, 0)).toBeUndefined()
        await noTraces(s)
        expect(await store.holding(s.id)).toEqual({ kind: 'stored' })
        expect(await keysUnder(h.db, 't!')).toEqual(['t!' + s.hex])
        expect(await keysUnder(h.db, 'te!')).toEqual([`te!${String(s.expiresAt + TOMBSTONE_GRACE_MS).padStart(16, '0')}!${s.hex}`])

        // A late re-send of any chunk: acknowledged, never delivered twice.
        for (let i = 0; i < s.chunks; i++) expect(await store.put(chunkOf(s, i), T0 + 20)).toEqual({ kind: 'stored', fresh: false })
        expect(await listed(bob.mailbox, T0 + 21)).toEqual([keep.hex])
        await noTraces(s)
        // Idempotent.
        expect(await store.done(bob.mailbox, [s.id], T0 + 30)).toBe(0)
        expect(await store.stats()).toEqual({ messages: 1, bytes: keep.envelope.length, mailboxes: 1 })
      })

      it('ignores ids of another mailbox, unknown ids and partial envelopes', async () => {
        const forBob = sealed(bob)
        const partial = sealed(carol, { fileBytes: 100_000 })
        await store.put(chunkOf(forBob, 0), T0)
        await store.put(chunkOf(partial, 0), T0)
        expect(await store.done(carol.mailbox, [forBob.id, partial.id, new Uint8Array(32)], T0 + 1)).toBe(0)
        expect(await listed(bob.mailbox, T0 + 2)).toEqual([forBob.hex])
        expect(new Uint8Array((await store.chunk(forBob.id, bob.mailbox, 0))!.data)).toEqual(forBob.envelope)
        expect(await store.holding(partial.id)).toEqual({ kind: 'partial', size: partial.envelope.length, have: [[0, 1]] })
        expect(await keysUnder(h.db, 't!')).toEqual([])
      })

      it('a tombstone outlives the envelope by the grace period, measured from the later of expiry and now', async () => {
        const s = sealed(bob, { expiresAt: T0 + HOUR })
        await store.put(chunkOf(s, 0), T0)
        // DONE arrives after the expiry (clock skew): remembered from now, not from the past expiry.
        const late = T0 + 2 * HOUR
        expect(await store.done(bob.mailbox, [s.id], late)).toBe(1)
        expect(await keysUnder(h.db, 'te!')).toEqual([`te!${String(late + TOMBSTONE_GRACE_MS).padStart(16, '0')}!${s.hex}`])
      })
    })

    describe('sweep()', () => {
      it('removes expired envelopes, whole and partial, and tombstones past their time; keeps the rest', async () => {
        const t1 = T0 + HOUR
        const whole = sealed(bob, { expiresAt: t1 })
        const partial = sealed(bob, { expiresAt: t1, fileBytes: 100_000 })
        const alive = sealed(bob, { expiresAt: T0 + 48 * HOUR, fileBytes: 100_000 })
        const delivered = sealed(carol, { expiresAt: T0 + 2 * HOUR })
        await store.put(chunkOf(whole, 0), T0)
        await store.put(chunkOf(partial, 1), T0)
        for (let i = 0; i < alive.chunks; i++) await store.put(chunkOf(alive, i), T0)
        await store.put(chunkOf(delivered, 0), T0)
        expect(await store.done(carol.mailbox, [delivered.id], T0 + 1)).toBe(1)
        const tombUntil = delivered.expiresAt + TOMBSTONE_GRACE_MS

        expect(await store.sweep(t1 - 1)).toEqual({ expired: 0, tombstones: 0 })
        expect(await store.holding(whole.id)).toEqual({ kind: 'stored' })
        expect(await store.holding(partial.id)).toEqual({ kind: 'partial', size: partial.envelope.length, have: [[1, 2]] })

        expect(await store.sweep(t1)).toEqual({ expired: 2, tombstones: 0 })
        for (const s of [whole, partial]) {
          expect(await store.holding(s.id)).toEqual({ kind: 'none' })
          await noTraces(s)
        }
        expect(await listed(bob.mailbox, t1)).toEqual([alive.hex])
        expectSameBytes(await readBack(alive), alive.envelope)
        expect(await store.holding(delivered.id)).toEqual({ kind: 'stored' })

        expect(await store.sweep(tombUntil - 1)).toEqual({ expired: 0, tombstones: 0 })
        expect(await store.holding(delivered.id)).toEqual({ kind: 'stored' })
        expect(await store.sweep(tombUntil)).toEqual({ expired: 0, tombstones: 1 })
        expect(await store.holding(delivered.id)).toEqual({ kind: 'none' })
        expect(await keysUnder(h.db, 't!')).toEqual([])
        expect(await keysUnder(h.db, 'te!')).toEqual([])

        expect(await store.sweep(alive.expiresAt)).toEqual({ expired: 1, tombstones: 0 })
        await noTraces(alive)
        expect(await store.stats()).toEqual({ messages: 0, bytes: 0, mailboxes: 0 })
        // Nothing at all is left behind.
        expect(await keysUnder(h.db, '')).toEqual([])
        expect(await store.check()).toMatchObject({ keys: 0, problems: [] })
      })

      it('a partial swept away starts from nothing if chunks come again (before its expiry)', async () => {
        const s = sealed(bob, { expiresAt: T0 + HOUR, fileBytes: 100_000 })
        await store.put(chunkOf(s, 0), T0)
        await store.sweep(s.expiresAt)
        expect(await store.holding(s.id)).toEqual({ kind: 'none' })
        await expectCode(store.put(chunkOf(s, 1), s.expiresAt), ErrorCode.EXPIRED)
      })
    })

    describe('usage counts', () => {
      /** What every mailbox holds, as a fresh store on the same database counts it (by scanning, or from a snapshot). */
      async function reopened(): Promise<{ how: string; usage: ReturnType<MailboxStore['mailboxes']>; total: MailboxStore['total'] }> {
        const again = new MailboxStore(h.db, new GroupCommit(h.db))
        const { usage: how } = await again.open()
        return { how, usage: again.mailboxes(), total: { ...again.total } }
      }

      it('a clean close saves them; the next open reads them (once) and they equal a scan', async () => {
        await store.open()
        const whole = sealed(bob, { fileBytes: 100_000 })
        const arriving = sealed(bob, { fileBytes: 200_000 })
        const gone = sealed(carol)
        const kept = sealed(carol)
        for (let i = 0; i < whole.chunks; i++) await store.put(chunkOf(whole, i), T0)
        await store.put(chunkOf(arriving, 1), T0)
        await store.put(chunkOf(gone, 0), T0)
        await store.put(chunkOf(kept, 0), T0)
        await store.done(carol.mailbox, [gone.id], T0 + 1)
        const live = { usage: store.mailboxes(), total: { ...store.total } }
        expect(live.total).toEqual({ messages: 2, arriving: 1, bytes: whole.envelope.length + arriving.envelope.length + kept.envelope.length })

        const scanned = await reopened() // no snapshot yet: a scan
        expect(scanned).toEqual({ how: 'scan', ...live })
        expect(await store.saveUsage()).toBe(true)
        // Nothing may change the store once its counts are saved.
        await expectCode(store.put(chunkOf(sealed(bob), 0), T0 + 2), ErrorCode.RETRY_LATER)
        await expectCode(store.done(bob.mailbox, [whole.id], T0 + 2), ErrorCode.RETRY_LATER)
        expect(await reopened()).toEqual({ how: 'snapshot', ...live })
        expect((await keysUnder(h.db, 's!')).length + (await keysUnder(h.db, 'v!usage')).length).toBe(0)
        // Read once: a second open (as after a crash) scans again, and agrees.
        expect(await reopened()).toEqual({ how: 'scan', ...live })
        expect((await store.check()).problems).toEqual([])
      })

      it('an arriving envelope whose first write failed is uncounted (not stranded in the quotas until a restart)', async () => {
        class FailOnce extends GroupCommit {
          fail = true
          override write(ops: Parameters<GroupCommit['write']>[0]): Promise<void> {
            if (!this.fail) return super.write(ops)
            this.fail = false
            return Promise.reject(new Error('injected write failure'))
          }
        }
        store = new MailboxStore(h.db, new FailOnce(h.db))
        const s1 = sealed(bob, { fileBytes: 200_000 })
        await expect(store.put(chunkOf(s1, 1), T0)).rejects.toThrow('injected write failure')
        expect(store.total).toEqual({ messages: 0, arriving: 0, bytes: 0 })
        expect(store.mailboxCount).toBe(0)
        expect(await store.put(chunkOf(s1, 1), T0)).toEqual({ kind: 'partial', have: [[1, 2]] })
        expect(store.total).toEqual({ messages: 0, arriving: 1, bytes: s1.envelope.length })
        expect(await store.saveUsage()).toBe(true)
      })

      it('is not saved while a put is in progress, and a snapshot that does not add up is ignored', async () => {
        await store.open()
        const s1 = sealed(bob)
        const pending = store.put(chunkOf(s1, 0), T0)
        expect(await store.saveUsage()).toBe(false)
        await pending
        expect(await store.saveUsage()).toBe(true)
        await h.db.put('s!' + 'ab'.repeat(32), new TextEncoder().encode('[1,0,5]')) // one entry more than the marker says
        const r = await reopened()
        expect(r).toMatchObject({ how: 'scan', total: { messages: 1, arriving: 0, bytes: s1.envelope.length } })
        expect(await keysUnder(h.db, 's!')).toEqual([])
      })
    })

    describe('format 1 → 2 migration', () => {
      /** Write `s` as a Chapar of format 1 did: chunks under c!<id>!<i>, an empty listing value, no delivery entry. */
      async function writeFormat1(s: Sealed, chunks: number[], receivedAt: number): Promise<void> {
        const mailbox = toHex(s.to.mailbox)
        const complete = chunks.length === s.chunks
        const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
        const ops: Array<{ type: 'put'; key: string; value: Uint8Array }> = [
          { type: 'put', key: 'm!' + s.hex, value: enc({ mailbox, size: s.envelope.length, expires_at: s.expiresAt, received_at: receivedAt, complete }) },
          { type: 'put', key: `e!${String(s.expiresAt).padStart(16, '0')}!${s.hex}`, value: new Uint8Array(0) },
        ]
        for (const i of chunks) ops.push({ type: 'put', key: `c!${s.hex}!${String(i).padStart(8, '0')}`, value: chunkOf(s, i).data.slice() })
        if (complete) ops.push({ type: 'put', key: `x!${mailbox}!${String(receivedAt).padStart(16, '0')}!${s.hex}`, value: new Uint8Array(0) })
        await h.db.batch(ops)
      }

      it('moves whole and arriving envelopes; the store then serves, completes, delivers and checks clean', async () => {
        const small = sealed(bob)
        const big = sealed(bob, { fileBytes: 100_000 })
        const arriving = sealed(carol, { fileBytes: 200_000 })
        const delivered = sealed(carol)
        await writeFormat1(small, [0], T0 + 1)
        await writeFormat1(big, [...Array(big.chunks).keys()], T0 + 2)
        await writeFormat1(arriving, [0, 2], T0 + 3)
        await h.db.batch([
          { type: 'put', key: 't!' + delivered.hex, value: new TextEncoder().encode(JSON.stringify({ until: delivered.expiresAt + TOMBSTONE_GRACE_MS })) },
          { type: 'put', key: `te!${String(delivered.expiresAt + TOMBSTONE_GRACE_MS).padStart(16, '0')}!${delivered.hex}`, value: new Uint8Array(0) },
        ])

        const seen: number[] = []
        expect(await store.open((n) => seen.push(n))).toEqual({ migrated: 3, usage: 'scan' })
        expect(seen).toEqual([3])
        expect(await keysUnder(h.db, 'v!')).toEqual(['v!mailbox-format'])
        const check = await store.check()
        expect(check.problems).toEqual([])
        expect(check).toMatchObject({ whole: new Set([small.hex, big.hex]), arriving: new Set([arriving.hex]), delivered: new Set([delivered.hex]) })
        // No format-1 chunk key is left.
        expect((await keysUnder(h.db, 'c!')).filter((k) => k.split('!').length === 3)).toEqual([])
        expect(store.stats()).toEqual({ messages: 2, bytes: small.envelope.length + big.envelope.length + arriving.envelope.length, mailboxes: 2 })

        expect(await listed(bob.mailbox, T0 + 4)).toEqual([small.hex, big.hex])
        expectSameBytes(await readBack(big), big.envelope)
        expect(await store.holding(arriving.id)).toEqual({ kind: 'partial', size: arriving.envelope.length, have: [[0, 1], [2, 3]] })
        for (let i = 0; i < arriving.chunks; i++) if (i !== 0 && i !== 2) await store.put(chunkOf(arriving, i), T0 + 5)
        expect(await listed(carol.mailbox, T0 + 6)).toEqual([arriving.hex])
        expectSameBytes(await readBack(arriving), arriving.envelope)
        expect(await store.put(chunkOf(delivered, 0), T0 + 6)).toEqual({ kind: 'stored', fresh: false })
        expect(await store.done(bob.mailbox, [small.id, big.id], T0 + 7)).toBe(2)
        expect(await store.done(carol.mailbox, [arriving.id], T0 + 7)).toBe(1)
        const after = await store.check()
        expect(after).toMatchObject({ whole: new Set(), arriving: new Set(), problems: [] })
        expect(store.stats()).toEqual({ messages: 0, bytes: 0, mailboxes: 0 })
        // A second open finds the format stamped and moves nothing.
        expect(await store.open()).toMatchObject({ migrated: 0 })
      })

      it('a migration cut short is taken up again at the next open', async () => {
        const a = sealed(bob, { fileBytes: 100_000 })
        const b = sealed(carol, { fileBytes: 100_000 })
        await writeFormat1(a, [...Array(a.chunks).keys()], T0 + 1)
        await writeFormat1(b, [...Array(b.chunks).keys()], T0 + 2)
        // As if the first open had moved `a` and died before `b` and the stamp.
        await store.open()
        await h.db.del('v!mailbox-format')
        const m = toHex(carol.mailbox)
        await h.db.batch([
          ...[...Array(b.chunks).keys()].flatMap((i) => [
            { type: 'del' as const, key: `c!${m}!${b.hex}!${String(i).padStart(8, '0')}` },
            { type: 'put' as const, key: `c!${b.hex}!${String(i).padStart(8, '0')}`, value: chunkOf(b, i).data.slice() },
          ]),
          { type: 'del' as const, key: `d!${m}!${b.hex}` },
        ])
        expect((await store.check()).problems.length).toBeGreaterThan(0)
        store = new MailboxStore(h.db, new GroupCommit(h.db))
        expect(await store.open()).toMatchObject({ migrated: 2 })
        const check = await store.check()
        expect(check.problems).toEqual([])
        expect(check.whole).toEqual(new Set([a.hex, b.hex]))
        expectSameBytes(await readBack(a), a.envelope)
        expectSameBytes(await readBack(b), b.envelope)
      })

      it('a store of a newer format is refused, not misread', async () => {
        await h.db.put('v!mailbox-format', new TextEncoder().encode('3'))
        await expect(store.open()).rejects.toThrow(/mailbox format 3, written by a newer Chapar/)
      })
    })

    if (isDurable(openDb)) {
      describe('restart durability', () => {
        it('partials resume after close and reopen: holding() shows the same ranges and the rest completes', async () => {
          const s = sealed(bob, { fileBytes: 200_000 })
          await Promise.all([0, 2].map((i) => store.put(chunkOf(s, i), T0)))
          const before = await store.holding(s.id)
          expect(before).toEqual({ kind: 'partial', size: s.envelope.length, have: [[0, 1], [2, 3]] })

          const db = await h.reopen!()
          commit = new GroupCommit(db)
          store = new MailboxStore(db, commit)
          expect(await store.holding(s.id)).toEqual(before)
          expect(await store.put(chunkOf(s, 2), T0 + 1)).toEqual({ kind: 'partial', have: [[0, 1], [2, 3]] })
          expect(await store.put(chunkOf(s, 3), T0 + 1)).toEqual({ kind: 'partial', have: [[0, 1], [2, 4]] })
          expect(await store.put(chunkOf(s, 1), T0 + 2)).toEqual({ kind: 'stored', fresh: true })
          expect(await listed(bob.mailbox, T0 + 3)).toEqual([s.hex])
          expectSameBytes(await readBack(s), s.envelope)
        })

        it('complete envelopes, listings and tombstones survive close and reopen', async () => {
          const kept = sealed(bob, { fileBytes: 100_000 })
          const gone = sealed(bob)
          for (let i = 0; i < kept.chunks; i++) await store.put(chunkOf(kept, i), T0 + 1)
          await store.put(chunkOf(gone, 0), T0 + 2)
          await store.done(bob.mailbox, [gone.id], T0 + 3)

          const db = await h.reopen!()
          store = new MailboxStore(db, new GroupCommit(db))
          // Never opened before, so never stamped with its format: open() walks it as if it were format 1, which must leave format-2 envelopes as they are.
          expect(await store.open()).toMatchObject({ migrated: 1 })
          expect(await store.open()).toMatchObject({ migrated: 0 })
          const check = await store.check()
          expect(check).toMatchObject({ whole: new Set([kept.hex]), arriving: new Set(), delivered: new Set([gone.hex]), problems: [] })
          expect(store.stats()).toEqual({ messages: 1, bytes: kept.envelope.length, mailboxes: 1 })
          expect(await listed(bob.mailbox, T0 + 4)).toEqual([kept.hex])
          expectSameBytes(await readBack(kept), kept.envelope)
          expect(await store.holding(gone.id)).toEqual({ kind: 'stored' })
          expect(await store.put(chunkOf(gone, 0), T0 + 5)).toEqual({ kind: 'stored', fresh: false })
          expect(await listed(bob.mailbox, T0 + 6)).toEqual([kept.hex])
          expect(await store.stats()).toEqual({ messages: 1, bytes: kept.envelope.length, mailboxes: 1 })
        })
      })
    }
  })
}

for (const [name, openDb] of BACKENDS) runMailboxTests(name, openDb)
