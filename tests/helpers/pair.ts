/**
 * In-process link between a SyncSession and a RelaySession: the real
 * engines, frames carried asynchronously (setImmediate) with an optional
 * cut after N client→relay frames, to test resume after a broken link.
 */
import type { Env } from '../../src/protocol/env.js'
import { systemEnv } from '../../src/protocol/env.js'
import { decodeFrame, type Frame } from '../../src/protocol/frames.js'
import { type ClientContext, type SessionResult, type SessionRole, SyncSession } from '../../src/client/sync-engine.js'
import { generateIdentity, type Identity } from '../../src/client/identity.js'
import { MemoryFileSink } from '../../src/client/files.js'
import { openMemoryDb, type Db } from '../../src/queue/db.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { Inbox } from '../../src/queue/inbox.js'
import { Outbox } from '../../src/queue/outbox.js'
import { MailboxStore } from '../../src/queue/mailbox.js'
import { Relay, type RelayOptions } from '../../src/relay/relay-engine.js'

export interface TestClient {
  me: Identity
  db: Db
  outbox: Outbox
  inbox: Inbox
  files: MemoryFileSink
  ctx: ClientContext
}

export async function makeClient(env: Env = systemEnv): Promise<TestClient> {
  const db = await openMemoryDb()
  const me = generateIdentity()
  const outbox = new Outbox(db)
  const inbox = new Inbox(db, new GroupCommit(db))
  const files = new MemoryFileSink()
  return { me, db, outbox, inbox, files, ctx: { me, outbox, inbox, files, env, locks: new Map() } }
}

export async function makeRelay(env: Env = systemEnv, db?: Db, options: RelayOptions = {}): Promise<Relay> {
  const d = db ?? (await openMemoryDb())
  return new Relay(new MailboxStore(d, new GroupCommit(d)), env, options)
}

export interface Wire {
  up: Frame[]
  down: Frame[]
}

/** Run one session (upload role unless told) between `client` and `relay`; `cutAfterUp` closes the link after that many client frames. */
export function connect(
  client: TestClient,
  relay: Relay,
  url: string,
  opts: { role?: SessionRole; untilEmpty?: boolean; cutAfterUp?: number; wire?: Wire } = {},
): { session: SyncSession; done: Promise<SessionResult> } {
  let open = true
  let upCount = 0
  let session!: SyncSession
  const pendingDown: Uint8Array[] = []
  const relaySession = relay.connect({
    send: (bytes) => {
      if (!open) return
      opts.wire?.down.push(decodeFrame(bytes))
      const copy = bytes.slice()
      if (!session) pendingDown.push(copy)
      else setImmediate(() => open && session.receive(copy))
    },
    close: () => cut('relay closed'),
  })
  const cut = (reason: string): void => {
    if (!open) return
    open = false
    relaySession.close()
    setImmediate(() => session.closed(reason))
  }
  session = new SyncSession(
    client.ctx,
    url,
    {
      send: (bytes) => {
        if (!open) return
        upCount++
        opts.wire?.up.push(decodeFrame(bytes))
        const copy = bytes.slice()
        setImmediate(() => open && relaySession.receive(copy))
        if (opts.cutAfterUp !== undefined && upCount >= opts.cutAfterUp) cut('cut by test')
      },
      close: () => {
        if (!open) return
        open = false
        relaySession.close()
      },
    },
    { role: opts.role ?? 'upload', untilEmpty: opts.untilEmpty ?? true },
  )
  for (const b of pendingDown.splice(0)) setImmediate(() => open && session.receive(b))
  return { session, done: session.done }
}

/** What the driver does for one relay: fetch the mailbox, then send what is queued (its receipts included). */
export async function syncWith(client: TestClient, relay: Relay, url: string): Promise<SessionResult> {
  const down = await connect(client, relay, url, { role: 'mailbox' }).done
  const up = await connect(client, relay, url).done
  return { uploaded: up.uploaded, received: down.received, rejected: [...down.rejected, ...up.rejected] }
}
