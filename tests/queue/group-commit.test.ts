import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type BatchOp, type Db } from '../../src/queue/db.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { BACKENDS, type OpenDb, spyBatches, type StoreHarness } from '../helpers/level-stores.js'

const enc = new TextEncoder()
const dec = new TextDecoder()
const put = (key: string, value: string): BatchOp => ({ type: 'put', key, value: enc.encode(value) })

async function readText(db: Db, key: string): Promise<string | undefined> {
  const v = await db.get(key)
  return v === undefined ? undefined : dec.decode(v)
}

function runGroupCommitTests(name: string, openDb: OpenDb): void {
  describe(`GroupCommit on ${name}`, () => {
    let h: StoreHarness
    beforeEach(async () => {
      h = await openDb()
    })
    afterEach(async () => {
      await h.dispose()
    })

    it('writes issued while a batch is in flight share the next batch', async () => {
      const { calls } = spyBatches(h.db)
      const gc = new GroupCommit(h.db)
      // The first write starts a batch at once; the next 20, issued while it is in flight, must all join batch 2.
      const first = gc.write([put('k000', 'v0')])
      const rest = Array.from({ length: 20 }, (_, i) => gc.write([put(`k${String(i + 1).padStart(3, '0')}`, `v${i + 1}`), put(`x${i + 1}`, 'y')]))
      await Promise.all([first, ...rest])
      expect(gc.batches).toBe(2)
      expect(gc.batches).toBeLessThan(21)
      expect(gc.ops).toBe(1 + 20 * 2)
      expect(calls.map((c) => c.keys.length)).toEqual([1, 40])
      // Ops keep the order of the write() calls inside the shared batch.
      expect(calls[1]!.keys.slice(0, 4)).toEqual(['k001', 'x1', 'k002', 'x2'])
      expect(calls.every((c) => c.sync === true)).toBe(true)
      for (let i = 0; i <= 20; i++) expect(await readText(h.db, `k${String(i).padStart(3, '0')}`)).toBe(`v${i}`)
    })

    it('resolves every write only after its batch is committed and readable', async () => {
      const { calls, committed } = spyBatches(h.db)
      const gc = new GroupCommit(h.db)
      const violations: string[] = []
      const reads: Array<Promise<void>> = []
      const writes: Array<Promise<void>> = []
      for (let wave = 0; wave < 5; wave++) {
        for (let i = 0; i < 10; i++) {
          const key = `w${wave}-${i}`
          writes.push(
            gc.write([put(key, `${wave}:${i}`)]).then(() => {
              // Synchronously at resolution: the store must already have committed this key.
              if (!committed.has(key)) violations.push(key)
              reads.push(
                readText(h.db, key).then((v) => {
                  if (v !== `${wave}:${i}`) violations.push(`${key}=${String(v)}`)
                }),
              )
            }),
          )
        }
        // Let the loop turn between waves so batches overlap with new writes.
        await new Promise((r) => setImmediate(r))
      }
      await Promise.all(writes)
      await Promise.all(reads)
      expect(violations).toEqual([])
      expect(calls.every((c) => c.committed)).toBe(true)
      expect(gc.batches).toBe(calls.length)
      expect(gc.batches).toBeLessThan(50)
      expect(gc.ops).toBe(50)
    })

    it('a write issued from a resolution callback goes into a new batch and resolves', async () => {
      const gc = new GroupCommit(h.db)
      const chained = await new Promise<string | undefined>((resolve, reject) => {
        gc.write([put('a', '1')]).then(() => {
          gc.write([put('b', '2')])
            .then(() => readText(h.db, 'b'))
            .then(resolve, reject)
        }, reject)
      })
      expect(chained).toBe('2')
      expect(gc.batches).toBe(2)
    })

    it('passes sync: false through when constructed without fsync', async () => {
      const { calls } = spyBatches(h.db)
      const gc = new GroupCommit(h.db, false)
      await gc.write([put('a', '1')])
      expect(calls).toHaveLength(1)
      expect(calls[0]!.sync).toBe(false)
      expect(await readText(h.db, 'a')).toBe('1')
    })

    it('a failing batch rejects all of its waiters, commits none of its ops, and the next batch works', async () => {
      const gc = new GroupCommit(h.db)
      const first = gc.write([put('ok-0', 'a')])
      // These three share batch 2; the middle one carries an op abstract-level refuses (no value).
      const good1 = gc.write([put('ok-1', 'b')])
      const bad = gc.write([{ type: 'put', key: 'bad', value: undefined }])
      const good2 = gc.write([put('ok-2', 'c')])
      const settled = await Promise.allSettled([first, good1, bad, good2])
      expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected'])
      const reasons = settled.slice(1).map((s) => (s as PromiseRejectedResult).reason as unknown)
      expect(reasons[0]).toBeInstanceOf(Error)
      // One error, shared by every waiter of the failed batch.
      expect(reasons[1]).toBe(reasons[0])
      expect(reasons[2]).toBe(reasons[0])
      expect(gc.batches).toBe(1)
      expect(gc.ops).toBe(1)
      // Atomic: nothing of the failed batch reached the store.
      expect(await readText(h.db, 'ok-0')).toBe('a')
      expect(await readText(h.db, 'ok-1')).toBeUndefined()
      expect(await readText(h.db, 'ok-2')).toBeUndefined()
      // Not wedged: the next batch commits.
      await gc.write([put('after', 'd'), put('ok-1', 'b2')])
      expect(gc.batches).toBe(2)
      expect(gc.ops).toBe(3)
      expect(await readText(h.db, 'after')).toBe('d')
      expect(await readText(h.db, 'ok-1')).toBe('b2')
    })

    it('rejects waiters while the database is closed and recovers once it is open again', async () => {
      const gc = new GroupCommit(h.db)
      await gc.write([put('before', '1')])
      await h.db.close()
      const a = gc.write([put('closed-a', 'x')])
      const b = gc.write([put('closed-b', 'y')])
      const results = await Promise.allSettled([a, b])
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected'])
      for (const r of results) expect(((r as PromiseRejectedResult).reason as { code?: string }).code).toBe('LEVEL_DATABASE_NOT_OPEN')
      expect(gc.batches).toBe(1)
      await h.db.open()
      await gc.write([put('after', '2')])
      expect(gc.batches).toBe(2)
      expect(await readText(h.db, 'after')).toBe('2')
      expect(await readText(h.db, 'closed-a')).toBeUndefined()
      expect(await readText(h.db, 'closed-b')).toBeUndefined()
    })

    it('an empty write resolves without touching the store', async () => {
      const { calls } = spyBatches(h.db)
      const gc = new GroupCommit(h.db)
      await gc.write([])
      expect(calls).toHaveLength(0)
      expect(gc.ops).toBe(0)
    })

    it('property: concurrent writes in random waves end with the last value written to each key, each wave in at most two batches', async () => {
      let run = 0
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(fc.tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 1, max: 3 })), { minLength: 1, maxLength: 12 }), {
            minLength: 1,
            maxLength: 5,
          }),
          async (waves) => {
            const ns = `p${run++}/`
            const gc = new GroupCommit(h.db)
            const expected = new Map<string, string>()
            const all: Array<Promise<void>> = []
            let n = 0
            let writes = 0
            for (const wave of waves) {
              for (const [key, count] of wave) {
                const ops: BatchOp[] = []
                for (let j = 0; j < count; j++) {
                  const v = `v${n++}`
                  ops.push(put(ns + key, v))
                  expected.set(ns + key, v)
                }
                all.push(gc.write(ops))
                writes++
              }
              await new Promise((r) => setImmediate(r))
            }
            await Promise.all(all)
            for (const [k, v] of expected) expect(await readText(h.db, k)).toBe(v)
            expect(gc.ops).toBe(n)
            // A wave is issued synchronously: its first write may start a batch, all the others join the next one.
            const bound = waves.reduce((s, w) => s + Math.min(w.length, 2), 0)
            expect(gc.batches).toBeLessThanOrEqual(bound)
            expect(gc.batches).toBeLessThanOrEqual(writes)
          },
        ),
        { numRuns: 25 },
      )
    })
  })
}

for (const [name, openDb] of BACKENDS) runGroupCommitTests(name, openDb)
