import { createHash } from 'node:crypto'
import { utf8 } from './bytes.js'

export const HASH_BYTES = 32

const DOMAIN_ID = utf8('chapar/v1/id\0')
const DOMAIN_MAILBOX = utf8('chapar/v1/mailbox\0')

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return new Uint8Array(h.digest())
}

/**
 * A message's id: SHA-256 over the exact sealed envelope bytes. Each side
 * computes it; an id read from the wire is only a claim to be checked.
 */
export function messageId(envelope: Uint8Array): Uint8Array {
  return sha256(DOMAIN_ID, envelope)
}

/** The mailbox a relay files messages under: a hash of the owner's signing key. */
export function mailboxId(signPublicKey: Uint8Array): Uint8Array {
  return sha256(DOMAIN_MAILBOX, signPublicKey)
}
