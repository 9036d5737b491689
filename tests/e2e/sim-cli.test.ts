/** `chapar sim` as a tester runs it: the compiled CLI, its JSON, its report, its errors. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { assertBuilt, chapar } from './cli-helpers.js'

let dir: string
beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-sim-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

const strip = (json: string) => {
  const o = JSON.parse(json)
  for (const r of Array.isArray(o) ? o : [o]) r.wall_ms = 0
  return JSON.stringify(o)
}

describe('chapar sim', () => {
  it('prints one JSON object with the DESIGN §6 metrics, identical run after run', async () => {
    const args = ['sim', '--clients', '4', '--recipients', '2', '--messages', '3', '--loss', '0.3', '--rtt', '400', '--seed', '9', '--json']
    const a = await chapar(args)
    const b = await chapar(args)
    expect(a.code).toBe(0)
    const r = JSON.parse(a.stdout)
    expect(r).toMatchObject({ sent: 12, delivered: 12, delivery_ratio: 1, duplicates_at_app: 0, seed: 9 })
    for (const k of ['latency_ms', 'accept_latency_ms', 'wire_bytes', 'payload_bytes', 'wire_per_payload', 'capacity_ratio', 'virtual_ms', 'events', 'wall_ms']) expect(r).toHaveProperty(k)
    expect(strip(a.stdout)).toBe(strip(b.stdout))
  })

  it('runs a sweep into an array and writes a self-contained HTML report with charts', async () => {
    const report = path.join(dir, 'sweep.html')
    const r = await chapar(['sim', '--sweep', 'loss=0.1,0.4', '--clients', '3', '--messages', '2', '--json', '--report', report])
    expect(r.code).toBe(0)
    const rows = JSON.parse(r.stdout)
    expect(rows.map((x: { loss: number }) => x.loss)).toEqual([0.1, 0.4])
    const html = await readFile(report, 'utf8')
    expect((html.match(/<svg/g) ?? []).length).toBe(5) // delivery over time, latency CDF, overhead, capacity and delivery against loss
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/) // nothing to fetch or run
  })

  it('takes a scenario file, with flags overriding it, and explains a bad one in one line', async () => {
    const good = path.join(dir, 'good.json')
    await writeFile(good, JSON.stringify({ profile: 'congested-mobile', clients: 2, messages: 2, 'recipient-loss': 0.1, seed: 5 }))
    const r = await chapar(['sim', '--scenario', good, '--messages', '1', '--json'])
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ sent: 2, seed: 5 })

    const bad = path.join(dir, 'bad.json')
    await writeFile(bad, JSON.stringify({ clients: 2, loss: 1.5 }))
    for (const [args, message] of [
      [['sim', '--scenario', bad], /scenario .*bad\.json: loss must be a number from 0 to 0\.99/],
      [['sim', '--loss-model', 'wavy'], /--loss-model must be bernoulli or gilbert/],
      [['sim', '--profile', 'moon'], /unknown profile "moon"/],
      [['sim', '--outage', 'up=5'], /--outage must look like up=30s,down=10m/],
      [['sim', '--sweep', 'colour=1,2'], /--sweep can vary/],
      [['sim', '--scenario', path.join(dir, 'missing.json')], /cannot read scenario/],
    ] as const) {
      const e = await chapar([...args])
      expect(e.code).toBe(1)
      expect(e.stderr.trim().split('\n')).toHaveLength(1)
      expect(e.stderr).toMatch(message)
    }
  })
})
