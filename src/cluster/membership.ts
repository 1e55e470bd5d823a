/**
 * Cluster membership through Redis: this process announces itself under a lease and watches
 * who else is there.
 *
 * Announce: the member's record is SET under `…member:<role>:<id>` with PX = leaseMs and
 * rewritten every leaseMs/3 (SET … GET, so a renewal that finds the key gone, e.g. after a Redis
 * restart or a wipe, says so at once on the channel). A process that dies stops renewing and its
 * key expires; one that stops cleanly deletes it and says `leave`.
 *
 * Watch: a second connection subscribes to the channel; a note only names a key to re-read
 * (announce: read and check it; leave: confirm the key is gone). Besides, every
 * reconcileIntervalMs a full SCAN re-reads every member key (at most maxMembers of them, each
 * record bounded in size and checked, see member.ts): a missed note, an expired lease or a
 * hostile writer are all settled there. Reads are serialized, so a reconcile that started before
 * a leave cannot bring the member back.
 *
 * Redis down: nothing is dropped. The last known members stay (a process cannot tell "Redis is
 * unreachable" from "everyone left", and serving on the last known fleet is the safer guess);
 * the outage is logged once and counted, ioredis keeps reconnecting, and once Redis answers
 * again this member re-announces at once and, for one lease, a reconcile only adds: members
 * that were renewing all along get that long to re-announce into a restarted, empty Redis.
 *
 * Trade-off: membership is eventually consistent (a note lost in a reconnect is caught by the
 * next reconcile, an expired lease by the reconcile after it expires), which is what the users
 * of it need: a dialer that learns a member seconds late only dials it seconds late.
 */

import { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { DialAllowList } from '../api/dial-allow.ts';
import type { ClusterConfig } from '../config/index.ts';
import type { Logger } from '../telemetry/index.ts';
import { failFastRedis } from '../util/redis.ts';
import {
  type CheckedRecord,
  MAX_MEMBER_NOTE_BYTES,
  MAX_MEMBER_RECORD_BYTES,
  type Member,
  MemberKeys,
  type MemberRole,
  type MemberNote,
  type RejectReason,
  checkRecord,
  memberNoteSchema,
  redactUrl,
  sameMember,
} from './member.ts';

/**
 * Keys Redis looks at per SCAN call. SCAN walks the whole database, not only the member keys: a
 * large one shared with other data costs (keys / SCAN_COUNT) round trips per reconcile, which is
 * why docs/cluster.md suggests a database of its own (`/db` in the URL).
 */
const SCAN_COUNT = 1000;
/** Records read per pipeline. */
const READ_BATCH = 256;
/** Notes waiting to be read at most; beyond it they are dropped and a full reconcile is asked for. */
const MAX_PENDING_NOTES = 1024;

export interface MembershipCounters {
  /** Lease writes that succeeded. */
  renewals: number;
  /** Lease writes that found the key gone (first announce, Redis restarted or wiped) and said so. */
  announces: number;
  /** Full re-reads done. */
  reconciles: number;
  /** Lease writes, reconciles and note reads that failed (Redis unreachable, slow, or refusing). */
  redisFailures: number;
  /** Channel notes taken (valid ones). */
  notes: number;
  joins: number;
  leaves: number;
  changes: number;
  /** Records ignored, by reason (notes: malformed channel notes). */
  ignored: Record<RejectReason | 'notes', number>;
  /** Reconciles that found more member keys than maxMembers. */
  truncated: number;
}

export interface MembershipEvents {
  join: [Member];
  leave: [Member];
  /** A member's record changed (e.g. its models); the new record, then the old. */
  change: [Member, Member];
  /** Redis became reachable (true) or not (false). */
  redis: [boolean];
}

export interface MembershipOptions {
  cluster: ClusterConfig;
  /** Names the Redis connections (CLIENT LIST shows `infergrid:<name>`). Default: the self record's role and id. */
  name?: string | undefined;
  /** This process's record, announced under its lease (or given to `start`); `update` changes it. None: watch only. */
  self?: Member | undefined;
  logger: Logger;
}

/** One member as `/admin/cluster` shows it. */
export interface MemberView extends Member {
  self: boolean;
  /** When this process last read the member's record from Redis, ISO time; null for itself. */
  lastSeenAt: string | null;
}

export interface MembershipSnapshot {
  enabled: true;
  redis: { url: string; up: boolean; namespace: string };
  self: { role: MemberRole; id: string } | null;
  leaseMs: number;
  members: MemberView[];
  counters: MembershipCounters;
}

interface Known {
  member: Member;
  lastSeenAtMs: number;
}

export class Membership extends EventEmitter<MembershipEvents> {
  readonly keys: MemberKeys;
  readonly counters: MembershipCounters = {
    renewals: 0,
    announces: 0,
    reconciles: 0,
    redisFailures: 0,
    notes: 0,
    joins: 0,
    leaves: 0,
    changes: 0,
    ignored: { malformed: 0, oversized: 0, disallowed: 0, notes: 0 },
    truncated: 0,
  };
  readonly #cluster: ClusterConfig;
  readonly #logger: Logger;
  readonly #allow: DialAllowList;
  readonly #redis: Redis;
  readonly #sub: Redis;
  /** Other members by key (this process is never in it). */
  readonly #known = new Map<string, Known>();
  readonly #pending = new Map<string, MemberNote['type']>();
  #self: Member | undefined;
  #selfKey: string | undefined;
  #up = false;
  /** Until when a reconcile only adds (just after Redis came back), ms since the epoch. */
  #graceUntilMs = 0;
  #serial: Promise<void> = Promise.resolve();
  #draining = false;
  #reconcileAsked = false;
  #renewTimer: NodeJS.Timeout | undefined;
  #reconcileTimer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;
  #truncatedLogged = false;
  /** Whether the current outage was logged (once per outage). */
  #downLogged = false;
  /** 'ready' events seen: any after the first is a reconnect. */
  #readyCount = 0;
  #renewing: Promise<void> = Promise.resolve();
  /** Distinct reasons already logged at warn (a hostile record is said once, then counted). */
  readonly #warned = new Set<string>();

  constructor(options: MembershipOptions) {
    super();
    const { cluster } = options;
    if (!(cluster.leaseMs >= 3)) throw new RangeError('cluster.leaseMs must be at least 3 ms');
    this.#cluster = cluster;
    this.#logger = options.logger;
    this.#allow = new DialAllowList(cluster.allow);
    this.keys = new MemberKeys(cluster.redis.namespace);
    this.#setSelf(options.self);
    // fail fast while disconnected: a renewal or read that cannot run now runs at its next tick
    const name = `infergrid:${options.name ?? (options.self ? `${options.self.role}:${options.self.id}` : 'watch')}`;
    this.#redis = failFastRedis(cluster.redis, { connectionName: name });
    this.#sub = failFastRedis(cluster.redis, { connectionName: `${name}:sub`, autoResubscribe: false });
    this.#redis.on('ready', () => this.#onRedisReady());
    this.#redis.on('close', () => {
      if (!this.#stopped) this.#markDown('connection closed');
    });
    this.#sub.on('ready', () => {
      this.#sub.subscribe(this.keys.channel).catch((err: Error) => this.#markDown(err.message));
    });
    this.#sub.on('message', (_channel: string, message: string) => this.#onNote(message));
  }

  /** Whether the last Redis operation succeeded. */
  get redisUp(): boolean {
    return this.#up;
  }

  /** This process's own record, if it announces one. */
  get self(): Member | undefined {
    return this.#self;
  }

  /**
   * Connects and announces (within redis.connectTimeoutMs); never throws for an unreachable
   * Redis: it logs, counts, and keeps trying in the background. Resolves after the first
   * reconcile or the first failure. `self`: this process's record, when it was not known at
   * construction (e.g. a port learnt once listening).
   */
  async start(self?: Member): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    if (self) this.#setSelf(self);
    const { leaseMs, reconcileIntervalMs } = this.#cluster;
    this.#renewTimer = setInterval(() => void this.#renew(), Math.max(1, Math.floor(leaseMs / 3)));
    this.#reconcileTimer = setInterval(() => this.#askReconcile(), reconcileIntervalMs);
    this.#renewTimer.unref();
    this.#reconcileTimer.unref();
    const [main] = await Promise.allSettled([this.#redis.connect(), this.#sub.connect()]);
    if (main.status === 'rejected') this.#markDown((main.reason as Error).message);
    // 'ready' started the first announce and reconcile; wait for them
    await this.#renewing;
    await this.#serial;
  }

  /** Deletes this member's lease and says `leave` (best effort, bounded by commandTimeoutMs), then disconnects. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#renewTimer);
    clearInterval(this.#reconcileTimer);
    if (this.#self && this.#selfKey && this.#redis.status === 'ready') {
      try {
        await this.#redis.del(this.#selfKey);
        await this.#redis.publish(this.keys.channel, this.#note('leave'));
      } catch (err) {
        this.#logger.warn(
          { err: (err as Error).message },
          'could not delete this member\u2019s cluster lease; it expires within cluster.leaseMs',
        );
      }
    }
    this.#redis.disconnect();
    this.#sub.disconnect();
  }

  /** Changes this member's record (e.g. its models) and announces it at once. */
  update(changes: Partial<Omit<Member, 'id' | 'role'>>): void {
    if (!this.#self) return;
    const next = { ...this.#self, ...changes };
    if (sameMember(next, this.#self)) return;
    this.#self = next;
    void this.#renew(true);
  }

  /** Every known member of `role` (or of every role), this process included. */
  members(role?: MemberRole): Member[] {
    const out: Member[] = [];
    if (this.#self && (role === undefined || this.#self.role === role)) out.push(this.#self);
    for (const { member } of this.#known.values())
      if (role === undefined || member.role === role) out.push(member);
    return out;
  }

  /** Members per role, for the gauges. */
  counts(): { role: MemberRole; count: number }[] {
    return (['coordinator', 'worker'] as const).map((role) => ({ role, count: this.members(role).length }));
  }

  snapshot(): MembershipSnapshot {
    const members: MemberView[] = [];
    if (this.#self) members.push({ ...this.#self, self: true, lastSeenAt: null });
    for (const { member, lastSeenAtMs } of this.#known.values())
      members.push({ ...member, self: false, lastSeenAt: new Date(lastSeenAtMs).toISOString() });
    return {
      enabled: true,
      redis: {
        url: redactUrl(this.#cluster.redis.url),
        up: this.#up,
        namespace: this.#cluster.redis.namespace,
      },
      self: this.#self ? { role: this.#self.role, id: this.#self.id } : null,
      leaseMs: this.#cluster.leaseMs,
      members,
      counters: structuredClone(this.counters),
    };
  }

  /** Runs a full reconcile now and resolves once it (and any reads queued before it) is done; for tests and admin. */
  reconcileNow(): Promise<void> {
    this.#reconcileAsked = true;
    this.#kick();
    return this.#serial;
  }

  #setSelf(self: Member | undefined): void {
    this.#self = self;
    this.#selfKey = self ? this.keys.keyOf(self.role, self.id) : undefined;
    // one's own record must pass the checks the others apply, or they all ignore it
    if (self && this.#selfKey) {
      const checked = checkRecord(this.keys, this.#selfKey, JSON.stringify(self), this.#allow);
      if (!checked.ok)
        this.#logger.warn(
          { id: self.id, reason: checked.reason, detail: checked.detail },
          'this member\u2019s own cluster record would be ignored by the others: list its advertised address in cluster.allow (or set cluster.advertiseHost)',
        );
    }
  }

  #note(type: MemberNote['type']): string {
    return JSON.stringify({ type, role: this.#self!.role, id: this.#self!.id });
  }

  #markUp(): void {
    if (this.#up) return;
    this.#up = true;
    if (this.#downLogged)
      this.#logger.info(
        { redis: redactUrl(this.#cluster.redis.url), members: this.#known.size },
        'cluster Redis reachable again',
      );
    this.#downLogged = false;
    this.emit('redis', true);
  }

  #markDown(reason: string): void {
    this.counters.redisFailures++;
    const wasUp = this.#up;
    this.#up = false;
    if (!this.#downLogged) {
      this.#downLogged = true;
      this.#logger.warn(
        { redis: redactUrl(this.#cluster.redis.url), err: reason, keptMembers: this.#known.size },
        'cluster Redis unreachable: keeping the last known members and retrying',
      );
    }
    if (wasUp) this.emit('redis', false);
  }

  #onRedisReady(): void {
    if (this.#stopped) return;
    // after a reconnect Redis may have restarted empty: the others get a lease to re-announce
    if (this.#readyCount++ > 0) this.#graceUntilMs = Date.now() + this.#cluster.leaseMs;
    this.#renewing = this.#renew(true);
    this.#askReconcile();
  }

  /**
   * Writes this member's lease. `announce`: say so on the channel whether or not the key was
   * there (the record changed or Redis came back); otherwise only when the key was gone.
   */
  async #renew(announce = false): Promise<void> {
    if (!this.#self || !this.#selfKey || this.#stopped) return;
    const key = this.#selfKey;
    const value = JSON.stringify(this.#self);
    try {
      let previous: unknown;
      try {
        previous = await this.#redis.call('SET', key, value, 'PX', String(this.#cluster.leaseMs), 'GET');
      } catch (err) {
        // someone put another type under our key (SET … GET refuses to overwrite it): take the key back
        if (!/WRONGTYPE/.test((err as Error).message)) throw err;
        await this.#redis.del(key);
        previous = await this.#redis.call('SET', key, value, 'PX', String(this.#cluster.leaseMs), 'GET');
      }
      this.counters.renewals++;
      this.#markUp();
      if (announce || previous === null) {
        this.counters.announces++;
        await this.#redis.publish(this.keys.channel, this.#note('announce'));
      }
    } catch (err) {
      if (!this.#stopped) this.#markDown((err as Error).message);
    }
  }

  #onNote(message: string): void {
    if (this.#stopped) return;
    let note: MemberNote | undefined;
    if (message.length <= MAX_MEMBER_NOTE_BYTES) {
      try {
        const parsed = memberNoteSchema.safeParse(JSON.parse(message));
        if (parsed.success) note = parsed.data;
      } catch {}
    }
    if (!note) {
      this.counters.ignored.notes++;
      this.#warnOnce('note', { bytes: message.length }, 'ignored a malformed note on the cluster channel');
      return;
    }
    this.counters.notes++;
    const key = this.keys.keyOf(note.role, note.id);
    if (key === this.#selfKey) return;
    if (this.#pending.size >= MAX_PENDING_NOTES && !this.#pending.has(key)) {
      // a flood of notes: the full re-read settles whatever they were about
      this.#reconcileAsked = true;
    } else {
      this.#pending.set(key, note.type);
    }
    this.#kick();
  }

  #askReconcile(): void {
    this.#reconcileAsked = true;
    this.#kick();
  }

  /** Starts the read loop unless it runs: one read at a time, notes first, then a reconcile if asked. */
  #kick(): void {
    if (this.#draining || this.#stopped) return;
    this.#draining = true;
    this.#serial = this.#drain().finally(() => {
      this.#draining = false;
    });
  }

  async #drain(): Promise<void> {
    while (!this.#stopped && (this.#pending.size > 0 || this.#reconcileAsked)) {
      if (this.#redis.status !== 'ready') {
        // nothing can be read now; the next 'ready' asks for a reconcile, which covers the notes
        this.#markDown(`Redis connection ${this.#redis.status}`);
        this.#pending.clear();
        this.#reconcileAsked = false;
        return;
      }
      try {
        if (this.#pending.size > 0) {
          const [key, type] = this.#pending.entries().next().value as [string, MemberNote['type']];
          this.#pending.delete(key);
          await this.#readOne(key, type);
        } else {
          this.#reconcileAsked = false;
          await this.#reconcile();
        }
      } catch (err) {
        this.#markDown((err as Error).message);
      }
    }
  }

  async #readOne(key: string, type: MemberNote['type']): Promise<void> {
    if (type === 'leave') {
      // a note is not proof: the member is gone only if its key is
      if ((await this.#redis.exists(key)) === 0) this.#remove(key);
      return;
    }
    const [raw] = await this.#readRecords([key]);
    const now = Date.now();
    if (raw === null || raw === undefined) return;
    const checked = this.#check(key, raw);
    if (checked.ok) this.#upsert(key, checked.member, now);
    else this.#remove(key);
  }

  /** Each key's record (null: gone), read with GETRANGE so an oversized value is never read whole. */
  async #readRecords(keys: string[]): Promise<(string | null | Error)[]> {
    const pipeline = this.#redis.pipeline();
    for (const key of keys) pipeline.getrange(key, 0, MAX_MEMBER_RECORD_BYTES);
    const results = (await pipeline.exec()) ?? [];
    return keys.map((_, i) => {
      const [err, value] = results[i] ?? [new Error('no reply'), null];
      if (err) return err;
      // GETRANGE of a missing key is ''; a member record is never empty
      return typeof value === 'string' && value.length > 0 ? value : null;
    });
  }

  /** Checks a record; one that fails is counted, and said once per reason. */
  #check(key: string, raw: string | Error): CheckedRecord {
    const checked: CheckedRecord =
      raw instanceof Error
        ? { ok: false, reason: 'malformed', detail: raw.message }
        : checkRecord(this.keys, key, raw, this.#allow);
    if (!checked.ok) {
      this.counters.ignored[checked.reason]++;
      this.#warnOnce(
        checked.reason,
        { key, reason: checked.reason, detail: checked.detail },
        'ignored a cluster member record in Redis (counted from now on, said once)',
      );
    }
    return checked;
  }

  async #reconcile(): Promise<void> {
    const max = this.#cluster.maxMembers;
    const found = new Set<string>();
    let truncated = false;
    let cursor = '0';
    do {
      const [next, batch] = await this.#redis.scan(cursor, 'MATCH', this.keys.pattern, 'COUNT', SCAN_COUNT);
      cursor = next;
      for (const key of batch) {
        if (key === this.#selfKey || found.has(key)) continue;
        // a key that names no role and id is not read, and does not take a place under the cap
        if (!this.keys.parseKey(key)) {
          this.#check(key, '');
          continue;
        }
        if (found.size >= max) {
          truncated = true;
          break;
        }
        found.add(key);
      }
    } while (cursor !== '0' && !truncated);
    const now = Date.now();
    const fresh = new Map<string, Member>();
    const keys = [...found];
    for (let i = 0; i < keys.length; i += READ_BATCH) {
      const chunk = keys.slice(i, i + READ_BATCH);
      const records = await this.#readRecords(chunk);
      chunk.forEach((key, j) => {
        const raw = records[j];
        if (raw === null || raw === undefined) return;
        const checked = this.#check(key, raw);
        if (checked.ok) fresh.set(key, checked.member);
      });
    }
    this.counters.reconciles++;
    this.#markUp();
    if (truncated) {
      this.counters.truncated++;
      if (!this.#truncatedLogged)
        this.#logger.warn(
          { maxMembers: max },
          'more member keys in Redis than cluster.maxMembers: the rest are ignored (a runaway or hostile writer, or raise cluster.maxMembers)',
        );
      this.#truncatedLogged = true;
    } else {
      this.#truncatedLogged = false;
    }
    // gone first, so that at the cap the members taken are the ones just read; just after an
    // outage, a missing key may be a member still re-announcing into an empty Redis
    if (now >= this.#graceUntilMs) {
      for (const key of [...this.#known.keys()]) if (!fresh.has(key)) this.#remove(key);
    }
    for (const [key, member] of fresh) this.#upsert(key, member, now);
  }

  #upsert(key: string, member: Member, now: number): void {
    const known = this.#known.get(key);
    if (!known) {
      if (this.#known.size >= this.#cluster.maxMembers) {
        this.counters.truncated++;
        return;
      }
      this.#known.set(key, { member, lastSeenAtMs: now });
      this.counters.joins++;
      this.#logger.info({ role: member.role, id: member.id, rpc: member.rpc }, 'cluster member joined');
      this.emit('join', member);
      return;
    }
    known.lastSeenAtMs = now;
    if (sameMember(known.member, member)) return;
    const previous = known.member;
    known.member = member;
    this.counters.changes++;
    this.emit('change', member, previous);
  }

  #remove(key: string): void {
    const known = this.#known.get(key);
    if (!known) return;
    this.#known.delete(key);
    this.counters.leaves++;
    this.#logger.info({ role: known.member.role, id: known.member.id }, 'cluster member left');
    this.emit('leave', known.member);
  }

  #warnOnce(reason: string, fields: Record<string, unknown>, message: string): void {
    if (this.#warned.has(reason)) return;
    this.#warned.add(reason);
    this.#logger.warn(fields, message);
  }
}
