/** The README's quick start, run as a new user would: real CLI processes, a real relay process. */
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises'
import { statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { assertBuilt, chapar, CLI, type RelayProc, startRelay } from './cli-helpers.js'

let dir: string
let relay: RelayProc

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-qs-'))
  relay = await startRelay(path.join(dir, 'data'))
})

afterAll(async () => {
  relay?.child.kill('SIGTERM')
  await relay?.exited
  await rm(dir, { recursive: true, force: true })
})

describe('quick start', () => {
  it('the built CLI is executable, so `npx chapar` runs it (the build sets the mode; tsc does not)', () => {
    expect(statSync(CLI).mode & 0o111).toBe(0o111)
  })

  it('init, whoami, send, sync, inbox, status', async () => {
    const alice = path.join(dir, 'alice')
    const bob = path.join(dir, 'bob')
    const a = await chapar(['init', '--home', alice])
    expect(a.code).toBe(0)
    expect(a.stdout.trim()).toMatch(/^ch1\.[A-Za-z0-9_-]+$/)
    expect(statSync(path.join(alice, 'identity.json')).mode & 0o777).toBe(0o600)
    expect((await chapar(['init', '--home', bob])).code).toBe(0)
    const who = await chapar(['whoami', '--home', bob])
    const address = who.stdout.trim()
    expect(who.stdout.split('\n').filter(Boolean)).toHaveLength(1)

    // Sending works with no relay at all.
    const s1 = await chapar(['send', '--home', alice, '--to', address, '--text', 'report one'])
    expect(s1.code).toBe(0)
    const id1 = s1.stdout.trim()
    expect(id1).toMatch(/^[0-9a-f]{64}$/)
    const evidence = path.join(dir, 'evidence.jpg')
    const photo = Buffer.alloc(150_000)
    for (let i = 0; i < photo.length; i++) photo[i] = (i * 7919) & 0xff
    await writeFile(evidence, photo)
    const s2 = await chapar(['send', '--home', alice, '--to', address, '--file', evidence, '--ttl', '7d', '--priority', 'urgent'])
    expect(s2.code).toBe(0)
    const id2 = s2.stdout.trim()

    const queued = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout)
    expect(queued.map((r: { state: string }) => r.state)).toEqual(['queued', 'queued'])

    const sa = await chapar(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '60'])
    expect(sa.code).toBe(0)
    expect(sa.stderr).toMatch(/up \d+\/2/) // progress line
    const accepted = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout)
    expect(accepted.map((r: { state: string }) => r.state)).toEqual(['accepted', 'accepted'])
    expect(accepted[0].relays).toEqual([relay.url])

    expect((await chapar(['sync', '--home', bob, '--relay', relay.url, '--until-empty', '--timeout', '60'])).code).toBe(0)
    const inbox = JSON.parse((await chapar(['inbox', '--home', bob, '--json'])).stdout)
    expect(inbox).toHaveLength(2)
    const byId = Object.fromEntries(inbox.map((x: { id: string }) => [x.id, x]))
    expect(byId[id1].text).toBe('report one')
    expect(byId[id1].from).toBe((await chapar(['whoami', '--home', alice])).stdout.trim())
    expect(Date.parse(byId[id1].created_at)).toBeLessThanOrEqual(Date.parse(byId[id1].received_at))
    const { readFile } = await import('node:fs/promises')
    expect(Buffer.compare(await readFile(byId[id2].file), photo)).toBe(0)

    expect((await chapar(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '60'])).code).toBe(0)
    const delivered = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout)
    expect(delivered).toEqual([
      expect.objectContaining({ id: id1, to: address, state: 'delivered', relays: [relay.url], bytes: expect.any(Number) }),
      expect.objectContaining({ id: id2, to: address, state: 'delivered', relays: [relay.url] }),
    ])
  })

  it('text and a file go as two envelopes, the text first; the inbox shows them as one report', async () => {
    const alice = path.join(dir, 'alice-2')
    const bob = path.join(dir, 'bob-2')
    await chapar(['init', '--home', alice])
    await chapar(['init', '--home', bob])
    const address = (await chapar(['whoami', '--home', bob])).stdout.trim()
    const video = path.join(dir, 'clip.mp4')
    await writeFile(video, Buffer.alloc(300_000, 5))
    const s = await chapar(['send', '--home', alice, '--to', address, '--text', 'words first', '--file', video])
    expect(s.code).toBe(0)
    const [textId, fileId] = s.stdout.trim().split('\n')
    expect(textId).toMatch(/^[0-9a-f]{64}$/)
    expect(fileId).toMatch(/^[0-9a-f]{64}$/)
    // The text is queued ahead of the attachment (same priority, created first).
    const queued = JSON.parse((await chapar(['status', '--home', alice, '--json'])).stdout)
    expect(queued.map((r: { id: string }) => r.id)).toEqual([textId, fileId])
    expect(queued[1].bytes).toBeGreaterThan(300_000)
    expect(queued[0].bytes).toBeLessThan(1_000)
    expect((await chapar(['sync', '--home', alice, '--relay', relay.url, '--until-empty', '--timeout', '60'])).code).toBe(0)
    expect((await chapar(['sync', '--home', bob, '--relay', relay.url, '--until-empty', '--timeout', '60'])).code).toBe(0)
    const inbox = JSON.parse((await chapar(['inbox', '--home', bob, '--json'])).stdout)
    const byId = Object.fromEntries(inbox.map((x: { id: string }) => [x.id, x]))
    expect(byId[textId!].text).toBe('words first')
    expect(byId[fileId!].ref).toBe(textId)
    expect(byId[fileId!].file_bytes).toBe(300_000)
    const shown = (await chapar(['inbox', '--home', bob])).stdout
    expect(shown.match(/^[0-9a-f]{16} {2}from/gm)).toHaveLength(1) // one report…
    expect(shown).toMatch(/words first\n {2}attachment: .*clip\.mp4 \(300000 bytes\)/) // …with its attachment under it
  })

  it('$CHAPAR_HOME is the default home', async () => {
    const home = path.join(dir, 'envhome')
    expect((await chapar(['init'], { env: { CHAPAR_HOME: home } })).code).toBe(0)
    const a = await chapar(['whoami'], { env: { CHAPAR_HOME: home } })
    const b = await chapar(['whoami', '--home', home])
    expect(a.stdout).toBe(b.stdout)
  })
})

describe('bad input: one line on stderr, non-zero exit, no stack trace', () => {
  async function expectOneLineError(args: string[], pattern: RegExp) {
    const r = await chapar(args)
    expect(r.code).not.toBe(0)
    const lines = r.stderr.split('\n').filter(Boolean)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(pattern)
    expect(r.stderr).not.toMatch(/\n\s+at /)
  }

  it('rejects a malformed address, a missing file, a non-ws relay URL and an unusable home', async () => {
    const home = path.join(dir, 'bad')
    await chapar(['init', '--home', home])
    const addr = (await chapar(['whoami', '--home', home])).stdout.trim()
    await expectOneLineError(['send', '--home', home, '--to', 'ch1.notanaddress', '--text', 'x'], /malformed address/)
    await expectOneLineError(['send', '--home', home, '--to', addr.slice(0, -2) + (addr.endsWith('A') ? 'BB' : 'AA'), '--text', 'x'], /malformed address/)
    await expectOneLineError(['send', '--home', home, '--to', addr, '--file', path.join(dir, 'nope.jpg')], /cannot read file .*ENOENT/)
    await expectOneLineError(['send', '--home', home, '--to', addr], /nothing to send/)
    await expectOneLineError(['send', '--home', home, '--to', addr, '--text', 'x', '--ttl', 'soon'], /bad duration/)
    await expectOneLineError(['send', '--home', home, '--to', addr, '--text', 'x', '--priority', 'asap'], /priority must be/)
    await expectOneLineError(['send', '--home', home, '--to', addr, '--text', 'x', '--ttl', '31d'], /--ttl may be at most 30d/)
    await expectOneLineError(['relay', '--port', '0', '--data', path.join(dir, 'r-bad'), '--public-url', 'http://relay.example'], /--public-url: publicUrls\.0: expected a ws:\/\/, wss:\/\/ or udp:\/\/ URL/)
    await expectOneLineError(['relay', '--port', '0', '--data', path.join(dir, 'r-bad'), '--max-ttl', 'forever'], /bad duration/)
    await expectOneLineError(['sync', '--home', home, '--relay', 'http://127.0.0.1:1'], /must be a ws:\/\/, wss:\/\/ or udp:\/\/ URL/)
    await expectOneLineError(['sync', '--home', home, '--relay', 'udp://127.0.0.1:7000'], /needs the relay's key/)
    await expectOneLineError(['sync', '--home', home, '--relay', 'udp://127.0.0.1:7000?key=abc'], /key must be 32 bytes/)
    await expectOneLineError(['sync', '--home', home, '--relay', 'ws://127.0.0.1:7000', '--rate', '0'], /--rate must be/)
    await expectOneLineError(['sync', '--home', home, '--relay', 'ws://127.0.0.1:7000', '--ws-streams', '0'], /--ws-streams must be a whole number from 1 to 16/)
    await expectOneLineError(['relay', '--port', '0', '--data', path.join(dir, 'r-bad2'), '--udp-port', '99999'], /--udp-port: udp.port: Too big/)
    await expectOneLineError(['sync', '--home', home], /no relay given/)
    const notDir = path.join(dir, 'file-not-home')
    await writeFile(notDir, 'x')
    await expectOneLineError(['whoami', '--home', notDir], /not a directory/)
    await expectOneLineError(['status', '--home', path.join(dir, 'missing')], /no chapar home/)
    const corrupt = path.join(dir, 'corrupt')
    await mkdir(corrupt)
    await writeFile(path.join(corrupt, 'identity.json'), '{nope')
    await expectOneLineError(['whoami', '--home', corrupt], /corrupt identity file/)
    await expectOneLineError(['init', '--home', home], /already holds an identity/)
  })

  it('the relay names the origins it accepts logins for, and takes --public-url', async () => {
    const r = await startRelay(path.join(dir, 'data-origins'), 0, ['--public-url', 'wss://Relay.Example.org/chapar'])
    try {
      const listening = JSON.parse(r.lines.find((l) => l.includes('"relay listening"'))!)
      expect(listening.auth_origins.sort()).toEqual([`ws://127.0.0.1:${r.port}`, `ws://localhost:${r.port}`, 'wss://relay.example.org:443'].sort())
    } finally {
      r.child.kill('SIGTERM')
      await r.exited
    }
  })

  it('sync against an unreachable relay times out with a one-line summary', async () => {
    const home = path.join(dir, 'lonely')
    await chapar(['init', '--home', home])
    const addr = (await chapar(['whoami', '--home', home])).stdout.trim()
    await chapar(['send', '--home', home, '--to', addr, '--text', 'stuck'])
    const r = await chapar(['sync', '--home', home, '--relay', 'ws://127.0.0.1:9', '--until-empty', '--timeout', '2'])
    expect(r.code).toBe(1)
    const last = r.stderr.split('\n').filter(Boolean).pop()!
    expect(last).toMatch(/^sync timed out: 1 not yet accepted by ws:\/\/127\.0\.0\.1:9/)
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })
})
