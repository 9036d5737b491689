/**
 * The relay as an operator runs it: a real relay process with a config
 * file, its HTTP endpoints, the admin listener and `chapar admin`, a quota
 * refusal the client rides out, and a clean SIGTERM.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { assertBuilt, chapar, type RelayProc, startRelay } from './cli-helpers.js'

let dir: string
let relay: RelayProc
let http: string
let admin: string

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-ops-'))
  const config = path.join(dir, 'relay.json')
  await writeFile(config, JSON.stringify({ admin: { port: 0 }, quotas: { mailboxMessages: 2 }, maxTtl: '40d' }))
  relay = await startRelay(path.join(dir, 'data'), 0, ['--config', config])
  http = relay.url.replace(/^ws:/, 'http:')
  const listening = JSON.parse(relay.lines.find((l) => l.includes('"relay listening"'))!)
  admin = listening.admin_url
})

afterAll(async () => {
  if (relay?.child.exitCode === null) relay.child.kill('SIGKILL')
  await rm(dir, { recursive: true, force: true })
})

describe('relay for operators', () => {
  it('--print-config shows the file, environment and flags merged', async () => {
    const config = path.join(dir, 'print.json')
    await writeFile(config, JSON.stringify({ port: 7100, quotas: { mailboxBytes: '64MiB' } }))
    const r = await chapar(['relay', '--config', config, '--print-config', '--max-ttl', '36h'], { env: { CHAPAR_RELAY_HOST: '0.0.0.0' } })
    expect(r.code).toBe(0)
    const printed = JSON.parse(r.stdout)
    expect(printed).toMatchObject({ host: '0.0.0.0', port: 7100, maxTtl: '36h', quotas: { mailboxBytes: 64 * 1024 ** 2 } })
    const bad = await chapar(['relay', '--config', config, '--admin-port', 'x'])
    expect(bad.code).toBe(1)
    expect(bad.stderr.trim()).toBe('chapar: --admin-port: admin.port: expected number, got "x"')
  })

  it('serves /healthz and /info beside the WebSocket', async () => {
    const health = await fetch(`${http}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.json()).toEqual({ ok: true, store: 'writable', disk: 'ok' })
    const info = (await (await fetch(`${http}/info`)).json()) as { transports: { ws: string } }
    expect(info).toMatchObject({ software: 'chapar', protocol_version: 1, access: 'open', ttl_ms: { max: 40 * 86_400_000 }, quotas: { mailbox_messages: 2 } })
    expect(info.transports.ws).toBe(relay.url)
    expect((await fetch(`${http}/other`)).status).toBe(426)
  })

  it('a full mailbox refuses with QUOTA; the sender keeps the message and it goes once the mailbox drains', async () => {
    const alice = path.join(dir, 'alice')
    const bob = path.join(dir, 'bob')
    await chapar(['init', '--home', alice])
    await chapar(['init', '--home', bob])
    const to = (await chapar(['whoami', '--home', bob])).stdout.trim()
    for (const text of ['one', 'two', 'three']) expect((await chapar(['send', '--home', alice, '--to', to, '--text', text])).code).toBe(0)

    const first = await chapar(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '5s'])
    expect(first.code).toBe(1)
    expect(first.stderr).toMatch(/mailbox quota reached \(2 messages\)/)
    const states = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout).map((r: { state: string }) => r.state)
    expect(states.sort()).toEqual(['accepted', 'accepted', 'queued'])

    expect((await chapar(['sync', '--home', bob, '--relay', relay.url, '--until-empty', '--timeout', '30s'])).code).toBe(0)
    expect((await chapar(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '30s'])).code).toBe(0)
    expect((await chapar(['sync', '--home', bob, '--relay', relay.url, '--until-empty', '--timeout', '30s'])).code).toBe(0)
    const inbox = JSON.parse((await chapar(['inbox', '--home', bob, '--json'])).stdout)
    expect(inbox.map((m: { text: string }) => m.text).sort()).toEqual(['one', 'three', 'two'])
    // The refusal is logged with its reason and no key or content.
    const refused = relay.lines.filter((l) => l.includes('"refused"')).map((l) => JSON.parse(l))
    expect(refused[0]).toMatchObject({ code: 'QUOTA', reason: 'quota', retry_after_ms: 300_000 })
    expect(relay.lines.join('\n')).not.toContain(to.slice(4, 30))
  }, 120_000)

  it('the admin listener: metrics, stats, mailboxes, purge, and `chapar admin`', async () => {
    const metrics = await (await fetch(`${admin}/metrics`)).text()
    expect(metrics).toMatch(/^chapar_refusals_total\{reason="quota"\} 1$/m)
    expect(metrics).toMatch(/^chapar_refusals_total\{reason="rate-limited"\} 0$/m)
    expect(metrics).toMatch(/^chapar_messages_accepted_total [3-9]/m) // three reports and the receipts
    expect(metrics).toMatch(/^chapar_frames_in_total\{type="PUT"\} \d+$/m)
    expect(metrics).toMatch(/^chapar_fsync_seconds_count \d+$/m)
    expect(metrics).toMatch(/^chapar_process_resident_memory_bytes \d+/m)

    const stats = JSON.parse((await chapar(['admin', 'stats', '--admin', admin])).stdout)
    expect(stats.counters.envelopes_stored).toBeGreaterThanOrEqual(3)
    expect(stats.refused).toMatchObject({ quota: 1 })
    const boxes = JSON.parse((await chapar(['admin', 'mailboxes', '--admin', admin, '--limit', '5'])).stdout)
    expect(boxes.largest.length).toBeLessThanOrEqual(5)
    for (const b of boxes.largest) expect(Object.keys(b).sort()).toEqual(['arriving', 'bytes', 'mailbox', 'messages'])
    expect(JSON.parse((await chapar(['admin', 'purge-expired', '--admin', admin])).stdout)).toEqual({ expired: 0, tombstones: 0 })
    expect((await chapar(['admin', 'metrics', '--admin', admin])).stdout).toContain('chapar_stored_messages')

    const bad = await chapar(['admin', 'mailboxes', '--admin', admin, '--limit', '0'])
    expect([bad.code, bad.stderr.trim()]).toEqual([1, 'chapar: relay admin /mailboxes: 400 limit must be a whole number 1..10000, got "0"'])
    const nobody = await chapar(['admin', 'stats', '--admin', 'http://127.0.0.1:1'])
    expect(nobody.code).toBe(1)
    expect(nobody.stderr).toMatch(/^chapar: no relay admin listener at http:\/\/127\.0\.0\.1:1 .*start the relay with --admin-port\n$/)
  })

  it('warns at start when maxTtl is under the 14 days receipts ask for (and not at the 40 days above)', async () => {
    expect(relay.lines.some((l) => l.includes('receipt'))).toBe(false)
    const short = await startRelay(path.join(dir, 'short'), 0, ['--max-ttl', '7d'])
    try {
      const warning = short.lines.map((l) => JSON.parse(l)).find((l) => l.level === 'warn' && /refuse every delivery receipt/.test(l.msg))
      expect(warning).toMatchObject({ max_ttl_ms: 7 * 86_400_000, receipt_ttl_ms: 14 * 86_400_000 })
    } finally {
      short.child.kill('SIGTERM')
      await short.exited
    }
  })

  it('stops cleanly on SIGTERM', async () => {
    relay.child.kill('SIGTERM')
    expect(await relay.exited).toBe(0)
    const stopped = relay.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'stopped')
    expect(stopped).toMatchObject({ signal: 'SIGTERM', unfinished_ops: 0, open: 0 })
  })
})
