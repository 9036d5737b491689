#!/usr/bin/env node
/** The one `chapar` command. Errors print as one line and exit non-zero; never a stack trace. */
import { Command, CommanderError } from 'commander'
import { cmdInbox, cmdInit, cmdSend, cmdStatus, cmdSync, cmdWhoami } from './client/commands.js'
import { ChaparError } from './protocol/errors.js'
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
  .option('--relay <url>', 'relay ws:// or wss:// URL (repeat for several)', collect)
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
  .description('run a relay (embedded LevelDB store, WebSocket transport)')
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--port <port>', 'port to listen on', '7000')
  .option('--data <dir>', 'where the relay keeps its LevelDB', './data')
  .option('--max-envelope <bytes>', 'largest message accepted')
  .option('--public-url <url>', 'a URL clients dial this relay by, e.g. wss://relay.example.org (repeat for several); mailbox logins for any other relay are refused', collect)
  .option('--max-ttl <duration>', 'longest expiry accepted (e.g. 35d)')
  .option('--verbose', 'log every stored and delivered envelope')
  .action(run(cmdRelay))

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
