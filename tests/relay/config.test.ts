/** The relay's settings: defaults ← file ← environment ← flags, one schema, errors that name the field. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { InputError } from '../../src/protocol/errors.js'
import { RELAY_MAX_TTL_MS } from '../../src/protocol/envelope.js'
import { loadRelayConfig, parseSize, printableConfig, validateRelayConfig } from '../../src/relay/config.js'

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'chapar-config-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function file(name: string, body: unknown): Promise<string> {
  const p = path.join(dir, name)
  await writeFile(p, typeof body === 'string' ? body : JSON.stringify(body))
  return p
}

function errorOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(InputError)
    const m = (err as Error).message
    expect(m).not.toContain('\n')
    return m
  }
  throw new Error('expected an InputError')
}

describe('relay config', () => {
  it('has defaults for everything', () => {
    const c = loadRelayConfig({})
    expect(c.host).toBe('127.0.0.1')
    expect(c.port).toBe(7000)
    expect(c.maxTtl).toBe(RELAY_MAX_TTL_MS)
    expect(c.admin.port).toBeNull()
    expect(c.timeouts.idle).toBe(60_000)
    expect(c.limits.perConnection).toEqual({ rate: 16 * 1024 ** 2, burst: 32 * 1024 ** 2 })
    expect(c.quotas.mailboxBytes).toBe(1024 ** 3)
  })

  it('layers file, then environment, then flags', async () => {
    const f = await file('layers.json', { port: 7100, host: '0.0.0.0', quotas: { mailboxMessages: 10 }, admin: { port: 7102 } })
    const env = { CHAPAR_RELAY_PORT: '7200', CHAPAR_RELAY_ADMIN_PORT: 'off' }
    const fromFile = loadRelayConfig({ file: f })
    expect([fromFile.port, fromFile.host, fromFile.quotas.mailboxMessages, fromFile.admin.port]).toEqual([7100, '0.0.0.0', 10, 7102])
    const withEnv = loadRelayConfig({ file: f, env })
    expect([withEnv.port, withEnv.admin.port]).toEqual([7200, null])
    const withFlags = loadRelayConfig({ file: f, env, flags: { port: '7300', publicUrl: ['wss://relay.example.org'], verbose: true } })
    expect(withFlags.port).toBe(7300)
    expect(withFlags.publicUrls).toEqual(['wss://relay.example.org'])
    expect(withFlags.log.envelopes).toBe(true)
    expect(withFlags.host).toBe('0.0.0.0') // untouched by env and flags
  })

  it('reads sizes and durations in human units', () => {
    expect(parseSize('64MiB')).toBe(64 * 1024 ** 2)
    expect(parseSize('1.5GB')).toBe(1.5e9)
    expect(parseSize('2048')).toBe(2048)
    const c = validateRelayConfig({ maxEnvelope: '16MiB', maxTtl: '7d', limits: { perSender: { rate: '256kib', burst: '4MiB' } }, timeouts: { idle: '2m' } })
    expect(c.maxEnvelope).toBe(16 * 1024 ** 2)
    expect(c.maxTtl).toBe(7 * 86_400_000)
    expect(c.limits.perSender).toEqual({ rate: 256 * 1024, burst: 4 * 1024 ** 2 })
    expect(c.timeouts.idle).toBe(120_000)
  })

  it('names the bad field, and the file, variable or flag it came from', async () => {
    expect(errorOf(() => validateRelayConfig({ port: 70000 }))).toMatch(/^relay config: port: Too big/)
    const f = await file('bad.json', { limits: { perSender: { rate: 'fast', burst: 1 } } })
    expect(errorOf(() => loadRelayConfig({ file: f }))).toBe(`${f}: limits.perSender.rate: bad size "fast": use bytes or e.g. 64MiB, 1.5GB`)
    const unknown = await file('unknown.json', { quotas: { mailboxBites: 1 } })
    expect(errorOf(() => loadRelayConfig({ file: unknown }))).toMatch(/quotas: unknown field "mailboxBites"/)
    expect(errorOf(() => loadRelayConfig({ env: { CHAPAR_RELAY_PORT: 'x' } }))).toBe('CHAPAR_RELAY_PORT: port: expected number, got "x"')
    expect(errorOf(() => loadRelayConfig({ flags: { udpPort: '99999' } }))).toMatch(/^--udp-port: udp\.port: Too big/)
    expect(errorOf(() => loadRelayConfig({ flags: { maxTtl: 'forever' } }))).toMatch(/^--max-ttl: maxTtl: bad duration "forever"/)
    expect(errorOf(() => loadRelayConfig({ flags: { logLevel: 'loud' } }))).toMatch(/^--log-level: log\.level: .*"info"/)
    expect(errorOf(() => validateRelayConfig({ timeouts: { idle: 60 } }))).toMatch(/timeouts\.idle: expected string, got 60/)
    expect(errorOf(() => validateRelayConfig({ quotas: { diskHighWater: 1.5 } }))).toMatch(/quotas\.diskHighWater: Too big/)
    expect(errorOf(() => loadRelayConfig({ file: path.join(dir, 'missing.json') }))).toMatch(/cannot read config .*missing\.json: ENOENT/)
    const broken = await file('broken.json', '{"port": ')
    const array = await file('array.json', '[]')
    expect(errorOf(() => loadRelayConfig({ file: broken }))).toMatch(/is not valid JSON/)
    expect(errorOf(() => loadRelayConfig({ file: array }))).toMatch(/must hold a JSON object/)
  })

  it('prints a config that reads back as the same config', () => {
    const c = validateRelayConfig({ maxTtl: '36h', timeouts: { shutdown: '1500ms' }, quotas: { totalBytes: '10GiB' } })
    const printed = printableConfig(c)
    expect(printed.maxTtl).toBe('36h')
    expect((printed.timeouts as Record<string, string>).shutdown).toBe('1500ms')
    expect(validateRelayConfig(JSON.parse(JSON.stringify(printed)))).toEqual(c)
  })
})
