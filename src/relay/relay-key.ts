/**
 * The relay's static X25519 key for the datagram transport, kept in its
 * own LevelDB under `k!udp`, made on first start. Its public half is in the
 * relay's udp:// URL; keeping it across restarts keeps that URL valid.
 */
import type { Db } from '../queue/db.js'
import { writeBatch } from '../queue/db.js'

const KEY = 'k!udp'

export async function relayUdpKey(db: Db, randomBytes: (n: number) => Uint8Array): Promise<Uint8Array> {
  const have = await db.get(KEY)
  if (have !== undefined && have.length === 32) return have
  const sk = randomBytes(32)
  await writeBatch(db, [{ type: 'put', key: KEY, value: sk }], true)
  return sk
}
