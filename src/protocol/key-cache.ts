/** Bounded caches of imported key objects (node:crypto imports are not free), shared by signature.ts and box.ts. */

/** A map key for raw key bytes. */
export function cacheKey(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1')
}

/** Add `value`, evicting the oldest entry once `max` are held. */
export function remember<V>(cache: Map<string, V>, max: number, id: string, value: V): void {
  if (cache.size >= max) cache.delete(cache.keys().next().value!)
  cache.set(id, value)
}

/** The cached value for `bytes`, made (and remembered) on a miss. */
export function cached<V>(cache: Map<string, V>, max: number, bytes: Uint8Array, make: () => V): V {
  const id = cacheKey(bytes)
  let value = cache.get(id)
  if (value === undefined) {
    value = make()
    remember(cache, max, id, value)
  }
  return value
}
