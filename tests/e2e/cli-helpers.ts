/** Run the real, compiled `chapar` CLI and real relay processes. */
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/src/cli.js')

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test does)`)
}

export interface RunResult {
  code: number | null
  stdout: string
  stderr: string
}

export function chapar(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(t)
      resolve({ code, stdout, stderr })
    })
  })
}

/** Start a chapar command in the background, with its stderr lines observable. */
export function start(args: string[]): { child: ChildProcess; lines: string[]; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let stdout = ''
  let buf = ''
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr!.on('data', (d: Buffer) => {
    buf += d.toString()
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i))
      buf = buf.slice(i + 1)
    }
  })
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  return { child, lines, out: () => stdout, exited }
}

export async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export interface RelayProc {
  url: string
  port: number
  lines: string[]
  child: ChildProcess
  exited: Promise<number | null>
}

export async function startRelay(dataDir: string, port = 0, extra: string[] = []): Promise<RelayProc> {
  const p = start(['relay', '--host', '127.0.0.1', '--port', String(port), '--data', dataDir, ...extra])
  await waitFor(() => p.lines.some((l) => l.includes('"relay listening"')) || p.child.exitCode !== null, 15_000, 'relay to listen')
  const line = p.lines.find((l) => l.includes('"relay listening"'))
  if (!line) throw new Error(`relay did not start: ${p.lines.join('\n')}`)
  const url = JSON.parse(line).url as string
  return { url, port: Number(new URL(url).port), lines: p.lines, child: p.child, exited: p.exited }
}
