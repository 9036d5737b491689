/**
 * The real engines over a link that drops, delays and reorders frames, in
 * virtual time: every report still arrives exactly once and every one is
 * confirmed delivered. (The full simulator is `chapar sim`; this is the
 * engine-level guard that the resend and ack logic converges.)
 */
import { describe, expect, it } from 'vitest'
import { compose } from '../../src/client/compose.js'
import { Kind, Priority } from '../../src/protocol/envelope.js'
import { generateIdentity } from '../../src/client/identity.js'
import { MemoryFileSink } from '../../src/client/files.js'
import { type SessionResult, type SessionRole, SyncSession } from '../../src/client/sync-engine.js'
import { openMemoryDb } from '../../src/queue/db.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { Inbox } from '../../src/queue/inbox.js'
import { Outbox } from '../../src/queue/outbox.js'
import { MailboxStore } from '../../src/queue/mailbox.js'
import { Relay } from '../../src/relay/relay-engine.js'
import { VirtualEnv } from '../helpers/virtual-env.js'

async function client(env: VirtualEnv) {
  const db = await openMemoryDb()
  const me = generateIdentity(env.randomBytes)
  const outbox = new Outbox(db)
  const inbox = new Inbox(db, new GroupCommit(db))
  const files = new MemoryFileSink()
  return { me, outbox, inbox, files, ctx: { me, outbox, inbox, files, env, locks: new Map() } }
}

/** One connection over a lossy, jittery link; resolves when the session ends either way. */
function session(env: VirtualEnv, relay: Relay, c: Awaited<ReturnType<typeof client>>, loss: number, role: SessionRole): Promise<SessionResult | Error> {
  let open = true
  let s!: SyncSession
  const early: Uint8Array[] = []
  const carry = (deliver: (b: Uint8Array) => void, bytes: Uint8Array) => {
    if (!open || env.random() < loss) return
    const copy = bytes.slice()
    const copies = env.random() < 0.05 ? 2 : 1 // duplicated frames too
    for (let i = 0; i < copies; i++) env.timers.setTimeout(() => open && deliver(copy), 100 + Math.floor(env.random() * 200)) // jitter reorders
  }
  const rs = relay.connect({
    send: (b) => carry((x) => (s ? s.receive(x) : early.push(x)), b),
    close: () => {
      open = false
    },
  })
  s = new SyncSession(
    c.ctx,
    'ws://relay',
    {
      send: (b) => carry((x) => rs.receive(x), b),
      close: () => {
        open = false
        rs.close()
      },
    },
    { role, untilEmpty: true },
  )
  for (const b of early) s.receive(b)
  return s.done.catch((e: Error) => e)
}

/** Reconnect until a session ends cleanly (the driver does this with p-retry in real life). */
async function syncUntilDone(env: VirtualEnv, relay: Relay, c: Awaited<ReturnType<typeof client>>, loss: number, role: SessionRole): Promise<number> {
  for (let attempt = 1; attempt <= 200; attempt++) {
    let result: SessionResult | Error | undefined
    void session(env, relay, c, loss, role).then((r) => (result = r))
    while (result === undefined) await env.advance(1000)
    if (!(result instanceof Error)) return attempt
    await env.advance(2000)
  }
  throw new Error('no clean session in 200 attempts')
}

describe('engines over a lossy link (virtual time)', () => {
  for (const [loss, seed] of [0.1, 0.3, 0.5].flatMap((l) => [1, 2, 3].map((s) => [l, s] as const))) {
    it(`delivers every report exactly once at ${loss * 100}% frame loss each way (seed ${seed})`, async () => {
      const env = new VirtualEnv(seed)
      const db = await openMemoryDb()
      const relay = new Relay(new MailboxStore(db, new GroupCommit(db)), env)
      const alice = await client(env)
      const bob = await client(env)
      const ids: string[] = []
      for (let i = 0; i < 12; i++) {
        const file = i === 0 ? { name: 'clip.bin', data: env.randomBytes(200_000) } : undefined
        const c = compose({
          outbox: alice.outbox,
          me: alice.me,
          to: bob.me.address,
          content: { kind: Kind.report, text: `report ${i}`, ...(file ? { file } : {}) },
          now: env.now,
          ttlMs: 7 * 86_400_000,
          priority: Priority.normal,
          randomBytes: env.randomBytes,
        })
        await alice.outbox.add(c.record, c.envelope)
        ids.push(c.record.id)
      }
      await syncUntilDone(env, relay, alice, loss, 'upload')
      expect((await alice.outbox.list()).every((r) => r.state === 'accepted')).toBe(true)
      await syncUntilDone(env, relay, bob, loss, 'mailbox')
      const items = await bob.inbox.items()
      expect(items.map((i) => i.id).sort()).toEqual([...ids].sort())
      await syncUntilDone(env, relay, bob, loss, 'upload') // the receipts
      await syncUntilDone(env, relay, alice, loss, 'mailbox')
      const reports = (await alice.outbox.list()).filter((r) => r.kind === 'report')
      expect(reports.map((r) => r.state)).toEqual(Array(12).fill('delivered'))
      expect((await relay.store.stats()).messages).toBe(0)
    }, 60_000)
  }
})

describe('a reliable link (WebSocket over TCP)', () => {
  it('is never sent a request twice, however slow the answers; an unreliable one is', async () => {
    for (const reliable of [true, false]) {
      const env = new VirtualEnv(5)
      const db = await openMemoryDb()
      const relay = new Relay(new MailboxStore(db, new GroupCommit(db)), env)
      const alice = await client(env)
      const bob = await client(env)
      const c = compose({ outbox: alice.outbox, me: alice.me, to: bob.me.address, content: { kind: Kind.report, text: 'slow' }, now: env.now, ttlMs: 86_400_000, priority: Priority.normal, randomBytes: env.randomBytes })
      await alice.outbox.add(c.record, c.envelope)
      let puts = 0
      let s!: SyncSession
      // Every frame takes 20 s each way: longer than the 15 s resend interval, shorter than the idle limit.
      const rs = relay.connect({ send: (b) => env.timers.setTimeout(() => s.receive(b.slice()), 20_000), close: () => {} })
      s = new SyncSession(
        alice.ctx,
        'ws://relay',
        {
          send: (b) => {
            if (b[0] === 0x10) puts++
            const copy = b.slice()
            env.timers.setTimeout(() => rs.receive(copy), 20_000)
          },
          close: () => rs.close(),
        },
        { role: 'upload', untilEmpty: true, reliable },
      )
      let done = false
      void s.done.then(() => (done = true))
      while (!done) await env.advance(1000)
      expect((await alice.outbox.get(c.record.id))!.state).toBe('accepted')
      if (reliable) expect(puts).toBe(1)
      else expect(puts).toBeGreaterThan(1)
    }
  })
})
