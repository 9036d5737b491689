/** Virtual time: ordering, cancellation, run bounds, integer clocks, settling between events, and seeded randomness. */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { openMemoryDb } from '../../src/queue/db.js'
import { Rng } from '../../src/sim/rng.js'
import { EPOCH_MS, Scheduler } from '../../src/sim/scheduler.js'

describe('Scheduler ordering', () => {
  it('runs events in time order, ties in the order they were scheduled', async () => {
    const sched = new Scheduler(1)
    const log: string[] = []
    const t = sched.now
    sched.at(t + 30, () => log.push('c'))
    sched.at(t + 10, () => log.push('a1'))
    sched.timers.setTimeout(() => log.push('b1'), 20)
    sched.at(t + 10, () => log.push('a2'))
    sched.timers.setTimeout(() => log.push('b2'), 20)
    sched.at(t + 10, () => log.push('a3'))
    await sched.run(t + 100)
    expect(log).toEqual(['a1', 'a2', 'a3', 'b1', 'b2', 'c'])
  })

  it('any schedule runs sorted by (time, scheduling order) — property', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 200 }), async (delays) => {
        const sched = new Scheduler(2)
        const t0 = sched.now
        const ran: number[] = []
        const times: number[] = []
        delays.forEach((d, i) =>
          sched.at(t0 + d, () => {
            ran.push(i)
            times.push(sched.now - t0)
          }),
        )
        await sched.run(t0 + 50)
        const expected = delays.map((d, i) => [d, i] as const).sort((x, y) => x[0] - y[0] || x[1] - y[1])
        expect(ran).toEqual(expected.map(([, i]) => i))
        expect(times).toEqual(expected.map(([d]) => d))
      }),
      { numRuns: 50 },
    )
  })

  it('events scheduled from inside an event, including at the same instant, run after it in order', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    const log: string[] = []
    sched.at(t + 5, () => {
      log.push('outer')
      sched.timers.setTimeout(() => log.push('same-instant'), 0)
      sched.timers.setTimeout(() => log.push('negative-delay'), -10) // never in the past
      sched.at(t, () => log.push('past')) // clamped to now
    })
    sched.at(t + 5, () => log.push('tie, scheduled earlier'))
    await sched.run(t + 10)
    expect(log).toEqual(['outer', 'tie, scheduled earlier', 'same-instant', 'negative-delay', 'past'])
  })

  it('clearTimeout cancels a pending event, and is harmless on one that already ran or twice', async () => {
    const sched = new Scheduler(1)
    const log: string[] = []
    const keep = sched.timers.setTimeout(() => log.push('keep'), 10)
    const drop = sched.timers.setTimeout(() => log.push('drop'), 20)
    sched.timers.setTimeout(() => log.push('later'), 30)
    sched.timers.clearTimeout(drop)
    sched.timers.clearTimeout(drop)
    await sched.run(sched.now + 15)
    sched.timers.clearTimeout(keep)
    await sched.run(sched.now + 100)
    expect(log).toEqual(['keep', 'later'])
    expect(sched.events).toBe(2) // the cancelled one is not counted
  })

  it('an event can cancel a later one', async () => {
    const sched = new Scheduler(1)
    const log: string[] = []
    const t = sched.now
    const h = sched.at(t + 20, () => log.push('cancelled'))
    sched.at(t + 10, () => {
      log.push('canceller')
      sched.timers.clearTimeout(h)
    })
    await sched.run(t + 100)
    expect(log).toEqual(['canceller'])
  })
})

describe('Scheduler.run', () => {
  it('starts at EPOCH_MS', () => {
    const sched = new Scheduler(1)
    expect(sched.now).toBe(EPOCH_MS)
    expect(sched.elapsed).toBe(0)
    expect(sched.clock.now()).toBe(EPOCH_MS)
  })

  it('stops at `until` (events exactly at until run, later ones wait) and advances now to it', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    const log: number[] = []
    for (const d of [10, 100, 101, 500]) sched.at(t + d, () => log.push(d))
    await sched.run(t + 100)
    expect(log).toEqual([10, 100])
    expect(sched.now).toBe(t + 100)
    expect(sched.pending).toBe(2)

    await sched.run(t + 300)
    expect(log).toEqual([10, 100, 101])
    expect(sched.now).toBe(t + 300) // advanced past the last event to until
    expect(sched.elapsed).toBe(300)

    await sched.run(t + 1_000)
    expect(log).toEqual([10, 100, 101, 500])
    expect(sched.now).toBe(t + 1_000)
    expect(sched.pending).toBe(0)
  })

  it('with no events, run(until) just moves the clock; it never moves it backwards', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    await sched.run(t + 12_345)
    expect(sched.now).toBe(t + 12_345)
    await sched.run(t)
    expect(sched.now).toBe(t + 12_345)
  })

  it('the stop predicate halts the run at the event that satisfied it', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    let count = 0
    for (let i = 1; i <= 10; i++) sched.at(t + i * 10, () => count++)
    await sched.run(t + 1_000, { stop: () => count >= 3 })
    expect(count).toBe(3)
    expect(sched.now).toBe(t + 30) // not advanced to until
    expect(sched.pending).toBe(7)
    await sched.run(t + 1_000)
    expect(count).toBe(10)
  })

  it('a stop predicate that is already true halts at once: the clock does not jump to until', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    let ran = 0
    sched.at(t + 1, () => ran++)
    sched.at(t + 2, () => ran++)
    await sched.run(t + 10, { stop: () => true })
    // stop is consulted after each event, so at most the first one runs.
    expect(ran).toBeLessThanOrEqual(1)
    expect(sched.now).toBeLessThanOrEqual(t + 1)
    expect(sched.pending).toBe(2 - ran)
  })

  it('calls onStep every stepEvery events', async () => {
    const sched = new Scheduler(1)
    for (let i = 0; i < 25; i++) sched.at(sched.now + i, () => {})
    let steps = 0
    await sched.run(sched.now + 100, { onStep: () => steps++, stepEvery: 10 })
    expect(steps).toBe(2)
    expect(sched.events).toBe(25)
  })

  it('clock.now() is always a whole number of ms, even for events at fractional times', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    const seen: [number, number][] = []
    for (const d of [0.1, 0.5, 10.7, 10.999, 11, 99.25]) sched.at(t + d, () => seen.push([sched.now - t, sched.clock.now()]))
    await sched.run(t + 99.5)
    expect(seen.map(([, c]) => c - t)).toEqual([0, 0, 10, 10, 11, 99])
    for (const [, c] of seen) expect(Number.isInteger(c)).toBe(true)
    expect(seen[2]![0]).toBeCloseTo(10.7, 3) // the scheduler itself keeps the fraction (to float precision at ~1.8e12)
    expect(Number.isInteger(sched.clock.now())).toBe(true)
    expect(sched.clock.now()).toBe(t + 99)
  })

  it('timers set at fractional now stay integral on the clock — property', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.double({ min: 0, max: 1000, noNaN: true }), { minLength: 1, maxLength: 30 }), async (ds) => {
        const sched = new Scheduler(3)
        const t = sched.now
        const ok: boolean[] = []
        for (const d of ds)
          sched.at(t + d, () => {
            ok.push(Number.isInteger(sched.clock.now()) && sched.clock.now() <= sched.now && sched.now - sched.clock.now() < 1)
            sched.timers.setTimeout(() => ok.push(Number.isInteger(sched.clock.now())), 0.3)
          })
        await sched.run(t + 2000)
        expect(ok).toHaveLength(2 * ds.length)
        expect(ok.every(Boolean)).toBe(true)
      }),
      { numRuns: 30 },
    )
  })
})

describe('Scheduler settles promise chains between events', () => {
  it('microtask chains started by an event finish before the next event', async () => {
    const sched = new Scheduler(1)
    const t = sched.now
    let done = false
    let observed: boolean | undefined
    sched.at(t + 10, () => {
      void (async () => {
        for (let i = 0; i < 50; i++) await Promise.resolve()
        await new Promise<void>((r) => queueMicrotask(r))
        await new Promise<void>((r) => process.nextTick(r))
        done = true
      })()
    })
    sched.at(t + 10, () => (observed = done)) // a tie: still a separate event
    await sched.run(t + 20)
    expect(observed).toBe(true)
  })

  it('a memory-level put/get started by an event completes before a later event looks', async () => {
    const db = await openMemoryDb()
    try {
      const sched = new Scheduler(1)
      const t = sched.now
      const results: (string | undefined)[] = []
      let read: string | undefined
      sched.at(t + 10, () => {
        void (async () => {
          await Promise.resolve()
          await db.put('k', new TextEncoder().encode('v1'))
          const got = await db.get('k')
          await db.put('k2', got!)
          read = new TextDecoder().decode((await db.get('k2'))!)
        })()
      })
      sched.at(t + 11, () => results.push(read))
      sched.at(t + 11, () => {
        void db.batch([{ type: 'put', key: 'k3', value: new TextEncoder().encode('v3') }]).then(() => {
          read = 'batched'
        })
      })
      sched.at(t + 12, () => results.push(read))
      await sched.run(t + 100)
      expect(results).toEqual(['v1', 'batched'])
    } finally {
      await db.close()
    }
  })

  it('work started before run() settles before the first event', async () => {
    const sched = new Scheduler(1)
    let done = false
    void (async () => {
      for (let i = 0; i < 10; i++) await Promise.resolve()
      done = true
    })()
    let observed = false
    sched.at(sched.now, () => (observed = done))
    await sched.run(sched.now + 1)
    expect(observed).toBe(true)
  })
})

describe('seeded randomness', () => {
  const seq = (r: Rng, n: number) => Array.from({ length: n }, () => r.u32())

  it('same seed ⇒ identical randomBytes and rng sequences', () => {
    const a = new Scheduler(42)
    const b = new Scheduler(42)
    expect(a.randomBytes(37)).toEqual(b.randomBytes(37))
    expect(a.randomBytes(1024)).toEqual(b.randomBytes(1024))
    expect(seq(a.rng, 100)).toEqual(seq(b.rng, 100))
    expect(Array.from({ length: 50 }, () => a.rng.next())).toEqual(Array.from({ length: 50 }, () => b.rng.next()))
  })

  it('different seeds ⇒ different randomBytes and rng sequences', () => {
    for (const [x, y] of [
      [1, 2],
      [0, 1],
      [42, 43],
      [0, 2 ** 32 - 1],
    ] as const) {
      const a = new Scheduler(x)
      const b = new Scheduler(y)
      expect(a.randomBytes(32)).not.toEqual(b.randomBytes(32))
      expect(seq(a.rng, 16)).not.toEqual(seq(b.rng, 16))
    }
  })

  it('randomBytes is its own stream: drawing from sched.rng does not shift it', () => {
    const a = new Scheduler(7)
    const b = new Scheduler(7)
    seq(b.rng, 1000)
    b.rng.fork('something')
    expect(a.randomBytes(64)).toEqual(b.randomBytes(64))
  })

  it('Rng.next is in [0, 1), int(n) in [0, n), bytes has the asked length', () => {
    const r = new Rng(9)
    for (let i = 0; i < 10_000; i++) {
      const x = r.next()
      expect(x >= 0 && x < 1).toBe(true)
      const k = r.int(7)
      expect(Number.isInteger(k) && k >= 0 && k < 7).toBe(true)
    }
    for (const n of [0, 1, 3, 4, 5, 17]) expect(r.bytes(n)).toHaveLength(n)
  })

  it('Rng.fork is reproducible and independent of draws made on the parent or siblings after forking', () => {
    const p1 = new Rng(123)
    const a1 = p1.fork('a')
    const b1 = p1.fork('b')
    const aSeq = seq(a1, 200)
    const bSeq = seq(b1, 200)

    const p2 = new Rng(123)
    const a2 = p2.fork('a')
    const b2 = p2.fork('b')
    // Heavy use of the sibling and of the parent after forking…
    seq(b2, 5_000)
    seq(p2, 5_000)
    p2.fork('c')
    b2.fork('grandchild')
    // …changes nothing for `a`, and interleaving does not either.
    const interleaved: number[] = []
    for (let i = 0; i < 200; i++) {
      interleaved.push(a2.u32())
      seq(new Rng(i), 1)
    }
    expect(interleaved).toEqual(aSeq)

    const p3 = new Rng(123)
    const a3 = p3.fork('a')
    const b3 = p3.fork('b')
    seq(a3, 777)
    expect(seq(b3, 200)).toEqual(bSeq)
  })

  it('forks with different labels, or forked in a different order, give different streams', () => {
    const p = new Rng(5)
    const x = p.fork('x')
    const y = p.fork('y')
    expect(seq(x, 20)).not.toEqual(seq(y, 20))
    // Same label from the same parent state twice: different (the parent advanced).
    const q = new Rng(5)
    const q1 = q.fork('x')
    const q2 = q.fork('x')
    expect(seq(q1, 20)).not.toEqual(seq(q2, 20))
    // Same label, same parent state: identical.
    expect(seq(new Rng(5).fork('x'), 20)).toEqual(seq(new Rng(5).fork('x'), 20))
  })
})
