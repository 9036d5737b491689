/**
 * kill -9 test for the outbox on a real classic-level database. A child
 * process (plain ESM JavaScript run with `node --input-type=module -e`,
 * importing the COMPILED modules from dist/) adds records, marks them
 * accepted and expires them in a loop, printing each operation only after
 * its await resolved. The parent SIGKILLs it at a random moment, reopens
 * the database and checks that every acknowledged write is there, byte for
 * byte, and that no record is half-written. Several rounds share one
 * database, so each round also recovers from the previous kill.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Db, openDiskDb, parseJson } from '../../src/queue/db.js'
import { isFinal, Outbox, OutboxState, type OutboxRecord } from '../../src/queue/outbox.js'
import { keysUnder } from '../helpers/level-stores.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const DIST_DB = path.join(ROOT, 'dist/src/queue/db.js')
const DIST_OUTBOX = path.join(ROOT, 'dist/src/queue/outbox.js')
const ROUNDS = 5
const RELAY = 'relay-x'

/**
 * The envelope of record `id`: sha256-derived bytes, 64..4159 long, so the
 * parent can recompute exactly what the child wrote. The child's copy of
 * this function (in CHILD below) must stay identical.
 */
function envelopeFor(id: string): Uint8Array {
  const length = 64 + (parseInt(id.slice(0, 4), 16) % 4096)
  const out = new Uint8Array(length)
  for (let k = 0, o = 0; o < length; k++, o += 32) {
    const block = createHash('sha256').update(`${id}:${k}`).digest()
    out.set(block.subarray(0, Math.min(32, length - o)), o)
  }
  return out
}

function idFor(round: number, i: number): string {
  return createHash('sha256').update(`crash:${round}:${i}`).digest('hex')
}

const CHILD = `
import { createHash } from 'node:crypto'
const [dbUrl, outboxUrl, dir, roundText] = process.argv.slice(1)
const round = Number(roundText)
const { openDiskDb } = await import(dbUrl)
const { Outbox } = await import(outboxUrl)

function envelopeFor(id) {
  const length = 64 + (parseInt(id.slice(0, 4), 16) % 4096)
  const out = new Uint8Array(length)
  for (let k = 0, o = 0; o < length; k++, o += 32) {
    const block = createHash('sha256').update(id + ':' + k).digest()
    out.set(block.subarray(0, Math.min(32, length - o)), o)
  }
  return out
}
const idFor = (i) => createHash('sha256').update('crash:' + round + ':' + i).digest('hex')
const say = (line) => process.stdout.write(line + '\\n')

const db = await openDiskDb(dir)
const outbox = new Outbox(db)
say('READY')
for (let i = 0; ; i++) {
  const id = idFor(i)
  const envelope = envelopeFor(id)
  const now = Date.now()
  // Every fourth record is born past its TTL, so expire() has work to do.
  const expiresAt = i % 4 === 3 ? now - 1 : now + 3600000
  await outbox.add({
    id, to: 'ch1.bob', kind: 'report', state: 'queued', relays: [], bytes: envelope.length,
    priority: i % 3, created_at: now, expires_at: expiresAt, mailbox: 'ab'.repeat(32), summary: round + ':' + i,
  }, envelope)
  say('A ' + id)
  if (i % 2 === 1) {
    const prev = idFor(i - 1)
    await outbox.markAccepted([prev, id], '${RELAY}', now)
    say('M ' + prev + ' ' + id)
  }
  if (i % 5 === 4) {
    const expired = await outbox.expire(now)
    say('E ' + expired.map((r) => r.id).join(' '))
  }
}
`

interface RoundLog {
  round: number
  delayMs: number
  added: string[]
  accepted: string[]
  expired: string[]
  stderr: string
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Run one child round and SIGKILL it `delayMs` after it opened the database. */
async function runRound(dir: string, round: number, delayMs: number): Promise<RoundLog> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--input-type=module', '-e', CHILD, pathToFileURL(DIST_DB).href, pathToFileURL(DIST_OUTBOX).href, dir, String(round)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  let stderr = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  )
  // Wait for READY (or an early death, which is a failure of its own).
  const ready = await Promise.race([
    (async () => {
      while (!out.includes('READY\n')) await sleep(5)
      return true
    })(),
    exited.then(() => false),
    sleep(10_000).then(() => false),
  ])
  if (!ready) {
    child.kill('SIGKILL')
    throw new Error(`child of round ${round} did not start: ${stderr || '(no stderr)'}`)
  }
  await sleep(delayMs)
  expect(child.exitCode, `child died on its own before the kill: ${stderr}`).toBeNull()
  child.kill('SIGKILL')
  const { signal } = await exited
  expect(signal).toBe('SIGKILL')
  // Only complete lines count: a torn last line was never fully acknowledged.
  const lines = out.split('\n').slice(0, -1)
  const log: RoundLog = { round, delayMs, added: [], accepted: [], expired: [], stderr }
  for (const line of lines) {
    const [tag, ...ids] = line.split(' ')
    if (tag === 'A') log.added.push(...ids)
    else if (tag === 'M') log.accepted.push(...ids)
    else if (tag === 'E') log.expired.push(...ids.filter((x) => x.length > 0))
  }
  return log
}

/** Whole-database invariants: every record parses, and envelope present ⇔ record not final, with the exact bytes. */
async function checkNoHalfWrites(db: Db): Promise<Map<string, OutboxRecord>> {
  const records = new Map<string, OutboxRecord>()
  for await (const [k, v] of db.iterator({ gte: 'o!', lt: 'o!\xff' })) {
    const r = parseJson<OutboxRecord>(v)
    expect(r.id).toBe(k.slice(2))
    expect(Object.values(OutboxState)).toContain(r.state)
    records.set(r.id, r)
  }
  const envelopes = new Set((await keysUnder(db, 'b!')).map((k) => k.slice(2)))
  for (const id of envelopes) expect(records.has(id), `orphan envelope ${id}`).toBe(true)
  const outbox = new Outbox(db)
  for (const r of records.values()) {
    if (isFinal(r)) {
      expect(envelopes.has(r.id), `final record ${r.id} still has its envelope`).toBe(false)
    } else {
      const env = await outbox.envelope(r.id)
      expect(env, `non-final record ${r.id} lost its envelope`).toBeDefined()
      expect(Buffer.from(env!).equals(Buffer.from(envelopeFor(r.id))), `envelope of ${r.id} differs`).toBe(true)
      expect(r.bytes).toBe(env!.length)
    }
  }
  return records
}

describe('outbox survives kill -9 (classic-level, compiled dist)', () => {
  let dir: string

  beforeAll(async () => {
    if (!existsSync(DIST_DB) || !existsSync(DIST_OUTBOX)) {
      throw new Error(`${path.relative(ROOT, DIST_OUTBOX)} is missing: run \`npm run build\` before this suite (the child process runs compiled JavaScript)`)
    }
    dir = await mkdtemp(path.join(tmpdir(), 'chapar-crash-'))
  })

  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it(`every acknowledged write is intact after ${ROUNDS} SIGKILLs at random moments, and nothing is half-written`, async () => {
    const logs: RoundLog[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const delayMs = 50 + Math.floor(Math.random() * 351)
      const log = await runRound(dir, round, delayMs)
      logs.push(log)
      const context = `round ${round} (killed after ${delayMs} ms, ${log.added.length} acked adds)`

      const db = await openDiskDb(dir)
      try {
        const records = await checkNoHalfWrites(db)
        // Every acknowledged add is there, with its envelope unless it reached a final state.
        for (const id of log.added) expect(records.has(id), `${context}: acked record ${id} missing`).toBe(true)
        for (const id of log.accepted) {
          const r = records.get(id)!
          expect(r.relays, `${context}: acked accept of ${id} lost`).toContain(RELAY)
          expect([OutboxState.accepted, OutboxState.expired]).toContain(r.state)
        }
        for (const id of log.expired) {
          expect(records.get(id)?.state, `${context}: acked expiry of ${id} lost`).toBe(OutboxState.expired)
          expect(await new Outbox(db).envelope(id)).toBeUndefined()
        }
        // At most the one add in flight at the kill may be there without an ack, and nothing beyond it.
        const n = log.added.length
        for (let i = 0; i < n; i++) expect(log.added[i]).toBe(idFor(round, i))
        const ofRound = [...records.values()].filter((r) => r.summary?.startsWith(`${round}:`)).map((r) => r.id)
        expect(ofRound.length === n || ofRound.length === n + 1, `${context}: ${ofRound.length} records stored`).toBe(true)
        expect(new Set(ofRound)).toEqual(new Set(Array.from({ length: ofRound.length }, (_, i) => idFor(round, i))))
        // Every earlier round's state is still there too.
        for (const prev of logs.slice(0, -1)) for (const id of prev.added) expect(records.has(id)).toBe(true)
      } finally {
        await db.close()
      }
    }
    const total = logs.reduce((s, l) => s + l.added.length, 0)
    // The child must really have been writing when it was killed, or the test proves nothing.
    for (const l of logs) expect(l.added.length, `round ${l.round} acked nothing in ${l.delayMs} ms: ${l.stderr}`).toBeGreaterThan(0)
    expect(logs.some((l) => l.accepted.length > 0)).toBe(true)
    expect(total).toBeGreaterThan(ROUNDS)
  })
})
