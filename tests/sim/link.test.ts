/**
 * The link model is honest: at --loss p the fraction of frames dropped is p
 * within statistical tolerance for both loss models, Gilbert bursts have the
 * configured mean length, outage schedules integrate correctly, and a Pipe
 * serialises, queues, drops, duplicates and orders packets as specified.
 *
 * Tolerances are derived from the sampling distribution (5 standard
 * deviations), not hand-picked, so a correct model fails with probability
 * well under 1e-6 per check; the seeds are fixed anyway, so runs are
 * deterministic.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ALWAYS_UP, BernoulliLoss, GilbertLoss, PeriodicSchedule, Pipe, type PipeSpec, type Schedule } from '../../src/sim/link.js'
import { Rng } from '../../src/sim/rng.js'
import { EPOCH_MS, Scheduler } from '../../src/sim/scheduler.js'

const SIGMAS = 5

/** Drop pattern of `n` consecutive draws. */
function draws(loss: { drop(now: number): boolean }, n: number): { drops: number; runs: number } {
  let drops = 0
  let runs = 0
  let prev = false
  for (let i = 0; i < n; i++) {
    const d = loss.drop(EPOCH_MS)
    if (d) {
      drops++
      if (!prev) runs++
    }
    prev = d
  }
  return { drops, runs }
}

describe('BernoulliLoss', () => {
  const N = 200_000
  for (const p of [0.1, 0.3, 0.5, 0.8]) {
    it(`drops a fraction ${p} of frames (binomial, ${SIGMAS} sigma)`, () => {
      const { drops } = draws(new BernoulliLoss(new Rng(1000 + p * 100), () => p), N)
      const sigma = Math.sqrt((p * (1 - p)) / N)
      expect(Math.abs(drops / N - p)).toBeLessThan(SIGMAS * sigma)
    })
  }

  it('follows a loss probability that varies with time', () => {
    const T = EPOCH_MS + 1000
    const loss = new BernoulliLoss(new Rng(5), (now) => (now < T ? 0.1 : 0.7))
    const N = 50_000
    let early = 0
    let late = 0
    for (let i = 0; i < N; i++) {
      if (loss.drop(T - 1)) early++
      if (loss.drop(T)) late++
    }
    expect(Math.abs(early / N - 0.1)).toBeLessThan(SIGMAS * Math.sqrt((0.1 * 0.9) / N))
    expect(Math.abs(late / N - 0.7)).toBeLessThan(SIGMAS * Math.sqrt((0.7 * 0.3) / N))
  })

  it('never drops at p = 0 and always drops at p = 1', () => {
    expect(draws(new BernoulliLoss(new Rng(1), () => 0), 10_000).drops).toBe(0)
    expect(draws(new BernoulliLoss(new Rng(1), () => 1), 10_000).drops).toBe(10_000)
  })
})

describe('GilbertLoss', () => {
  const N = 400_000
  /*
   * Tolerances. The channel is a two-state Markov chain with
   *   g = P(Bad→Good) = 1/b,  k = P(Good→Bad) = p / (b (1 − p)),
   * stationary P(Bad) = k / (k + g) = p, and second eigenvalue λ = 1 − g − k.
   * The drop fraction over N draws is a mean of correlated indicators whose
   * variance is asymptotically p (1 − p) / N · (1 + λ) / (1 − λ).
   * Bursts (runs of drops) are geometric with success probability 1/b:
   * mean b, variance b (b − 1). About R = N p / b of them occur, so the
   * sample mean burst length has standard deviation √(b (b − 1) / R).
   * Both checks use 5 of those standard deviations (plus a hair for the
   * ±1 edge effects of runs cut at the ends).
   */
  const cases: [number, number][] = []
  for (const p of [0.3, 0.5, 0.8]) {
    for (const b of [2, 4, 8]) {
      // minBurst(0.8) computes 0.8 / 0.19999999999999996 = 4.000000000000001, so an
      // exact comparison would wrongly exclude b = 4 (see the BUG note in options.test.ts).
      if (b >= GilbertLoss.minBurst(p) - 1e-9) cases.push([p, b])
    }
  }

  it('covers the allowed combinations', () => {
    expect(cases).toHaveLength(8) // (0.8, 2) is the only one below the minimum burst
    expect(cases).not.toContainEqual([0.8, 2])
  })

  for (const [p, b] of cases) {
    it(`at p=${p}, burst=${b}: long-run drop fraction is p and mean burst length is b`, () => {
      const { drops, runs } = draws(new GilbertLoss(new Rng(Math.round(p * 1000 + b)), () => p, b), N)
      const g = 1 / b
      const k = p / (b * (1 - p))
      const lambda = 1 - g - k
      const sigmaP = Math.sqrt(((p * (1 - p)) / N) * ((1 + lambda) / (1 - lambda)))
      expect(Math.abs(drops / N - p)).toBeLessThan(SIGMAS * sigmaP + 1 / N)

      const expectedRuns = (N * p) / b
      const sigmaB = Math.sqrt((b * (b - 1)) / expectedRuns)
      expect(runs).toBeGreaterThan(0)
      expect(Math.abs(drops / runs - b)).toBeLessThan(SIGMAS * sigmaB + 1 / expectedRuns)
    })
  }

  it('is far burstier than Bernoulli at the same loss rate', () => {
    // At p = 0.3 independent losses come in runs of mean 1 / (1 − p) ≈ 1.43.
    const g = draws(new GilbertLoss(new Rng(9), () => 0.3, 8), 100_000)
    const bern = draws(new BernoulliLoss(new Rng(9), () => 0.3), 100_000)
    expect(g.drops / g.runs).toBeGreaterThan(6)
    expect(bern.drops / bern.runs).toBeLessThan(1.6)
  })

  it('minBurst is p / (1 − p), infinite at p = 1', () => {
    expect(GilbertLoss.minBurst(0)).toBe(0)
    expect(GilbertLoss.minBurst(0.5)).toBeCloseTo(1, 12)
    expect(GilbertLoss.minBurst(0.3)).toBeCloseTo(0.3 / 0.7, 12)
    expect(GilbertLoss.minBurst(1)).toBe(Number.POSITIVE_INFINITY)
  })
})

describe('PeriodicSchedule', () => {
  /*
   * Every parameter is a multiple of Q = 0.25 ms (exact in binary, also on
   * top of EPOCH_MS), so the up set is a union of intervals with endpoints on
   * the Q grid and sampling isUp at the midpoint of each Q cell integrates it
   * exactly: the comparison can be strict equality.
   */
  const Q = 0.25
  const q = (lo: number, hi: number) => fc.integer({ min: lo / Q, max: hi / Q }).map((n) => n * Q)
  const base = fc.constantFrom(0, EPOCH_MS)

  function bruteUpTime(s: Schedule, a: number, b: number): number {
    let up = 0
    for (let t = a; t < b; t += Q) if (s.isUp(t + Q / 2)) up += Q
    return up
  }

  /** Directly from the definition: t is up iff it lies in [origin + k·period, origin + k·period + up) for some k. */
  function upByDefinition(upMs: number, downMs: number, origin: number, t: number): boolean {
    const period = upMs + downMs
    const k0 = Math.floor((t - origin) / period)
    for (let k = k0 - 2; k <= k0 + 2; k++) {
      const start = origin + k * period
      if (t >= start && t < start + upMs) return true
    }
    return false
  }

  it('isUp matches the definition, including negative phase offsets', () => {
    fc.assert(
      fc.property(base, q(0.25, 300), q(0.25, 300), q(-5000, 5000), q(-5000, 5000), (b0, upMs, downMs, phase, t) => {
        const s = new PeriodicSchedule(upMs, downMs, b0 + phase)
        expect(s.isUp(b0 + t)).toBe(upByDefinition(upMs, downMs, b0 + phase, b0 + t))
      }),
      { numRuns: 2000 },
    )
  })

  it('upTime equals brute-force integration of isUp over random intervals', () => {
    fc.assert(
      fc.property(base, q(0.25, 200), q(0.25, 200), q(-3000, 3000), q(-3000, 3000), q(0, 800), (b0, upMs, downMs, phase, a, len) => {
        const s = new PeriodicSchedule(upMs, downMs, b0 + phase)
        expect(s.upTime(b0 + a, b0 + a + len)).toBe(bruteUpTime(s, b0 + a, b0 + a + len))
      }),
      { numRuns: 500 },
    )
  })

  it('upTime is additive, bounded by the interval, zero on empty or reversed intervals, and upMs per whole period', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 1, max: 1e6, noNaN: true }),
        fc.double({ min: 1, max: 1e6, noNaN: true }),
        fc.double({ min: -1e7, max: 1e7, noNaN: true }),
        fc.double({ min: -1e7, max: 1e7, noNaN: true }),
        fc.double({ min: 0, max: 1e7, noNaN: true }),
        fc.double({ min: 0, max: 1e7, noNaN: true }),
        (upMs, downMs, phase, a, l1, l2) => {
          const s = new PeriodicSchedule(upMs, downMs, EPOCH_MS + phase)
          const A = EPOCH_MS + a
          const B = A + l1
          const C = B + l2
          const eps = 1e-3 // float noise at ~1.8e12 is ~2e-4 ms
          const ab = s.upTime(A, B)
          expect(ab).toBeGreaterThanOrEqual(-eps)
          expect(ab).toBeLessThanOrEqual(B - A + eps)
          expect(Math.abs(s.upTime(A, C) - ab - s.upTime(B, C))).toBeLessThan(eps)
          expect(Math.abs(s.upTime(A, A + upMs + downMs) - upMs)).toBeLessThan(eps)
          if (l1 > 0) expect(s.upTime(B, A)).toBe(0)
          expect(s.upTime(A, A)).toBe(0)
        },
      ),
      { numRuns: 1000 },
    )
  })

  it('a concrete case: up 30 s, down 10 min, started 5 s ago', () => {
    const s = new PeriodicSchedule(30_000, 600_000, EPOCH_MS - 5_000)
    expect(s.isUp(EPOCH_MS)).toBe(true)
    expect(s.isUp(EPOCH_MS + 24_999)).toBe(true)
    expect(s.isUp(EPOCH_MS + 25_000)).toBe(false)
    expect(s.isUp(EPOCH_MS + 625_000)).toBe(true)
    // the rest of the current window, then whole windows from +625 s, +1255 s, +1885 s, +2515 s and +3145 s
    expect(s.upTime(EPOCH_MS, EPOCH_MS + 3_600_000)).toBe(25_000 + 5 * 30_000)
  })
})

describe('ALWAYS_UP', () => {
  it('is always up and its up time is the interval length (zero if reversed)', () => {
    fc.assert(
      fc.property(fc.double({ min: -1e13, max: 1e13, noNaN: true }), fc.double({ min: -1e13, max: 1e13, noNaN: true }), (a, b) => {
        expect(ALWAYS_UP.isUp(a)).toBe(true)
        expect(ALWAYS_UP.upTime(a, b)).toBe(Math.max(0, b - a))
      }),
    )
    expect(ALWAYS_UP.upTime(EPOCH_MS, EPOCH_MS + 1234.5)).toBe(1234.5)
    expect(ALWAYS_UP.upTime(10, 5)).toBe(0)
  })
})

describe('Pipe', () => {
  const SPEC: PipeSpec = { delayMs: 50, jitterMs: 0, bandwidthKbps: 80, queueMs: 2_000, duplicate: 0, reorder: 0 }

  function pipe(sched: Scheduler, spec: Partial<PipeSpec> = {}, opts: { loss?: number; schedule?: Schedule } = {}): Pipe {
    const p = opts.loss ?? 0
    return new Pipe(sched, sched.rng.fork('pipe'), { ...SPEC, ...spec }, new BernoulliLoss(sched.rng.fork('loss'), () => p), opts.schedule ?? ALWAYS_UP)
  }

  it('serialises at the bandwidth: 1000 B at 80 kbit/s take 100 ms each, then the propagation delay', async () => {
    const sched = new Scheduler(1)
    const p = pipe(sched)
    const t0 = sched.now
    const arrivals: number[] = []
    for (let i = 0; i < 10; i++) p.send(1000, () => arrivals.push(sched.now - t0))
    await sched.run(sched.now + 5_000)
    expect(arrivals).toEqual(Array.from({ length: 10 }, (_, i) => (i + 1) * 100 + 50))
    expect(p.stats).toMatchObject({ packets: 10, bytes: 10_000, delivered: 10, lost: 0, tailDropped: 0, downDropped: 0, duplicated: 0 })
  })

  it('a packet sent after the queue drained starts at once', async () => {
    const sched = new Scheduler(1)
    const p = pipe(sched)
    const arrivals: number[] = []
    p.send(1000, () => arrivals.push(sched.now))
    await sched.run(sched.now + 1_000)
    const t1 = sched.now
    p.send(500, () => arrivals.push(sched.now - t1))
    await sched.run(sched.now + 1_000)
    expect(arrivals[1]).toBe(50 + 50) // 4000 bits at 80 bit/ms, plus 50 ms delay
  })

  it('tail-drops packets that would wait longer than queueMs, and reports them', async () => {
    const sched = new Scheduler(1)
    const p = pipe(sched, { queueMs: 250 })
    const wired: number[] = []
    p.onWire = (b) => wired.push(b)
    let delivered = 0
    // Waits would be 0, 100, 200, 300, … ms: only the first three fit in 250 ms.
    for (let i = 0; i < 10; i++) p.send(1000, () => delivered++)
    expect(p.stats.tailDropped).toBe(7)
    expect(p.stats.packets).toBe(3)
    expect(p.stats.bytes).toBe(3000)
    expect(wired).toEqual([1000, 1000, 1000])
    await sched.run(sched.now + 2_000)
    expect(delivered).toBe(3)
    // Once the queue has drained, packets get through again.
    p.send(1000, () => delivered++)
    await sched.run(sched.now + 1_000)
    expect(delivered).toBe(4)
    expect(p.stats.tailDropped).toBe(7)
  })

  it('drops and counts packets sent while the link is down, and packets that arrive while it is down', async () => {
    const sched = new Scheduler(1)
    const t0 = sched.now
    // Up [t0, t0 + 1000), down [t0 + 1000, t0 + 2000), up again, …
    const p = pipe(sched, { bandwidthKbps: 8_000, delayMs: 200 }, { schedule: new PeriodicSchedule(1_000, 1_000, t0) })
    const got: string[] = []
    p.send(1000, () => got.push('a')) // up, arrives at +201: delivered
    await sched.run(t0 + 900)
    p.send(1000, () => got.push('b')) // up when sent, arrives at +1101 while down: dropped
    await sched.run(t0 + 1_500)
    expect(got).toEqual(['a'])
    expect(p.stats.downDropped).toBe(1) // 'b', on arrival
    p.send(1000, () => got.push('c')) // sent while down: dropped at once
    expect(p.stats.downDropped).toBe(2)
    expect(p.stats.packets).toBe(2) // 'c' never reached the wire
    await sched.run(t0 + 2_100)
    p.send(1000, () => got.push('d')) // up again: delivered
    await sched.run(t0 + 3_000)
    expect(got).toEqual(['a', 'd'])
    expect(p.stats).toMatchObject({ packets: 3, delivered: 2, downDropped: 2, lost: 0 })
  })

  it('counts lost packets in its stats, at the configured rate', async () => {
    const sched = new Scheduler(3)
    const loss = 0.3
    const p = pipe(sched, { bandwidthKbps: 1_000_000, queueMs: 1e9 }, { loss })
    const N = 4_000
    let delivered = 0
    for (let i = 0; i < N; i++) p.send(100, () => delivered++)
    await sched.run(sched.now + 10_000)
    const s = p.stats
    expect(s.packets).toBe(N)
    expect(s.lost + s.delivered).toBe(N)
    expect(delivered).toBe(s.delivered)
    expect(Math.abs(s.lost / N - loss)).toBeLessThan(SIGMAS * Math.sqrt((loss * (1 - loss)) / N))
  })

  it('duplicates about the configured fraction of packets, each copy delivered', async () => {
    const sched = new Scheduler(4)
    const dup = 0.2
    const p = pipe(sched, { bandwidthKbps: 1_000_000, queueMs: 1e9, duplicate: dup })
    const N = 4_000
    const seen = new Map<number, number>()
    for (let i = 0; i < N; i++) p.send(100, () => seen.set(i, (seen.get(i) ?? 0) + 1))
    await sched.run(sched.now + 10_000)
    const s = p.stats
    expect(Math.abs(s.duplicated / N - dup)).toBeLessThan(SIGMAS * Math.sqrt((dup * (1 - dup)) / N))
    expect(s.delivered).toBe(N + s.duplicated)
    expect(seen.size).toBe(N)
    expect([...seen.values()].filter((c) => c === 2)).toHaveLength(s.duplicated)
    expect([...seen.values()].every((c) => c === 1 || c === 2)).toBe(true)
  })

  it('with reorder = 0, jitter never reorders: arrival order is send order', async () => {
    const sched = new Scheduler(5)
    const p = pipe(sched, { bandwidthKbps: 10_000, jitterMs: 400, delayMs: 100 })
    const order: number[] = []
    const times: number[] = []
    for (let i = 0; i < 500; i++) {
      p.send(200, () => {
        order.push(i)
        times.push(sched.now)
      })
      await sched.run(sched.now + 3) // jitter (0..400 ms) far larger than the spacing
    }
    await sched.run(sched.now + 2_000)
    expect(order).toEqual(Array.from({ length: 500 }, (_, i) => i))
    // and the jitter was real: inter-arrival gaps are far from uniform
    const gaps = times.slice(1).map((t, i) => t - times[i]!)
    expect(Math.max(...gaps)).toBeGreaterThan(20)
  })

  it('with reorder > 0, some packets are overtaken', async () => {
    const sched = new Scheduler(6)
    const p = pipe(sched, { bandwidthKbps: 10_000, jitterMs: 20, delayMs: 100, reorder: 0.2 })
    const order: number[] = []
    for (let i = 0; i < 300; i++) {
      p.send(200, () => order.push(i))
      await sched.run(sched.now + 5)
    }
    await sched.run(sched.now + 2_000)
    expect(order).toHaveLength(300)
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: 300 }, (_, i) => i))
    let inversions = 0
    for (let i = 1; i < order.length; i++) if (order[i]! < order[i - 1]!) inversions++
    expect(inversions).toBeGreaterThan(10)
  })
})
