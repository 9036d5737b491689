/**
 * The datagram transport over a real lossy link: two network namespaces
 * joined by a veth, real packet loss each way (nftables on ingress), a real
 * rate limit (tbf), a real relay process and a real client process. Skipped,
 * saying why, only where namespaces cannot be made (not root, tools missing).
 * CI installs iproute2, nftables and ethtool, so it runs there.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createNetnsPair, netnsUnavailable, type NetnsPair } from '../../bench/netns.js'
import { capacityRatio, runWorker, startRelay } from '../../bench/transfer.js'

const why = netnsUnavailable()
if (why) console.warn(`tests/e2e/netns.test.ts skipped: ${why}`)

const RATE = 2000 // kbit/s each way
const SIZE = 150_000

describe.skipIf(why !== undefined)('datagram transport over real lossy links (network namespaces)', () => {
  let pair: NetnsPair
  let relay: Awaited<ReturnType<typeof startRelay>>

  beforeAll(async () => {
    pair = createNetnsPair({ rateKbit: RATE, lossPercent: 0, tag: 'cht' })
    relay = await startRelay(pair, RATE)
  }, 30_000)

  afterAll(() => {
    relay?.stop()
    pair?.destroy()
  })

  for (const loss of [0.3, 0.5, 0.8]) {
    it(`a ${SIZE / 1000} KB report is accepted at ${loss * 100}% loss each way, near the erasure-channel limit`, async () => {
      pair.setLoss(loss * 100)
      const r = await runWorker(pair, relay.udp, SIZE, RATE, 120_000)
      expect(r.ok, JSON.stringify(r)).toBe(true)
      const cap = capacityRatio(r, RATE, loss)!
      console.log(`netns loss ${loss}: accepted ${r.accepted_ms} ms after start, capacity_ratio ${cap}, loss estimate ${r.loss_estimate}`)
      // The bench reports the real number; here only that it is in the right region (the host is shared and noisy).
      expect(cap).toBeGreaterThan(0.4)
      expect(cap).toBeLessThanOrEqual(1.05)
    }, 150_000)
  }

  it('the nftables rule really drops what it says (the link is lossy, not just slow)', async () => {
    pair.setLoss(50)
    const r = await runWorker(pair, relay.udp, 60_000, RATE, 60_000)
    expect(r.ok).toBe(true)
    // About half the packets sent were lost: the estimate the sender measured from the relay's acks.
    expect(r.loss_estimate).toBeGreaterThan(0.3)
    expect(r.loss_estimate).toBeLessThan(0.7)
  }, 90_000)
})
