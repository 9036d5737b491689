/** A client's home opened for use: identity, one LevelDB for outbox and inbox, attachments folder. */
import path from 'node:path'
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { systemEnv } from '../protocol/env.js'
import { type Db, openDiskDb } from '../queue/db.js'
import { GroupCommit } from '../queue/group-commit.js'
import { Inbox } from '../queue/inbox.js'
import { Outbox } from '../queue/outbox.js'
import { DiskFileSink } from './files.js'
import { type Identity, loadIdentity } from './identity.js'
import type { ClientContext, DownloadLock, SyncEvent } from './sync-engine.js'

export interface ClientHome {
  home: string
  me: Identity
  db: Db
  outbox: Outbox
  inbox: Inbox
  context(onEvent?: (e: SyncEvent) => void): ClientContext
  close(): Promise<void>
}

export async function openHome(home: string): Promise<ClientHome> {
  const me = await loadIdentity(home)
  let db: Db
  try {
    db = await openDiskDb(path.join(home, 'db'))
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED') throw new ChaparError(ErrorCode.BAD_INPUT, `${home} is in use by another chapar process (its database is locked)`)
    throw new ChaparError(ErrorCode.BAD_INPUT, `cannot open the database in ${home}: ${(err as Error).message}`, { cause: err })
  }
  const outbox = new Outbox(db)
  const inbox = new Inbox(db, new GroupCommit(db, true))
  const files = new DiskFileSink(path.join(home, 'files'))
  const locks = new Map<string, DownloadLock>()
  return {
    home,
    me,
    db,
    outbox,
    inbox,
    context: (onEvent) => ({ me, outbox, inbox, files, env: systemEnv, locks, ...(onEvent ? { onEvent } : {}) }),
    close: () => db.close(),
  }
}
