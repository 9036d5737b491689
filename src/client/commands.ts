/** The field user's commands: init, whoami, send, sync, status, inbox. */
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { parseAddress } from '../protocol/address.js'
import { Kind, MAX_FILE_BYTES, MAX_TTL_MS, Priority } from '../protocol/envelope.js'
import { ChaparError, ErrorCode, InputError } from '../protocol/errors.js'
import { fromHex } from '../protocol/bytes.js'
import { writeBatch } from '../queue/db.js'
import type { InboxItem } from '../queue/inbox.js'
import { isFinal } from '../queue/outbox.js'
import { compose, DEFAULT_TTL_MS, parseDuration, parsePriority } from './compose.js'
import { openHome } from './client-home.js'
import { initHome, loadIdentity, resolveHome } from './identity.js'
import { printable, printableLine, shortAddress } from './printable.js'
import { LiveLine } from './progress.js'
import { runSync } from './sync-driver.js'
import { datagramOptions } from '../protocol/udp-url.js'
import type { SyncEvent } from './sync-engine.js'
import { connectRelay, DEFAULT_WS_STREAMS, MAX_WS_STREAMS, parseRelayUrl } from './transports.js'

type Out = (line: string) => void
const stdout: Out = (line) => process.stdout.write(line + '\n')

export async function cmdInit(opts: { home?: string }, out: Out = stdout): Promise<number> {
  const home = resolveHome(opts.home)
  const id = await initHome(home)
  out(id.addressText)
  return 0
}

export async function cmdWhoami(opts: { home?: string }, out: Out = stdout): Promise<number> {
  const id = await loadIdentity(resolveHome(opts.home))
  out(id.addressText)
  return 0
}

export async function cmdSend(
  opts: { home?: string; to: string; text?: string; file?: string; ttl?: string; priority?: string },
  out: Out = stdout,
): Promise<number> {
  const to = parseAddress(opts.to)
  if (opts.text === undefined && opts.file === undefined) throw new InputError('nothing to send: give --text, --file, or both')
  const ttlMs = opts.ttl ? parseDuration(opts.ttl) : DEFAULT_TTL_MS
  if (ttlMs > MAX_TTL_MS) throw new InputError(`--ttl may be at most ${MAX_TTL_MS / 86_400_000}d (relays refuse longer), got "${opts.ttl}"`)
  const priority = opts.priority ? parsePriority(opts.priority) : Priority.normal
  let file: { name: string; data: Uint8Array } | undefined
  if (opts.file !== undefined) {
    try {
      const st = await stat(opts.file)
      if (!st.isFile()) throw new InputError(`${opts.file} is not a regular file`)
      if (st.size > MAX_FILE_BYTES) throw new ChaparError(ErrorCode.TOO_LARGE, `${opts.file} is ${st.size} bytes; the limit is ${MAX_FILE_BYTES}`)
      file = { name: path.basename(opts.file), data: new Uint8Array(await readFile(opts.file)) }
    } catch (err) {
      if (err instanceof ChaparError) throw err
      throw new InputError(`cannot read file ${opts.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  const home = await openHome(resolveHome(opts.home))
  try {
    const now = Date.now()
    const base = { outbox: home.outbox, me: home.me, to, ttlMs, priority }
    // Text and a file go as two envelopes, the text first and the file naming
    // it: on a link that is up for a minute, the words get out even if the
    // video does not. One atomic batch, so both are queued or neither.
    const parts =
      opts.text !== undefined && file
        ? (() => {
            const text = compose({ ...base, content: { kind: Kind.report, text: opts.text }, now })
            const attachment = compose({ ...base, content: { kind: Kind.report, file, ref: fromHex(text.record.id) }, now: now + 1 })
            return [text, attachment]
          })()
        : [compose({ ...base, content: { kind: Kind.report, ...(opts.text !== undefined ? { text: opts.text } : {}), ...(file ? { file } : {}) }, now })]
    await writeBatch(home.db, parts.flatMap((p) => p.ops), true)
    for (const _ of parts) home.outbox.noteQueued()
    for (const p of parts) out(p.record.id)
  } finally {
    await home.close()
  }
  return 0
}

export async function cmdSync(
  opts: { home?: string; relay?: string[]; untilEmpty?: boolean; timeout?: string; json?: boolean; rate?: string; mtu?: string; wsStreams?: string },
  out: Out = stdout,
): Promise<number> {
  const relays = [...new Set((opts.relay ?? []).map(parseRelayUrl))]
  if (relays.length === 0) throw new InputError('no relay given: use --relay ws://host:port or udp://host:port?key=… (may be repeated)')
  const datagram = datagramOptions(opts)
  const wsStreams = opts.wsStreams === undefined ? DEFAULT_WS_STREAMS : Number(opts.wsStreams)
  if (!(Number.isInteger(wsStreams) && wsStreams >= 1 && wsStreams <= MAX_WS_STREAMS)) throw new InputError(`--ws-streams must be a whole number from 1 to ${MAX_WS_STREAMS}, got "${opts.wsStreams}"`)
  const timeoutMs = opts.timeout !== undefined ? parseDuration(opts.timeout) : undefined
  const home = await openHome(resolveHome(opts.home))
  const live = new LiveLine()
  const t = { accepted: 0, received: 0, receipts: 0, delivered: 0, quarantined: 0, duplicates: 0, rejected: 0, retrying: '' }
  let toUpload = 0
  const render = (force = false): void => {
    const parts = [`sync ${relays.length === 1 ? relays[0] : relays.length + ' relays'}:`, `up ${t.accepted}/${toUpload}`, `down ${t.received}`]
    if (t.delivered) parts.push(`delivered ${t.delivered}`)
    if (t.quarantined) parts.push(`quarantined ${t.quarantined}`)
    if (t.rejected) parts.push(`rejected ${t.rejected}`)
    if (t.retrying) parts.push(t.retrying)
    live.update(parts.join(' · '), force)
  }
  const onEvent = (e: SyncEvent): void => {
    switch (e.type) {
      case 'accepted':
        t.accepted += e.ids.length
        t.retrying = ''
        break
      case 'received':
        if (e.as === 'report') t.received++
        else if (e.as === 'receipt') t.receipts++
        else if (e.as === 'quarantined') t.quarantined++
        else t.duplicates++
        if (e.as === 'report') toUpload += relays.length // its receipt goes out too
        break
      case 'delivered':
        t.delivered += e.ids.length
        break
      case 'rejected':
        t.rejected++
        break
      case 'connected':
        t.retrying = ''
        break
      default:
        break
    }
    render()
  }
  try {
    const now = Date.now()
    const expired = await home.outbox.expire(now)
    for (const r of expired) if (r.kind === 'report') process.stderr.write(`expired undelivered: ${r.id} (to ${r.to.slice(0, 16)}…)\n`)
    for (const r of relays) toUpload += (await home.outbox.pendingFor(r, now)).length
    render(true)
    const ac = new AbortController()
    const onSignal = (): void => ac.abort(new ChaparError(ErrorCode.TIMEOUT, 'interrupted'))
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const report = await runSync(home.context(onEvent), {
      relays,
      connect: (url, role, login) => connectRelay(url, { ...datagram, wsStreams: role === 'upload' ? wsStreams : 1, login }),
      untilEmpty: Boolean(opts.untilEmpty),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      signal: ac.signal,
      onRetry: (relay, err, delay) => {
        t.retrying = `retry ${relay} in ${(delay / 1000).toFixed(1)}s (${printableLine(err.message)})`
        render(true)
      },
    })
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    render(true)
    live.done()
    const pending: string[] = []
    const later = Date.now()
    for (const r of relays) {
      const n = (await home.outbox.pendingFor(r, later)).length
      if (n > 0) pending.push(`${n} not yet accepted by ${r}`)
    }
    for (const r of report.relays) if (!r.ok && opts.untilEmpty) pending.push(`${r.relay} not finished${r.error ? ` (${printableLine(r.error)})` : ''}`)
    const rejected = report.relays.flatMap((r) => r.rejected.map((x) => `${x.id.slice(0, 12)} rejected by ${r.relay}: ${x.code} ${printableLine(x.message)}`))
    if (opts.json) {
      out(JSON.stringify({ ok: report.ok && pending.length === 0, timed_out: report.timedOut, relays: report.relays, pending, totals: t }))
    }
    if (opts.untilEmpty && (pending.length > 0 || !report.ok)) {
      const what = [...pending, ...rejected].join('; ') || 'unfinished'
      process.stderr.write(`sync ${report.timedOut ? 'timed out' : 'incomplete'}: ${what}\n`)
      return 1
    }
    if (!opts.json) out(`sync done: ${t.accepted} uploaded, ${t.received} received, ${t.delivered} confirmed delivered${t.quarantined ? `, ${t.quarantined} quarantined (see chapar inbox --quarantined)` : ''}`)
    return 0
  } finally {
    await home.close()
  }
}

export async function cmdStatus(opts: { home?: string; json?: boolean; all?: boolean }, out: Out = stdout): Promise<number> {
  const home = await openHome(resolveHome(opts.home))
  try {
    await home.outbox.expire(Date.now())
    const records = (await home.outbox.list()).filter((r) => opts.all || r.kind === 'report')
    if (opts.json) {
      out(JSON.stringify(records.map((r) => ({
        id: r.id,
        to: r.to,
        kind: r.kind,
        state: r.state,
        relays: r.relays,
        bytes: r.bytes,
        priority: Object.keys(Priority).find((k) => Priority[k as keyof typeof Priority] === r.priority),
        created_at: new Date(r.created_at).toISOString(),
        expires_at: new Date(r.expires_at).toISOString(),
        ...(r.accepted_at ? { accepted_at: new Date(r.accepted_at).toISOString() } : {}),
        ...(r.delivered_at ? { delivered_at: new Date(r.delivered_at).toISOString() } : {}),
        ...(r.expired_at ? { expired_at: new Date(r.expired_at).toISOString() } : {}),
        summary: r.summary,
      })), null, 2))
      return 0
    }
    if (records.length === 0) {
      out('outbox is empty')
      return 0
    }
    for (const r of records) {
      out(`${r.id.slice(0, 16)}  ${r.state.padEnd(9)}  ${String(r.bytes).padStart(9)} B  to ${shortAddress(r.to)}  relays ${r.relays.length}  ${printableLine(r.summary ?? '')}`)
    }
    const open = records.filter((r) => !isFinal(r)).length
    out(`${records.length} messages, ${open} not yet delivered`)
    return 0
  } finally {
    await home.close()
  }
}

export async function cmdInbox(opts: { home?: string; json?: boolean; quarantined?: boolean }, out: Out = stdout): Promise<number> {
  const home = await openHome(resolveHome(opts.home))
  try {
    if (opts.quarantined) {
      const q = await home.inbox.quarantined()
      if (opts.json) out(JSON.stringify(q.map((x) => ({ ...x, received_at: new Date(x.received_at).toISOString() })), null, 2))
      else if (q.length === 0) out('nothing quarantined')
      else for (const x of q) out(`${x.id.slice(0, 16)}  ${x.code}  ${printableLine(x.reason)}`)
      return 0
    }
    const items = await home.inbox.items()
    if (opts.json) {
      out(JSON.stringify(items.map((x) => ({ ...x, created_at: new Date(x.created_at).toISOString(), received_at: new Date(x.received_at).toISOString() })), null, 2))
      return 0
    }
    if (items.length === 0) out('inbox is empty')
    // Attachments sent as their own envelopes are shown under their report —
    // only a report of the same sender: anyone can name any id.
    const fromOf = new Map(items.map((x) => [x.id, x.from]))
    const underReport = (x: InboxItem): boolean => x.ref !== undefined && fromOf.get(x.ref) === x.from
    const attached = new Map<string, InboxItem[]>()
    for (const x of items) if (underReport(x)) attached.set(x.ref!, [...(attached.get(x.ref!) ?? []), x])
    for (const x of items) {
      if (underReport(x)) continue
      out(`${x.id.slice(0, 16)}  from ${shortAddress(x.from)}  ${new Date(x.created_at).toISOString()}`)
      if (x.ref) out(`  (an attachment of report ${x.ref.slice(0, 16)}, not in this inbox${fromOf.has(x.ref) ? ' from this sender' : ' yet'})`)
      if (x.text !== undefined) out(`  ${printable(x.text).split('\n').join('\n  ')}`)
      for (const a of [x, ...(attached.get(x.id) ?? [])]) if (a.file) out(`  attachment: ${printableLine(a.file)} (${a.file_bytes} bytes)`)
    }
    const q = await home.inbox.quarantined()
    if (q.length > 0) out(`${q.length} quarantined (failed verification): chapar inbox --quarantined`)
    return 0
  } finally {
    await home.close()
  }
}
