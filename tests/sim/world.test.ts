/** Whole simulations: deterministic, invariant-checked, and every report delivered once. */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { applyOptions, DEFAULTS, type SimOptions } from '../../src/sim/options.js'
import { checkInvariants, runSim, SimInvariantError, type SimResult } from '../../src/sim/world.js'

const small = (over: Record<string, unknown>): SimOptions => applyOptions({ ...DEFAULTS, clients: 4, messages: 3, recipients: 2, duration: '12h' } as SimOptions, over)
const withoutWall = (r: SimResult) => JSON.stringify({ ...r, wall_ms: 0 })

describe('chapar sim', () => {
  it('is deterministic: the same options and seed give byte-identical results', async () => {
    const o = small({ loss: 0.4, lossModel: 'gilbert', burst: 3, duplicate: 0.02, reorder: 0.02, outage: 'up=2m,down=3m', relays: 2, relayCrashEvery: '5m', seed: 42 })
    const a = await runSim(o)
    const b = await runSim(o)
    expect(withoutWall(a.result)).toBe(withoutWall(b.result))
    expect(a.trace).toEqual(b.trace)
    const c = await runSim({ ...o, seed: 43 })
    expect(withoutWall(c.result)).not.toBe(withoutWall(a.result))
  })

  const cases: Array<[string, Record<string, unknown>]> = [
    ['30% Bernoulli loss', { loss: 0.3 }],
    ['50% Bernoulli loss', { loss: 0.5 }],
    ['50% loss in Gilbert bursts of 4', { loss: 0.5, lossModel: 'gilbert', burst: 4 }],
    ['blackout windows (up 1 min, down 20 min)', { loss: 0.3, outage: 'up=1m,down=20m' }],
    ['relays killed every 20 s or so', { loss: 0.3, relays: 2, size: 30000, relayCrashEvery: '20s', relayRestart: '5s' }],
    ['mixed sizes with photos', { loss: 0.3, size: 'mix', clients: 3, messages: 4 }],
  ]
  for (const [name, over] of cases) {
    it(`delivers every report exactly once: ${name}`, async () => {
      const { result } = await runSim(small({ seed: 7, ...over }))
      expect(result.delivered).toBe(result.sent)
      expect(result.duplicates_at_app).toBe(0)
      expect(result.delivery_ratio).toBe(1)
      expect(result.capacity_ratio).toBeGreaterThan(0)
      expect(result.capacity_ratio).toBeLessThanOrEqual(1)
      expect(result.latency_ms.p50).toBeLessThanOrEqual(result.latency_ms.max)
      if (over.relayCrashEvery) expect(result.relay_crashes).toBeGreaterThan(0)
    })
  }

  it('reports every metric DESIGN §6 names', async () => {
    const { result } = await runSim(small({ clients: 2, messages: 2, loss: 0.1 }))
    for (const k of ['sent', 'delivered', 'delivery_ratio', 'duplicates_at_app', 'latency_ms', 'accept_latency_ms', 'wire_bytes', 'payload_bytes', 'wire_per_payload', 'capacity_ratio', 'seed', 'virtual_ms', 'events', 'wall_ms']) {
      expect(result).toHaveProperty(k)
    }
    for (const k of ['p50', 'p95', 'p99', 'max']) expect(result.latency_ms).toHaveProperty(k)
    expect(Number.isInteger(result.virtual_ms)).toBe(true)
    expect(result.wire_per_payload).toBeGreaterThan(1)
  })

  it('fails loudly when an invariant breaks', () => {
    const ok: SimResult = {
      sent: 2, accepted: 2, delivered: 2, delivery_ratio: 1, duplicates_at_app: 0, latency_ms: { p50: 1, p95: 1, p99: 1, max: 1 }, accept_latency_ms: { p50: 1, p95: 1, p99: 1, max: 1 },
      wire_bytes: 10, payload_bytes: 5, wire_per_payload: 2, capacity_ratio: 0.5, relay_crashes: 0, seed: 1, virtual_ms: 1, events: 1, wall_ms: 1,
    }
    expect(() => checkInvariants(ok)).not.toThrow()
    expect(() => checkInvariants({ ...ok, duplicates_at_app: 1 })).toThrow(SimInvariantError)
    expect(() => checkInvariants({ ...ok, delivered: 3 })).toThrow(/delivered 3 > sent 2/)
    expect(() => checkInvariants({ ...ok, capacity_ratio: 1.01 })).toThrow(/capacity_ratio/)
  })

  it('property: random scenarios never lose or duplicate a report', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          seed: fc.nat(1e6),
          clients: fc.integer({ min: 1, max: 3 }),
          recipients: fc.integer({ min: 1, max: 2 }),
          relays: fc.integer({ min: 1, max: 2 }),
          messages: fc.integer({ min: 1, max: 3 }),
          loss: fc.constantFrom(0, 0.1, 0.3, 0.5),
          lossModel: fc.constantFrom('bernoulli', 'gilbert'),
          duplicate: fc.constantFrom(0, 0.02),
          reorder: fc.constantFrom(0, 0.02),
          crash: fc.boolean(),
          outage: fc.boolean(),
        }),
        async (s) => {
          const o = applyOptions(DEFAULTS, {
            seed: s.seed, clients: s.clients, recipients: s.recipients, relays: s.relays, messages: s.messages, loss: s.loss,
            lossModel: s.lossModel, burst: 3, duplicate: s.duplicate, reorder: s.reorder, duration: '24h',
            ...(s.crash ? { relayCrashEvery: '10m' } : {}), ...(s.outage ? { outage: 'up=2m,down=10m' } : {}),
          })
          const { result } = await runSim(o)
          expect(result.duplicates_at_app).toBe(0)
          expect(result.delivered).toBe(result.sent)
        },
      ),
      { numRuns: 12, seed: 20261127 },
    )
  }, 120_000)
})
