/**
 * SIGKILL of a real relay process at 100 random moments while a sender and
 * a recipient sync: no acked message lost, none delivered twice, the store
 * opens every time (bench/kill-loop.ts; `npm run soak` runs more cycles).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { killLoop } from '../../bench/kill-loop.js'
import { assertBuilt } from './cli-helpers.js'

const CYCLES = 100
let dir: string

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-kill-'))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

it(`${CYCLES} SIGKILLs of the relay mid-sync: nothing acked lost, nothing twice, the store opens every time`, async () => {
  const r = await killLoop({ dir, cycles: CYCLES, seed: 1, messages: 50, perCycle: 2 })
  console.log(`kill loop: ${JSON.stringify({ ...r, lostAcked: r.lostAcked.length })}`)
  expect(r.problems).toEqual([])
  expect(r.lostAcked).toEqual([])
  expect(r.duplicates).toBe(0)
  expect(r.delivered).toBe(r.messages)
  expect(r.acked).toBeGreaterThan(0)
}, 600_000)
