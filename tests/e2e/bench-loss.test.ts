/**
 * The lossy links bench:loss runs on (bench/netns.ts + bench/shaper.py), measured
 * from outside with plain UDP probes, and the `chapar bench loss --quick` smoke
 * run CI does. Real network namespaces: skipped, saying why, where they cannot
 * be made (not root, tools missing). Other runs may share the machine (and its
 * `chl*` namespaces), so the tolerances are generous and only namespaces these
 * tests made are ever looked at for cleanup.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { createNetnsPair, netnsUnavailable, type NetnsOptions, type NetnsPair } from '../../bench/netns.js'
import { CLI, assertBuilt } from './cli-helpers.js'

const why = netnsUnavailable({ shaper: true })
if (why) console.warn(`tests/e2e/bench-loss.test.ts skipped: ${why}`)
const noMosquitto = why === undefined && spawnSync('sh', ['-c', 'command -v mosquitto']).status !== 0 ? 'mosquitto is not installed (Debian package mosquitto)' : undefined
if (noMosquitto) console.warn(`tests/e2e/bench-loss.test.ts: the bench:loss smoke run is skipped: ${noMosquitto}`)

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const run = promisify(execFile)
const PORT = 9999

/** UDP echo server: prints "ready" once bound. */
const ECHO = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
`

/**
 * UDP prober. Payload: the probe's sequence number in ASCII.
 *   rtt  HOST PORT N TIMEOUT_MS         one probe at a time, each waiting for its echo: {"rtts": [ms...]}
 *   loss HOST PORT N GAP_MS WAIT_MS     N probes GAP_MS apart, then WAIT_MS for stragglers: {"got": [seq...], "ip_bytes": n}
 */
const PROBE = `
import json, select, socket, sys, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((host, port))
if mode == "rtt":
    s.settimeout(float(sys.argv[5]) / 1000)
    rtts = []
    for i in range(n):
        t0 = time.monotonic()
        s.send(b"%d" % i)
        try:
            while True:
                if int(s.recv(2048)) == i:
                    rtts.append((time.monotonic() - t0) * 1000)
                    break
        except socket.timeout:
            pass
    print(json.dumps({"rtts": rtts}))
else:
    gap, wait = float(sys.argv[5]) / 1000, float(sys.argv[6]) / 1000
    s.setblocking(False)
    got, ip_bytes = set(), 0
    def drain(until):
        while True:
            t = until - time.monotonic()
            if t <= 0:
                return
            r, _, _ = select.select([s], [], [], t)
            if not r:
                return
            try:
                got.add(int(s.recv(2048)))
            except (BlockingIOError, ConnectionRefusedError):
                pass
    for i in range(n):
        p = b"%d" % i
        s.send(p)
        ip_bytes += 28 + len(p)  # IPv4 + UDP headers
        drain(time.monotonic() + gap)
    drain(time.monotonic() + wait)
    print(json.dumps({"got": sorted(got), "ip_bytes": ip_bytes}))
`

/** A pair with an echo server in its relay namespace; destroyed after `body`, whatever happens. */
async function withEchoPair(options: NetnsOptions, body: (pair: NetnsPair) => Promise<void>): Promise<void> {
  const pair = createNetnsPair({ tag: 'cht', ...options })
  let echo: ChildProcess | undefined
  try {
    await pair.ready
    echo = pair.spawnIn(pair.relay, ['python3', '-c', ECHO, pair.relayIp, String(PORT)])
    await new Promise<void>((resolve, reject) => {
      let err = ''
      echo!.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && resolve())
      echo!.stderr!.on('data', (b: Buffer) => (err += b.toString()))
      echo!.once('exit', (code) => reject(new Error(`echo server exited (${code}): ${err}`)))
    })
    await body(pair)
  } finally {
    echo?.kill('SIGKILL')
    pair.destroy()
  }
}

async function probe<T>(pair: NetnsPair, args: Array<string | number>): Promise<T> {
  const { stdout } = await run('ip', ['netns', 'exec', pair.client, 'python3', '-c', PROBE, ...args.map(String)], { timeout: 60_000 })
  return JSON.parse(stdout) as T
}

const rtts = async (pair: NetnsPair, n: number): Promise<number[]> => (await probe<{ rtts: number[] }>(pair, ['rtt', pair.relayIp, PORT, n, 2000])).rtts
const losses = (pair: NetnsPair, n: number, gapMs: number, waitMs: number): Promise<{ got: number[]; ip_bytes: number }> => probe(pair, ['loss', pair.relayIp, PORT, n, gapMs, waitMs])

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** Loss fraction and the mean length of runs of consecutive lost probes. */
function lossStats(n: number, got: readonly number[]): { loss: number; meanRun: number } {
  const ok = new Set(got)
  const runs: number[] = []
  let cur = 0
  for (let i = 0; i < n; i++) {
    if (!ok.has(i)) cur++
    else if (cur > 0) {
      runs.push(cur)
      cur = 0
    }
  }
  if (cur > 0) runs.push(cur)
  return { loss: (n - ok.size) / n, meanRun: runs.length ? runs.reduce((a, b) => a + b, 0) / runs.length : 0 }
}

const netnsNames = (): string[] =>
  spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!.trim())
    .filter(Boolean)

/** Processes whose network namespace is the one with this nsfs inode. */
function pidsInNetns(inode: number): number[] {
  const pids: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      if (readlinkSync(`/proc/${d}/ns/net`) === `net:[${inode}]`) pids.push(Number(d))
    } catch {
      // gone, or a zombie (no namespaces any more)
    }
  }
  return pids
}

const cmdline = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')
  } catch {
    return ''
  }
}

async function eventually(pred: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms
  while (!pred()) {
    if (Date.now() > until) return false
    await new Promise((r) => setTimeout(r, 100))
  }
  return true
}

describe.skipIf(why !== undefined)('bench:loss links over real network namespaces', () => {
  it('the shaper adds its one-way delay each way; without it the veth is fast', async () => {
    await withEchoPair({ rateKbit: 2000, lossPercent: 0, delayMs: 100 }, async (pair) => {
      expect(pair.shaped).toBe(true)
      const r = await rtts(pair, 50)
      const m = median(r)
      console.log(`shaped (100 ms each way): ${r.length}/50 echoes, median RTT ${m.toFixed(1)} ms`)
      expect(r.length).toBeGreaterThanOrEqual(45)
      expect(m).toBeGreaterThanOrEqual(190)
      expect(m).toBeLessThanOrEqual(320)
    })
    await withEchoPair({ rateKbit: 2000, lossPercent: 0, delayMs: 0 }, async (pair) => {
      expect(pair.shaped).toBe(false)
      const r = await rtts(pair, 50)
      const m = median(r)
      console.log(`bare veth: ${r.length}/50 echoes, median RTT ${m.toFixed(2)} ms`)
      expect(r.length).toBeGreaterThanOrEqual(45)
      expect(m).toBeLessThan(20)
    })
  }, 60_000)

  it('loss each way: Bernoulli (nftables) drops independently, Gilbert (the shaper) drops in bursts at the same mean', async () => {
    const N = 600
    // 50% each way: an echo survives both ways with probability 1/4, so about 75% of probes are lost.
    // With independent losses at rate p, runs of lost probes average 1/(1 − p) ≈ 4.
    let bernoulli = { loss: 0, meanRun: 0 }
    await withEchoPair({ rateKbit: 2000, lossPercent: 50 }, async (pair) => {
      bernoulli = lossStats(N, (await losses(pair, N, 5, 1500)).got)
    })
    console.log(`bernoulli 50% each way: round-trip loss ${bernoulli.loss.toFixed(3)}, mean lost run ${bernoulli.meanRun.toFixed(2)}`)
    expect(bernoulli.loss).toBeGreaterThan(0.6)
    expect(bernoulli.loss).toBeLessThan(0.88)
    expect(bernoulli.meanRun).toBeGreaterThan(2)
    expect(bernoulli.meanRun).toBeLessThan(1.5 / (1 - bernoulli.loss))

    // Gilbert–Elliott, 50% long-run each way, mean burst 8 packets: the same mean, lost probes in long runs.
    let gilbert = { loss: 0, meanRun: 0 }
    await withEchoPair({ rateKbit: 2000, lossPercent: 50, lossModel: 'gilbert', burst: 8 }, async (pair) => {
      expect(pair.shaped).toBe(true)
      gilbert = lossStats(N, (await losses(pair, N, 5, 1500)).got)
    })
    console.log(`gilbert 50% each way, burst 8: round-trip loss ${gilbert.loss.toFixed(3)}, mean lost run ${gilbert.meanRun.toFixed(2)}`)
    expect(gilbert.loss).toBeGreaterThan(0.6)
    expect(gilbert.loss).toBeLessThan(0.88)
    // Clearly longer runs than independent losses at the same rate would give, and than the Bernoulli link's.
    expect(gilbert.meanRun).toBeGreaterThan(1.5 / (1 - gilbert.loss))
    expect(gilbert.meanRun).toBeGreaterThan(1.5 * bernoulli.meanRun)
  }, 60_000)

  for (const delayMs of [0, 20]) {
    it(`setBlocked drops everything and setBlocked(false) restores; wireBytes counts what was sent (${delayMs ? 'shaped' : 'bare veth'})`, async () => {
      await withEchoPair({ rateKbit: 2000, lossPercent: 0, delayMs }, async (pair) => {
        const w0 = pair.wireBytes()
        const before = await losses(pair, 20, 10, 500)
        expect(before.got).toHaveLength(20)
        const w1 = pair.wireBytes()
        // the probes and their echoes
        expect(w1 - w0).toBeGreaterThanOrEqual(2 * before.ip_bytes)

        pair.setBlocked(true)
        const blocked = await losses(pair, 20, 10, 800)
        expect(blocked.got).toEqual([])
        const w2 = pair.wireBytes()
        // counted before the drop: the probes went on the link, nothing came back
        expect(w2 - w1).toBeGreaterThanOrEqual(blocked.ip_bytes)

        pair.setBlocked(false)
        const after = await losses(pair, 20, 10, 500)
        expect(after.got).toHaveLength(20)
        expect(pair.wireBytes() - w2).toBeGreaterThanOrEqual(2 * after.ip_bytes)
      })
    }, 40_000)
  }

  it('a shaper that dies mid-run is reported by failure(), not left as a silent black hole', async () => {
    const pair = createNetnsPair({ rateKbit: 1000, lossPercent: 0, delayMs: 10, tag: 'cht' })
    try {
      await pair.ready
      expect(pair.failure()).toBeUndefined()
      const [pid] = pidsInNetns(statSync(`/run/netns/${pair.client}`).ino).filter((p) => cmdline(p).includes('shaper.py'))
      process.kill(pid!, 'SIGKILL')
      expect(await eventually(() => pair.failure() !== undefined, 5000)).toBe(true)
      expect(pair.failure()).toMatch(new RegExp(`link shaper in ${pair.client} exited \\(SIGKILL\\)`))
    } finally {
      pair.destroy()
    }
  }, 30_000)

  it("tcpRtoMaxMs caps TCP's retransmission timeout in both namespaces and nowhere else", () => {
    const sysctl = (ns?: string): string =>
      spawnSync(ns ? 'ip' : 'sysctl', [...(ns ? ['netns', 'exec', ns, 'sysctl'] : []), '-n', 'net.ipv4.tcp_rto_max_ms'], { encoding: 'utf8' }).stdout.trim()
    const host = sysctl()
    if (host === '') return console.warn('no net.ipv4.tcp_rto_max_ms on this kernel (Linux < 6.15): nothing to check')
    const capped = createNetnsPair({ rateKbit: 1000, lossPercent: 0, tag: 'cht', tcpRtoMaxMs: 1500 })
    const plain = createNetnsPair({ rateKbit: 1000, lossPercent: 0, tag: 'cht' })
    try {
      expect([sysctl(capped.client), sysctl(capped.relay)]).toEqual(['1500', '1500'])
      expect([sysctl(plain.client), sysctl(plain.relay)]).toEqual(['120000', '120000'])
      expect(sysctl()).toBe(host)
    } finally {
      capped.destroy()
      plain.destroy()
    }
  })

  it('destroy() removes both namespaces and kills the shapers', async () => {
    const pair = createNetnsPair({ rateKbit: 1000, lossPercent: 30, lossModel: 'gilbert', delayMs: 10, tag: 'cht' })
    let inodes: number[] = []
    let shapers: Array<{ pid: number; cmd: string }> = []
    try {
      await pair.ready
      expect(netnsNames()).toEqual(expect.arrayContaining([pair.client, pair.relay]))
      inodes = [pair.client, pair.relay].map((ns) => statSync(`/run/netns/${ns}`).ino)
      shapers = inodes.flatMap(pidsInNetns).map((pid) => ({ pid, cmd: cmdline(pid) }))
      // one shaper in each namespace, and nothing else
      expect(shapers.filter((s) => s.cmd.includes('shaper.py'))).toHaveLength(2)
      expect(shapers).toHaveLength(2)
    } finally {
      pair.destroy()
    }
    const names = netnsNames()
    expect(names).not.toContain(pair.client)
    expect(names).not.toContain(pair.relay)
    // SIGKILL is delivered asynchronously: give the kernel a moment.
    const gone = await eventually(() => inodes.every((i) => pidsInNetns(i).length === 0) && shapers.every((s) => cmdline(s.pid) !== s.cmd), 5000)
    expect(gone, `still running: ${JSON.stringify(inodes.flatMap(pidsInNetns).map((p) => cmdline(p)))}`).toBe(true)
    // and no shaper.py anywhere still drives this pair's veths (their names are in the shapers' --dev)
    const devs = shapers.map((s) => / --dev (\S+)/.exec(s.cmd)![1]!)
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout
    for (const dev of devs) expect(ps.split('\n').filter((l) => l.includes('shaper.py') && l.includes(`--dev ${dev} `))).toEqual([])
    // destroy is idempotent
    expect(() => pair.destroy()).not.toThrow()
  }, 30_000)

  it.skipIf(noMosquitto !== undefined)(
    '`chapar bench loss --quick --json`: rows for the physical limit and the four systems, and nothing left behind',
    async () => {
      assertBuilt()
      const before = new Set(netnsNames())
      const child = spawn(process.execPath, [CLI, 'bench', 'loss', '--quick', '--json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
      // The run names its namespaces chl<pid mod 100000><0–999>-c/-r; other runs may be using chl* too.
      const ours = new RegExp(`^chl${child.pid! % 100000}\\d{1,3}-[cr]$`)
      const seen = new Set<string>()
      const watch = setInterval(() => {
        for (const n of netnsNames()) if (!before.has(n) && ours.test(n)) seen.add(n)
      }, 1000)
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString()))
      child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)))
      // past 7.5 min, interrupt it (it cleans up on SIGINT) rather than leave it running
      const guard = setTimeout(() => child.kill('SIGINT'), 450_000)
      const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
      clearTimeout(guard)
      clearInterval(watch)
      expect(code, stderr).toBe(0)

      const rows = JSON.parse(stdout.trim()) as Array<Record<string, unknown>>
      expect(Array.isArray(rows)).toBe(true)
      console.log(`bench loss --quick:\n${rows.map((r) => JSON.stringify(r)).join('\n')}`)
      expect(rows.map((r) => r.system).sort()).toEqual(['chapar-udp', 'chapar-ws', 'mqtt-qos1', 'naive-retry', 'physical-limit'])
      for (const r of rows) {
        for (const f of ['system', 'workload', 'loss', 'sent', 'delivered', 'delivery_ratio', 'p50_ms', 'p95_ms', 'goodput_bps', 'capacity_ratio', 'wire_bytes', 'timed_out']) expect(r, `${String(r.system)}.${f}`).toHaveProperty(f)
        expect(r).toMatchObject({ workload: 'reports', loss: 0.5, loss_model: 'bernoulli', sent: 100, time_limit_ms: 60_000 })
        expect(typeof r.timed_out).toBe('boolean')
        expect(r.delivered as number).toBeLessThanOrEqual(r.sent as number)
        expect(r.timed_out).toBe((r.delivered as number) < (r.sent as number))
      }
      const udp = rows.find((r) => r.system === 'chapar-udp')!
      expect(udp.delivered).toBe(udp.sent)
      expect(udp.delivered).toBe(100)
      expect(udp.timed_out).toBe(false)
      expect(udp.capacity_ratio as number).toBeGreaterThan(0)
      expect(udp.wire_bytes as number).toBeGreaterThan(100 * 2000)
      const limit = rows.find((r) => r.system === 'physical-limit')!
      expect(limit).toMatchObject({ capacity_ratio: 1, goodput_bps: 500_000, delivered: 100, p50_ms: 1600, p95_ms: 3040 })

      // The run made its pair of namespaces and removed it.
      expect(seen.size, `saw no namespace matching ${ours}`).toBeGreaterThanOrEqual(2)
      const after = netnsNames()
      for (const n of seen) expect(after).not.toContain(n)
      expect(after.filter((n) => !before.has(n) && ours.test(n))).toEqual([])
    },
    480_000,
  )
})
