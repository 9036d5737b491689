/**
 * `npm run soak`: the relay kill loop (bench/kill-loop.ts) for many cycles:
 * a real relay process SIGKILLed at random moments while clients sync, and
 * restarted on the same data. A live progress line on stderr, a JSON
 * summary on stdout; exits 1 on any violation (an acked message lost, a
 * duplicate, a message never delivered, a store that did not open, read
 * or check clean), 2 on bad options.
 *
 *   npm run soak -- [--cycles N (1000)] [--seed S (1)] [--per-cycle K (3)] [--initial M (30)] [--dir DIR (kept)]
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { LiveLine } from '../src/client/progress.js'
import { killLoop } from './kill-loop.js'

interface SoakOptions {
  cycles: number
  seed: number
  perCycle: number
  initial: number
  dir?: string
}

const USAGE = 'usage: npm run soak -- [--cycles N] [--seed S] [--per-cycle K] [--initial M] [--dir DIR]'

function parseArgs(argv: readonly string[]): SoakOptions {
  const o: SoakOptions = { cycles: 1000, seed: 1, perCycle: 3, initial: 30 }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i]
    const whole = (min: number): number => {
      const n = Number(value)
      if (value === undefined || !Number.isSafeInteger(n) || n < min) throw new Error(`${flag} must be a whole number ≥ ${min}, got "${value ?? ''}"`)
      return n
    }
    if (flag === '--cycles') o.cycles = whole(1)
    else if (flag === '--seed') o.seed = whole(0)
    else if (flag === '--per-cycle') o.perCycle = whole(0)
    else if (flag === '--initial') o.initial = whole(0)
    else if (flag === '--dir' && value) o.dir = value
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(USAGE + '\n')
      process.exit(0)
    } else throw new Error(`unknown option ${flag}; ${USAGE}`)
  }
  return o
}

let o: SoakOptions
try {
  o = parseArgs(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`soak: ${(err as Error).message}\n`)
  process.exit(2)
}
// Interrupted: exit, and the loop's exit hook SIGKILLs the relay it is running.
process.once('SIGINT', () => process.exit(130))
process.once('SIGTERM', () => process.exit(143))
const dir = o.dir ?? (await mkdtemp(path.join(tmpdir(), 'chapar-soak-')))
const t0 = Date.now()
// Redrawn in place on a terminal; in a log, a line at most every 5 s (and the last cycle's).
const line = new LiveLine(process.stderr, 5000)
const r = await killLoop({
  dir,
  cycles: o.cycles,
  seed: o.seed,
  perCycle: o.perCycle,
  initial: o.initial,
  stopOnProblem: false,
  onCycle: (c) =>
    line.update(
      `soak: cycle ${c.cycle}/${o.cycles} · queued ${c.queued} · acked ${c.acked} · delivered ${c.delivered} · problems ${c.problems} · ${Math.round((Date.now() - t0) / 1000)} s`,
      c.cycle === o.cycles,
    ),
})
line.done()
const ok = r.problems.length === 0 && r.lostAcked.length === 0 && r.duplicates === 0 && r.delivered === r.messages && r.confirmed === r.messages && r.cycles === o.cycles
process.stdout.write(JSON.stringify({ bench: 'soak', ok, ...r, lostAcked: r.lostAcked.length, dir: o.dir ?? null }) + '\n')
for (const p of r.problems) process.stderr.write(`soak: ${p}\n`)
for (const w of r.warnings) process.stderr.write(`soak: warning: ${w}\n`)
if (!o.dir) await rm(dir, { recursive: true, force: true })
process.exit(ok ? 0 : 1)
