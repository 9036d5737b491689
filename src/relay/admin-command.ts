/** `chapar admin …`: a thin client of a running relay's admin listener. */
import { ChaparError, ErrorCode, InputError } from '../protocol/errors.js'
import { parseKey } from './access.js'

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:7002'
const REQUEST_TIMEOUT_MS = 10_000

const ROUTES = {
  stats: { method: 'GET', path: '/stats' },
  mailboxes: { method: 'GET', path: '/mailboxes' },
  'purge-expired': { method: 'POST', path: '/purge-expired' },
  metrics: { method: 'GET', path: '/metrics' },
  access: { method: 'GET', path: '/access' },
  ban: { method: 'POST', path: '/access/ban' },
  unban: { method: 'POST', path: '/access/unban' },
  allow: { method: 'POST', path: '/access/allow' },
  disallow: { method: 'POST', path: '/access/disallow' },
} as const

export type AdminAction = keyof typeof ROUTES

export async function cmdAdmin(what: AdminAction, opts: { admin?: string; limit?: string; key?: string }): Promise<number> {
  const base = opts.admin ?? process.env.CHAPAR_ADMIN_URL ?? DEFAULT_ADMIN_URL
  let url: URL
  try {
    url = new URL(ROUTES[what].path, base)
  } catch {
    throw new InputError(`--admin "${base}" is not a URL; expected e.g. ${DEFAULT_ADMIN_URL}`)
  }
  if (url.protocol !== 'http:') throw new InputError(`--admin must be an http:// URL, got "${base}"`)
  if (opts.limit !== undefined) url.searchParams.set('limit', opts.limit)
  if (opts.key !== undefined) url.searchParams.set('key', parseKey(opts.key))
  let res: Response
  try {
    res = await fetch(url, { method: ROUTES[what].method, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message
    throw new ChaparError(ErrorCode.DISCONNECTED, `no relay admin listener at ${url.origin} (${cause}); start the relay with --admin-port`)
  }
  const text = await res.text()
  if (!res.ok) {
    let message = text.trim()
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? message
    } catch {
      // not JSON: print it as it came
    }
    throw new ChaparError(ErrorCode.BAD_INPUT, `relay admin ${ROUTES[what].path}: ${res.status} ${message.split('\n')[0]}`)
  }
  process.stdout.write(text.endsWith('\n') ? text : text + '\n')
  return 0
}
