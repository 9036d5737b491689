/**
 * Two network namespaces joined by a veth pair, with real packet loss and a
 * real rate limit, for the integration test and `npm run bench:transfer`
 * (DESIGN §6). This kernel has no sch_netem, so:
 *   - loss: nftables on each namespace's ingress (prerouting, priority
 *     −300), `numgen random mod 100 < P drop`, with TSO/GSO/GRO off on both
 *     veths so every rule sees real packets, not 64 KB GSO super-packets;
 *   - rate: a `tbf` qdisc on each veth's egress.
 * Delay is not imposed (the veth's is microseconds); the simulator covers
 * long round trips. Everything is created under unique names and torn down
 * by `destroy()` (and by the process exit hook, should a test die).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'

export interface NetnsPair {
  /** Namespace of the field side (client) and of the relay. */
  client: string
  relay: string
  clientIp: string
  relayIp: string
  /** Run argv inside a namespace. */
  spawnIn(ns: string, argv: string[], env?: NodeJS.ProcessEnv): ChildProcess
  /** Change the loss (percent, 0–100) each way. */
  setLoss(percent: number): void
  destroy(): void
}

function sh(argv: string[]): string {
  return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

/** Why namespaces cannot be made here, or undefined if they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux'
  if (process.getuid?.() !== 0) return 'not root'
  for (const tool of ['ip', 'nft', 'tc', 'ethtool']) {
    try {
      sh(['sh', '-c', `command -v ${tool}`])
    } catch {
      return `${tool} is not installed (Debian packages iproute2, nftables, ethtool)`
    }
  }
  const probe = `chp-probe-${process.pid}`
  try {
    sh(['ip', 'netns', 'add', probe])
    sh(['ip', 'netns', 'exec', probe, 'nft', 'list', 'tables'])
  } catch (err) {
    return `cannot create a network namespace: ${(err as Error).message.split('\n')[0]}`
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

/** Make the pair. `rateKbit` per direction; `lossPercent` per direction (ingress of each side). */
export function createNetnsPair(options: { rateKbit: number; lossPercent: number; tag?: string }): NetnsPair {
  const id = `${options.tag ?? 'chp'}${process.pid % 100000}${Math.floor(Math.random() * 1000)}`
  const client = `${id}-c`
  const relay = `${id}-r`
  const vc = `${id.slice(0, 10)}c`
  const vr = `${id.slice(0, 10)}r`
  const octet = 1 + (process.pid % 250)
  const clientIp = `10.213.${octet}.1`
  const relayIp = `10.213.${octet}.2`
  const run = (ns: string, argv: string[]): string => sh(['ip', 'netns', 'exec', ns, ...argv])
  let destroyed = false
  const pair: NetnsPair = {
    client,
    relay,
    clientIp,
    relayIp,
    spawnIn: (ns, argv, env) => spawn('ip', ['netns', 'exec', ns, ...argv], { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] }),
    setLoss: (percent) => {
      for (const [ns, dev] of [
        [client, vc],
        [relay, vr],
      ] as const) {
        run(ns, ['nft', 'flush', 'chain', 'inet', 'chapar', 'ingress'])
        if (percent > 0) run(ns, ['nft', 'add', 'rule', 'inet', 'chapar', 'ingress', 'iifname', dev, 'numgen', 'random', 'mod', '100', '<', String(Math.round(percent)), 'drop'])
      }
    },
    destroy: () => {
      if (destroyed) return
      destroyed = true
      live.delete(pair)
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
    for (const [ns, dev, ip] of [
      [client, vc, clientIp],
      [relay, vr, relayIp],
    ] as const) {
      run(ns, ['ip', 'addr', 'add', `${ip}/30`, 'dev', dev])
      run(ns, ['ip', 'link', 'set', dev, 'up'])
      run(ns, ['ip', 'link', 'set', 'lo', 'up'])
      run(ns, ['ethtool', '-K', dev, 'tso', 'off', 'gso', 'off', 'gro', 'off'])
      // burst: a few packets; latency: the queue a rate-limited modem would have.
      run(ns, ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${options.rateKbit}kbit`, 'burst', '16kb', 'latency', '500ms'])
      run(ns, ['nft', 'add', 'table', 'inet', 'chapar'])
      run(ns, ['nft', 'add', 'chain', 'inet', 'chapar', 'ingress', '{ type filter hook prerouting priority -300 ; }'])
    }
    pair.setLoss(options.lossPercent)
  } catch (err) {
    pair.destroy()
    throw err
  }
  return pair
}
