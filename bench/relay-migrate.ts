/**
 * How long a relay store written by an older Chapar (mailbox format 1, see
 * src/queue/mailbox.ts) takes to migrate to the current format, which the
 * relay does once at startup, before it listens.
 *
 *   npm run bench:relay-migrate -- [--messages N] [--mailboxes M] [--photos P] [--json FILE]
 *
 * It writes a format-1 store directly, as that Chapar laid it out (N
 * one-chunk envelopes of 300 B over M mailboxes, plus P arriving photos of
 * 1 MB with half their chunks), unsynced, in a temporary directory; then
 * times MailboxStore.open() on it (the migration and the usage scan, fsync
 * on, as the relay runs it), and reads the store back with check() to show
 * every envelope came through whole. The bytes are random: the migration
 * moves keys and never hashes envelopes. Prints a table and one JSON line.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { chunkCount, CHUNK_BYTES } from '../src/protocol/frames.js'
import { type BatchOp, openDiskDb, pad, writeBatch } from '../src/queue/db.js'
import { GroupCommit } from '../src/queue/group-commit.js'
import { MailboxStore } from '../src/queue/mailbox.js'
import { fmt, progress, progressDone } from './relay-bench.js'

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000000' },
    mailboxes: { type: 'string', default: '10000' },
    photos: { type: 'string', default: '20' },
    json: { type: 'string' },
  },
})
const N = Number(args.messages)
const M = Number(args.mailboxes)
const P = Number(args.photos)
for (const [name, v] of [['--messages', N], ['--mailboxes', M], ['--photos', P]] as const) {
  if (!Number.isSafeInteger(v) || v < 0 || (name === '--mailboxes' && v < 1)) {
    console.error(`relay-migrate: ${name} must be a whole number${name === '--mailboxes' ? ' ≥ 1' : ''}`)
    process.exit(2)
  }
}

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v))
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

const dir = await mkdtemp(path.join(os.tmpdir(), 'chapar-migrate-'))
const cleanup = (): void => void rm(dir, { recursive: true, force: true })
process.once('SIGINT', () => {
  cleanup()
  process.exit(130)
})
try {
  const db = await openDiskDb(path.join(dir, 'relay'))
  const mailboxes = Array.from({ length: M }, () => hex(randomBytes(32)))
  const now = Date.now()
  const expires = now + 7 * 86_400_000
  const t0 = performance.now()
  let ops: BatchOp[] = []
  const flush = async (): Promise<void> => {
    await writeBatch(db, ops, false)
    ops = []
  }
  for (let i = 0; i < N; i++) {
    const id = hex(randomBytes(32))
    const mailbox = mailboxes[i % M]!
    ops.push(
      { type: 'put', key: 'm!' + id, value: enc({ mailbox, size: 300, expires_at: expires, received_at: now + i, complete: true }) },
      { type: 'put', key: `e!${pad(expires)}!${id}`, value: new Uint8Array(0) },
      { type: 'put', key: `c!${id}!${pad(0, 8)}`, value: new Uint8Array(randomBytes(300)) },
      { type: 'put', key: `x!${mailbox}!${pad(now + i)}!${id}`, value: new Uint8Array(0) },
    )
    if (ops.length >= 4000) await flush()
    if (i % 20_000 === 0) progress(`writing a format-1 store: ${fmt(i)}/${fmt(N)} envelopes`)
  }
  const photoBytes = 1_000_000
  for (let i = 0; i < P; i++) {
    const id = hex(randomBytes(32))
    ops.push(
      { type: 'put', key: 'm!' + id, value: enc({ mailbox: mailboxes[i % M]!, size: photoBytes, expires_at: expires, received_at: now, complete: false }) },
      { type: 'put', key: `e!${pad(expires)}!${id}`, value: new Uint8Array(0) },
    )
    for (let c = 0; c < chunkCount(photoBytes); c += 2) ops.push({ type: 'put', key: `c!${id}!${pad(c, 8)}`, value: new Uint8Array(randomBytes(CHUNK_BYTES)) })
    await flush()
  }
  await flush()
  const writeSeconds = (performance.now() - t0) / 1000
  progress(`wrote ${fmt(N)} envelopes and ${fmt(P)} arriving photos in ${writeSeconds.toFixed(1)} s`, true)
  await db.close()

  // As the relay opens it: a fresh process state, fsynced commits.
  const db2 = await openDiskDb(path.join(dir, 'relay'))
  const store = new MailboxStore(db2, new GroupCommit(db2, true))
  const t1 = performance.now()
  const opened = await store.open((moved) => progress(`migrating: ${fmt(moved)}/${fmt(N + P)} envelopes, ${((performance.now() - t1) / 1000).toFixed(1)} s`))
  const migrateSeconds = (performance.now() - t1) / 1000
  progress(`migrated ${fmt(opened.migrated)} envelopes in ${migrateSeconds.toFixed(1)} s; checking the store`, true)
  const t2 = performance.now()
  const check = await store.check()
  const checkSeconds = (performance.now() - t2) / 1000
  const reopened = new MailboxStore(db2, new GroupCommit(db2, true))
  const t3 = performance.now()
  const again = await reopened.open()
  const reopenSeconds = (performance.now() - t3) / 1000
  await db2.close()
  progressDone()

  const ok = check.problems.length === 0 && check.whole.size === N && check.arriving.size === P && opened.migrated === N + P && again.migrated === 0
  const rows: Array<[string, string]> = [
    ['format-1 store written (unsynced)', `${fmt(N)} envelopes + ${fmt(P)} arriving photos, ${writeSeconds.toFixed(1)} s`],
    ['open: migration + usage scan', `${migrateSeconds.toFixed(1)} s (${fmt((N + P) / migrateSeconds)} envelopes/s)`],
    ['check() afterwards', `${fmt(check.whole.size)} whole, ${fmt(check.arriving.size)} arriving, ${check.problems.length} problems (${checkSeconds.toFixed(1)} s)`],
    ['a second open (format stamped)', `${reopenSeconds.toFixed(1)} s, ${again.migrated} migrated`],
    ['result', ok ? 'PASS' : 'FAIL'],
  ]
  const w = Math.max(...rows.map((r) => r[0].length))
  console.log(`Chapar relay store migration, format 1 → 2 (node ${process.version}, ${os.cpus().length} cores)\n`)
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`)
  if (check.problems.length) console.log(check.problems.slice(0, 10).join('\n'))
  const json = { bench: 'relay-migrate', ok, messages: N, mailboxes: M, photos: P, write_s: +writeSeconds.toFixed(2), migrate_s: +migrateSeconds.toFixed(2), per_sec: Math.round((N + P) / migrateSeconds), check_s: +checkSeconds.toFixed(2), reopen_s: +reopenSeconds.toFixed(2), problems: check.problems.length }
  console.log('\n' + JSON.stringify(json))
  if (args.json) await writeFile(args.json, JSON.stringify(json, null, 2) + '\n')
} finally {
  cleanup()
}
