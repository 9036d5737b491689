import { mkdir } from 'node:fs/promises'
import type { AbstractLevel } from 'abstract-level'
import { Level } from 'level'
import { MemoryLevel } from 'memory-level'

/**
 * Every store in Chapar is one abstract-level database with utf8 keys and
 * byte values; each store owns a key prefix. The real drivers open
 * LevelDB on disk through `level` (classic-level on Node, IndexedDB in a
 * browser); tests and the simulator use memory-level.
 */
export type Db = AbstractLevel<any, string, Uint8Array>

export interface BatchOp {
  type: 'put' | 'del'
  key: string
  value?: Uint8Array
}

/**
 * Table files a relay's LevelDB keeps open by default. LevelDB memory-maps
 * each open table (≤ 2 MiB) for reads, and the pages it reads count in the
 * relay's RSS: with LevelDB's default (1,000) a relay holding a million
 * messages showed 456 MB of them after some traffic (bench/relay-scale.ts).
 * The table cache holds this many less 10, so mapped pages stay under
 * ~300 MB whatever the store's size; fewer makes reads open tables more
 * often (at 50, fetching a mailbox from a million-message store took 4×
 * as long as from a small one). It also leaves file descriptors to sockets.
 */
export const RELAY_MAX_OPEN_FILES = 150

export async function openDiskDb(dir: string, options: { maxOpenFiles?: number } = {}): Promise<Db> {
  await mkdir(dir, { recursive: true })
  const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view', ...(options.maxOpenFiles !== undefined ? { maxOpenFiles: options.maxOpenFiles } : {}) })
  await db.open()
  return db as unknown as Db
}

export async function openMemoryDb(): Promise<Db> {
  const db = new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' })
  await db.open()
  return db as unknown as Db
}

/**
 * Atomic batch; `sync: true` makes LevelDB fsync its log before resolving.
 * A chained batch, because abstract-level's array form clones every op
 * first: at relay ingest rates that clone was a fifth of the relay's CPU.
 */
export async function writeBatch(db: Db, ops: readonly BatchOp[], sync: boolean): Promise<void> {
  if (ops.length === 0) return
  const batch = db.batch()
  try {
    for (const op of ops) {
      if (op.type === 'put') batch.put(op.key, op.value!)
      else batch.del(op.key)
    }
  } catch (err) {
    await batch.close()
    throw err
  }
  await (batch.write as (options: { sync: boolean }) => Promise<void>)({ sync })
}

const enc = new TextEncoder()
const dec = new TextDecoder()

export function jsonValue(v: unknown): Uint8Array {
  return enc.encode(JSON.stringify(v))
}

export function parseJson<T>(b: Uint8Array): T {
  return JSON.parse(dec.decode(b)) as T
}

/** Fixed-width decimal so lexicographic key order is numeric order. */
export function pad(n: number, width = 16): string {
  return String(n).padStart(width, '0')
}

export async function* scan(db: Db, prefix: string, limit = -1): AsyncGenerator<[string, Uint8Array]> {
  for await (const [k, v] of db.iterator({ gte: prefix, lt: prefix + '\xff', limit })) yield [k, v]
}

export async function* scanKeys(db: Db, prefix: string, limit = -1): AsyncGenerator<string> {
  for await (const k of db.keys({ gte: prefix, lt: prefix + '\xff', limit })) yield k
}
