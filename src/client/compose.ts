/** Compose: sign and seal a report, and put it in the outbox. Works with no network at all. */
import { type Address, formatAddress } from '../protocol/address.js'
import { toHex } from '../protocol/bytes.js'
import { type Content, Kind, MAX_ENVELOPE_BYTES, Priority, seal } from '../protocol/envelope.js'
import { ChaparError, ErrorCode } from '../protocol/errors.js'
import { messageId } from '../protocol/hash.js'
import type { BatchOp } from '../queue/db.js'
import { type Outbox, OutboxState, type OutboxRecord } from '../queue/outbox.js'
import type { Identity } from './identity.js'

export const DEFAULT_TTL_MS = 7 * 24 * 3600_000

export interface Composed {
  record: OutboxRecord
  envelope: Uint8Array
  ops: BatchOp[]
}

export function compose(args: {
  outbox: Outbox
  me: Identity
  to: Address
  content: Content
  now: number
  ttlMs: number
  priority: number
  randomBytes?: (n: number) => Uint8Array
}): Composed {
  const expiresAt = args.now + args.ttlMs
  const envelope = seal({
    from: { address: args.me.address, signSecretKey: args.me.signSecretKey },
    to: args.to,
    content: args.content,
    createdAt: args.now,
    expiresAt,
    priority: args.priority,
    ...(args.randomBytes ? { randomBytes: args.randomBytes } : {}),
  })
  if (envelope.length > MAX_ENVELOPE_BYTES) throw new ChaparError(ErrorCode.TOO_LARGE, `message is ${envelope.length} bytes; the limit is ${MAX_ENVELOPE_BYTES}`)
  const id = toHex(messageId(envelope))
  const c = args.content
  const summary =
    c.kind === Kind.report ? [c.text?.slice(0, 60), c.file ? `[${c.file.name}]` : undefined].filter(Boolean).join(' ') : `receipt for ${c.ids.length}`
  const record: OutboxRecord = {
    id,
    to: formatAddress(args.to),
    kind: c.kind === Kind.report ? 'report' : 'receipt',
    state: OutboxState.queued,
    relays: [],
    started: [],
    bytes: envelope.length,
    priority: args.priority,
    created_at: args.now,
    expires_at: expiresAt,
    mailbox: toHex(envelope.subarray(4, 36)),
    summary,
  }
  return { record, envelope, ops: args.outbox.addOps(record, envelope) }
}

export function parsePriority(s: string): number {
  if (!Object.hasOwn(Priority, s)) throw new ChaparError(ErrorCode.BAD_INPUT, `priority must be one of ${Object.keys(Priority).join(', ')}`)
  return Priority[s as keyof typeof Priority]
}

export { parseDuration } from '../protocol/duration.js'
