/** `chapar sim` options: profiles, flag and scenario parsing, and InputErrors that name the option. */
import { describe, expect, it } from 'vitest'
import { InputError } from '../../src/protocol/errors.js'
import { GilbertLoss } from '../../src/sim/link.js'
import { applyOptions, DEFAULTS, parseOutage, parseSweep, PROFILES, type SimOptions, SWEEPABLE, validate, withProfile } from '../../src/sim/options.js'

/** The InputError `fn` throws (failing the test if it throws anything else or nothing). */
function inputError(fn: () => unknown): InputError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(InputError)
    return err as InputError
  }
  throw new Error('expected an InputError, nothing was thrown')
}

const apply = (raw: Record<string, unknown>, base: SimOptions = DEFAULTS) => applyOptions(base, raw)

describe('defaults and profiles', () => {
  it('DEFAULTS validate', () => {
    expect(validate({ ...DEFAULTS })).toEqual(DEFAULTS)
    expect(apply({})).toEqual(DEFAULTS)
  })

  it('has profiles, each with a description', () => {
    expect(Object.keys(PROFILES).length).toBeGreaterThan(0)
    for (const p of Object.values(PROFILES)) expect(p.description.length).toBeGreaterThan(10)
  })

  for (const name of Object.keys(PROFILES)) {
    it(`profile ${name} resolves over the defaults and validates`, () => {
      const o = withProfile(name)
      expect(o).toEqual({ ...DEFAULTS, ...PROFILES[name]!.options })
      expect(() => validate(o)).not.toThrow()
      expect(applyOptions(o, {})).toEqual(o)
      // Every key of the result is a real option with a defined-or-optional value.
      expect(Object.keys(o).sort()).toEqual(Object.keys(DEFAULTS).sort())
      expect(o.loss).toBeGreaterThanOrEqual(0)
      expect(o.loss).toBeLessThanOrEqual(0.99)
      if (o.lossModel === 'gilbert') expect(o.burst).toBeGreaterThanOrEqual(GilbertLoss.minBurst(o.lossVary?.max ?? o.loss))
    })
  }

  it('withProfile does not share objects with DEFAULTS', () => {
    const o = withProfile(Object.keys(PROFILES)[0]!)
    o.clients = 999
    expect(DEFAULTS.clients).toBe(10)
  })

  it('an unknown profile is an InputError listing the choices', () => {
    const e = inputError(() => withProfile('dialup'))
    expect(e.message).toContain('dialup')
    for (const name of Object.keys(PROFILES)) expect(e.message).toContain(name)
  })

  it('layering: flags over scenario over profile', () => {
    const profile = withProfile('congested-mobile')
    const scenario = applyOptions(profile, { jitter: 10, rtt: 900 }, 'scenario s.json')
    const flags = applyOptions(scenario, { rtt: '1200' })
    expect(flags.rttMs).toBe(1200)
    expect(flags.jitterMs).toBe(10)
    expect(flags.bandwidthKbps).toBe(128)
    expect(flags.lossModel).toBe('gilbert')
  })
})

describe('flags given as strings', () => {
  it('parse numbers, durations, outages and size mix', () => {
    const o = apply({
      loss: '0.5',
      duration: '24h',
      outage: 'up=30s,down=10m',
      size: 'mix',
      clients: '25',
      rtt: '800',
      bandwidth: '64',
      'loss-model': 'gilbert',
      burst: '3',
      seed: '4294967295',
      poll: '90s',
      ttl: '7d',
      'relay-crash-every': '2h',
      'relay-restart': '500ms',
    })
    expect(o).toMatchObject({
      loss: 0.5,
      durationMs: 24 * 3600_000,
      outage: { upMs: 30_000, downMs: 600_000 },
      size: 'mix',
      clients: 25,
      rttMs: 800,
      bandwidthKbps: 64,
      lossModel: 'gilbert',
      burst: 3,
      seed: 2 ** 32 - 1,
      pollMs: 90_000,
      ttlMs: 7 * 86_400_000,
      relayCrashEveryMs: 2 * 3600_000,
      relayRestartMs: 500,
    })
  })

  it('parse a numeric size', () => {
    expect(apply({ size: '4096' }).size).toBe(4096)
    expect(apply({ size: 4096 }).size).toBe(4096)
  })

  it('undefined values are ignored (unset flags)', () => {
    expect(apply({ loss: undefined, clients: undefined })).toEqual(DEFAULTS)
  })

  it('do not mutate the base', () => {
    const base = { ...DEFAULTS }
    apply({ loss: '0.7', clients: 3 }, base)
    expect(base).toEqual(DEFAULTS)
  })
})

describe('scenario-style keys', () => {
  it('kebab-case and camelCase set the same option', () => {
    const pairs: [string, string, unknown, keyof SimOptions, unknown][] = [
      ['recipient-loss', 'recipientLoss', 0.2, 'recipientLoss', 0.2],
      ['loss-model', 'lossModel', 'gilbert', 'lossModel', 'gilbert'],
      ['relay-crash-every', 'relayCrashEvery', '1h', 'relayCrashEveryMs', 3600_000],
      ['relay-restart', 'relayRestart', 30, 'relayRestartMs', 30_000],
    ]
    for (const [kebab, camel, value, field, expected] of pairs) {
      expect(apply({ [kebab]: value })[field]).toEqual(expected)
      expect(apply({ [camel]: value })[field]).toEqual(expected)
    }
  })

  it('an error for a camelCase key names the option as its kebab-case flag', () => {
    expect(inputError(() => apply({ recipientLoss: 2 })).message).toContain('--recipient-loss')
    expect(inputError(() => apply({ 'recipient-loss': 2 })).message).toContain('--recipient-loss')
  })

  it('scenario JSON values: numbers, objects for outage, strings', () => {
    const o = apply({ loss: 0.4, outage: { up: '2m', down: '30m' }, messages: 0, duplicate: 0.01, reorder: 0.5, mtu: 1500 })
    expect(o).toMatchObject({ loss: 0.4, outage: { upMs: 120_000, downMs: 1_800_000 }, messages: 0, duplicate: 0.01, reorder: 0.5, mtu: 1500 })
  })

  it('durations given as numbers are seconds', () => {
    expect(apply({ duration: 90 }).durationMs).toBe(90_000)
    expect(apply({ poll: 1.5 }).pollMs).toBe(1_500)
    expect(apply({ ttl: 86_400 }).ttlMs).toBe(86_400_000)
    expect(apply({ relayCrashEvery: 600 }).relayCrashEveryMs).toBe(600_000)
    expect(apply({ outage: { up: 30, down: 600 } }).outage).toEqual({ upMs: 30_000, downMs: 600_000 })
    // and a bare number in a string is seconds too, as parseDuration reads it
    expect(apply({ duration: '90' }).durationMs).toBe(90_000)
  })

  it('errors inside a scenario are prefixed with where they came from, without the flag dashes', () => {
    const e = inputError(() => applyOptions(DEFAULTS, { loss: 1.2 }, 'scenario s.json'))
    expect(e.message).toMatch(/^scenario s\.json: loss must be/)
  })
})

describe('bad input is an InputError naming the option', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['loss 1.2', { loss: 1.2 }, /--loss\b/],
    ['loss "1.2"', { loss: '1.2' }, /--loss\b/],
    ['loss -0.1', { loss: -0.1 }, /--loss\b/],
    ['loss not a number', { loss: 'lots' }, /--loss\b/],
    ['loss-model foo', { 'loss-model': 'foo' }, /--loss-model\b.*"foo"/],
    ['clients 0', { clients: 0 }, /--clients\b/],
    ['clients "0"', { clients: '0' }, /--clients\b/],
    ['clients 1.5', { clients: 1.5 }, /--clients\b/],
    ['recipients 0', { recipients: 0 }, /--recipients\b/],
    ['relays 17', { relays: 17 }, /--relays\b/],
    ['size 0', { size: 0 }, /--size\b/],
    ['burst 0', { burst: 0 }, /--burst\b/],
    ['burst 0.5', { burst: 0.5 }, /--burst\b/],
    ['bandwidth 0', { bandwidth: 0 }, /--bandwidth\b/],
    ['rtt -1', { rtt: -1 }, /--rtt\b/],
    ['mtu 100', { mtu: 100 }, /--mtu\b/],
    ['duplicate 0.6', { duplicate: 0.6 }, /--duplicate\b/],
    ['reorder 0.6', { reorder: 0.6 }, /--reorder\b/],
    ['seed -1', { seed: -1 }, /--seed\b/],
    ['duration "forever"', { duration: 'forever' }, /--duration\b/],
    ['duration 0', { duration: 0 }, /--duration\b/],
    ['duration empty', { duration: '' }, /--duration\b/],
    ['outage "up=5"', { outage: 'up=5' }, /--outage\b/],
    ['outage with a bad duration', { outage: 'up=soon,down=10m' }, /--outage up\b/],
    ['outage with an extra part', { outage: 'up=30s,down=10m,sideways=1s' }, /--outage\b/],
    ['outage up under a second', { outage: 'up=500ms,down=10m' }, /--outage up/],
    ['burst too short for gilbert at loss 0.8', { 'loss-model': 'gilbert', loss: 0.8, burst: 2 }, /--burst 2 .*--loss 0\.8/],
    ['burst too short for gilbert at recipient-loss 0.9', { lossModel: 'gilbert', loss: 0.1, recipientLoss: 0.9, burst: 5 }, /--burst 5 .*--recipient-loss 0\.9/],
  ]
  for (const [label, raw, pattern] of cases) {
    it(label, () => {
      expect(inputError(() => apply(raw)).message).toMatch(pattern)
    })
  }

  it('unknown option name', () => {
    const e = inputError(() => apply({ lossy: 0.3 }))
    expect(e.message).toContain('lossy')
    expect(inputError(() => apply({ 'rtt-ms': 300 })).message).toContain('rtt-ms')
  })

  it('gilbert burst check uses the top of a varying loss (starlink-degraded swings to 0.8)', () => {
    const e = inputError(() => applyOptions(withProfile('starlink-degraded'), { 'loss-model': 'gilbert', burst: 3 }))
    expect(e.message).toMatch(/--burst 3 .*--loss 0\.8/)
    expect(applyOptions(withProfile('starlink-degraded'), { 'loss-model': 'gilbert', burst: 5 }).burst).toBe(5)
  })

  it('gilbert accepts a burst comfortably above the minimum', () => {
    expect(apply({ 'loss-model': 'gilbert', loss: 0.8, burst: 4.01 }).burst).toBe(4.01)
    expect(apply({ 'loss-model': 'gilbert', loss: 0.5, burst: 1 }).burst).toBe(1)
    expect(apply({ 'loss-model': 'gilbert', loss: 0.3, burst: 1 }).burst).toBe(1)
  })

  // Regression: minBurst(0.8) is 4.000000000000001 in floating point, which rejected exactly 4.
  it('gilbert accepts a burst exactly at the minimum (loss 0.8, burst 4)', () => {
    expect(apply({ 'loss-model': 'gilbert', loss: 0.8, burst: 4 }).burst).toBe(4)
    expect(applyOptions(withProfile('starlink-degraded'), { 'loss-model': 'gilbert' }).burst).toBe(4)
  })
})

describe('parseOutage', () => {
  it('reads up and down in either order, with spaces', () => {
    expect(parseOutage('up=30s,down=10m')).toEqual({ upMs: 30_000, downMs: 600_000 })
    expect(parseOutage('down=10m,up=30s')).toEqual({ upMs: 30_000, downMs: 600_000 })
    expect(parseOutage(' up = 2m , down = 1h ')).toEqual({ upMs: 120_000, downMs: 3_600_000 })
    expect(parseOutage({ up: '1m', down: 90 })).toEqual({ upMs: 60_000, downMs: 90_000 })
  })

  it('rejects malformed values with an error naming --outage', () => {
    for (const bad of ['up=5', 'down=5m', '', 'up=30s;down=10m', 'up=30s,down=10m,up2=1s', 42, null, ['up=1s', 'down=1s']]) {
      expect(inputError(() => parseOutage(bad)).message).toMatch(/--outage/)
    }
    expect(inputError(() => parseOutage({ up: '1m' })).message).toMatch(/--outage down/)
  })
})

describe('parseSweep', () => {
  it('reads a name and values', () => {
    expect(parseSweep('loss=0.3,0.5,0.8')).toEqual({ name: 'loss', values: ['0.3', '0.5', '0.8'] })
    expect(parseSweep(' rtt=300, 600 ,1200 ')).toEqual({ name: 'rtt', values: ['300', '600', '1200'] })
    expect(parseSweep('recipient-loss=0.1')).toEqual({ name: 'recipientLoss', values: ['0.1'] })
    expect(parseSweep('size=mix,1000')).toEqual({ name: 'size', values: ['mix', '1000'] })
  })

  it('every sweepable name is accepted, and each value applies as an option', () => {
    const sample: Record<string, string> = {
      loss: '0.4', recipientLoss: '0.2', burst: '5', rtt: '300', jitter: '20', bandwidth: '64',
      mtu: '1400', duplicate: '0.01', reorder: '0.01', clients: '3', messages: '4', size: 'mix', relays: '2', rate: '256', transport: 'datagram',
    }
    for (const name of SWEEPABLE) {
      const kebab = name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())
      const s = parseSweep(`${kebab}=${sample[name]!}`)
      expect(s.name).toBe(name)
      expect(() => applyOptions(DEFAULTS, { [s.name]: s.values[0] })).not.toThrow()
    }
  })

  it('rejects unknown or non-numeric names, naming them', () => {
    const e = inputError(() => parseSweep('nope=1'))
    expect(e.message).toContain('"nope"')
    expect(e.message).toContain('--sweep')
    expect(inputError(() => parseSweep('duration=1h,2h')).message).toContain('"duration"')
    expect(inputError(() => parseSweep('loss-model=gilbert')).message).toContain('"loss-model"')
  })

  it('rejects malformed sweeps', () => {
    for (const bad of ['loss', 'loss=', '=0.3', '', 'loss 0.3', 'loss=,', 'loss= , ']) {
      expect(inputError(() => parseSweep(bad)).message).toContain('--sweep')
    }
  })
})
