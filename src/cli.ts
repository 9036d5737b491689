#!/usr/bin/env node
/** The one `chapar` command. Errors print as one line and exit non-zero; never a stack trace. */
import { Command, CommanderError } from 'commander'
import { cmdInbox, cmdInit, cmdSend, cmdStatus, cmdSync, cmdWhoami } from './client/commands.js'
import { ChaparError } from './protocol/errors.js'
import { cmdAdmin } from './relay/admin-command.js'
import { cmdRelay } from './relay/relay-command.js'

const EXIT_USAGE = 2

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/** Commander hands actions (options, command); commands take the options only. */
function run<T>(fn: (opts: T) => Promise<number>) {
  return async (opts: T): Promise<void> => {
    process.exitCode = await fn(opts)
  }
}

const program = new Command()
program
  .name('chapar')
  .description('Resilient, offline-first messaging relay for degraded networks')
  .version('0.1.0')
  .exitOverride()
  .configureOutput({ outputError: (str, write) => write(str.split('\n')[0] + '\n') })

const homeOpt = ['--home <dir>', 'identity and queues (default: $CHAPAR_HOME, then ~/.chapar)'] as const

program.command('init').description('create a new identity (Ed25519 signing key + X25519 box key)').option(...homeOpt).action(run(cmdInit))
program.command('whoami').description("print this identity's address").option(...homeOpt).action(run(cmdWhoami))
program
  .command('send')
  .description('sign, encrypt and queue a report (works offline); prints the message id')
  .option(...homeOpt)
  .requiredOption('--to <address>', "recipient's address (from their `chapar whoami`)")
  .option('--text <text>', 'report text')
  .option('--file <path>', 'attachment (photo, short video, document)')
  .option('--ttl <duration>', 'give up after this long, e.g. 12h, 7d', '7d')
  .option('--priority <level>', 'low, normal or urgent', 'normal')
  .action(run(cmdSend))
program
  .command('sync')
  .description('hand queued messages to relays and fetch this mailbox')
  .option(...homeOpt)
  .option('--relay <url>', 'relay ws://, wss:// or udp://host:port?key=… URL (repeat for several)', collect)
  .option('--rate <kbit/s>', 'udp:// relays: send pace (default 512)')
  .option('--mtu <bytes>', 'udp:// relays: largest packet (default 1200)')
  .option('--ws-streams <n>', 'ws:// relays: WebSockets an upload is striped over, 1–16 (default 4)')
  .option('--until-empty', 'exit 0 once nothing is left to upload and the mailbox is drained')
  .option('--timeout <duration>', 'give up after this long (seconds, or 90s, 10m …) and exit non-zero')
  .option('--json', 'print a JSON report')
  .action(run(cmdSync))
program.command('status').description('state of sent messages').option(...homeOpt).option('--json', 'JSON array').option('--all', 'include receipts').action(run(cmdStatus))
program
  .command('inbox')
  .description('received reports, decrypted and verified')
  .option(...homeOpt)
  .option('--json', 'JSON array')
  .option('--quarantined', 'show messages that failed verification instead')
  .action(run(cmdInbox))
program
  .command('relay')
  .description('run a relay (embedded LevelDB store; WebSocket and HTTP, UDP with --udp-port, metrics with --admin-port)')
  .option('--config <file.json>', 'settings from a JSON file; environment variables (CHAPAR_RELAY_*) and flags override it')
  .option('--print-config', 'print the effective settings as JSON and exit')
  .option('--host <host>', 'address to listen on (default 127.0.0.1)')
  .option('--port <port>', 'port to listen on (default 7000)')
  .option('--data <dir>', 'where the relay keeps its LevelDB (default ./data)')
  .option('--max-envelope <bytes>', 'largest message accepted, e.g. 16MiB')
  .option('--public-url <url>', 'a URL clients dial this relay by, e.g. wss://relay.example.org (repeat for several); mailbox logins for any other relay are refused', collect)
  .option('--max-ttl <duration>', 'longest expiry accepted (default 35d)')
  .option('--udp-port <port>', 'also serve the datagram transport on this UDP port (prints its udp:// URL)')
  .option('--udp-rate <kbit/s>', 'datagram transport: pace of replies per client (default 512)')
  .option('--mtu <bytes>', 'datagram transport: largest packet (default 1200)')
  .option('--admin-host <host>', 'address of the admin listener (default 127.0.0.1)')
  .option('--admin-port <port>', 'serve /metrics and the admin API on this port (default: off)')
  .option('--trust-proxy', 'take client addresses from X-Forwarded-For (behind a reverse proxy)')
  .option('--access <mode>', 'open (anyone may upload; the default) or allowlist (only keys in access.allow or added with `chapar admin allow`)')
  .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default info)')
  .option('--verbose', 'log every stored and delivered envelope (ids and sizes)')
  .action(run(cmdRelay))

const admin = program.command('admin').description("ask a running relay's admin listener (--admin-port) for its state")
const adminOpt = ['--admin <url>', 'admin listener URL (default: $CHAPAR_ADMIN_URL, then http://127.0.0.1:7002)'] as const
admin.command('stats').description('counters and store totals').option(...adminOpt).action(run((o: { admin?: string }) => cmdAdmin('stats', o)))
admin
  .command('mailboxes')
  .description('the largest mailboxes: id, messages, bytes (no content, no keys)')
  .option(...adminOpt)
  .option('--limit <n>', 'how many (default 100)')
  .action(run((o: { admin?: string; limit?: string }) => cmdAdmin('mailboxes', o)))
admin.command('purge-expired').description('delete expired envelopes and tombstones now').option(...adminOpt).action(run((o: { admin?: string }) => cmdAdmin('purge-expired', o)))
admin.command('metrics').description('the Prometheus metrics, as scraped').option(...adminOpt).action(run((o: { admin?: string }) => cmdAdmin('metrics', o)))
admin.command('access').description('access mode, allowed and banned keys').option(...adminOpt).action(run((o: { admin?: string }) => cmdAdmin('access', o)))
const keyActions = {
  ban: 'ban a key: no login, no upload (kept across restarts)',
  unban: 'lift a ban made with `chapar admin ban`',
  allow: 'let a key upload to an allowlist relay (kept across restarts)',
  disallow: 'take back `chapar admin allow`',
} as const
for (const [action, description] of Object.entries(keyActions) as Array<[keyof typeof keyActions, string]>) {
  admin
    .command(`${action} <key>`)
    .description(`${description}; KEY is a chapar address or a 64-hex signing key`)
    .option(...adminOpt)
    .action(async (key: string, o: { admin?: string }) => {
      process.exitCode = await cmdAdmin(action, { ...o, key })
    })
}

program
  .command('sim')
  .description('deterministic lossy-link simulation running the real client and relay engines in virtual time')
  .option('--profile <name>', 'starlink-degraded, blackout-windows or congested-mobile')
  .option('--scenario <file.json>', 'options from a JSON file (flags override it)')
  .option('--clients <n>', 'field clients, each on its own link (default 10)')
  .option('--recipients <n>', 'recipients, online and syncing (default 1)')
  .option('--relays <n>', 'relays (default 1)')
  .option('--messages <n>', 'reports per client (default 10)')
  .option('--size <bytes|mix>', 'report size, or mix (mostly text, some photos) (default 2000)')
  .option('--loss <p>', 'packet loss per direction, 0–0.99 (default 0.3)')
  .option('--recipient-loss <p>', "recipients' link loss (default: --loss)")
  .option('--loss-model <m>', 'bernoulli or gilbert (default bernoulli)')
  .option('--burst <n>', 'mean burst length in packets, gilbert model (default 4)')
  .option('--rtt <ms>', 'round-trip time (default 600)')
  .option('--jitter <ms>', 'extra one-way delay, uniform 0..jitter (default 50)')
  .option('--bandwidth <kbit/s>', 'link rate each way (default 512)')
  .option('--mtu <bytes>', 'largest packet (default 1200)')
  .option('--queue <duration>', 'longest a packet waits in the send queue before it is dropped (default 2s)')
  .option('--transport <t>', 'ws (WebSocket over TCP) or datagram (coded UDP transport) (default ws)')
  .option('--rate <kbit/s>', 'datagram transport: send pace (default: --bandwidth)')
  .option('--duplicate <p>', 'fraction of packets duplicated (default 0)')
  .option('--reorder <p>', 'fraction of packets delayed past later ones (default 0)')
  .option('--outage <spec>', 'field link schedule, e.g. up=30s,down=10m')
  .option('--relay-crash-every <duration>', 'kill -9 each relay about this often (what was not fsynced is lost)')
  .option('--relay-restart <duration>', 'time a crashed relay stays down (default 5s)')
  .option('--duration <duration>', 'virtual time limit (default 24h)')
  .option('--poll <duration>', 'field clients re-sync this often until delivered (default 10m)')
  .option('--seed <n>', 'random seed (default 1)')
  .option('--sweep <name=v1,v2,…>', 'run once per value, e.g. loss=0.3,0.5,0.8')
  .option('--json', 'print one JSON object (an array with --sweep)')
  .option('--report <file.html>', 'also write a self-contained HTML report with charts')
  .action(async (opts: Record<string, unknown>) => {
    const { cmdSim } = await import('./sim/sim-command.js')
    process.exitCode = await cmdSim(opts)
  })

const bench = program.command('bench').description('benchmarks that need more than the simulator')
bench
  .command('loss')
  .description('Chapar against MQTT QoS 1, naive retry and the physical limit over real lossy links (network namespaces; root)')
  .option('--workload <list>', 'reports, photo, video (default reports,photo; --full adds video)')
  .option('--loss <list>', 'loss each way, e.g. 0.3,0.5,0.8 (the default)')
  .option('--loss-model <list>', 'bernoulli, gilbert (default both)')
  .option('--systems <list>', 'chapar-udp, chapar-ws, mqtt-qos1, naive-retry (default all)')
  .option('--rate <kbit/s>', 'link rate each way (default 1000)')
  .option('--rtt <ms>', 'round-trip time added by the shaper (default 600; 0 for none)')
  .option('--jitter <ms>', 'extra one-way delay, uniform 0..jitter, never reordering (default 0)')
  .option('--burst <n>', 'mean burst length in packets, gilbert model (default 8)')
  .option('--outage <spec>', 'link schedule during each run, e.g. up=30s,down=60s')
  .option('--time-limit <duration>', 'per system and workload (default 4x the physical limit, at least 2m)')
  .option('--seed <n>', 'shaper random seed (default 1)')
  .option('--tcp-rto-max <ms>', "cap TCP's retransmission timeout on both hosts, 1000–120000 (sysctl net.ipv4.tcp_rto_max_ms, Linux ≥ 6.15; default the kernel's 120000)")
  .option('--ws-streams <n>', 'WebSockets each chapar-ws upload stripes over, 1–16 (default the client\'s 4)')
  .option('--quick', 'reports workload at 0.5 loss, Bernoulli, 60 s limit: a smoke run of a few minutes')
  .option('--full', 'also the 20 MB video workload')
  .option('--json', 'print a JSON array of rows instead of the table')
  .option('--report <file.html>', 'also write a self-contained HTML report with charts')
  .option('--from <files>', 'no run: table, JSON or report of rows saved by earlier --json runs (comma-separated; a later file wins a cell)')
  .action(async (opts: Record<string, unknown>) => {
    const { cmdBenchLoss } = await import('../bench/loss.js')
    process.exitCode = await cmdBenchLoss(opts)
  })

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : EXIT_USAGE
  } else if (err instanceof ChaparError) {
    process.stderr.write(`chapar: ${err.message}\n`)
    process.exitCode = 1
  } else {
    process.stderr.write(`chapar: unexpected error: ${(err as Error)?.message ?? String(err)}\n`)
    if (process.env.CHAPAR_DEBUG) console.error(err)
    process.exitCode = 1
  }
}
