/**
 * The shared control plane: operators' changes made on one coordinator (repository load and
 * unload, traffic splits, worker removals and re-admissions) reach every coordinator of the
 * cluster, through versioned records in Redis:
 *
 *   hash     `${ns}ig:v1:cluster:control`       field `repository:<model>` | `traffic:<model>` |
 *                                               `removal:<workerId>`; value JSON
 *                                               {seq, kind, target, op, payload, by, at}
 *   counter  `${ns}ig:v1:cluster:control:seq`   INCR gives each write its seq
 *   channel  `${ns}ig:v1:cluster:control:feed`  {field, seq} after each write
 *
 * Ordering rule: **the later committed write wins.** A write takes its seq (INCR) when it
 * reaches Redis, and a Lua script stores it only if the field's stored seq is lower, so among
 * concurrent writers of one field the highest seq stays, and every coordinator applies what
 * stays. One field holds only its latest record (the latest load or unload of a model, not the
 * history). Changes of one field made on one coordinator are written in the order they started,
 * and records from others about a field are held back while a change of it is being made here,
 * so this coordinator's own state never ends on a record older than the one Redis keeps.
 *
 * Readers apply a record whose seq is newer than the last they applied for its field: on the
 * feed at once, and by a full, bounded re-read (at start, on every reconnect and every
 * reconcileIntervalMs), so a coordinator that starts later, or missed messages, converges. A
 * record is untrusted input: its size and count are capped, its shape checked (zod), and a bad
 * one is logged and skipped; the applier checks its content again as it would an operator's.
 *
 * Redis restarted (empty): every coordinator still holds the records its state reflects, and
 * the next re-read writes back those Redis lost (each with its own seq, only where the field is
 * absent), as members re-announce their leases. A write takes a seq above every seq this
 * coordinator has seen (the counter is raised first when it is lower), so a change made after a
 * restart still wins over the records written back.
 *
 * Redis down: a change is applied here as always (an operator's change never fails because
 * Redis is down, and serving never waits on Redis); its write is kept (the latest per field)
 * and retried with backoff until Redis answers, with a warning and the pending-writes gauge.
 * Once it lands it takes a seq then, so it wins over changes committed meanwhile elsewhere, and
 * it is applied here again like anyone's record, so this coordinator converges to it too.
 */

import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { z } from 'zod';
import type { ClusterConfig } from '../config/index.ts';
import type { ControlEntry, ControlJournal, ControlKind, ControlOp } from '../coordinator/index.ts';
import { toInfergridError } from '../errors.ts';
import type { Logger } from '../telemetry/index.ts';
import { failFastRedis, redisReconnectDelayMs } from '../util/redis.ts';
import { redactUrl } from './member.ts';

export const CONTROL_PREFIX = 'ig:v1:cluster:control';

/** Records read by one full re-read, at most; a hash holding more is truncated with a warning. */
export const DEFAULT_MAX_CONTROL_RECORDS = 10_000;
/** One record's JSON, at most, bytes; a larger one is skipped (and never written). */
export const DEFAULT_MAX_CONTROL_RECORD_BYTES = 256 * 1024;
/** A feed message, at most, bytes. */
export const MAX_FEED_MESSAGE_BYTES = 1024;
/** A record's target (model name or worker id), at most, characters. */
export const MAX_CONTROL_TARGET_CHARS = 512;
/** Skipped records remembered as logged, at most. */
const MAX_SKIPS_REMEMBERED = 1024;
export const DEFAULT_WRITE_RETRY_INITIAL_DELAY_MS = 100;
export const DEFAULT_WRITE_RETRY_MAX_DELAY_MS = 5_000;

export const CONTROL_KINDS = ['repository', 'traffic', 'removal'] as const satisfies readonly ControlKind[];

/** The ops each kind may carry. */
const OPS_OF: Record<ControlKind, readonly ControlOp[]> = {
  repository: ['load', 'unload'],
  traffic: ['set'],
  removal: ['remove', 'readmit'],
};

const recordSchema = z
  .object({
    seq: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    kind: z.enum(CONTROL_KINDS),
    target: z.string().min(1).max(MAX_CONTROL_TARGET_CHARS),
    op: z.enum(['load', 'unload', 'set', 'remove', 'readmit']),
    payload: z.record(z.string(), z.unknown()),
    by: z.string().max(256),
    at: z.number().finite(),
  })
  .strict()
  .refine((r) => OPS_OF[r.kind].includes(r.op), { message: 'op does not belong to kind' });

const feedSchema = z
  .object({ field: z.string().max(MAX_CONTROL_TARGET_CHARS + 16), seq: z.number().int().positive() })
  .strict();

/** One control record, as stored and as handed to the applier. */
export type ControlRecord = z.infer<typeof recordSchema>;

/** Applies another coordinator's record here, through the same code path as an operator's change. */
export interface ControlApplier {
  /**
   * Resolves once applied; throws when it could not be (the record is retried at the next
   * full re-read, its failure logged once per record).
   */
  apply(record: ControlRecord): Promise<void>;
}

export interface ControlPlaneOptions {
  redis: ClusterConfig['redis'];
  /** Full re-read of the records besides the feed, ms. */
  reconcileIntervalMs: number;
  applier: ControlApplier;
  logger: Logger;
  /** This coordinator's id in the records it writes (`by`). Default: host/pid/random. */
  instanceId?: string | undefined;
  /** Default DEFAULT_MAX_CONTROL_RECORDS. */
  maxRecords?: number | undefined;
  /** Default DEFAULT_MAX_CONTROL_RECORD_BYTES. */
  maxRecordBytes?: number | undefined;
  /** First delay before a failed write is retried, ms; doubles up to writeRetryMaxDelayMs. */
  writeRetryInitialDelayMs?: number | undefined;
  writeRetryMaxDelayMs?: number | undefined;
}

/** What the control plane has done, for metrics and tests. */
export interface ControlPlaneStats {
  /** Records from Redis applied here, per kind (own writes that landed at once are not counted). */
  applied: Record<ControlKind, number>;
  /** Writes kept until Redis answers. */
  pendingWrites: number;
  /** Records written (landed in Redis). */
  written: number;
  /** Writes that failed (each retried). */
  writeFailures: number;
  /** Records skipped: malformed, oversized, or beyond maxRecords. */
  skipped: number;
  /** Records the applier refused or failed (each retried at the next re-read, counted each time). */
  applyFailures: number;
  /** Full re-reads completed. */
  reconciles: number;
  /** Records written back after Redis lost them. */
  restored: number;
}

/** A field of the hash: `kind:target`. */
export function controlField(kind: ControlKind, target: string): string {
  return `${kind}:${target}`;
}

/** Stores ARGV[3] under field ARGV[1] only if the stored record's seq is below ARGV[2]. */
const SET_IF_NEWER = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and type(rec) == 'table' and type(rec.seq) == 'number' and rec.seq >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`;

/**
 * Up to ARGV[1] fields of the hash; a value longer than ARGV[2] bytes comes back as its length
 * (a number) instead of its text, so nothing large crosses the wire. Returns {pairs, truncated}.
 */
const READ_ALL = `
local cap = tonumber(ARGV[1])
local maxBytes = tonumber(ARGV[2])
local out = {}
local n = 0
local cursor = '0'
repeat
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 256)
  cursor = r[1]
  local kv = r[2]
  for i = 1, #kv, 2 do
    if n >= cap then return {out, 1} end
    n = n + 1
    out[#out + 1] = kv[i]
    local len = string.len(kv[i + 1])
    if len > maxBytes then out[#out + 1] = len else out[#out + 1] = kv[i + 1] end
  end
until cursor == '0'
return {out, 0}
`;

/** INCR, raised above ARGV[1] (the highest seq the writer has seen) when lower: after a restart the counter starts again at 0. */
const NEXT_SEQ = `
local v = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if v <= floor then
  v = floor + 1
  redis.call('SET', KEYS[1], v)
end
return v
`;

/** One field: its value, or its length when longer than ARGV[2] bytes, or nil. */
const READ_ONE = `
local len = redis.call('HSTRLEN', KEYS[1], ARGV[1])
if len == 0 then return nil end
if len > tonumber(ARGV[2]) then return len end
return redis.call('HGET', KEYS[1], ARGV[1])
`;

type ControlRedis = Redis & {
  igControlSet(key: string, field: string, seq: number, value: string): Promise<number>;
  igControlReadAll(key: string, cap: number, maxBytes: number): Promise<[(string | number)[], number]>;
  igControlReadOne(key: string, field: string, maxBytes: number): Promise<string | number | null>;
  igControlNextSeq(key: string, floor: number): Promise<number>;
};

interface PendingWrite {
  kind: ControlKind;
  target: string;
  op: ControlOp;
  payload: Record<string, unknown>;
  at: number;
}

export class ControlPlane implements ControlJournal {
  readonly instanceId: string;
  readonly #o: ControlPlaneOptions;
  readonly #logger: Logger;
  readonly #hashKey: string;
  readonly #seqKey: string;
  readonly #feedKey: string;
  readonly #maxRecords: number;
  readonly #maxRecordBytes: number;
  readonly #redis: ControlRedis;
  readonly #sub: Redis;
  /** Field -> the seq of the record this coordinator's state reflects. */
  readonly #applied = new Map<string, number>();
  /** Field -> the record this coordinator's state reflects, as stored: written back if Redis loses it. */
  readonly #known = new Map<string, string>();
  /** The highest seq seen here: a write takes a higher one. */
  #maxSeq = 0;
  /** Field -> changes of it being made here now. */
  readonly #local = new Map<string, number>();
  /** Field -> the last write slot of a change made here (writes go in the order changes began). */
  readonly #writeChain = new Map<string, Promise<void>>();
  /** Field -> the newest record from elsewhere held back while a change of it is made here. */
  readonly #held = new Map<string, ControlRecord>();
  /** Field -> the last apply queued (one field is applied one record at a time). */
  readonly #applyChain = new Map<string, Promise<void>>();
  /** Field -> the seq whose failure to apply was logged (logged once each). */
  readonly #failedSeq = new Map<string, number>();
  /** Skipped records already logged (field and reason). */
  readonly #skipLogged = new Set<string>();
  /** Writes that could not reach Redis, the latest per field, oldest first. */
  readonly #pending = new Map<string, PendingWrite>();
  #retryTimer: NodeJS.Timeout | undefined;
  /** A flush is running. */
  #flushing = false;
  /** A retry asked for while a flush ran: armed with this delay when it ends, ms. */
  #rearmMs: number | undefined;
  #retryDelayMs: number;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #reconciling: Promise<void> | undefined;
  #stopped = false;
  /** start() has run its first re-read: later (re)connections re-read on their own. */
  #started = false;
  readonly stats: ControlPlaneStats = {
    applied: { repository: 0, traffic: 0, removal: 0 },
    pendingWrites: 0,
    written: 0,
    writeFailures: 0,
    skipped: 0,
    applyFailures: 0,
    reconciles: 0,
    restored: 0,
  };

  constructor(options: ControlPlaneOptions) {
    if (!(Number.isInteger(options.reconcileIntervalMs) && options.reconcileIntervalMs > 0))
      throw new TypeError('reconcileIntervalMs must be a positive integer');
    this.#o = options;
    this.#logger = options.logger;
    this.instanceId = options.instanceId ?? `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`;
    const ns = options.redis.namespace;
    this.#hashKey = `${ns}${CONTROL_PREFIX}`;
    this.#seqKey = `${ns}${CONTROL_PREFIX}:seq`;
    this.#feedKey = `${ns}${CONTROL_PREFIX}:feed`;
    this.#maxRecords = options.maxRecords ?? DEFAULT_MAX_CONTROL_RECORDS;
    this.#maxRecordBytes = options.maxRecordBytes ?? DEFAULT_MAX_CONTROL_RECORD_BYTES;
    this.#retryDelayMs = options.writeRetryInitialDelayMs ?? DEFAULT_WRITE_RETRY_INITIAL_DELAY_MS;
    const { url, connectTimeoutMs } = options.redis;
    // fail fast while disconnected: the write is kept and retried here, nothing waits on Redis
    this.#redis = failFastRedis(options.redis) as ControlRedis;
    this.#redis.defineCommand('igControlSet', { numberOfKeys: 1, lua: SET_IF_NEWER });
    this.#redis.defineCommand('igControlReadAll', { numberOfKeys: 1, lua: READ_ALL });
    this.#redis.defineCommand('igControlReadOne', { numberOfKeys: 1, lua: READ_ONE });
    this.#redis.defineCommand('igControlNextSeq', { numberOfKeys: 1, lua: NEXT_SEQ });
    this.#sub = new Redis(url, {
      lazyConnect: true,
      connectTimeout: connectTimeoutMs,
      // a subscription waits for Redis (and is made again on every reconnect)
      maxRetriesPerRequest: null,
      retryStrategy: redisReconnectDelayMs,
    });
    // failures are reported by the operations that fail, not once per reconnect attempt
    this.#sub.on('error', () => {});
    this.#redis.on('ready', () => {
      if (this.#pending.size > 0) this.#scheduleRetry(0);
      // back after an outage (or first connected after start): catch up at once
      if (this.#started) void this.reconcile();
    });
    this.#sub.on('ready', () => {
      // messages published while disconnected are lost: the re-read catches up
      this.#sub.subscribe(this.#feedKey).catch(() => {});
      if (this.#started) void this.reconcile();
    });
    this.#sub.on('message', (channel: string, message: string) => {
      if (channel === this.#feedKey) void this.#onFeed(message);
    });
  }

  /**
   * Connects and reads every record once (bounded by the Redis timeouts), then follows the
   * feed and re-reads every reconcileIntervalMs. Never throws for Redis: unreachable, it says
   * so and keeps trying; changes made here meanwhile are kept and written once it answers.
   */
  async start(): Promise<void> {
    const connected = await Promise.allSettled([this.#redis.connect(), this.#sub.connect()]);
    const failed = connected.find((r) => r.status === 'rejected');
    if (!failed) {
      // followed before the first re-read, so nothing written in between is missed
      await this.#sub.subscribe(this.#feedKey).catch(() => {});
    } else {
      this.#logger.warn(
        { redis: redactUrl(this.#o.redis.url), err: (failed.reason as Error).message },
        'shared control plane: cannot reach Redis; changes made here apply here and are published once it answers',
      );
    }
    await this.reconcile();
    this.#started = true;
    this.#reconcileTimer = setInterval(() => void this.reconcile(), this.#o.reconcileIntervalMs);
    this.#reconcileTimer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#reconcileTimer);
    clearTimeout(this.#retryTimer);
    await this.#reconciling?.catch(() => {});
    this.#sub.disconnect();
    this.#redis.disconnect();
  }

  /** The seq of the record this coordinator's state reflects for a field (0: none). */
  appliedSeq(kind: ControlKind, target: string): number {
    return this.#applied.get(controlField(kind, target)) ?? 0;
  }

  // ---------------------------------------------------------------- writing

  begin(kind: ControlKind, target: string): ControlEntry {
    const field = controlField(kind, target);
    this.#local.set(field, (this.#local.get(field) ?? 0) + 1);
    const previous = this.#writeChain.get(field) ?? Promise.resolve();
    let release!: () => void;
    const slot = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.#writeChain.set(field, slot);
    let settled = false;
    const finish = async (write: { op: ControlOp; payload: Record<string, unknown> } | undefined) => {
      await previous;
      try {
        if (write) await this.#write(field, { kind, target, ...write, at: Date.now() });
      } finally {
        release();
        if (this.#writeChain.get(field) === slot) this.#writeChain.delete(field);
        const left = this.#local.get(field)! - 1;
        if (left > 0) this.#local.set(field, left);
        else {
          this.#local.delete(field);
          const held = this.#held.get(field);
          this.#held.delete(field);
          if (held) this.#consider(field, held);
        }
      }
    };
    return {
      commit: (op, payload) => {
        if (settled) return;
        settled = true;
        void finish({ op, payload });
      },
      abort: () => {
        if (settled) return;
        settled = true;
        void finish(undefined);
      },
    };
  }

  /** Writes a change made here; on failure keeps it (the latest per field) and retries. */
  async #write(field: string, change: PendingWrite): Promise<void> {
    // a newer change of the field supersedes one still waiting for Redis
    this.#pending.delete(field);
    try {
      const written = await this.#commit(field, change);
      // this coordinator made the change: its echo on the feed is not applied again
      if (written !== undefined && written.seq > (this.#applied.get(field) ?? 0)) {
        this.#applied.set(field, written.seq);
        this.#known.set(field, written.value);
      }
    } catch (err) {
      this.#keep(field, change, err);
    }
    this.stats.pendingWrites = this.#pending.size;
  }

  #keep(field: string, change: PendingWrite, err: unknown): void {
    this.stats.writeFailures++;
    this.#pending.delete(field);
    this.#pending.set(field, change);
    this.stats.pendingWrites = this.#pending.size;
    this.#logger.warn(
      { field, op: change.op, pending: this.#pending.size, err: toInfergridError(err).message },
      'shared control plane: Redis did not take a change made here; it applies here and is published once Redis answers',
    );
    this.#scheduleRetry(this.#retryDelayMs);
  }

  /**
   * INCR, store if newer, publish. Resolves with the seq, or undefined when the record cannot be
   * written at all (too large: logged; it stays a change of this coordinator only). Throws when
   * Redis fails.
   */
  async #commit(field: string, change: PendingWrite): Promise<{ seq: number; value: string } | undefined> {
    const body = { kind: change.kind, target: change.target, op: change.op, payload: change.payload };
    // the size is known before a seq is taken: seq and `at` add a few dozen bytes
    const draft = JSON.stringify({
      seq: Number.MAX_SAFE_INTEGER,
      ...body,
      by: this.instanceId,
      at: change.at,
    });
    if (Buffer.byteLength(draft) > this.#maxRecordBytes) {
      this.#logger.error(
        { field, bytes: Buffer.byteLength(draft), maxRecordBytes: this.#maxRecordBytes },
        'shared control plane: a change made here is too large to share; other coordinators do not see it',
      );
      return undefined;
    }
    const seq = await this.#redis.igControlNextSeq(this.#seqKey, this.#maxSeq);
    const value = JSON.stringify({ seq, ...body, by: this.instanceId, at: change.at });
    const stored = await this.#redis.igControlSet(this.#hashKey, field, seq, value);
    this.stats.written++;
    this.#maxSeq = Math.max(this.#maxSeq, seq);
    // not stored: a higher seq is there already, published by its writer
    if (stored === 1) await this.#redis.publish(this.#feedKey, JSON.stringify({ field, seq }));
    return { seq, value };
  }

  #scheduleRetry(delayMs: number): void {
    if (this.#stopped || this.#retryTimer) return;
    // one flush at a time (two would both find a kept change and write it twice): asked for
    // during a flush, the next one is armed when it ends
    if (this.#flushing) {
      this.#rearmMs = Math.min(this.#rearmMs ?? delayMs, delayMs);
      return;
    }
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#flushing = true;
      void this.#flush().finally(() => {
        this.#flushing = false;
        const rearmMs = this.#rearmMs;
        this.#rearmMs = undefined;
        if (rearmMs !== undefined && this.#pending.size > 0) this.#scheduleRetry(rearmMs);
      });
    }, delayMs);
    this.#retryTimer.unref();
  }

  /** Writes what is pending, oldest first; stops at the first failure and retries later. */
  async #flush(): Promise<void> {
    for (const [field, change] of [...this.#pending]) {
      if (this.#stopped) return;
      // a change of the field begun meanwhile writes itself (and supersedes this one)
      if (this.#local.has(field) || this.#pending.get(field) !== change) continue;
      // holds the field's write slot: a change begun during this write is written after it
      let release!: () => void;
      const slot = new Promise<void>((resolve) => {
        release = resolve;
      });
      this.#writeChain.set(field, slot);
      try {
        await this.#commit(field, change);
      } catch {
        this.stats.writeFailures++;
        this.#retryDelayMs = Math.min(
          this.#retryDelayMs * 2,
          this.#o.writeRetryMaxDelayMs ?? DEFAULT_WRITE_RETRY_MAX_DELAY_MS,
        );
        this.#scheduleRetry(this.#retryDelayMs);
        return;
      } finally {
        release();
        if (this.#writeChain.get(field) === slot) this.#writeChain.delete(field);
      }
      // written late: it is applied here again like anyone's record (not marked applied), as
      // records from elsewhere may have been applied here since it was made
      if (this.#pending.get(field) === change) this.#pending.delete(field);
      this.stats.pendingWrites = this.#pending.size;
      this.#logger.info({ field, op: change.op }, 'shared control plane: a kept change reached Redis');
    }
    this.#retryDelayMs = this.#o.writeRetryInitialDelayMs ?? DEFAULT_WRITE_RETRY_INITIAL_DELAY_MS;
    // skipped for a change being made (which may yet be aborted): looked at again later
    if (this.#pending.size > 0) this.#scheduleRetry(this.#retryDelayMs);
  }

  // ---------------------------------------------------------------- reading

  /**
   * Reads every record (at most maxRecords, each at most maxRecordBytes) and applies those newer
   * than what was applied here, repository records first (a split names versions a load
   * declares). Resolves once they are applied; a Redis failure is logged, never thrown.
   */
  reconcile(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    this.#reconciling ??= this.#reconcileOnce().finally(() => {
      this.#reconciling = undefined;
    });
    return this.#reconciling;
  }

  async #reconcileOnce(): Promise<void> {
    let reply: [(string | number)[], number];
    try {
      reply = await this.#redis.igControlReadAll(this.#hashKey, this.#maxRecords, this.#maxRecordBytes);
    } catch (err) {
      this.#logger.debug({ err: (err as Error).message }, 'shared control plane: re-read failed');
      return;
    }
    const [pairs, truncated] = reply;
    if (truncated) {
      this.stats.skipped++;
      this.#logger.warn(
        { maxRecords: this.#maxRecords, key: this.#hashKey },
        'shared control plane: Redis holds more control records than maxRecords; the rest are not read',
      );
    }
    const records: [string, ControlRecord][] = [];
    const present = new Set<string>();
    for (let i = 0; i + 1 < pairs.length; i += 2) {
      present.add(String(pairs[i]));
      const record = this.#parse(String(pairs[i]), pairs[i + 1]);
      if (record) {
        records.push([String(pairs[i]), record]);
        this.#maxSeq = Math.max(this.#maxSeq, record.seq);
      }
    }
    if (!truncated) await this.#restore(present);
    const order = (r: ControlRecord) => CONTROL_KINDS.indexOf(r.kind);
    records.sort((a, b) => order(a[1]) - order(b[1]) || a[1].seq - b[1].seq);
    await Promise.all(records.map(([field, record]) => this.#consider(field, record)));
    this.stats.reconciles++;
  }

  /**
   * Writes back the records this coordinator's state reflects that Redis no longer holds (it
   * restarted empty, or lost keys), each with its own seq and only where the field is absent,
   * and raises the counter above them. Every coordinator does it; the first one wins and the
   * others' writes are no-ops.
   */
  async #restore(present: ReadonlySet<string>): Promise<void> {
    const lost = [...this.#known].filter(([field]) => !present.has(field) && !this.#local.has(field));
    if (lost.length === 0) return;
    try {
      let restored = 0;
      for (const [field, value] of lost) {
        const seq = this.#applied.get(field) ?? 0;
        restored += await this.#redis.igControlSet(this.#hashKey, field, seq, value);
      }
      // the counter, reset by the restart, goes above every seq written back (INCR then raise)
      await this.#redis.igControlNextSeq(this.#seqKey, this.#maxSeq);
      if (restored > 0) {
        this.stats.restored += restored;
        this.#logger.warn(
          { restored, known: this.#known.size },
          'shared control plane: Redis had lost control records (restarted?); wrote back the ones this coordinator holds',
        );
      }
    } catch (err) {
      this.#logger.debug({ err: (err as Error).message }, 'shared control plane: write-back failed');
    }
  }

  async #onFeed(message: string): Promise<void> {
    if (message.length > MAX_FEED_MESSAGE_BYTES) {
      this.#skip('feed', `a feed message of ${message.length} characters`);
      return;
    }
    let parsed: z.infer<typeof feedSchema>;
    try {
      parsed = feedSchema.parse(JSON.parse(message));
    } catch (err) {
      this.#skip('feed', `a malformed feed message: ${(err as Error).message.slice(0, 200)}`);
      return;
    }
    const { field, seq } = parsed;
    if (seq <= (this.#applied.get(field) ?? 0)) return;
    let value: string | number | null;
    try {
      value = await this.#redis.igControlReadOne(this.#hashKey, field, this.#maxRecordBytes);
    } catch (err) {
      // the next re-read picks it up
      this.#logger.debug(
        { field, err: (err as Error).message },
        'shared control plane: could not read a record',
      );
      return;
    }
    if (value === null) return;
    const record = this.#parse(field, value);
    if (record) await this.#consider(field, record);
  }

  /** A stored value checked: its size, its JSON, its shape, that it is stored under its own field. */
  #parse(field: string, value: unknown): ControlRecord | undefined {
    if (typeof value === 'number') {
      this.#skip(field, `a record of ${value} bytes (maxRecordBytes ${this.#maxRecordBytes})`);
      return undefined;
    }
    if (typeof value !== 'string') {
      this.#skip(field, 'a record that is not text');
      return undefined;
    }
    let record: ControlRecord;
    try {
      record = recordSchema.parse(JSON.parse(value));
    } catch (err) {
      this.#skip(field, `a malformed record: ${(err as Error).message.slice(0, 300)}`);
      return undefined;
    }
    if (controlField(record.kind, record.target) !== field) {
      this.#skip(
        field,
        `a record about ${controlField(record.kind, record.target)} stored under another field`,
      );
      return undefined;
    }
    return record;
  }

  /** Counts a skipped record; logs it once per field and reason (re-reads find it again). */
  #skip(field: string, why: string): void {
    this.stats.skipped++;
    const key = `${field}\0${why}`;
    if (this.#skipLogged.has(key)) return;
    // bounded: a flood of distinct bad records is logged again rather than remembered forever
    if (this.#skipLogged.size >= MAX_SKIPS_REMEMBERED) this.#skipLogged.clear();
    this.#skipLogged.add(key);
    this.#logger.warn({ field: field.slice(0, 200), why }, 'shared control plane: skipped a control record');
  }

  /** Applies a record if it is newer than what this coordinator reflects (held back while a change of its field is made here). */
  #consider(field: string, record: ControlRecord): Promise<void> {
    if (record.seq <= (this.#applied.get(field) ?? 0)) return Promise.resolve();
    // bounded: a writer cycling through distinct fields cannot grow what is remembered per field
    if (!this.#applied.has(field) && this.#applied.size >= this.#maxRecords) {
      this.#skip(field, `a record of a new field past maxRecords (${this.#maxRecords}) fields held`);
      return Promise.resolve();
    }
    if (this.#local.has(field)) {
      const held = this.#held.get(field);
      if (!held || held.seq < record.seq) this.#held.set(field, record);
      return Promise.resolve();
    }
    const previous = this.#applyChain.get(field) ?? Promise.resolve();
    const next = previous.then(() => this.#applyNow(field, record));
    this.#applyChain.set(field, next);
    void next.finally(() => {
      if (this.#applyChain.get(field) === next) this.#applyChain.delete(field);
    });
    return next;
  }

  async #applyNow(field: string, record: ControlRecord): Promise<void> {
    if (this.#stopped || record.seq <= (this.#applied.get(field) ?? 0)) return;
    // a change of the field began here while this one waited its turn: held for after it
    if (this.#local.has(field)) {
      const held = this.#held.get(field);
      if (!held || held.seq < record.seq) this.#held.set(field, record);
      return;
    }
    try {
      await this.#o.applier.apply(record);
    } catch (err) {
      this.stats.applyFailures++;
      if (this.#failedSeq.get(field) !== record.seq) {
        this.#failedSeq.set(field, record.seq);
        this.#logger.warn(
          { field, seq: record.seq, by: record.by, op: record.op, err: toInfergridError(err).message },
          'shared control plane: could not apply a record from another coordinator; retried at the next re-read',
        );
      }
      return;
    }
    this.#failedSeq.delete(field);
    this.#maxSeq = Math.max(this.#maxSeq, record.seq);
    // a change made here while this one applied (a higher seq) stays what this coordinator holds
    if (record.seq <= (this.#applied.get(field) ?? 0)) return;
    this.#applied.set(field, record.seq);
    this.#known.set(field, JSON.stringify(record));
    this.stats.applied[record.kind]++;
    this.#logger.info(
      { field, seq: record.seq, by: record.by, op: record.op },
      'shared control plane: applied a change made on another coordinator',
    );
  }
}
