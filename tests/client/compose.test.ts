import { describe, expect, it } from 'vitest'
import { compose, parseDuration, parsePriority } from '../../src/client/compose.js'
import { generateIdentity } from '../../src/client/identity.js'
import { formatAddress } from '../../src/protocol/address.js'
import { toHex } from '../../src/protocol/bytes.js'
import { Kind, open, Priority } from '../../src/protocol/envelope.js'
import { messageId } from '../../src/protocol/hash.js'
import { openMemoryDb } from '../../src/queue/db.js'
import { Outbox } from '../../src/queue/outbox.js'

describe('compose', () => {
  it('seals a report addressed to the recipient and records it as queued', async () => {
    const outbox = new Outbox(await openMemoryDb())
    const alice = generateIdentity()
    const bob = generateIdentity()
    const c = compose({ outbox, me: alice, to: bob.address, content: { kind: Kind.report, text: 'hello' }, now: 1000, ttlMs: 60_000, priority: Priority.urgent })
    expect(c.record).toMatchObject({ id: toHex(messageId(c.envelope)), to: formatAddress(bob.address), kind: 'report', state: 'queued', relays: [], bytes: c.envelope.length, priority: 2, created_at: 1000, expires_at: 61_000, mailbox: toHex(bob.mailbox), summary: 'hello' })
    const o = open(c.envelope, { address: bob.address, boxSecretKey: bob.boxSecretKey })
    expect(o.content).toEqual({ kind: Kind.report, text: 'hello' })
    expect(o.header.expiresAt).toBe(61_000)
    await outbox.add(c.record, c.envelope)
    expect(new Uint8Array((await outbox.envelope(c.record.id))!)).toEqual(c.envelope)
  })
})

describe('parseDuration / parsePriority', () => {
  it('parses units, plain seconds, and refuses nonsense', () => {
    expect(parseDuration('500ms')).toBe(500)
    expect(parseDuration('90s')).toBe(90_000)
    expect(parseDuration('60')).toBe(60_000)
    expect(parseDuration('30m')).toBe(1_800_000)
    expect(parseDuration('12h')).toBe(43_200_000)
    expect(parseDuration('7d')).toBe(604_800_000)
    expect(parseDuration('1.5h')).toBe(5_400_000)
    for (const bad of ['', 'soon', '-1s', '0', '3w', '1e3']) expect(() => parseDuration(bad)).toThrow(/duration/)
  })

  it('knows the three priorities', () => {
    expect(parsePriority('urgent')).toBe(Priority.urgent)
    expect(parsePriority('normal')).toBe(Priority.normal)
    expect(parsePriority('low')).toBe(Priority.low)
    expect(() => parsePriority('asap')).toThrow(/priority must be one of low, normal, urgent/)
    expect(() => parsePriority('constructor')).toThrow(/priority must be/)
  })
})
