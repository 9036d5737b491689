/** Refusal logging has a budget: a flood cannot turn the relay's log into a disk-filling attack. */
import { expect, it } from 'vitest'
import { LogBudget } from '../../src/relay/relay-command.js'

it('logs at most N refusals a second and reports the rest by reason, once per second', () => {
  let now = 10_000
  const reports: Array<Record<string, number>> = []
  const b = new LogBudget(3, (s) => reports.push(s), () => now)
  const taken = Array.from({ length: 10 }, (_, i) => b.take(i % 2 ? 'quota' : 'rate-limited'))
  expect(taken.filter(Boolean)).toHaveLength(3)
  expect(reports).toEqual([])
  now += 1000
  expect(b.take('invalid')).toBe(true)
  expect(reports).toEqual([{ 'rate-limited': 3, quota: 4 }])
  expect(b.take('invalid') && b.take('invalid')).toBe(true)
  expect(b.take('invalid')).toBe(false)
})
