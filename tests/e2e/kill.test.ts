/**
 * The kill test: a real relay process killed with SIGKILL at 100 random
 * moments (seeded) while two senders and a recipient sync against it, each
 * time restarted on the same data: no acked message lost, none handed to
 * the recipient twice, every message delivered in the end, and the store
 * opens without repair and checks clean (MailboxStore.check()) after
 * every kill. The loop and its checks are in bench/kill-loop.ts;
 * `npm run soak` runs it for 1,000 cycles.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { killLoop } from '../../bench/kill-loop.js'
import { assertBuilt } from './cli-helpers.js'

const CYCLES = 100
const SEED = 20_240_917
let dir: string

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-kill-'))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

it(`${CYCLES} SIGKILLs of the relay mid-sync: nothing acked lost, nothing twice, the store opens every time`, async () => {
  const r = await killLoop({ dir, cycles: CYCLES, seed: SEED })
  console.log(
    `kill test: seed ${r.seed}, ${r.cycles} cycles (${r.startupKills} during startup, ${r.busyKills} mid-traffic), ${r.messages} messages, ` +
      `${r.acked} acked (+${r.ackedReceipts} receipts), ${r.delivered} delivered, ${r.duplicates} duplicates (re-listed copies absorbed by dedup: ${r.redelivered} reports, ${r.redeliveredReceipts} receipts), ` +
      `${r.confirmed} confirmed to senders, startup ${r.startupMs} ms, ${r.seconds} s` + (r.warnings.length > 0 ? `; warnings: ${r.warnings.join('; ')}` : ''),
  )
  expect(r.problems).toEqual([])
  expect(r.cycles).toBe(CYCLES)
  expect(r.lostAcked).toEqual([])
  expect(r.duplicates).toBe(0)
  expect(r.delivered).toBe(r.messages)
  expect(r.confirmed).toBe(r.messages)
  expect(r.acked).toBe(r.messages) // after the final drain, the relay has acked every one
  // The schedule really did hit the relay in startup and in the middle of traffic.
  expect(r.startupKills).toBeGreaterThan(0)
  expect(r.busyKills).toBeGreaterThan(CYCLES / 10)
}, 300_000)
