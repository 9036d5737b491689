/**
 * The pure pieces of the bench:loss harness (bench/loss.ts): percentiles,
 * row aggregation, the computed physical limit, time limits, CLI option
 * resolution, the table, the HTML report and merging saved rows (--from).
 * No namespaces, no processes.
 * Expected values are worked out by hand in the comments.
 */
import { mkdtempSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { PHYSICAL_LIMIT, SYSTEMS, WORKLOADS, aggregate, cmdBenchLoss, formatTable, percentileOfSent, physicalLimitRow, readRows, reportPage, resolveLossOptions, textTable, timeLimitFor, type LossBenchOptions, type Row, type Workload } from '../../bench/loss.js'
import { InputError } from '../../src/protocol/errors.js'

const cell = (over: Partial<{ system: string; workload: string; loss: number; model: 'bernoulli' | 'gilbert'; rateKbps: number; rttMs: number; timeLimitMs: number }> = {}) => ({
  system: 'chapar-udp',
  workload: 'reports',
  loss: 0.5,
  model: 'bernoulli' as const,
  rateKbps: 1000,
  rttMs: 600,
  timeLimitMs: 60_000,
  ...over,
})

function expectInputError(f: () => unknown, flag: string): void {
  let caught: unknown
  try {
    f()
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(InputError)
  expect((caught as Error).message).toContain(flag)
}

describe('percentileOfSent (nearest rank over all sent messages)', () => {
  it('is null when nothing was sent', () => {
    expect(percentileOfSent([], 0, 0.5)).toBeNull()
    expect(percentileOfSent([], 0, 0.95)).toBeNull()
  })

  it('is null when nothing was delivered', () => {
    expect(percentileOfSent([], 10, 0.5)).toBeNull()
  })

  it('takes the ceil(q·sent)-th smallest latency, whatever the input order', () => {
    // 10 sent, all delivered, latencies 10..100 shuffled.
    const lat = [70, 10, 100, 40, 20, 90, 30, 60, 80, 50]
    expect(percentileOfSent(lat, 10, 0.5)).toBe(50) // rank ceil(5) = 5 → 50
    expect(percentileOfSent(lat, 10, 0.95)).toBe(100) // rank ceil(9.5) = 10 → 100
    expect(percentileOfSent(lat, 10, 0.1)).toBe(10) // rank 1
    expect(percentileOfSent(lat, 10, 0)).toBe(10) // rank clamps to 1
    // the input is not reordered in place
    expect(lat[0]).toBe(70)
  })

  it('counts undelivered messages as never: null when the rank lands among them', () => {
    // 10 sent, 6 delivered: ranks 1..6 exist, 7..10 are "never".
    const lat = [5, 1, 4, 2, 6, 3]
    expect(percentileOfSent(lat, 10, 0.5)).toBe(5) // rank 5 → 5
    expect(percentileOfSent(lat, 10, 0.6)).toBe(6) // rank 6 → 6
    expect(percentileOfSent(lat, 10, 0.61)).toBeNull() // rank 7 → undelivered
    expect(percentileOfSent(lat, 10, 0.95)).toBeNull() // rank 10
    // 100 sent, 95 delivered: p95 (rank 95) is the largest delivered; 94 delivered: null
    const ninetyFive = Array.from({ length: 95 }, (_, i) => i + 1)
    expect(percentileOfSent(ninetyFive, 100, 0.95)).toBe(95)
    expect(percentileOfSent(ninetyFive.slice(0, 94), 100, 0.95)).toBeNull()
  })

  it('rounds to whole milliseconds', () => {
    expect(percentileOfSent([1.4, 2.6], 2, 0.5)).toBe(1)
    expect(percentileOfSent([1.4, 2.6], 2, 1)).toBe(3)
  })
})

describe('aggregate', () => {
  const w: Workload = { clients: 2, perClient: 5, size: 1000 } // 10 messages, 8000 bits each

  it('all delivered: goodput over the last ack, not the time limit', () => {
    const lat = [100, 200, 300, 400, 500, 600, 700, 800, 900, 2000]
    const r = aggregate(cell({ loss: 0.5, rateKbps: 100, timeLimitMs: 60_000 }), w, lat, 12_345)
    expect(r.sent).toBe(10)
    expect(r.delivered).toBe(10)
    expect(r.delivery_ratio).toBe(1)
    expect(r.timed_out).toBe(false)
    // 10 × 8000 bits / 2 s = 40 000 bit/s
    expect(r.goodput_bps).toBe(40_000)
    // 40 000 / (100 kbit/s × 1000 × 0.5 = 50 000) = 0.8
    expect(r.capacity_ratio).toBe(0.8)
    expect(r.p50_ms).toBe(500) // rank 5
    expect(r.p95_ms).toBe(2000) // rank ceil(9.5) = 10
    expect(r.wire_bytes).toBe(12_345)
    expect(r).toMatchObject({ system: 'chapar-udp', workload: 'reports', loss: 0.5, loss_model: 'bernoulli', rate_kbps: 100, rtt_ms: 600, time_limit_ms: 60_000 })
  })

  it('not all delivered: goodput over the time limit, timed out, p95 null', () => {
    const lat = [1000, 3000, 2000, 5000, 4000, 6000, 7000] // 7 of 10, last ack at 7 s
    const r = aggregate(cell({ loss: 0.3, rateKbps: 10, timeLimitMs: 20_000 }), w, lat, 0)
    expect(r.delivered).toBe(7)
    expect(r.delivery_ratio).toBe(0.7)
    expect(r.timed_out).toBe(true)
    // 7 × 8000 bits / 20 s (the limit, not 7 s) = 2800 bit/s
    expect(r.goodput_bps).toBe(2800)
    // 2800 / (10 × 1000 × 0.7 = 7000) = 0.4
    expect(r.capacity_ratio).toBe(0.4)
    expect(r.p50_ms).toBe(5000) // rank 5 of the sorted 1000..7000
    expect(r.p95_ms).toBeNull() // rank 10 was never delivered
    expect(r.time_limit_ms).toBe(20_000)
  })

  it('nothing delivered: zeros and nulls, timed out', () => {
    const r = aggregate(cell({ timeLimitMs: 60_000 }), w, [], 99)
    expect(r).toMatchObject({ sent: 10, delivered: 0, delivery_ratio: 0, goodput_bps: 0, capacity_ratio: 0, p50_ms: null, p95_ms: null, timed_out: true })
  })

  it('rounds ratios to three places', () => {
    // 1 of 3 delivered → 0.333
    const r = aggregate(cell({ loss: 0, rateKbps: 1000, timeLimitMs: 10_000 }), { clients: 1, perClient: 3, size: 1000 }, [50], 0)
    expect(r.delivery_ratio).toBe(0.333)
    // 8000 bits / 10 s = 800 bit/s; / 1 000 000 = 0.0008 → 0.001
    expect(r.goodput_bps).toBe(800)
    expect(r.capacity_ratio).toBe(0.001)
  })
})

describe('physicalLimitRow', () => {
  it('the reports workload at 1000 kbit/s, loss 0.5: FIFO at 500 kbit/s', () => {
    const w = WORKLOADS.reports! // 100 × 2000 bytes = 16 000 bits each
    const r = physicalLimitRow({ workload: 'reports', loss: 0.5, model: 'bernoulli', rateKbps: 1000, rttMs: 600, timeLimitMs: 60_000 }, w)
    expect(r.system).toBe(PHYSICAL_LIMIT)
    expect(r.capacity_ratio).toBe(1)
    expect(r.goodput_bps).toBe(500_000) // 1000 kbit/s × (1 − 0.5)
    expect(r.sent).toBe(100)
    expect(r.delivered).toBe(100)
    expect(r.delivery_ratio).toBe(1)
    expect(r.timed_out).toBe(false)
    // message k finishes at k × 16 000 bits / 500 000 bit/s = 32k ms
    expect(r.p50_ms).toBe(1600) // k = 50
    expect(r.p95_ms).toBe(3040) // k = 95
    // 200 000 payload bytes / (1 − 0.5)
    expect(r.wire_bytes).toBe(400_000)
  })

  it('one photo at 1000 kbit/s, loss 0.8: 8 000 000 bits at 200 kbit/s = 40 s', () => {
    const r = physicalLimitRow({ workload: 'photo', loss: 0.8, model: 'gilbert', rateKbps: 1000, rttMs: 0, timeLimitMs: 160_000 }, WORKLOADS.photo!)
    expect(r.capacity_ratio).toBe(1)
    expect(r.goodput_bps).toBe(200_000)
    expect(r.p50_ms).toBe(40_000)
    expect(r.p95_ms).toBe(40_000)
    expect(r.loss_model).toBe('gilbert')
    expect(r.timed_out).toBe(false)
    expect(r.wire_bytes).toBe(5_000_000) // 1 000 000 / 0.2
  })

  it('at loss 0 the goodput is the rate', () => {
    const r = physicalLimitRow({ workload: 'x', loss: 0, model: 'bernoulli', rateKbps: 64, rttMs: 0, timeLimitMs: 1 }, { clients: 1, perClient: 4, size: 800 })
    // 6400 bits each at 64 000 bit/s = 100 ms each → 100, 200, 300, 400
    expect(r.goodput_bps).toBe(64_000)
    expect(r.p50_ms).toBe(200)
    expect(r.p95_ms).toBe(400)
  })
})

describe('timeLimitFor', () => {
  it('is at least two minutes', () => {
    // reports at 1000 kbit/s, loss 0.5: ideal 1 600 000 bits / 500 kbit/s = 3.2 s; 4× = 12.8 s → 120 s
    expect(timeLimitFor(WORKLOADS.reports!, 0.5, 1000)).toBe(120_000)
    // photo at 1000, loss 0.5: ideal 16 s; 4× = 64 s → 120 s
    expect(timeLimitFor(WORKLOADS.photo!, 0.5, 1000)).toBe(120_000)
  })

  it('is 4× the ideal time when that is longer, rounded up to a whole second', () => {
    // photo at 1000 kbit/s, loss 0.75: ideal 8 000 000 / 250 = 32 000 ms; 4× = 128 s
    expect(timeLimitFor(WORKLOADS.photo!, 0.75, 1000)).toBe(128_000)
    // photo at 1000 kbit/s, loss 0.8: ideal 8 000 000 / 200 = 40 000 ms; 4× = 160 s exactly (no float creep from 1 − 0.8)
    expect(timeLimitFor(WORKLOADS.photo!, 0.8, 1000)).toBe(160_000)
    // video (160 000 000 bits) at 4000, loss 0.3: ideal 160e6 / 2800 = 57 142.86 ms; 4× = 228.57 s → 229 s
    expect(timeLimitFor(WORKLOADS.video!, 0.3, 4000)).toBe(229_000)
    // one 1 000 000-byte message at 100 kbit/s, loss 0: 80 s ideal; 4× = 320 s
    expect(timeLimitFor({ clients: 1, perClient: 1, size: 1_000_000 }, 0, 100)).toBe(320_000)
  })
})

describe('resolveLossOptions', () => {
  it('defaults: reports and photo, three losses, both models, every system', () => {
    const o = resolveLossOptions({})
    expect(o.workloads).toEqual(['reports', 'photo'])
    expect(o.losses).toEqual([0.3, 0.5, 0.8])
    expect(o.models).toEqual(['bernoulli', 'gilbert'])
    expect(o.systems).toEqual([...SYSTEMS])
    expect(o.systems).toEqual(['chapar-udp', 'chapar-ws', 'mqtt-qos1', 'naive-retry'])
    expect(o.rateKbps).toBe(1000)
    expect(o.rttMs).toBe(600)
    expect(o.jitterMs).toBe(0)
    expect(o.burst).toBe(8)
    expect(o.outage).toBeUndefined()
    expect(o.timeLimitMs).toBeUndefined()
    expect(o.seed).toBe(1)
  })

  it('--quick: reports at 0.5 loss, Bernoulli, 60 s limit', () => {
    const o = resolveLossOptions({ quick: true })
    expect(o.workloads).toEqual(['reports'])
    expect(o.losses).toEqual([0.5])
    expect(o.models).toEqual(['bernoulli'])
    expect(o.systems).toEqual([...SYSTEMS])
    expect(o.timeLimitMs).toBe(60_000)
  })

  it('--full adds the video workload', () => {
    expect(resolveLossOptions({ full: true }).workloads).toEqual(['reports', 'photo', 'video'])
  })

  it('explicit flags win, lists are trimmed, durations parse', () => {
    const o = resolveLossOptions({ quick: true, workload: ' photo , video ', loss: '0,0.95', lossModel: 'gilbert', systems: 'mqtt-qos1', rate: '250', rtt: '1s', jitter: '20', burst: '30', outage: 'up=30s,down=10s', timeLimit: '5m', seed: '7' })
    expect(o.workloads).toEqual(['photo', 'video'])
    expect(o.losses).toEqual([0, 0.95])
    expect(o.models).toEqual(['gilbert'])
    expect(o.systems).toEqual(['mqtt-qos1'])
    expect(o.rateKbps).toBe(250)
    expect(o.rttMs).toBe(1000)
    expect(o.jitterMs).toBe(20)
    expect(o.burst).toBe(30)
    expect(o.outage).toEqual({ upMs: 30_000, downMs: 10_000 })
    expect(o.timeLimitMs).toBe(300_000)
    expect(o.seed).toBe(7)
  })

  it('rejects an unknown workload, system or loss model with an InputError naming the flag', () => {
    expectInputError(() => resolveLossOptions({ workload: 'reports,movies' }), '--workload')
    expectInputError(() => resolveLossOptions({ workload: 'movies' }), 'movies')
    expectInputError(() => resolveLossOptions({ systems: 'chapar-udp,kafka' }), '--systems')
    expectInputError(() => resolveLossOptions({ systems: 'kafka' }), 'kafka')
    expectInputError(() => resolveLossOptions({ lossModel: 'markov' }), '--loss-model')
    expectInputError(() => resolveLossOptions({ lossModel: 'markov' }), 'markov')
  })

  it('--tcp-rto-max: the kernel default unless given, 1000–120000 ms, and it is recorded in every row', () => {
    expect(resolveLossOptions({}).tcpRtoMaxMs).toBeUndefined()
    expect(resolveLossOptions({ tcpRtoMax: '1000' }).tcpRtoMaxMs).toBe(1000)
    expectInputError(() => resolveLossOptions({ tcpRtoMax: '500' }), '--tcp-rto-max')
    expectInputError(() => resolveLossOptions({ tcpRtoMax: 'soon' }), '--tcp-rto-max')
    const cell = { workload: 'photo', loss: 0.5, model: 'bernoulli' as const, rateKbps: 1000, rttMs: 600, timeLimitMs: 120_000 }
    expect(physicalLimitRow(cell, WORKLOADS.photo!)).not.toHaveProperty('tcp_rto_max_ms')
    const capped = aggregate({ ...cell, system: 'chapar-ws', tcpRtoMaxMs: 1000 }, WORKLOADS.photo!, [30_000], 1)
    expect(capped.tcp_rto_max_ms).toBe(1000)
    const plain = aggregate({ ...cell, system: 'chapar-ws' }, WORKLOADS.photo!, [], 1)
    const { head, table } = formatTable([plain, capped])
    expect(head).toContain('tcp rto max')
    expect(table.map((t) => t[head.indexOf('tcp rto max')])).toEqual(['120 s', '1 s'])
    expect(formatTable([plain]).head).not.toContain('tcp rto max')
  })

  it('--ws-streams: the client default unless given, a whole 1–16, recorded on chapar-ws rows only, and its own line in the report', async () => {
    expect(resolveLossOptions({}).wsStreams).toBeUndefined()
    expect(resolveLossOptions({ wsStreams: '16' }).wsStreams).toBe(16)
    expectInputError(() => resolveLossOptions({ wsStreams: '0' }), '--ws-streams')
    expectInputError(() => resolveLossOptions({ wsStreams: '17' }), '--ws-streams')
    expectInputError(() => resolveLossOptions({ wsStreams: '2.5' }), '--ws-streams')
    const cell = { workload: 'photo', loss: 0.5, model: 'bernoulli' as const, rateKbps: 1000, rttMs: 600, timeLimitMs: 120_000, wsStreams: 16 }
    expect(physicalLimitRow(cell, WORKLOADS.photo!)).not.toHaveProperty('ws_streams')
    expect(aggregate({ ...cell, system: 'mqtt-qos1' }, WORKLOADS.photo!, [], 1)).not.toHaveProperty('ws_streams')
    const striped = aggregate({ ...cell, system: 'chapar-ws', tcpRtoMaxMs: 1000 }, WORKLOADS.photo!, [100_000], 1)
    expect(striped.ws_streams).toBe(16)
    const plain = aggregate({ ...cell, wsStreams: undefined, system: 'chapar-ws' }, WORKLOADS.photo!, [], 1)
    const udp = aggregate({ ...cell, system: 'chapar-udp' }, WORKLOADS.photo!, [20_000], 1)
    const { head, table } = formatTable([plain, striped, udp])
    expect(table.map((t) => t[head.indexOf('ws streams')])).toEqual(['4', '16', '—'])
    expect(formatTable([plain, udp]).head).not.toContain('ws streams')
    const html = await reportPage([plain, striped], resolveLossOptions({ wsStreams: '16', tcpRtoMax: '1000' }), { cpus: 'x' })
    expect(html).toContain('chapar-ws (tcp rto ≤ 1 s, 16 streams)')
    expect(html).toContain('chapar-ws uploads striped over 16 WebSockets')
  }, 60_000)

  it('rejects a loss out of 0..0.95 or not a number', () => {
    expectInputError(() => resolveLossOptions({ loss: '1' }), '--loss')
    expectInputError(() => resolveLossOptions({ loss: '0.96' }), '--loss')
    expectInputError(() => resolveLossOptions({ loss: '-0.1' }), '--loss')
    expectInputError(() => resolveLossOptions({ loss: '0.3,half' }), '--loss')
  })

  it('rejects other bad numbers and durations, naming the flag', () => {
    expectInputError(() => resolveLossOptions({ rate: '0' }), '--rate')
    expectInputError(() => resolveLossOptions({ burst: 'x' }), '--burst')
    expectInputError(() => resolveLossOptions({ rtt: 'soon' }), '--rtt')
    expectInputError(() => resolveLossOptions({ timeLimit: 'later' }), '--time-limit')
    expectInputError(() => resolveLossOptions({ outage: 'sometimes' }), '--outage')
  })
})

function row(over: Partial<Row>): Row {
  return {
    system: 'chapar-udp',
    workload: 'reports',
    loss: 0.5,
    loss_model: 'bernoulli',
    rate_kbps: 1000,
    rtt_ms: 600,
    sent: 100,
    delivered: 100,
    delivery_ratio: 1,
    p50_ms: 1500,
    p95_ms: 12_345,
    goodput_bps: 123_456,
    capacity_ratio: 0.2469,
    wire_bytes: 1_234_567,
    timed_out: false,
    time_limit_ms: 60_000,
    ...over,
  }
}

const delivered = row({})
const timedOut = row({ system: 'mqtt-qos1', delivered: 42, delivery_ratio: 0.42, p50_ms: null, p95_ms: null, goodput_bps: 11_200, capacity_ratio: 0.022, wire_bytes: 987, timed_out: true })

describe('formatTable / textTable', () => {
  it('formats each cell', () => {
    const { head, table } = formatTable([delivered, timedOut])
    expect(head).toEqual(['system', 'workload', 'loss', 'model', 'sent', 'delivered', 'ratio', 'p50', 'p95', 'goodput kbit/s', 'capacity', 'wire bytes', 'timed out'])
    // p50 under 10 s: two decimals; p95 at or over 10 s: whole seconds; goodput in kbit/s, one decimal
    expect(table[0]).toEqual(['chapar-udp', 'reports', '0.5', 'bernoulli', '100', '100', '1.00', '1.50 s', '12 s', '123.5', '0.247', '1,234,567', 'no'])
    expect(table[1]).toEqual(['mqtt-qos1', 'reports', '0.5', 'bernoulli', '100', '42', '0.42', '—', '—', '11.2', '0.022', '987', 'yes (60 s)'])
  })

  it('a timed-out row says so with its limit, a missing p95 is a dash', () => {
    const text = textTable([delivered, timedOut])
    const lines = text.split('\n')
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/^system\s+workload\s+loss\s+model/)
    expect(lines[2]).toContain('yes (60 s)')
    expect(lines[2]).toContain('—')
    expect(lines[2]!.startsWith('mqtt-qos1 ')).toBe(true)
    expect(lines[1]).toMatch(/\bno$/)
    // every line is as wide as the header: columns are padded
    expect(new Set(lines.map((l) => l.length)).size).toBe(1)
  })

  it('a limit in whole seconds other than 60 shows as such', () => {
    expect(formatTable([row({ timed_out: true, time_limit_ms: 229_000 })]).table[0]!.at(-1)).toBe('yes (229 s)')
  })
})

describe('reportPage', () => {
  const o: LossBenchOptions = resolveLossOptions({ quick: true })
  const machine = { cpus: '2 × Test CPU', memory: '4 GiB', kernel: 'Linux 6.0', node: 'v20.0.0', mosquitto: '2.0.18', python: 'Python 3.11.7' }
  const limit = physicalLimitRow({ workload: 'reports', loss: 0.5, model: 'bernoulli', rateKbps: 1000, rttMs: 600, timeLimitMs: 60_000 }, WORKLOADS.reports!)

  it('a self-contained page with four charts, the table and the machine', async () => {
    const html = await reportPage([limit, delivered, timedOut], o, machine)
    expect(html.startsWith('<!doctype html>')).toBe(true)
    expect(html.match(/<svg/g)?.length).toBeGreaterThanOrEqual(4)
    // one header row and one row per result
    expect(html.match(/<tr>/g)).toHaveLength(4)
    expect(html).toContain('<td>physical-limit</td>')
    expect(html).toContain('<td>chapar-udp</td>')
    expect(html).toContain('<td>mqtt-qos1</td>')
    expect(html).toContain('<td>yes (60 s)</td>')
    expect(html).toContain('<td>—</td>')
    expect(html).toContain('1000 kbit/s each way, 600 ms round trip')
    expect(html).toContain('cpus 2 × Test CPU')
    expect(html).toContain('python Python 3.11.7')
    // the systems appear in the charts' legends
    expect(html).toContain('chapar-udp</text>')
  }, 60_000)

  it('escapes what it prints', async () => {
    const html = await reportPage([row({ system: '<b>x</b>' })], o, { note: 'a & b' })
    expect(html).toContain('&lt;b&gt;x&lt;/b&gt;')
    expect(html).not.toContain('<td><b>x</b></td>')
    expect(html).toContain('note a &amp; b')
  }, 60_000)
})

describe('resolveLossOptions: inputs the harness cannot honour', () => {
  it('refuses a gilbert loss that bursts of this length cannot reach (all loss is in bursts: at most b / (b + 1))', () => {
    // burst 8: at most 8/9 = 0.889
    expect(() => resolveLossOptions({ loss: '0.9', lossModel: 'gilbert' })).toThrow(/--burst 8/)
    expect(resolveLossOptions({ loss: '0.9', lossModel: 'bernoulli' }).losses).toEqual([0.9])
    // burst 1: at most 0.5
    expect(() => resolveLossOptions({ loss: '0.8', burst: '1' })).toThrow(InputError)
    expect(resolveLossOptions({ loss: '0.5', burst: '1' }).losses).toEqual([0.5])
  })
  it('refuses a fractional seed and a time limit under a second', () => {
    expect(() => resolveLossOptions({ seed: '1.25' })).toThrow(/--seed/)
    expect(() => resolveLossOptions({ timeLimit: '0' })).toThrow(/--time-limit/)
  })
})

describe('--from: rows saved by earlier runs, merged', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chapar-loss-from-'))
  const save = (name: string, rows: unknown): string => {
    const f = path.join(dir, name)
    writeFileSync(f, JSON.stringify(rows))
    return f
  }
  const limit = physicalLimitRow({ workload: 'photo', loss: 0.8, model: 'gilbert', rateKbps: 1000, rttMs: 600, timeLimitMs: 161_000 }, WORKLOADS.photo!)

  it('a later file wins a cell; the rest is kept and sorted by model, workload, rate, loss, then physical limit and the systems in order', async () => {
    const old = row({ system: 'chapar-udp', workload: 'photo', loss: 0.8, loss_model: 'gilbert', delivered: 1, sent: 1, capacity_ratio: 0.7 })
    const mqtt = row({ system: 'mqtt-qos1', workload: 'photo', loss: 0.8, loss_model: 'gilbert', delivered: 0, sent: 1 })
    const video = row({ system: 'chapar-udp', workload: 'video', loss: 0.3, loss_model: 'bernoulli', rate_kbps: 4000 })
    const a = save('a.json', [mqtt, old, limit])
    const b = save('b.json', [{ ...old, capacity_ratio: 0.85 }, video])
    const rows = await readRows([a, b])
    expect(rows.map((r) => [r.loss_model, r.workload, r.system])).toEqual([
      ['bernoulli', 'video', 'chapar-udp'],
      ['gilbert', 'photo', 'physical-limit'],
      ['gilbert', 'photo', 'chapar-udp'],
      ['gilbert', 'photo', 'mqtt-qos1'],
    ])
    expect(rows.find((r) => r.system === 'chapar-udp' && r.workload === 'photo')!.capacity_ratio).toBe(0.85)
    // Several rates: the table and the report's panels say which.
    expect(formatTable(rows).head).toContain('kbit/s')
    expect(formatTable(rows).table[0]).toContain('4000')
    const html = await reportPage(rows, resolveLossOptions({}), { cpus: 'x' }, ['a.json', 'b.json'])
    expect(html).toContain('Merged from 2 runs of this harness (a.json, b.json)')
    expect(html).toContain('1000 or 4000 kbit/s each way (as each panel says)')
    expect(html).toContain('video · bernoulli · 4000 kbit/s')
  }, 60_000)

  it('one rate: no rate column; rows at another round trip are another cell, and the table says which', async () => {
    expect(formatTable(await readRows([save('c.json', [limit])])).head).not.toContain('kbit/s')
    // Likewise a run with TCP's timeout capped: its own cell, beside the uncapped one.
    expect(await readRows([save('e.json', [limit, { ...limit, tcp_rto_max_ms: 1000 }])])).toHaveLength(2)
    // And chapar-ws at another stripe width; a row with a mistyped one is refused.
    const ws = { ...limit, system: 'chapar-ws' }
    expect(await readRows([save('f.json', [ws, { ...ws, ws_streams: 16 }])])).toHaveLength(2)
    await expect(readRows([save('g.json', [{ ...ws, ws_streams: '16' }])])).rejects.toThrow(/ws_streams "16"/)
    const rows = await readRows([save('d.json', [limit, { ...limit, rtt_ms: 0 }])])
    expect(rows.map((r) => r.rtt_ms)).toEqual([0, 600])
    expect(formatTable(rows).head).toContain('rtt ms')
    expect(formatTable([limit]).head).not.toContain('rtt ms')
  })

  it('a file that is not JSON, not an array, or holds something that is not a row: an InputError naming the file', async () => {
    await expect(readRows([save('bad.json', '[') + 'x'])).rejects.toBeInstanceOf(InputError)
    writeFileSync(path.join(dir, 'text.json'), 'not json')
    await expect(readRows([path.join(dir, 'text.json')])).rejects.toThrow(/--from .*text\.json/)
    await expect(readRows([save('obj.json', { rows: [] })])).rejects.toThrow(/not a JSON array of rows/)
    await expect(readRows([save('junk.json', [{ system: 'x', workload: 'movie' }])])).rejects.toThrow(/not a bench:loss row/)
    // A row missing a field the table reads: an InputError naming it, not a TypeError later.
    const { wire_bytes: _, ...noWire } = limit
    await expect(readRows([save('short.json', [noWire])])).rejects.toThrow(/not a bench:loss row \(wire_bytes undefined\)/)
    await expect(readRows([save('null.json', [null])])).rejects.toThrow(/not a bench:loss row \(not an object\)/)
    await expect(readRows([save('p50.json', [{ ...limit, p50_ms: '1 s' }])])).rejects.toBeInstanceOf(InputError)
    await expect(cmdBenchLoss({ from: ' , ' }, () => {})).rejects.toThrow(/--from needs one or more JSON files/)
  })

  it('cmdBenchLoss --from prints the merged table, or JSON, without running anything', async () => {
    const f = save('d.json', [limit])
    const lines: string[] = []
    expect(await cmdBenchLoss({ from: f }, (s) => lines.push(s))).toBe(0)
    expect(lines.join('\n')).toMatch(/^system\s+workload/)
    lines.length = 0
    expect(await cmdBenchLoss({ from: f, json: true }, (s) => lines.push(s))).toBe(0)
    expect(JSON.parse(lines[0]!)).toEqual([limit])
  })
})
