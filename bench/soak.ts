/**
 * `npm run soak`: the relay kill loop (bench/kill-loop.ts) for many cycles,
 * with a live progress line on stderr and a JSON summary on stdout; exits 1
 * on any acked message lost, any duplicate or any store that did not open.
 *
 *   npm run soak -- [--cycles N (1000)] [--seed S (1)] [--messages M (50)] [--per-cycle K (2)] [--dir DIR]
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { LiveLine } from '../src/client/progress.js'
import { killLoop } from './kill-loop.js'

function args(): { cycles: number; seed: number; messages: number; perCycle: number; dir?: string } {
  const o = { cycles: 1000, seed: 1, messages: 50, perCycle: 2 } as { cycles: number; seed: number; messages: number; perCycle: number; dir?: string }
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!
    const value = argv[++i]
    const whole = (min: number): number => {
      const n = Number(value)
      if (!Number.isInteger(n) || n < min) throw new Error(`${flag} must be a whole number ≥ ${min}, got "${value}"`)
      return n
    }
    if (flag === '--cycles') o.cycles = whole(1)
    else if (flag === '--seed') o.seed = whole(0)
    else if (flag === '--messages') o.messages = whole(1)
    else if (flag === '--per-cycle') o.perCycle = whole(0)
    else if (flag === '--dir' && value) o.dir = value
    else throw new Error(`unknown option ${flag}; usage: npm run soak -- [--cycles N] [--seed S] [--messages M] [--per-cycle K] [--dir DIR]`)
  }
  return o
}

let o
try {
  o = args()
} catch (err) {
  process.stderr.write(`soak: ${(err as Error).message}\n`)
  process.exit(2)
}
const dir = o.dir ?? (await mkdtemp(path.join(tmpdir(), 'chapar-soak-')))
const t0 = Date.now()
const line = new LiveLine(process.stderr, 5000)
const r = await killLoop({
  dir,
  cycles: o.cycles,
  seed: o.seed,
  messages: o.messages,
  perCycle: o.perCycle,
  onCycle: (c, s) => line.update(`soak: cycle ${c}/${o.cycles} · acked ${s.acked} · delivered ${s.delivered} · ${Math.round((Date.now() - t0) / 1000)} s`, c === o.cycles),
})
line.done()
process.stdout.write(JSON.stringify({ bench: 'soak', seed: o.seed, ...r, lostAcked: r.lostAcked.length }) + '\n')
if (!o.dir) await rm(dir, { recursive: true, force: true })
const ok = r.problems.length === 0 && r.lostAcked.length === 0 && r.duplicates === 0 && r.delivered === r.messages
if (!ok) for (const p of [...r.problems, ...r.lostAcked.map((id) => `acked but lost: ${id}`)]) process.stderr.write(`soak: ${p}\n`)
process.exit(ok ? 0 : 1)
