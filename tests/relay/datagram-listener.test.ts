/**
 * The relay's datagram listener against hostile traffic (review findings):
 * spoofed first packets, junk and low-order keys, replays. In virtual time,
 * with the real listener, sessions and relay engine on memory-level.
 */
import { describe, expect, it } from 'vitest'
import { boxPublicKey } from '../../src/protocol/box.js'
import { clientKeys, CLIENT_TAG, peekHeader, sealPacket } from '../../src/protocol/datagram-crypto.js'
import { encodeBody } from '../../src/protocol/datagram-session.js'
import { openMemoryDb } from '../../src/queue/db.js'
import { GroupCommit } from '../../src/queue/group-commit.js'
import { MailboxStore } from '../../src/queue/mailbox.js'
import { AMPLIFICATION_LIMIT, DatagramListener, NEW_KEYS_PER_SECOND, UNVALIDATED_MS } from '../../src/relay/datagram-listener.js'
import { Relay } from '../../src/relay/relay-engine.js'
import { EPOCH_MS, Scheduler } from '../../src/sim/scheduler.js'

async function setup(seed: number) {
  const sched = new Scheduler(seed)
  const db = await openMemoryDb()
  const relay = new Relay(new MailboxStore(db, new GroupCommit(db, true, async () => {})), sched)
  const sk = sched.randomBytes(32)
  const sent: Array<{ to: string; packet: Uint8Array; at: number }> = []
  const listener = new DatagramListener<string>(relay, { env: sched, secretKey: sk, send: (to, packet) => sent.push({ to, packet, at: sched.elapsed }) })
  const firstPacket = (pn = 0) => {
    const { ephemeralPk, keys } = clientKeys(boxPublicKey(sk), sched.randomBytes(32))
    return { packet: sealPacket(CLIENT_TAG, keys.up, pn, encodeBody({ flags: 0, instance: 1, sendBase: 0 }), ephemeralPk), ephemeralPk, keys }
  }
  return { sched, listener, sent, firstPacket }
}

describe('DatagramListener under hostile traffic', () => {
  it(`a spoofed first packet draws at most ${AMPLIFICATION_LIMIT}× its bytes, and its session is gone within UNVALIDATED_MS`, async () => {
    const { sched, listener, sent, firstPacket } = await setup(9)
    const { packet } = firstPacket()
    listener.receive(packet, 'victim')
    expect(listener.sessionCount).toBe(1)
    await sched.run(EPOCH_MS + UNVALIDATED_MS + 20_000)
    const out = sent.filter((s) => s.to === 'victim').reduce((n, s) => n + s.packet.length, 0)
    expect(out).toBeGreaterThan(0) // it did answer (HELLO)…
    expect(out).toBeLessThanOrEqual(AMPLIFICATION_LIMIT * packet.length) // …within the limit
    expect(listener.sessionCount).toBe(0)
    expect(listener.counters.sessions_evicted).toBe(1)
    await sched.run(EPOCH_MS + 25 * 60_000)
    expect(sent.filter((s) => s.to === 'victim').reduce((n, s) => n + s.packet.length, 0)).toBe(out)
    listener.stop(false)
  })

  it('a full table makes room by evicting sessions that were never validated', async () => {
    const { listener, firstPacket } = await setup(10)
    const small = new DatagramListener<string>((listener as unknown as { relay: Relay }).relay, {
      env: (listener as unknown as { o: { env: Scheduler } }).o.env,
      secretKey: (listener as unknown as { o: { secretKey: Uint8Array } }).o.secretKey,
      send: () => {},
      maxSessions: 4,
    })
    for (let i = 0; i < 10; i++) small.receive(firstPacket().packet, `spoofed-${i}`)
    expect(small.sessionCount).toBe(4)
    expect(small.counters.sessions_evicted).toBe(6)
    small.stop(false)
    listener.stop(false)
  })

  it('junk keys: low-order points are dropped without the slow path, and unknown keys are rate-limited', async () => {
    const { listener } = await setup(11)
    const lowOrder = [new Uint8Array(32), Uint8Array.of(1, ...new Uint8Array(31))]
    for (const k of lowOrder) {
      const packet = new Uint8Array(37 + 16 + 20)
      packet[0] = CLIENT_TAG
      packet.set(k, 1)
      const t0 = performance.now()
      listener.receive(packet, 'x')
      expect(performance.now() - t0).toBeLessThan(50)
    }
    expect(listener.sessionCount).toBe(0)
    // A flood of packets with fresh random keys, all in one virtual instant: past the budget they are not even looked at.
    for (let i = 0; i < NEW_KEYS_PER_SECOND + 200; i++) {
      const packet = new Uint8Array(37 + 16 + 20)
      packet[0] = CLIENT_TAG
      packet.set(globalThis.crypto.getRandomValues(new Uint8Array(32)), 1)
      listener.receive(packet, 'x')
    }
    expect(listener.counters.new_keys_refused).toBeGreaterThanOrEqual(200)
    expect(listener.sessionCount).toBe(0)
    listener.stop(false)
  })

  it('a replayed first packet after the session ended opens a session with a fresh salt (nonces never meet)', async () => {
    const { sched, listener, sent, firstPacket } = await setup(12)
    const { packet } = firstPacket()
    listener.receive(packet, 'a')
    await sched.run(EPOCH_MS + 1_000)
    listener.stop(false)
    const salts1 = new Set(sent.map((s) => Buffer.from(peekHeader(s.packet)!.salt!).toString('hex')))
    const again = new DatagramListener<string>((listener as unknown as { relay: Relay }).relay, {
      env: sched,
      secretKey: (listener as unknown as { o: { secretKey: Uint8Array } }).o.secretKey,
      send: (to, p) => sent.push({ to, packet: p, at: sched.elapsed }),
    })
    const before = sent.length
    again.receive(packet, 'a') // the same first packet, replayed to a restarted relay
    await sched.run(EPOCH_MS + 2_000)
    const salts2 = new Set(sent.slice(before).map((s) => Buffer.from(peekHeader(s.packet)!.salt!).toString('hex')))
    expect(salts1.size).toBe(1)
    expect(salts2.size).toBe(1)
    expect([...salts2][0]).not.toBe([...salts1][0])
    again.stop(false)
  })

  it('a replayed older packet from another address does not move the session', async () => {
    const { sched, listener, sent, firstPacket } = await setup(13)
    const { packet, ephemeralPk, keys } = firstPacket(5)
    listener.receive(packet, 'client')
    const newer = sealPacket(CLIENT_TAG, keys.up, 6, encodeBody({ flags: 0, instance: 1, sendBase: 0 }), ephemeralPk)
    listener.receive(newer, 'client')
    listener.receive(packet, 'attacker') // replay of pn 5 from elsewhere
    await sched.run(EPOCH_MS + 2_000)
    expect(sent.length).toBeGreaterThan(0)
    expect(sent.every((s) => s.to === 'client')).toBe(true)
    listener.stop(false)
  })
})
