import { createHash, randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { concat } from '../../src/protocol/bytes.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { Inbox, type InboxItem, type QuarantineItem } from '../../src/queue/inbox.js'
import { BACKENDS, isDurable, keysUnder, type OpenDb, type StoreHarness } from '../helpers/level-stores.js'

const T0 = 1_700_000_000_000

function idOf(label: string): string {
  return createHash('sha256').update(label).digest('hex')
}

function item(label: string, over: Partial<InboxItem> = {}): InboxItem {
  return { id: idOf(label), from: 'ch1.alice', created_at: T0, received_at: T0 + 100, priority: 1, bytes: 500, text: label, ...over }
}

function quarantine(label: string, over: Partial<QuarantineItem> = {}): QuarantineItem {
  return { id: idOf(label), code: 'BAD_SIGNATURE', reason: "sender's signature does not verify", received_at: T0 + 100, bytes: 300, ...over }
}

/** Split `data` into chunks of `size` bytes (the last one shorter). */
function split(data: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = []
  for (let o = 0; o < data.length; o += size) out.push(data.subarray(o, Math.min(o + size, data.length)))
  return out
}

function runInboxTests(name: string, openDb: OpenDb): void {
  describe(`Inbox on ${name}`, () => {
    let h: StoreHarness
    let commit: GroupCommit
    let inbox: Inbox
    beforeEach(async () => {
      h = await openDb()
      commit = new GroupCommit(h.db)
      inbox = new Inbox(h.db, commit)
    })
    afterEach(async () => {
      await h.dispose()
    })

    describe('has()', () => {
      it('is false for an unknown id', async () => {
        expect(await inbox.has(idOf('nothing'))).toBe(false)
      })

      it('is true once the id is an inbox item, and only for that id', async () => {
        const it1 = item('a')
        await inbox.apply(await inbox.itemOps(it1))
        expect(await inbox.has(it1.id)).toBe(true)
        expect(await inbox.has(idOf('b'))).toBe(false)
        expect(await inbox.items()).toEqual([it1])
      })

      it('is true once the id is quarantined (and it is not an inbox item)', async () => {
        const q = quarantine('q')
        await inbox.apply(await inbox.quarantineOps(q))
        expect(await inbox.has(q.id)).toBe(true)
        expect(await inbox.quarantined()).toEqual([q])
        expect(await inbox.items()).toEqual([])
      })

      it('is true once a receipt marker is stored (receipts are not inbox items)', async () => {
        const id = idOf('receipt')
        const ops = await inbox.receiptOps(id, 'ch1.bob', T0 + 5)
        expect(ops).toEqual([{ type: 'put', key: 'r!' + id, value: expect.any(Uint8Array) }])
        expect(await inbox.has(id)).toBe(false)
        await inbox.apply(ops)
        expect(await inbox.has(id)).toBe(true)
        expect(await inbox.items()).toEqual([])
        expect(await inbox.quarantined()).toEqual([])
      })

      it('is false for a download that only has partial chunks on disk', async () => {
        const id = idOf('partial')
        await inbox.putChunk(id, 10, 2, 0, new Uint8Array(5))
        expect(await inbox.has(id)).toBe(false)
      })
    })

    describe('partial downloads', () => {
      it('putChunk persists chunks arriving out of order; chunksHeld lists them sorted; assemble restores the bytes', async () => {
        const id = idOf('big')
        const data = new Uint8Array(randomBytes(10_000))
        const parts = split(data, 1024) // 10 chunks, the last 784 bytes
        expect(parts).toHaveLength(10)
        const order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]
        // Half of them concurrently (one group commit), then the rest one by one.
        await Promise.all(order.slice(0, 5).map((i) => inbox.putChunk(id, data.length, parts.length, i, parts[i]!)))
        expect(await inbox.chunksHeld(id)).toEqual([0, 2, 5, 7, 9])
        await expect(inbox.assemble(id, data.length)).rejects.toThrow(`assembled ${4 * 1024 + 784} of ${data.length} bytes`)
        for (const i of order.slice(5)) await inbox.putChunk(id, data.length, parts.length, i, parts[i]!)
        expect(await inbox.chunksHeld(id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        expect(new Uint8Array(await inbox.assemble(id, data.length))).toEqual(data)
        expect(commit.ops).toBe(20) // meta + chunk per putChunk
        expect(commit.batches).toBeLessThan(10)
      })

      it('a duplicate chunk replaces itself: still one index, same bytes', async () => {
        const id = idOf('dup')
        const data = new Uint8Array(randomBytes(3000))
        const parts = split(data, 1000)
        for (const i of [0, 1, 1, 2, 0]) await inbox.putChunk(id, data.length, 3, i, parts[i]!)
        expect(await inbox.chunksHeld(id)).toEqual([0, 1, 2])
        expect(new Uint8Array(await inbox.assemble(id, data.length))).toEqual(data)
      })

      it('keeps the chunks of ids that are prefixes of each other apart', async () => {
        const a = 'abcd'
        const b = 'abcdef'
        await inbox.putChunk(a, 4, 2, 0, new Uint8Array([1, 2]))
        await inbox.putChunk(a, 4, 2, 1, new Uint8Array([3, 4]))
        await inbox.putChunk(b, 4, 2, 1, new Uint8Array([9, 9]))
        expect(await inbox.chunksHeld(a)).toEqual([0, 1])
        expect(await inbox.chunksHeld(b)).toEqual([1])
        expect(new Uint8Array(await inbox.assemble(a, 4))).toEqual(new Uint8Array([1, 2, 3, 4]))
      })

      it('orders chunk indices numerically beyond 10 (fixed-width keys)', async () => {
        const id = idOf('many')
        const parts = Array.from({ length: 12 }, (_, i) => new Uint8Array([i]))
        await Promise.all([11, 10, 2, 1, 0, 9, 3, 4, 5, 6, 7, 8].map((i) => inbox.putChunk(id, 12, 12, i, parts[i]!)))
        expect(await inbox.chunksHeld(id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        expect(new Uint8Array(await inbox.assemble(id, 12))).toEqual(concat(parts))
      })

      it('assemble with a wrong total size throws instead of returning short bytes', async () => {
        const id = idOf('short')
        await inbox.putChunk(id, 4, 2, 0, new Uint8Array([1, 2]))
        await inbox.putChunk(id, 4, 2, 1, new Uint8Array([3, 4]))
        await expect(inbox.assemble(id, 6)).rejects.toThrow('assembled 4 of 6 bytes')
        await expect(inbox.assemble(idOf('nothing'), 1)).rejects.toThrow('assembled 0 of 1 bytes')
      })

      for (const kind of ['item', 'quarantine', 'receipt'] as const) {
        it(`${kind}Ops clears the persisted partial chunks and their meta in the same batch`, async () => {
          const id = idOf(`finish-${kind}`)
          const other = idOf('other-download')
          const parts = split(new Uint8Array(randomBytes(300)), 100)
          for (const [i, p] of parts.entries()) await inbox.putChunk(id, 300, 3, i, p)
          await inbox.putChunk(other, 200, 2, 0, new Uint8Array(100))
          expect(await keysUnder(h.db, 'pm!')).toEqual(['pm!' + id, 'pm!' + other].sort())

          const ops =
            kind === 'item'
              ? await inbox.itemOps(item(`finish-${kind}`))
              : kind === 'quarantine'
                ? await inbox.quarantineOps(quarantine(`finish-${kind}`))
                : await inbox.receiptOps(id, 'ch1.bob', T0)
          const prefix = { item: 'i!', quarantine: 'q!', receipt: 'r!' }[kind]
          expect(ops.map((o) => [o.type, o.key])).toEqual([
            ['put', prefix + id],
            ['del', `pc!${id}!00000000`],
            ['del', `pc!${id}!00000001`],
            ['del', `pc!${id}!00000002`],
            ['del', 'pm!' + id],
          ])
          // Nothing happens until applied.
          expect(await inbox.chunksHeld(id)).toEqual([0, 1, 2])
          await inbox.apply(ops)
          expect(await inbox.has(id)).toBe(true)
          expect(await inbox.chunksHeld(id)).toEqual([])
          expect(await h.db.get('pm!' + id)).toBeUndefined()
          // Another download in progress is untouched.
          expect(await inbox.chunksHeld(other)).toEqual([0])
          expect(await keysUnder(h.db, 'pm!')).toEqual(['pm!' + other])
        })
      }

      it('itemOps of a single-chunk message (nothing partial) is just the put', async () => {
        const it1 = item('single')
        expect((await inbox.itemOps(it1)).map((o) => [o.type, o.key])).toEqual([['put', 'i!' + it1.id]])
      })
    })

    describe('listing', () => {
      it('items() sorts by received_at, then created_at, then id', async () => {
        const a = item('a', { received_at: T0 + 3, created_at: T0 })
        const b = item('b', { received_at: T0 + 1, created_at: T0 + 9 })
        const c = item('c', { received_at: T0 + 2, created_at: T0 + 5 })
        const d = item('d', { received_at: T0 + 2, created_at: T0 + 1 })
        const e = item('e', { received_at: T0 + 2, created_at: T0 + 1 })
        const f = item('f', { received_at: T0 + 2, created_at: T0 + 1 })
        for (const x of [a, b, c, d, e, f]) await inbox.apply(await inbox.itemOps(x))
        const tied = [d, e, f].map((x) => x.id).sort()
        expect((await inbox.items()).map((x) => x.id)).toEqual([b.id, ...tied, c.id, a.id])
        expect(await inbox.items()).toContainEqual(a)
      })

      it('items() round-trips every field, including attachments', async () => {
        const withFile = item('file', { file: '/home/x/inbox/photo.jpg', file_name: 'photo.jpg', file_bytes: 123456, text: 'see photo' })
        const bare: InboxItem = { id: idOf('bare'), from: 'ch1.z', created_at: T0, received_at: T0 + 200, priority: 0, bytes: 180 }
        await inbox.apply([...(await inbox.itemOps(withFile)), ...(await inbox.itemOps(bare))])
        expect(await inbox.items()).toEqual([withFile, bare])
      })

      it('quarantined() sorts by received_at and does not mix with items', async () => {
        const q1 = quarantine('q1', { received_at: T0 + 9 })
        const q2 = quarantine('q2', { received_at: T0 + 1, code: 'DECRYPT_FAILED' })
        await inbox.apply(await inbox.quarantineOps(q1))
        await inbox.apply(await inbox.quarantineOps(q2))
        await inbox.apply(await inbox.itemOps(item('i')))
        expect(await inbox.quarantined()).toEqual([q2, q1])
        expect((await inbox.items()).map((x) => x.id)).toEqual([idOf('i')])
      })
    })

    if (isDurable(openDb)) {
      it('partial chunks, items and markers survive close and reopen', async () => {
        const id = idOf('resume')
        const data = new Uint8Array(randomBytes(4000))
        const parts = split(data, 1000)
        await Promise.all([3, 0].map((i) => inbox.putChunk(id, data.length, 4, i, parts[i]!)))
        const it1 = item('kept')
        await inbox.apply(await inbox.itemOps(it1))
        await inbox.apply(await inbox.receiptOps(idOf('rcpt'), 'ch1.bob', T0))
        const db = await h.reopen!()
        const again = new Inbox(db, new GroupCommit(db))
        expect(await again.chunksHeld(id)).toEqual([0, 3])
        expect(await again.items()).toEqual([it1])
        expect(await again.has(idOf('rcpt'))).toBe(true)
        for (const i of [1, 2]) await again.putChunk(id, data.length, 4, i, parts[i]!)
        expect(new Uint8Array(await again.assemble(id, data.length))).toEqual(data)
      })
    }
  })
}

for (const [name, openDb] of BACKENDS) runInboxTests(name, openDb)
