/** What the relay benchmarks (relay-ingest.ts, relay-scale.ts) share: number formatting, medians, a progress line and a client socket. */
import WebSocket from 'ws'
import { LiveLine } from '../src/client/progress.js'
import { MAX_FRAME_BYTES } from '../src/protocol/frames.js'

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** A map key for an envelope id (cheaper than hex). */
export const idKey = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1')

const line = new LiveLine(process.stderr, 1000)
/** One progress line on stderr: rewritten in place on a terminal, at most once a second otherwise. */
export function progress(text: string, force = false): void {
  line.update(text, force)
}
export function progressDone(): void {
  line.done()
}

/** A client WebSocket to a relay, as the benchmarks' load generators use it; errors after the open are left to 'close'. */
export function openSocket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES })
    ws.binaryType = 'nodebuffer'
    ws.once('open', () => {
      ws.off('error', reject)
      ws.on('error', () => undefined)
      resolve(ws)
    })
    ws.once('error', reject)
  })
}
