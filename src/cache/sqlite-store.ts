/**
 * The persistent tier: SQLite through better-sqlite3, so a restarted coordinator comes back
 * warm. WAL journal; one table whose name carries the format version (`cache_v1`); a TTL kept
 * per row and honoured on read; expired rows swept on open and every `sweepIntervalMs`; row and
 * byte caps kept by evicting the least recently used rows ("LRU-ish": a hit rewrites the row's
 * access time at most once a second).
 *
 * Trade-off: better-sqlite3 is synchronous, so each operation runs on the coordinator's event
 * loop; on a local disk with WAL these are tens of microseconds, and the memory tier in front
 * absorbs the hot keys.
 */

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { InfergridError } from '../errors.ts';
import type { CacheStore, StoreStats } from './store.ts';

export const SQLITE_TABLE = 'cache_v1';
/** A row's access time is rewritten at most this often, ms. */
const TOUCH_GRANULARITY_MS = 1000;

export interface SqliteStoreOptions {
  /** Database file; created if missing. */
  path: string;
  maxBytes: number;
  maxRows: number;
  /** How often expired rows are deleted, ms. */
  sweepIntervalMs: number;
  now?: () => number;
}

export class SqliteStore implements CacheStore {
  readonly name = 'sqlite';
  readonly path: string;
  readonly #db: Database.Database;
  readonly #options: Required<SqliteStoreOptions>;
  readonly #stmt: {
    get: Database.Statement<
      [string],
      { value: Buffer; expires_at: number | null; accessed_at: number; size: number }
    >;
    touch: Database.Statement<[number, string]>;
    upsert: Database.Statement<[string, Buffer, number | null, number, number]>;
    sizeOf: Database.Statement<[string], { size: number }>;
    delete: Database.Statement<[string]>;
    has: Database.Statement<[string, number], { one: number }>;
    clearAll: Database.Statement<[]>;
    clearPrefix: Database.Statement<[string, string]>;
    oldest: Database.Statement<[number], { key: string; size: number }>;
    sweep: Database.Statement<[number]>;
    totals: Database.Statement<[], { rows: number; bytes: number | null }>;
  };
  #rows = 0;
  #bytes = 0;
  #evictions = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: SqliteStoreOptions) {
    this.#options = { now: Date.now, ...options };
    this.path = options.path;
    try {
      mkdirSync(dirname(options.path), { recursive: true });
      this.#db = new Database(options.path);
      this.#db.pragma('journal_mode = WAL');
      this.#db.pragma('synchronous = NORMAL');
      this.#db.exec(
        `CREATE TABLE IF NOT EXISTS ${SQLITE_TABLE} (
           key TEXT PRIMARY KEY,
           value BLOB NOT NULL,
           expires_at INTEGER,
           accessed_at INTEGER NOT NULL,
           size INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS ${SQLITE_TABLE}_accessed ON ${SQLITE_TABLE} (accessed_at);`,
      );
      const t = SQLITE_TABLE;
      this.#stmt = {
        get: this.#db.prepare(`SELECT value, expires_at, accessed_at, size FROM ${t} WHERE key = ?`),
        touch: this.#db.prepare(`UPDATE ${t} SET accessed_at = ? WHERE key = ?`),
        upsert: this.#db.prepare(
          `INSERT INTO ${t} (key, value, expires_at, accessed_at, size) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
             accessed_at = excluded.accessed_at, size = excluded.size`,
        ),
        sizeOf: this.#db.prepare(`SELECT size FROM ${t} WHERE key = ?`),
        delete: this.#db.prepare(`DELETE FROM ${t} WHERE key = ?`),
        has: this.#db.prepare(
          `SELECT 1 AS one FROM ${t} WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)`,
        ),
        clearAll: this.#db.prepare(`DELETE FROM ${t}`),
        clearPrefix: this.#db.prepare(`DELETE FROM ${t} WHERE substr(key, 1, length(?)) = ?`),
        oldest: this.#db.prepare(`SELECT key, size FROM ${t} ORDER BY accessed_at ASC LIMIT ?`),
        sweep: this.#db.prepare(`DELETE FROM ${t} WHERE expires_at IS NOT NULL AND expires_at <= ?`),
        totals: this.#db.prepare(`SELECT count(*) AS rows, sum(size) AS bytes FROM ${t}`),
      };
      this.#sweep();
    } catch (err) {
      throw new InfergridError(
        'CONFIG_INVALID',
        `cache store sqlite: cannot use ${options.path}: ${(err as Error).message} (delete or move the file, or point cache.sqlite.path elsewhere)`,
        { cause: err },
      );
    }
    this.#timer = setInterval(() => this.#sweep(), options.sweepIntervalMs);
    this.#timer.unref();
  }

  #sweep(): void {
    this.#stmt.sweep.run(this.#options.now());
    const { rows, bytes } = this.#stmt.totals.get()!;
    this.#rows = rows;
    this.#bytes = bytes ?? 0;
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    return (await this.getEntry(key))?.value;
  }

  async getEntry(key: string): Promise<{ value: Uint8Array; ttlMs: number | undefined } | undefined> {
    const row = this.#stmt.get.get(key);
    if (!row) return undefined;
    const now = this.#options.now();
    if (row.expires_at !== null && row.expires_at <= now) {
      this.#remove(key, row.size);
      return undefined;
    }
    // LRU-ish: the access time moves on at most once a second per row, so a hot key is not a write per hit
    if (now - row.accessed_at >= TOUCH_GRANULARITY_MS) this.#stmt.touch.run(now, key);
    return { value: row.value, ttlMs: row.expires_at === null ? undefined : row.expires_at - now };
  }

  async set(key: string, value: Uint8Array, ttlMs?: number): Promise<void> {
    const size = value.byteLength + key.length;
    if (size > this.#options.maxBytes) {
      // bigger than the whole budget: not kept, and an older value under the key must not survive it
      await this.delete(key);
      return;
    }
    const now = this.#options.now();
    const previous = this.#stmt.sizeOf.get(key);
    this.#stmt.upsert.run(
      key,
      Buffer.from(value.buffer, value.byteOffset, value.byteLength),
      ttlMs === undefined ? null : now + ttlMs,
      now,
      size,
    );
    this.#rows += previous ? 0 : 1;
    this.#bytes += size - (previous?.size ?? 0);
    this.#enforceCaps();
  }

  #enforceCaps(): void {
    const { maxRows, maxBytes } = this.#options;
    while (this.#rows > maxRows || this.#bytes > maxBytes) {
      const victims = this.#stmt.oldest.all(Math.max(1, Math.min(64, this.#rows - maxRows)));
      if (victims.length === 0) break;
      for (const v of victims) {
        this.#remove(v.key, v.size);
        this.#evictions++;
        if (this.#rows <= maxRows && this.#bytes <= maxBytes) break;
      }
    }
  }

  #remove(key: string, size: number): void {
    if (this.#stmt.delete.run(key).changes > 0) {
      this.#rows--;
      this.#bytes -= size;
    }
  }

  async delete(key: string): Promise<boolean> {
    const row = this.#stmt.get.get(key);
    if (!row) return false;
    this.#remove(key, row.size);
    // an expired row not yet swept was not there
    return row.expires_at === null || row.expires_at > this.#options.now();
  }

  async has(key: string): Promise<boolean> {
    return this.#stmt.has.get(key, this.#options.now()) !== undefined;
  }

  async clear(prefix?: string): Promise<number> {
    // expired rows first, so the count is of entries that were really there
    this.#sweep();
    const changes =
      prefix === undefined
        ? this.#stmt.clearAll.run().changes
        : this.#stmt.clearPrefix.run(prefix, prefix).changes;
    this.#sweep();
    return changes;
  }

  stats(): StoreStats {
    return { entries: this.#rows, bytes: this.#bytes, evictions: this.#evictions, errors: 0 };
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#db.close();
  }
}
