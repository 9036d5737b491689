/**
 * What the benchmarks' worker processes share (bench/transfer-worker.ts,
 * bench/loss-worker.ts): their argv reader, and a Chapar field client on a
 * memory store with reports already queued — the real compose, outbox and
 * sync-engine context, as `chapar send` would leave them.
 */
import { generateIdentity } from '../src/client/identity.js'
import { compose } from '../src/client/compose.js'
import { MemoryFileSink } from '../src/client/files.js'
import type { ClientContext } from '../src/client/sync-engine.js'
import { Kind, Priority } from '../src/protocol/envelope.js'
import { systemEnv } from '../src/protocol/env.js'
import { openMemoryDb } from '../src/queue/db.js'
import { GroupCommit } from '../src/queue/group-commit.js'
import { Inbox } from '../src/queue/inbox.js'
import { Outbox } from '../src/queue/outbox.js'

/** `--name value` from argv, or the fallback; throws when neither is there. */
export function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? process.argv[i + 1] : fallback
  if (v === undefined) throw new Error(`--${name} is required`)
  return v
}

export interface QueuedReport {
  id: string
  envelopeBytes: number
}

/**
 * A fresh identity with one report per file queued to a fresh recipient.
 * `onAccepted(k)` is called when the relay's fsynced ack for report k arrives.
 */
export async function fieldClient(files: ReadonlyArray<{ name: string; data: Uint8Array }>, onAccepted: (k: number) => void): Promise<{ ctx: ClientContext; reports: QueuedReport[] }> {
  const db = await openMemoryDb()
  const me = generateIdentity(systemEnv.randomBytes)
  const to = generateIdentity(systemEnv.randomBytes)
  const outbox = new Outbox(db)
  const index = new Map<string, number>()
  const reports: QueuedReport[] = []
  for (const [k, file] of files.entries()) {
    const c = compose({ outbox, me, to: to.address, content: { kind: Kind.report, file }, now: Date.now(), ttlMs: 86_400_000, priority: Priority.normal, randomBytes: systemEnv.randomBytes })
    await outbox.add(c.record, c.envelope)
    index.set(c.record.id, k)
    reports.push({ id: c.record.id, envelopeBytes: c.envelope.length })
  }
  const ctx: ClientContext = {
    me,
    outbox,
    inbox: new Inbox(db, new GroupCommit(db)),
    files: new MemoryFileSink(),
    env: systemEnv,
    locks: new Map(),
    onEvent: (e) => {
      if (e.type === 'accepted') for (const id of e.ids) if (index.has(id)) onAccepted(index.get(id)!)
    },
  }
  return { ctx, reports }
}
