/** Token buckets: refill, bursts, waits, and a map that cannot grow without bound. */
import { describe, expect, it } from 'vitest'
import { TokenBuckets } from '../../src/relay/limits.js'

describe('TokenBuckets', () => {
  it('allows a burst, then the rate, and says how long to wait', () => {
    const b = new TokenBuckets({ rate: 1000, burst: 3000 })
    expect(b.take('a', 3000, 0)).toBe(0)
    expect(b.take('a', 500, 0)).toBe(500) // 500 units at 1000/s
    expect(b.take('a', 500, 499)).toBe(1)
    expect(b.take('a', 500, 500)).toBe(0)
    expect(b.take('b', 3000, 500)).toBe(0) // keys are independent
  })

  it('refills no further than the burst', () => {
    const b = new TokenBuckets({ rate: 1000, burst: 2000 })
    expect(b.take('a', 2000, 0)).toBe(0)
    expect(b.take('a', 2000, 60_000)).toBe(0)
    expect(b.take('a', 1, 60_000)).toBe(1)
  })

  it('measures a request larger than the burst against a full bucket: slowed, never refused for ever', () => {
    const b = new TokenBuckets({ rate: 100, burst: 1000 })
    expect(b.take('a', 5000, 0)).toBe(0)
    expect(b.take('a', 5000, 0)).toBe(10_000)
    expect(b.take('a', 5000, 10_000)).toBe(0)
  })

  it('a refusal takes nothing', () => {
    const b = new TokenBuckets({ rate: 1000, burst: 1000 })
    expect(b.take('a', 800, 0)).toBe(0)
    expect(b.take('a', 800, 0)).toBeGreaterThan(0)
    expect(b.take('a', 200, 0)).toBe(0)
  })

  it('prunes refilled buckets first when the key map is full, and stays bounded under a flood of keys', () => {
    const b = new TokenBuckets({ rate: 1000, burst: 1000 }, 100)
    for (let i = 0; i < 50; i++) b.take(`idle${i}`, 1000, 0)
    b.take('busy', 1000, 5_000)
    // 5 s later the idle keys are full again and go first.
    for (let i = 0; i < 10_000; i++) b.take(`flood${i}`, 1, 5_000)
    expect(b.size).toBeLessThanOrEqual(100)
    expect(b.take('busy', 1, 5_000)).toBeGreaterThanOrEqual(0)
  })
})

it('wait() says how long without taking anything', () => {
  const b = new TokenBuckets({ rate: 1000, burst: 1000 })
  expect(b.wait('a', 800, 0)).toBe(0)
  expect(b.wait('a', 800, 0)).toBe(0)
  expect(b.take('a', 800, 0)).toBe(0)
  expect(b.wait('a', 800, 0)).toBe(600)
})
