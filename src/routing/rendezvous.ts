/**
 * Rendezvous (highest random weight) hashing for shard keys: every worker gets a score for
 * the key, the highest wins, and the rest in descending order are the fallbacks. Adding a
 * worker moves only the keys it now wins (about 1/N of them); removing one moves only its
 * own keys. No ring, no virtual nodes, and every coordinator computes the same order.
 */

/** FNV-1a over a string's UTF-16 code units, 32-bit. */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** FNV-1a over bytes, 32-bit. */
export function hashBytes(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's finaliser: spreads the combined hash so scores are independent per worker. */
function mix(h: number): number {
  let x = h >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The score of a worker for a key; both arguments are 32-bit hashes. */
export function rendezvousScore(keyHash: number, workerHash: number): number {
  return mix(keyHash ^ mix(workerHash + 0x9e3779b9));
}

/** Worker ids in the key's preference order (best first). Ties broken by id. */
export function rendezvousOrder(keyHash: number, workerIds: readonly string[]): string[] {
  return workerIds
    .map((id) => ({ id, score: rendezvousScore(keyHash, hashString(id)) }))
    .sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((s) => s.id);
}
