/**
 * Two network namespaces joined by a veth pair, with real packet loss and a
 * real rate limit, for the integration tests, `npm run bench:transfer` and
 * `npm run bench:loss` (DESIGN §6). This kernel has no sch_netem, so:
 *   - Bernoulli loss: nftables on each namespace's ingress (prerouting,
 *     priority −300), `numgen random mod 100 < P drop`, with TSO/GSO/GRO off
 *     on both veths so every rule sees real packets, not 64 KB GSO
 *     super-packets;
 *   - rate: a `tbf` qdisc on each side's egress;
 *   - outages: one more ingress rule that drops everything while set;
 *   - delay, jitter and burst (Gilbert–Elliott) loss, when asked for: our own
 *     userspace shaper (bench/shaper.py) on a TUN device in each namespace.
 *     The peer's address is routed through the TUN device, whose tbf paces
 *     packets as a modem would; the shaper holds each one for the one-way
 *     delay (and drops bursts) and writes it onto the veth. Without it the
 *     veth's delay is microseconds.
 * Everything is created under unique names and torn down by `destroy()`
 * (and by the process's exit and signal hooks, should a run die).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export type NetLossModel = 'bernoulli' | 'gilbert'

export interface NetnsOptions {
  /** Rate each way, kbit/s. */
  rateKbit: number
  /** Long-run loss each way, percent 0–100. */
  lossPercent: number
  /** `bernoulli` (nftables, default) or `gilbert` bursts (the shaper). */
  lossModel?: NetLossModel
  /** Mean burst length in packets for `gilbert`. Default 8. */
  burst?: number
  /** One-way delay and uniform jitter, ms (the shaper). Default 0. */
  delayMs?: number
  jitterMs?: number
  seed?: number
  tag?: string
  /**
   * Cap on TCP's retransmission timeout in both namespaces, ms
   * (net.ipv4.tcp_rto_max_ms, Linux ≥ 6.15; 1000–120000). Default: the
   * kernel's 120 000.
   */
  tcpRtoMaxMs?: number
}

export interface NetnsPair {
  /** Namespace of the field side (client) and of the relay. */
  client: string
  relay: string
  clientIp: string
  relayIp: string
  /** True when the userspace shaper carries the traffic (delay or bursts). */
  shaped: boolean
  /** Resolves when the link carries traffic (the shapers are attached). */
  ready: Promise<void>
  /** Run argv inside a namespace. */
  spawnIn(ns: string, argv: string[], env?: NodeJS.ProcessEnv): ChildProcess
  /** Change the Bernoulli loss (percent, 0–100) each way. */
  setLoss(percent: number): void
  /** Drop everything each way while true (an outage window). */
  setBlocked(blocked: boolean): void
  /** IP bytes each side has put on the link so far (before loss), summed over both sides. */
  wireBytes(): number
  /** Why the link stopped carrying traffic (a shaper died), or undefined while it works. */
  failure(): string | undefined
  destroy(): void
}

const here = path.dirname(fileURLToPath(import.meta.url))
// bench/shaper.py, whether this module runs from dist/bench or (in tests) from bench/.
export const SHAPER = path.basename(path.dirname(here)) === 'dist' ? path.join(here, '..', '..', 'bench', 'shaper.py') : path.join(here, 'shaper.py')

function sh(argv: string[]): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** Why namespaces cannot be made here, or undefined if they can. */
export function netnsUnavailable(options: { shaper?: boolean } = {}): string | undefined {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not root'
  for (const tool of ['ip', 'nft', 'tc', 'ethtool', ...(options.shaper ? ['python3'] : [])]) {
    try {
      sh(['sh', '-c', `command -v ${tool}`])
    } catch {
      return `${tool} is not installed (Debian packages iproute2, nftables, ethtool${options.shaper ? ', python3' : ''})`
    }
  }
  const probe = `chp-probe-${process.pid}`
  try {
    sh(['ip', 'netns', 'add', probe])
    sh(['ip', 'netns', 'exec', probe, 'nft', 'list', 'tables'])
    if (options.shaper) sh(['ip', 'netns', 'exec', probe, 'ip', 'tuntap', 'add', 'dev', 'chprobe', 'mode', 'tun'])
  } catch (err) {
    return `cannot create a network namespace${options.shaper ? ' with a TUN device' : ''}: ${(err as Error).message.split('\n')[0]}`
  } finally {
    try {
      sh(['ip', 'netns', 'del', probe])
    } catch {
      // it was never made
    }
  }
  return undefined
}

const live = new Set<NetnsPair>()
process.once('exit', () => {
  for (const p of live) p.destroy()
})

/** Tear down every live pair (for a SIGINT handler that then exits). */
export function destroyAllPairs(): void {
  for (const p of live) p.destroy()
}

/** Make the pair. Rate, loss and delay apply to each direction. */
export function createNetnsPair(options: NetnsOptions): NetnsPair {
  const id = `${options.tag ?? 'chp'}${process.pid % 100000}${Math.floor(Math.random() * 1000)}`
  const client = `${id}-c`
  const relay = `${id}-r`
  const vc = `${id.slice(0, 10)}c`
  const vr = `${id.slice(0, 10)}r`
  const octet = 1 + (process.pid % 250)
  const clientIp = `10.213.${octet}.1`
  const relayIp = `10.213.${octet}.2`
  const model = options.lossModel ?? 'bernoulli'
  const delayMs = options.delayMs ?? 0
  const shaped = delayMs > 0 || (options.jitterMs ?? 0) > 0 || model === 'gilbert'
  const run = (ns: string, argv: string[]): string => sh(['ip', 'netns', 'exec', ns, ...argv])
  let destroyed = false
  let bernoulli = model === 'bernoulli' ? options.lossPercent : 0
  let blocked = false
  const shapers: ChildProcess[] = []
  let failure: string | undefined
  const sides = [
    { ns: client, dev: vc, ip: clientIp, peerIp: relayIp, peerNs: relay, peerDev: vr },
    { ns: relay, dev: vr, ip: relayIp, peerIp: clientIp, peerNs: client, peerDev: vc },
  ] as const
  const TUN = 'chshape'
  const applyRules = (): void => {
    for (const { ns, dev } of sides) {
      run(ns, ['nft', 'flush', 'chain', 'inet', 'chapar', 'ingress'])
      if (blocked) run(ns, ['nft', 'add', 'rule', 'inet', 'chapar', 'ingress', 'iifname', dev, 'drop'])
      else if (bernoulli > 0) run(ns, ['nft', 'add', 'rule', 'inet', 'chapar', 'ingress', 'iifname', dev, 'numgen', 'random', 'mod', '100', '<', String(Math.round(bernoulli)), 'drop'])
    }
  }
  const stat = (ns: string, dev: string, what: string): number => Number(run(ns, ['cat', `/sys/class/net/${dev}/statistics/${what}`]).trim())
  const pair: NetnsPair = {
    client,
    relay,
    clientIp,
    relayIp,
    shaped,
    ready: Promise.resolve(),
    spawnIn: (ns, argv, env) => spawn('ip', ['netns', 'exec', ns, ...argv], { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] }),
    setLoss: (percent) => {
      if (model !== 'bernoulli') throw new Error('setLoss changes Bernoulli loss only; make a new pair for another burst model')
      bernoulli = percent
      applyRules()
    },
    setBlocked: (b) => {
      blocked = b
      applyRules()
    },
    // The TUN device's tx counts IP bytes after the rate limit and before the
    // shaper's loss; a bare veth's tx counts Ethernet frames (14-byte header).
    wireBytes: () =>
      sides.reduce((n, { ns, dev }) => n + (shaped ? stat(ns, TUN, 'tx_bytes') : stat(ns, dev, 'tx_bytes') - 14 * stat(ns, dev, 'tx_packets')), 0),
    failure: () => failure,
    destroy: () => {
      if (destroyed) return
      destroyed = true
      live.delete(pair)
      for (const s of shapers) s.kill('SIGKILL')
      for (const ns of [client, relay]) {
        try {
          sh(['ip', 'netns', 'del', ns])
        } catch {
          // already gone
        }
      }
    },
  }
  live.add(pair)
  try {
    sh(['ip', 'netns', 'add', client])
    sh(['ip', 'netns', 'add', relay])
    sh(['ip', 'link', 'add', vc, 'netns', client, 'type', 'veth', 'peer', 'name', vr, 'netns', relay])
    // burst: a few packets; latency: the queue a rate-limited modem would have.
    const tbf = ['tbf', 'rate', `${options.rateKbit}kbit`, 'burst', '16kb', 'latency', '500ms']
    for (const { ns, dev, ip } of sides) {
      run(ns, ['ip', 'addr', 'add', `${ip}/30`, 'dev', dev])
      run(ns, ['ip', 'link', 'set', dev, 'up'])
      run(ns, ['ip', 'link', 'set', 'lo', 'up'])
      if (options.tcpRtoMaxMs !== undefined) run(ns, ['sysctl', '-qw', `net.ipv4.tcp_rto_max_ms=${options.tcpRtoMaxMs}`])
      run(ns, ['ethtool', '-K', dev, 'tso', 'off', 'gso', 'off', 'gro', 'off'])
      if (!shaped) run(ns, ['tc', 'qdisc', 'add', 'dev', dev, 'root', ...tbf])
      run(ns, ['nft', 'add', 'table', 'inet', 'chapar'])
      run(ns, ['nft', 'add', 'chain', 'inet', 'chapar', 'ingress', '{ type filter hook prerouting priority -300 ; }'])
    }
    applyRules()
    if (shaped) {
      const waits: Array<Promise<void>> = []
      for (const { ns, dev, ip, peerIp, peerNs, peerDev } of sides) {
        run(ns, ['ip', 'tuntap', 'add', 'dev', TUN, 'mode', 'tun'])
        run(ns, ['ip', 'link', 'set', TUN, 'up'])
        run(ns, ['tc', 'qdisc', 'add', 'dev', TUN, 'root', ...tbf])
        run(ns, ['ip', 'route', 'add', `${peerIp}/32`, 'dev', TUN, 'src', ip])
        // Replies arrive on the veth while the route back points at the TUN device.
        for (const conf of ['all', 'default', dev]) run(ns, ['sysctl', '-qw', `net.ipv4.conf.${conf}.rp_filter=0`])
        const peerMac = run(peerNs, ['cat', `/sys/class/net/${peerDev}/address`]).trim()
        const argv = ['python3', SHAPER, '--tun', TUN, '--dev', dev, '--peer-mac', peerMac, '--delay-ms', String(delayMs), '--jitter-ms', String(options.jitterMs ?? 0), '--seed', String((options.seed ?? 1) * 2 + shapers.length)]
        if (model === 'gilbert') argv.push('--loss', String(options.lossPercent / 100), '--burst', String(options.burst ?? 8))
        const child = pair.spawnIn(ns, argv)
        shapers.push(child)
        waits.push(
          new Promise((resolve, reject) => {
            let out = ''
            let err = ''
            child.stdout!.on('data', (b: Buffer) => {
              out += b.toString()
              if (out.startsWith('ready')) resolve()
            })
            child.stderr!.on('data', (b: Buffer) => (err += b.toString()))
            child.once('exit', (code, signal) => {
              const why = `link shaper in ${ns} exited (${code ?? signal}): ${err.trim()}`
              if (!destroyed) failure ??= why
              reject(new Error(why))
            })
          }),
        )
      }
      pair.ready = Promise.all(waits).then(() => undefined)
      pair.ready.catch(() => pair.destroy())
    }
  } catch (err) {
    pair.destroy()
    throw err
  }
  return pair
}
