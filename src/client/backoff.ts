/**
 * Retry policy: capped exponential backoff with full jitter
 * (delay = random × min(cap, base × 2^failures)), no give-up, reset when a
 * connection gets through. p-retry drives the attempts; this computes the
 * wait, because p-retry's own `randomize` only spreads delays over [1, 2)×,
 * which keeps a crowd of clients that lost the same link in lockstep.
 */
export const BACKOFF_BASE_MS = 500
export const BACKOFF_CAP_MS = 5 * 60_000

export function fullJitterDelay(failures: number, random: () => number, baseMs = BACKOFF_BASE_MS, capMs = BACKOFF_CAP_MS): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(failures, 30))
  return Math.floor(random() * ceiling)
}
