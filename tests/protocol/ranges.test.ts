import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import {
  type Ranges,
  countRanges,
  inRanges,
  indicesOf,
  missingRanges,
  rangesFromIndices,
  validRanges,
} from '../../src/protocol/ranges.js'

/** A total and a subset of [0, total). */
const subsetOf = fc.integer({ min: 0, max: 200 }).chain((total) =>
  fc.tuple(fc.constant(total), total === 0 ? fc.constant<number[]>([]) : fc.array(fc.integer({ min: 0, max: total - 1 }), { maxLength: 250 })),
)

const sortedUnique = (xs: Iterable<number>): number[] => [...new Set(xs)].sort((a, b) => a - b)
const range = (a: number, b: number): number[] => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i)

describe('rangesFromIndices', () => {
  it.each<[number[], Ranges]>([
    [[], []],
    [[0], [[0, 1]]],
    [[5], [[5, 6]]],
    [[0, 1, 2, 3], [[0, 4]]],
    [[3, 1, 2, 2, 7, 5, 6, 10], [[1, 4], [5, 8], [10, 11]]],
    [[9, 8, 7, 0], [[0, 1], [7, 10]]],
    [[4, 4, 4], [[4, 5]]],
  ])('%j → %j', (indices, expected) => {
    expect(rangesFromIndices(indices)).toEqual(expected)
  })

  it('accepts any iterable (Set, generator)', () => {
    expect(rangesFromIndices(new Set([2, 0, 1]))).toEqual([[0, 3]])
    function* gen(): Generator<number> {
      yield 10
      yield 11
      yield 13
    }
    expect(rangesFromIndices(gen())).toEqual([
      [10, 12],
      [13, 14],
    ])
  })

  it('sorts numerically, not lexically', () => {
    expect(rangesFromIndices([10, 9, 100, 2])).toEqual([
      [2, 3],
      [9, 11],
      [100, 101],
    ])
  })

  it('produces valid, coalesced ranges covering exactly the input', () => {
    fc.assert(
      fc.property(subsetOf, ([total, xs]) => {
        const r = rangesFromIndices(xs)
        expect(validRanges(r, total)).toBe(true)
        expect(countRanges(r)).toBe(new Set(xs).size)
        expect([...indicesOf(r)]).toEqual(sortedUnique(xs))
        // Coalesced: there is always a gap between consecutive ranges.
        for (let i = 1; i < r.length; i++) expect(r[i]![0]).toBeGreaterThan(r[i - 1]![1])
      }),
    )
  })
})

describe('countRanges / inRanges / indicesOf', () => {
  const r: Ranges = [
    [0, 2],
    [5, 6],
    [10, 20],
  ]

  it('counts', () => {
    expect(countRanges([])).toBe(0)
    expect(countRanges(r)).toBe(2 + 1 + 10)
    expect(countRanges([[0, 2 ** 32 - 1]])).toBe(2 ** 32 - 1)
  })

  it('tests membership with half-open bounds', () => {
    const members = range(0, 25).filter((i) => inRanges(r, i))
    expect(members).toEqual([0, 1, 5, ...range(10, 20)])
    expect(inRanges([], 0)).toBe(false)
    expect(inRanges(r, -1)).toBe(false)
  })

  it('enumerates indices in order', () => {
    expect([...indicesOf(r)]).toEqual([0, 1, 5, ...range(10, 20)])
    expect([...indicesOf([])]).toEqual([])
  })
})

describe('missingRanges', () => {
  it.each<[Ranges, number, Ranges]>([
    [[], 0, []],
    [[], 5, [[0, 5]]],
    [[[0, 5]], 5, []],
    [[[0, 1]], 1, []],
    [[[1, 2]], 3, [[0, 1], [2, 3]]],
    [[[1, 2], [4, 5]], 7, [[0, 1], [2, 4], [5, 7]]],
    [[[0, 3], [6, 9]], 9, [[3, 6]]],
    // Ranges reaching past total are clipped.
    [[[2, 10]], 5, [[0, 2]]],
    [[[7, 10]], 5, [[0, 5]]],
    [[[0, 2], [5, 100]], 4, [[2, 4]]],
    // Adjacent (uncoalesced) input still works.
    [[[0, 2], [2, 4]], 6, [[4, 6]]],
  ])('missingRanges(%j, %d) = %j', (have, total, expected) => {
    expect(missingRanges(have, total)).toEqual(expected)
  })

  it('missing ∪ have = [0, total), disjoint, both valid; missing is the complement', () => {
    fc.assert(
      fc.property(subsetOf, ([total, xs]) => {
        const have = rangesFromIndices(xs)
        const missing = missingRanges(have, total)
        expect(validRanges(missing, total)).toBe(true)
        expect(countRanges(have) + countRanges(missing)).toBe(total)
        const union = sortedUnique([...indicesOf(have), ...indicesOf(missing)])
        expect(union).toEqual(range(0, total))
        for (const i of indicesOf(missing)) expect(inRanges(have, i)).toBe(false)
        const haveSet = new Set(xs)
        expect(missing).toEqual(rangesFromIndices(range(0, total).filter((i) => !haveSet.has(i))))
        // Taking the complement twice gives back what we had.
        expect(missingRanges(missing, total)).toEqual(have)
      }),
    )
  })

  it('ignores indices at or beyond total', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 100 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 100 }),
        (total, xs) => {
          const missing = missingRanges(rangesFromIndices(xs), total)
          const haveSet = new Set(xs)
          expect([...indicesOf(missing)]).toEqual(range(0, total).filter((i) => !haveSet.has(i)))
        },
      ),
    )
  })
})

describe('validRanges', () => {
  it.each<[string, Ranges, number, boolean]>([
    ['empty list', [], 0, true],
    ['empty list, total 10', [], 10, true],
    ['one full range', [[0, 10]], 10, true],
    ['several', [[0, 1], [3, 5], [9, 10]], 10, true],
    ['end beyond total', [[0, 11]], 10, false],
    ['start at total', [[10, 11]], 10, false],
    ['anything with total 0', [[0, 1]], 0, false],
    ['empty range', [[3, 3]], 10, false],
    ['reversed range', [[5, 3]], 10, false],
    ['negative start', [[-1, 2]], 10, false],
    ['fractional start', [[0.5, 2]], 10, false],
    ['fractional end', [[0, 1.5]], 10, false],
    ['NaN end', [[0, Number.NaN]], 10, false],
    ['infinite end', [[0, Number.POSITIVE_INFINITY]], Number.POSITIVE_INFINITY, false],
    ['unsorted', [[5, 6], [0, 1]], 10, false],
    ['overlapping', [[0, 3], [2, 4]], 10, false],
    ['nested', [[0, 5], [1, 2]], 10, false],
    ['duplicate', [[1, 2], [1, 2]], 10, false],
    // Canonical form: touching ranges must be merged (rangesFromIndices always does).
    ['adjacent', [[0, 2], [2, 4]], 10, false],
  ])('%s: %j within %d → %s', (_name, r, total, ok) => {
    expect(validRanges(r, total)).toBe(ok)
  })

  it('accepts exactly the canonical encodings of index sets', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.tuple(fc.integer({ min: -2, max: 55 }), fc.integer({ min: -2, max: 55 })), { maxLength: 6 }),
        (total, pairs) => {
          const r = pairs as Ranges
          const canonical =
            r.every(([a, b]) => a >= 0 && b > a && b <= total) &&
            JSON.stringify(rangesFromIndices(r.flatMap(([a, b]) => range(a, b)))) === JSON.stringify(r)
          expect(validRanges(r, total)).toBe(canonical)
        },
      ),
    )
  })
})
