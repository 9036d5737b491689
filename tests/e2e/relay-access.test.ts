/**
 * An allowlist relay, a real process, with real clients: uploads over a
 * striped ws:// connection (each stream logs in) and over udp:// (the
 * engine logs in); a key not on the list is refused and told why; keys
 * allowed and banned through `chapar admin` take effect at once and
 * survive a restart.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { assertBuilt, chapar, type RelayProc, startRelay } from './cli-helpers.js'

let dir: string
const relays: RelayProc[] = []

beforeAll(async () => {
  assertBuilt()
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-access-'))
})

afterAll(async () => {
  for (const r of relays) if (r.child.exitCode === null) r.child.kill('SIGKILL')
  await rm(dir, { recursive: true, force: true })
})

async function identity(name: string): Promise<{ home: string; address: string }> {
  const home = path.join(dir, name)
  expect((await chapar(['init', '--home', home])).code).toBe(0)
  return { home, address: (await chapar(['whoami', '--home', home])).stdout.trim() }
}

async function start(data: string, config: string): Promise<{ relay: RelayProc; udp: string; admin: string }> {
  const relay = await startRelay(data, 0, ['--config', config])
  relays.push(relay)
  const listening = JSON.parse(relay.lines.find((l) => l.includes('"relay listening"'))!)
  return { relay, udp: listening.udp_url, admin: listening.admin_url }
}

const sync = (home: string, relay: string, timeout = '30s') => chapar(['sync', '--home', home, '--relay', relay, '--until-empty', '--timeout', timeout], { timeoutMs: 90_000 })

it('allowlist: members upload over ws:// and udp://, others are refused until allowed, a ban holds across a restart', async () => {
  const [alice, bob, carol] = [await identity('alice'), await identity('bob'), await identity('carol')]
  const config = path.join(dir, 'relay.json')
  await writeFile(config, JSON.stringify({ access: { mode: 'allowlist', allow: [alice.address, bob.address] }, udp: { port: 0 }, admin: { port: 0 } }))
  const data = path.join(dir, 'data')
  let r = await start(data, config)
  const info = (await (await fetch(`${r.relay.url.replace('ws:', 'http:')}/info`)).json()) as { access: string }
  expect(info.access).toBe('allowlist')

  // Members: alice over a striped ws:// upload (4 streams, each logs in), then over udp://.
  expect((await chapar(['send', '--home', alice.home, '--to', bob.address, '--text', 'over ws'])).code).toBe(0)
  expect((await sync(alice.home, r.relay.url)).code).toBe(0)
  expect((await chapar(['send', '--home', alice.home, '--to', bob.address, '--text', 'over udp'])).code).toBe(0)
  expect((await sync(alice.home, r.udp)).code).toBe(0)
  expect((await sync(bob.home, r.relay.url)).code).toBe(0) // fetches both, uploads the receipts (bob is a member)
  const inbox = JSON.parse((await chapar(['inbox', '--home', bob.home, '--json'])).stdout)
  expect(inbox.map((m: { text: string }) => m.text).sort()).toEqual(['over udp', 'over ws'])

  // Not a member: refused, told why, the message kept.
  expect((await chapar(['send', '--home', carol.home, '--to', bob.address, '--text', 'let me in'])).code).toBe(0)
  const refused = await sync(carol.home, r.relay.url, '10s')
  expect(refused.code).toBe(1)
  expect(refused.stderr).toMatch(/rejected by ws:\/\/127\.0\.0\.1:\d+: FORBIDDEN this key may not upload here/)
  expect(JSON.parse((await chapar(['status', '--home', carol.home, '--json'])).stdout)[0].state).toBe('queued')

  // Allowed through the admin API: the next sync goes.
  expect((await chapar(['admin', 'allow', carol.address, '--admin', r.admin])).code).toBe(0)
  expect((await sync(carol.home, r.relay.url)).code).toBe(0)

  // Banned: survives a restart; the login is refused.
  const ban = await chapar(['admin', 'ban', carol.address, '--admin', r.admin])
  expect(ban.code).toBe(0)
  expect(JSON.parse(ban.stdout)).toMatchObject({ changed: true, disconnected: 0 }) // (her sync had ended; open connections are closed: tests/relay/refusals.test.ts)
  r.relay.child.kill('SIGTERM')
  expect(await r.relay.exited).toBe(0)
  r = await start(data, config)
  const access = JSON.parse((await chapar(['admin', 'access', '--admin', r.admin])).stdout)
  expect(access.mode).toBe('allowlist')
  expect(access.deny.admin).toHaveLength(1)
  expect(access.allow.admin).toEqual(access.deny.admin) // carol: allowed, and banned, which wins
  expect((await chapar(['send', '--home', carol.home, '--to', bob.address, '--text', 'again'])).code).toBe(0)
  const banned = await sync(carol.home, r.relay.url, '5s')
  expect(banned.code).toBe(1)
  expect(banned.stderr).toMatch(/this key is banned from this relay/)
  const bad = await chapar(['admin', 'ban', 'nobody', '--admin', r.admin])
  expect([bad.code, bad.stderr.trim()]).toEqual([1, 'chapar: "nobody" is not a chapar address (ch1.…) or a 64-hex-digit signing key'])
}, 180_000)
