/**
 * Who may use a relay. In `open` mode anyone may upload, and uploads never
 * log in, so the relay cannot tell who sends to whom. In `allowlist` mode
 * only connections logged in (AUTH) with an allowed signing key may upload;
 * that is for closed groups, whose members the operator knows anyway.
 * Banned keys may neither log in nor upload, in either mode. Mailbox logins
 * need no allowlisting: a mailbox holds only what allowed senders sent it.
 *
 * Keys come from the config (fixed) and from the admin API (kept in the
 * relay's LevelDB, so they survive restarts).
 */
import { toHex } from '../protocol/bytes.js'
import { parseAddress } from '../protocol/address.js'
import { InputError } from '../protocol/errors.js'
import { type Db, scanKeys, writeBatch } from '../queue/db.js'

export type AccessMode = 'open' | 'allowlist'
export type AccessListName = 'allow' | 'deny'

const PREFIX: Record<AccessListName, string> = { allow: 'acl!allow!', deny: 'acl!deny!' }

/** A signing public key, hex, from a `ch1.` address or 64 hex digits; InputError otherwise. */
export function parseKey(text: string): string {
  const t = text.trim()
  if (/^[0-9a-fA-F]{64}$/.test(t)) return t.toLowerCase()
  if (t.startsWith('ch1.')) return toHex(parseAddress(t).signPublicKey)
  throw new InputError(`"${t.slice(0, 80)}" is not a chapar address (ch1.…) or a 64-hex-digit signing key`)
}

export interface AccessView {
  mode: AccessMode
  allow: { config: string[]; admin: string[] }
  deny: { config: string[]; admin: string[] }
}

export class AccessList {
  private readonly fixed: Record<AccessListName, ReadonlySet<string>>
  private readonly added: Record<AccessListName, Set<string>> = { allow: new Set(), deny: new Set() }

  constructor(
    readonly mode: AccessMode,
    config: { allow: readonly string[]; deny: readonly string[] },
    private readonly db?: Db,
  ) {
    this.fixed = { allow: new Set(config.allow.map(parseKey)), deny: new Set(config.deny.map(parseKey)) }
  }

  /** Read the keys the admin API added earlier. */
  async load(): Promise<void> {
    if (!this.db) return
    for (const list of ['allow', 'deny'] as const) {
      for await (const k of scanKeys(this.db, PREFIX[list])) this.added[list].add(k.slice(PREFIX[list].length))
    }
  }

  isBanned(keyHex: string): boolean {
    return this.fixed.deny.has(keyHex) || this.added.deny.has(keyHex)
  }

  /** May this key upload? (A banned key never may.) */
  mayUpload(keyHex: string | undefined): boolean {
    if (keyHex !== undefined && this.isBanned(keyHex)) return false
    if (this.mode === 'open') return true
    return keyHex !== undefined && (this.fixed.allow.has(keyHex) || this.added.allow.has(keyHex))
  }

  /** Add or remove a key through the admin API; returns whether anything changed. */
  async set(list: AccessListName, key: string, present: boolean): Promise<boolean> {
    const hex = parseKey(key)
    if (!present && this.fixed[list].has(hex)) throw new InputError(`that key is in the config file's ${list} list; remove it there`)
    const had = this.added[list].has(hex)
    if (had === present) return false
    if (this.db) await writeBatch(this.db, [present ? { type: 'put', key: PREFIX[list] + hex, value: new Uint8Array(0) } : { type: 'del', key: PREFIX[list] + hex }], true)
    if (present) this.added[list].add(hex)
    else this.added[list].delete(hex)
    return true
  }

  view(): AccessView {
    const sorted = (s: Iterable<string>): string[] => [...s].sort()
    return {
      mode: this.mode,
      allow: { config: sorted(this.fixed.allow), admin: sorted(this.added.allow) },
      deny: { config: sorted(this.fixed.deny), admin: sorted(this.added.deny) },
    }
  }
}
