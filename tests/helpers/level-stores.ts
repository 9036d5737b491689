/**
 * Backends for the store contract suites (tests/queue/*.test.ts): every
 * store runs the same tests against memory-level and against a real
 * classic-level (LevelDB) in a fresh temp dir, like automerge-repo's
 * `runStorageAdapterTests(setup)`.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { type Db, openDiskDb, openMemoryDb } from '../../src/queue/db.js'

export interface StoreHarness {
  /** The currently open database (replaced by `reopen`). */
  db: Db
  /** Close the database and open the same on-disk store again; absent for memory-level. */
  reopen?: () => Promise<Db>
  /** Close and remove everything. */
  dispose: () => Promise<void>
}

export type OpenDb = () => Promise<StoreHarness>

async function closeQuietly(db: Db): Promise<void> {
  if (db.status === 'open' || db.status === 'opening') await db.close()
}

export const openMemoryHarness: OpenDb = async () => {
  const h: StoreHarness = {
    db: await openMemoryDb(),
    dispose: async () => closeQuietly(h.db),
  }
  return h
}

export const openDiskHarness: OpenDb = async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'chapar-queue-'))
  const h: StoreHarness = {
    db: await openDiskDb(dir),
    reopen: async () => {
      await closeQuietly(h.db)
      h.db = await openDiskDb(dir)
      return h.db
    },
    dispose: async () => {
      await closeQuietly(h.db)
      await rm(dir, { recursive: true, force: true })
    },
  }
  return h
}

export const BACKENDS: ReadonlyArray<readonly [string, OpenDb]> = [
  ['memory-level', openMemoryHarness],
  ['classic-level', openDiskHarness],
]

/** Whether a backend keeps its data across close and reopen (known when tests are collected). */
export function isDurable(openDb: OpenDb): boolean {
  return openDb === openDiskHarness
}

/** All keys under `prefix`, in order. */
export async function keysUnder(db: Db, prefix: string): Promise<string[]> {
  const out: string[] = []
  for await (const k of db.keys({ gte: prefix, lt: prefix + '\xff' })) out.push(k)
  return out
}

export interface BatchCall {
  keys: string[]
  sync: unknown
  /** Set when the real store's write resolved. */
  committed: boolean
}

/**
 * Watch every batch written to `db` (chained, as `writeBatch` does, or the
 * array form): which keys, with what options, and the moment the real store
 * has committed them.
 */
export function spyBatches(db: Db): { calls: BatchCall[]; committed: Set<string> } {
  const calls: BatchCall[] = []
  const committed = new Set<string>()
  const original = db.batch.bind(db) as unknown as (...args: unknown[]) => any
  const record = async (keys: string[], options: { sync?: boolean } | undefined, write: () => Promise<void>): Promise<void> => {
    const call: BatchCall = { keys, sync: options?.sync, committed: false }
    calls.push(call)
    await write()
    call.committed = true
    for (const k of keys) committed.add(k)
  }
  ;(db as unknown as { batch: unknown }).batch = (...args: unknown[]) => {
    if (args.length > 0) {
      const [ops, options] = args as [Array<{ key: string }>, { sync?: boolean } | undefined]
      return record(ops.map((o) => o.key), options, () => original(ops, options))
    }
    const chained = original()
    const keys: string[] = []
    const proxy: unknown = new Proxy(chained, {
      get(target, prop) {
        if (prop === 'put') return (k: string, v: unknown) => (target.put(k, v), keys.push(k), proxy)
        if (prop === 'del') return (k: string) => (target.del(k), keys.push(k), proxy)
        if (prop === 'write') return (options?: { sync?: boolean }) => record(keys, options, () => target.write(options))
        const v = Reflect.get(target, prop)
        return typeof v === 'function' ? v.bind(target) : v
      },
    })
    return proxy
  }
  return { calls, committed }
}
