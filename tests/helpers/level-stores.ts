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
