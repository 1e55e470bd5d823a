/**
 * Asynchronous requests: a run starts at once, the caller gets an id, and the outcome is kept
 * for `resultTtlMs` for polls.
 *
 * Trade-offs:
 * - Memory first: every outcome is kept in this process (bounded by count and bytes, oldest
 *   dropped first), and, when a store is given, also written to it (`async:<id>`) so another
 *   coordinator sharing Redis, or this one restarted on the same SQLite file, can answer the
 *   poll. A store write that fails is logged and counted; it never fails the request.
 * - Pending requests are written to the store too, naming this instance; the instance keeps a
 *   liveness lease (`async:instance:<id>`, renewed every third of `instanceLeaseMs`). A poll
 *   that finds a pending record whose owner's lease has lapsed answers failed UNAVAILABLE ("the
 *   coordinator that ran it stopped or restarted"), at most one lease after the owner died.
 *   One write per lease period per coordinator, whatever the number of pending requests.
 * - Any coordinator sharing the store can cancel a request; only the one that runs it aborts the
 *   run (runs are not moved). The other writes the cancel to the store (`async:cancel:<id>`),
 *   bumps the owner's cancel marker, and, when the store has pub/sub (Redis), publishes it on
 *   the owner's channel: the owner cancels at once and acks. The DELETE waits for that ack at
 *   most `cancelWaitMs` (answering 'cancelled'); without it (no pub/sub, a message lost while
 *   Redis reconnected, a slow owner) it answers 'cancelling', and the owner applies the cancel
 *   at its next tick, where it reads its marker (one read per tick, whatever the number of
 *   requests) and, when it changed, the cancel keys of the requests it runs. The API key rule
 *   holds on both sides: the sender checks the stored record's owner, the owner its own.
 *
 * Ownership: once `submit` returns an id, that request's record is settled exactly once — by
 * the run's outcome, a DELETE, or `close()` — and a later outcome of the run is ignored.
 */

import { randomUUID } from 'node:crypto';
import type { CacheStore } from '../cache/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { type Logger, silentLogger } from '../telemetry/index.ts';
import { type Deferred, deferred } from '../util/deferred.ts';
import {
  type AsyncRecord,
  type ControlMessage,
  type FailedRecord,
  type FinishedRecord,
  type PendingRecord,
  type StoredRecord,
  cancelKey,
  cancelMarkerKey,
  decodeControl,
  decodeRecord,
  encodeControl,
  encodeRecord,
  eventsChannel,
  instanceKey,
  recordKey,
} from './record.ts';

export const DEFAULT_RESULT_TTL_MS = 10 * 60_000;
export const DEFAULT_MAX_PENDING = 10_000;
export const DEFAULT_MAX_RESULTS = 10_000;
export const DEFAULT_MAX_RESULT_BYTES = 256 * 1024 * 1024;
export const DEFAULT_SWEEP_INTERVAL_MS = 30_000;
export const DEFAULT_INSTANCE_LEASE_MS = 30_000;
/** How long a DELETE on a coordinator that does not run the request waits for the owner's ack, ms. */
export const DEFAULT_CANCEL_WAIT_MS = 2000;
/** How long a pending record stays in the store when submit names no timeoutMs, ms (plus resultTtlMs). */
export const DEFAULT_PENDING_STORE_TTL_MS = 60 * 60_000;
/** Timers and store TTLs take at most 2^31−1 ms. */
const MAX_MS = 2_147_483_647;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const LEASE_VALUE = Buffer.from('1');

export interface AsyncRequestsOptions {
  /** How long a finished request's outcome can be polled, ms. Default 600000 (10 minutes). */
  resultTtlMs?: number;
  /** Runs that may be in flight at once; one more is refused with OVERLOADED. Default 10000. */
  maxPending?: number;
  /** Finished outcomes kept in memory; the oldest is dropped first. Default 10000. */
  maxResults?: number;
  /** Bytes of finished outcomes (as JSON) kept in memory. Default 256 MiB. */
  maxResultBytes?: number;
  /**
   * Where outcomes are also written, so other coordinators and a restarted one can answer polls:
   * the coordinator's persistent tiers (see `persistentTier`), never its memory tier. Not owned:
   * `close()` leaves it open. Default: none (memory only).
   */
  store?: CacheStore | undefined;
  logger?: Logger;
  /** Epoch ms. Default Date.now. */
  now?: () => number;
  /** How often expired outcomes are dropped from memory (they are also dropped when read), ms. Default 30000. */
  sweepIntervalMs?: number;
  /** How long this instance's liveness lease lasts in the store without renewal, ms. Default 30000. */
  instanceLeaseMs?: number;
  /** Names this coordinator in the store. Default: a random UUID, new at every start. */
  instanceId?: string;
  /**
   * How long a DELETE of a request running on another coordinator waits for that coordinator
   * to confirm the cancel (needs pub/sub: a Redis store), ms; 0 answers 'cancelling' at once.
   * Default 2000.
   */
  cancelWaitMs?: number;
}

export interface AsyncSubmitOptions {
  /**
   * The run's own deadline, ms (the run enforces it, not this class): a pending record stays in
   * the store this long plus resultTtlMs. Default 3600000.
   */
  timeoutMs?: number;
  /** Who submits it (an API key's name): only the same owner can read or cancel it. */
  owner?: string | undefined;
}

/** Produces the response JSON; aborting the signal asks it to stop (DELETE, close). */
export type AsyncRun = (signal: AbortSignal) => Promise<object>;

/**
 * 'cancelled': the run was cancelled (here, or confirmed by the coordinator running it);
 * 'cancelling': the cancel is recorded for the coordinator running it, which has not confirmed
 * yet (it applies it within a third of its lease); 'forgotten': it had finished and is forgotten.
 */
export type AsyncDeleteOutcome = 'cancelled' | 'cancelling' | 'forgotten';

export interface AsyncRequestsStats {
  /** Runs in flight (a cancelled run counts until it settles). */
  pending: number;
  /** Finished outcomes held in memory, and their JSON bytes. */
  results: number;
  resultBytes: number;
  /** Store operations that failed. */
  storeErrors: number;
  /** Runs here cancelled on behalf of another coordinator. */
  remoteCancels: number;
  /** Control messages (from the store or a channel) refused as malformed or not the request owner's. */
  refusedMessages: number;
}

interface Run {
  readonly record: PendingRecord;
  readonly controller: AbortController;
  /** The record has been settled (outcome, DELETE or close); the run may still be going. */
  settled: boolean;
}

interface Kept {
  readonly record: FinishedRecord;
  readonly expiresAtMs: number;
  readonly bytes: number;
}

function checkInteger(what: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min || value > MAX_MS) {
    throw new RangeError(`${what} must be an integer in ${min}..${MAX_MS}, got ${value}`);
  }
}

/** Whether `id` could have been issued by `submit` (a lower-case UUID). */
export function isAsyncRequestId(id: string): boolean {
  return UUID.test(id);
}

export class AsyncRequests {
  readonly instanceId: string;
  readonly resultTtlMs: number;
  readonly maxPending: number;
  readonly #maxResults: number;
  readonly #maxResultBytes: number;
  readonly #instanceLeaseMs: number;
  readonly #store: CacheStore | undefined;
  readonly #logger: Logger;
  readonly #now: () => number;
  /** Runs in flight, by id. */
  readonly #runs = new Map<string, Run>();
  /** Finished outcomes, oldest first (all share one TTL, so the oldest expires first). */
  readonly #finished = new Map<string, Kept>();
  #finishedBytes = 0;
  /** The tail of each id's store writes, so they land in the order they were made. */
  readonly #writes = new Map<string, Promise<void>>();
  /** The latest lease write; a pending record is written only after the lease that vouches for it. */
  #lease: Promise<void> = Promise.resolve();
  #storeErrors = 0;
  #remoteCancels = 0;
  #refusedMessages = 0;
  readonly #cancelWaitMs: number;
  /** DELETEs here waiting for another coordinator's ack, by request id. */
  readonly #acks = new Map<string, Deferred<'cancelled' | 'finished' | 'timeout'>>();
  /** Resolves once this instance listens on its channel (or could not: then ticks alone apply cancels). */
  readonly #listening: Promise<void>;
  #unsubscribe: (() => Promise<void>) | undefined;
  /** The owner's cancel marker as last read; a different value means new cancel keys. */
  #cancelMarker: string | undefined;
  #checkingCancels = false;
  readonly #timer: NodeJS.Timeout;
  #closed = false;

  constructor(options: AsyncRequestsOptions = {}) {
    this.resultTtlMs = options.resultTtlMs ?? DEFAULT_RESULT_TTL_MS;
    this.maxPending = options.maxPending ?? DEFAULT_MAX_PENDING;
    this.#maxResults = options.maxResults ?? DEFAULT_MAX_RESULTS;
    this.#maxResultBytes = options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
    this.#instanceLeaseMs = options.instanceLeaseMs ?? DEFAULT_INSTANCE_LEASE_MS;
    const sweepIntervalMs = options.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS;
    checkInteger('resultTtlMs', this.resultTtlMs, 1);
    checkInteger('maxPending', this.maxPending, 1);
    checkInteger('maxResults', this.#maxResults, 1);
    if (!Number.isInteger(this.#maxResultBytes) || this.#maxResultBytes < 1) {
      throw new RangeError(`maxResultBytes must be a positive integer, got ${this.#maxResultBytes}`);
    }
    checkInteger('sweepIntervalMs', sweepIntervalMs, 1);
    checkInteger('instanceLeaseMs', this.#instanceLeaseMs, 3);
    this.#cancelWaitMs = options.cancelWaitMs ?? DEFAULT_CANCEL_WAIT_MS;
    checkInteger('cancelWaitMs', this.#cancelWaitMs, 0);
    this.instanceId = options.instanceId ?? randomUUID();
    this.#store = options.store;
    this.#logger = options.logger ?? silentLogger();
    this.#now = options.now ?? Date.now;
    this.#renewLease();
    const tickMs = this.#store
      ? Math.min(sweepIntervalMs, Math.floor(this.#instanceLeaseMs / 3))
      : sweepIntervalMs;
    this.#timer = setInterval(() => {
      this.#sweep();
      this.#renewLease();
      void this.#checkCancels();
    }, tickMs);
    this.#timer.unref();
    this.#listening = this.#listen();
  }

  /**
   * Resolves once this instance listens for cancels and acks from other coordinators (at once
   * without a store that has pub/sub; a subscription that fails is logged, and the ticks then
   * apply cancels alone). Never rejects.
   */
  ready(): Promise<void> {
    return this.#listening;
  }

  /**
   * Starts `run` now and returns the request's id. Refuses with OVERLOADED when maxPending runs
   * are in flight, and with UNAVAILABLE after close(). The record settles with the run's outcome:
   * done with the object it resolves to, failed with the InfergridError it rejects with (code,
   * message, details, HTTP status; anything else is INTERNAL).
   */
  submit(run: AsyncRun, options: AsyncSubmitOptions = {}): { id: string } {
    if (this.#closed) {
      throw new InfergridError(
        'UNAVAILABLE',
        'the coordinator is shutting down and takes no new asynchronous requests; send it to another coordinator',
      );
    }
    if (this.#runs.size >= this.maxPending) {
      throw new InfergridError(
        'OVERLOADED',
        `${this.#runs.size} asynchronous requests are already running, the most this coordinator takes (async.maxPending); poll the ones you have, or retry later`,
        { details: { maxPending: this.maxPending } },
      );
    }
    const id = randomUUID();
    const submittedAtMs = this.#now();
    const entry: Run = {
      record: {
        status: 'pending',
        id,
        submittedAtMs,
        ...(options.owner !== undefined ? { owner: options.owner } : {}),
      },
      controller: new AbortController(),
      settled: false,
    };
    this.#runs.set(id, entry);
    const store = this.#store;
    if (store) {
      const pendingTtlMs = Math.min(
        MAX_MS,
        (options.timeoutMs ?? DEFAULT_PENDING_STORE_TTL_MS) + this.resultTtlMs,
      );
      const bytes = encodeRecord(entry.record, this.instanceId, submittedAtMs + pendingTtlMs);
      const lease = this.#lease;
      this.#write(id, 'record the pending request', async () => {
        await lease;
        await store.set(recordKey(id), bytes, pendingTtlMs);
      });
    }
    let outcome: Promise<object>;
    try {
      outcome = run(entry.controller.signal);
    } catch (err) {
      outcome = Promise.reject(err);
    }
    void Promise.resolve(outcome)
      .then(
        (response) => this.#settleDone(entry, response),
        (err: unknown) => this.#settle(entry, this.#failed(entry.record, toInfergridError(err))),
      )
      .finally(() => this.#runs.delete(id));
    return { id };
  }

  /**
   * What is known of request `id`: memory first, then the store. Undefined when unknown, expired
   * or forgotten. A pending record from the store whose owner's lease has lapsed comes back as
   * failed UNAVAILABLE. A store that cannot be read counts as a miss (logged).
   */
  async get(id: string, owner?: string): Promise<AsyncRecord | undefined> {
    const local = this.#local(id);
    if (local !== 'absent') return local?.owner === owner ? local : undefined;
    const stored = await this.#read(id);
    // another owner's request is answered like an unknown one: its existence is not told
    if (!stored || stored.record.owner !== owner) return undefined;
    if (stored.record.status !== 'pending') return stored.record;
    if (stored.instanceId === this.instanceId || (await this.#isAlive(stored.instanceId))) {
      return stored.record;
    }
    return this.#failed(
      stored.record,
      new InfergridError(
        'UNAVAILABLE',
        `the coordinator that ran request ${id} (instance ${stored.instanceId}) stopped or restarted before it finished; submit the request again`,
        { details: { instanceId: stored.instanceId } },
      ),
    );
  }

  /**
   * DELETE: a pending request run here is cancelled (its signal aborts; it is recorded failed
   * CANCELLED and kept like any outcome); a finished one is forgotten, here and in the store.
   * Undefined when unknown. A request pending on another live coordinator is cancelled there
   * (see the header): 'cancelled' once it confirms within cancelWaitMs, else 'cancelling'.
   */
  async delete(id: string, owner?: string): Promise<AsyncDeleteOutcome | undefined> {
    // another owner's request is left alone and answered like an unknown one
    if (await this.#ownedByAnother(id, owner)) return undefined;
    const run = this.#runs.get(id);
    if (run && !run.settled) {
      const err = new InfergridError('CANCELLED', `request ${id} was cancelled by DELETE /v2/requests/${id}`);
      this.#settle(run, this.#failed(run.record, err));
      run.controller.abort(err);
      return 'cancelled';
    }
    const local = this.#local(id);
    let known = local !== 'absent' && local !== undefined;
    this.#drop(id);
    const store = this.#store;
    if (!store || !isAsyncRequestId(id)) return known ? 'forgotten' : undefined;
    const stored = await this.#read(id);
    if (
      stored?.record.status === 'pending' &&
      stored.instanceId !== this.instanceId &&
      (await this.#isAlive(stored.instanceId))
    ) {
      const outcome = await this.#cancelElsewhere(store, id, stored.instanceId, stored.expiresAtMs, owner);
      if (outcome !== 'finished') return outcome;
      // it finished before the cancel reached it: forgotten, as a DELETE of a finished one is
    }
    known ||= stored !== undefined;
    this.#write(id, 'forget the request', () => store.delete(recordKey(id)));
    await this.#writes.get(id);
    return known ? 'forgotten' : undefined;
  }

  /**
   * Asks `ownerInstance`, which runs request `id`, to cancel it: the cancel key, the owner's
   * marker, then (with pub/sub) the message, and a wait of at most cancelWaitMs for its ack.
   */
  async #cancelElsewhere(
    store: CacheStore,
    id: string,
    ownerInstance: string,
    expiresAtMs: number,
    owner: string | undefined,
  ): Promise<'cancelled' | 'cancelling' | 'finished'> {
    const message = encodeControl({ kind: 'cancel', id, owner, from: this.instanceId });
    const ttlMs = Math.max(1, Math.min(MAX_MS, expiresAtMs - this.#now()));
    // a Redis store's plain set counts a failure as done: this one must say it failed
    const writer = store.strict ?? store;
    try {
      await writer.set(cancelKey(id), message, ttlMs);
      // written after the cancel key: an owner that reads the new marker finds the key
      await writer.set(
        cancelMarkerKey(ownerInstance),
        Buffer.from(randomUUID()),
        Math.min(MAX_MS, 3 * this.#instanceLeaseMs),
      );
    } catch (err) {
      this.#storeFailed(err, 'record the cancel', id);
      throw new InfergridError(
        'UNAVAILABLE',
        `request ${id} runs on another coordinator (instance ${ownerInstance}) and the cancel could not be recorded in the shared store; retry the DELETE`,
        { details: { instanceId: ownerInstance }, cause: err },
      );
    }
    const pubSub = store.pubSub;
    if (!pubSub || this.#cancelWaitMs === 0) return 'cancelling';
    let ack = this.#acks.get(id);
    if (!ack) {
      const waiting = deferred<'cancelled' | 'finished' | 'timeout'>();
      ack = waiting;
      this.#acks.set(id, waiting);
      const timer = setTimeout(() => waiting.resolve('timeout'), this.#cancelWaitMs);
      void waiting.promise.then(() => {
        clearTimeout(timer);
        if (this.#acks.get(id) === waiting) this.#acks.delete(id);
      });
    }
    try {
      await pubSub.publish(eventsChannel(ownerInstance), message);
    } catch (err) {
      // recorded in the store: the owner's tick applies it
      this.#storeFailed(err, 'publish the cancel', id);
      return 'cancelling';
    }
    const outcome = await ack.promise;
    return outcome === 'timeout' ? 'cancelling' : outcome;
  }

  /** Subscribes to this instance's channel, when the store has pub/sub. */
  async #listen(): Promise<void> {
    const pubSub = this.#store?.pubSub;
    if (!pubSub) return;
    try {
      const unsubscribe = await pubSub.subscribe(eventsChannel(this.instanceId), (bytes) =>
        this.#onControl(bytes, 'channel'),
      );
      if (this.#closed) await unsubscribe();
      else this.#unsubscribe = unsubscribe;
    } catch (err) {
      this.#storeFailed(err, 'listen for cancels from other coordinators (ticks will apply them)', undefined);
    }
  }

  /** A control message from a channel or a cancel key (`keyId`: the request its key names): checked, then applied. */
  #onControl(bytes: Uint8Array, from: 'channel' | 'store', keyId?: string): void {
    let message: ControlMessage;
    try {
      message = decodeControl(bytes, isAsyncRequestId);
      if (keyId !== undefined && (message.kind !== 'cancel' || message.id !== keyId)) {
        throw new Error(`the cancel key of request ${keyId} holds something else`);
      }
    } catch (err) {
      this.#refused(err, from, keyId);
      return;
    }
    if (message.kind === 'ack') {
      this.#acks.get(message.id)?.resolve(message.outcome);
      return;
    }
    this.#applyCancel(message, from);
  }

  /** Another coordinator's cancel of a request run here: applied when the API key matches, then acked. */
  #applyCancel(message: ControlMessage & { kind: 'cancel' }, from: 'channel' | 'store'): void {
    const { id } = message;
    const run = this.#runs.get(id);
    if (run && run.record.owner !== message.owner) {
      // the sender checked the stored owner; a mismatch here is a forged or corrupted message
      this.#refused(new Error("the cancel names another API key than the request's"), from, id);
      return;
    }
    let outcome: 'cancelled' | 'finished' = 'finished';
    if (run && !run.settled) {
      const err = new InfergridError(
        'CANCELLED',
        `request ${id} was cancelled by DELETE /v2/requests/${id} (through coordinator instance ${message.from})`,
      );
      this.#settle(run, this.#failed(run.record, err));
      run.controller.abort(err);
      this.#remoteCancels++;
      outcome = 'cancelled';
    }
    const store = this.#store;
    if (!store) return;
    this.#write(id, 'clear the applied cancel', () => store.delete(cancelKey(id)));
    const pubSub = store.pubSub;
    if (!pubSub) return;
    // after the outcome's write: a sender that reads the record on the ack sees it
    const ack = encodeControl({ kind: 'ack', id, outcome, from: this.instanceId });
    void (this.#writes.get(id) ?? Promise.resolve())
      .then(() => pubSub.publish(eventsChannel(message.from), ack))
      .catch((err: unknown) => this.#storeFailed(err, 'ack the cancel', id));
  }

  /**
   * The tick's part of cancels: reads this instance's marker and, when it changed since the last
   * read, the cancel key of each request running here.
   */
  async #checkCancels(): Promise<void> {
    const store = this.#store;
    if (!store || this.#closed || this.#checkingCancels) return;
    let running = false;
    for (const run of this.#runs.values()) running ||= !run.settled;
    if (!running) return;
    this.#checkingCancels = true;
    // a failed read must not pass for "no cancel": the marker is taken as seen only once every key was read
    const reader = store.strict ?? store;
    try {
      const marker = await reader.get(cancelMarkerKey(this.instanceId));
      // markers are UUIDs: whatever else is there, only its first bytes are looked at
      const value =
        marker === undefined
          ? undefined
          : Buffer.from(marker.buffer, marker.byteOffset, Math.min(64, marker.byteLength)).toString('latin1');
      if (value === this.#cancelMarker) return;
      for (const [id, run] of [...this.#runs]) {
        if (run.settled) continue;
        const bytes = await reader.get(cancelKey(id));
        if (bytes !== undefined) this.#onControl(bytes, 'store', id);
      }
      this.#cancelMarker = value;
    } catch (err) {
      this.#storeFailed(err, 'read the cancels asked by other coordinators', undefined);
    } finally {
      this.#checkingCancels = false;
    }
  }

  #refused(err: unknown, from: 'channel' | 'store', id: string | undefined): void {
    this.#refusedMessages++;
    this.#logger.warn(
      { err, id, from, store: this.#store?.name },
      'async requests: refused a control message from another coordinator',
    );
  }

  /** Resolves once every store write made so far has landed (or failed and been logged). */
  async flush(): Promise<void> {
    while (this.#writes.size > 0) await Promise.all([...this.#writes.values(), this.#lease]);
    await this.#lease;
  }

  stats(): AsyncRequestsStats {
    return {
      pending: this.#runs.size,
      results: this.#finished.size,
      resultBytes: this.#finishedBytes,
      storeErrors: this.#storeErrors,
      remoteCancels: this.#remoteCancels,
      refusedMessages: this.#refusedMessages,
    };
  }

  /**
   * Settles every pending request failed CANCELLED (their signals abort), waits for the store
   * writes, gives up this instance's lease and stops the timer. The store stays open (not owned):
   * close this before the store. Further submits are refused with UNAVAILABLE.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const run of this.#runs.values()) {
      if (run.settled) continue;
      const err = new InfergridError(
        'CANCELLED',
        `the coordinator shut down before request ${run.record.id} finished; submit the request again`,
      );
      this.#settle(run, this.#failed(run.record, err));
      run.controller.abort(err);
    }
    for (const ack of this.#acks.values()) ack.resolve('timeout');
    await this.#listening;
    const unsubscribe = this.#unsubscribe;
    this.#unsubscribe = undefined;
    await unsubscribe?.().catch((err: unknown) =>
      this.#storeFailed(err, 'stop listening for cancels', undefined),
    );
    await this.flush();
    const store = this.#store;
    if (store) {
      try {
        await store.delete(instanceKey(this.instanceId));
      } catch (err) {
        this.#storeFailed(err, 'give up the liveness lease', undefined);
      }
    }
  }

  /** The record held in memory, or 'absent' (an expired one is dropped on the way). */
  #local(id: string): AsyncRecord | undefined | 'absent' {
    const kept = this.#finished.get(id);
    if (kept) {
      if (kept.expiresAtMs > this.#now()) return kept.record;
      this.#drop(id);
      return undefined;
    }
    const run = this.#runs.get(id);
    // a settled run whose record is no longer kept (dropped for room) may still be in the store
    return run && !run.settled ? run.record : 'absent';
  }

  async #read(id: string): Promise<StoredRecord | undefined> {
    const store = this.#store;
    if (!store || !isAsyncRequestId(id)) return undefined;
    let stored: StoredRecord;
    try {
      const bytes = await store.get(recordKey(id));
      if (bytes === undefined) return undefined;
      stored = decodeRecord(bytes);
    } catch (err) {
      this.#storeFailed(err, 'read the request', id);
      return undefined;
    }
    return stored.expiresAtMs > this.#now() ? stored : undefined;
  }

  async #isAlive(instanceId: string): Promise<boolean> {
    try {
      return await this.#store!.has(instanceKey(instanceId));
    } catch (err) {
      // cannot tell: saying "pending" is wrong for a while at worst; saying "failed" could be a lie
      this.#storeFailed(err, 'check the owner instance', undefined);
      return true;
    }
  }

  #settleDone(run: Run, response: object): void {
    if (run.settled) return;
    if (typeof response !== 'object' || response === null) {
      this.#settle(
        run,
        this.#failed(run.record, new InfergridError('INTERNAL', 'the request produced no response object')),
      );
      return;
    }
    this.#settle(run, {
      status: 'done',
      id: run.record.id,
      ...(run.record.owner !== undefined ? { owner: run.record.owner } : {}),
      submittedAtMs: run.record.submittedAtMs,
      finishedAtMs: this.#now(),
      response,
    });
  }

  /** Whether request `id` exists and was submitted by someone other than `owner`. */
  async #ownedByAnother(id: string, owner: string | undefined): Promise<boolean> {
    const run = this.#runs.get(id);
    if (run) return run.record.owner !== owner;
    const local = this.#local(id);
    if (local !== 'absent') return local !== undefined && local.owner !== owner;
    const stored = await this.#read(id);
    return stored !== undefined && stored.record.owner !== owner;
  }

  #failed(pending: PendingRecord, err: InfergridError): FailedRecord {
    return {
      status: 'failed',
      id: pending.id,
      ...(pending.owner !== undefined ? { owner: pending.owner } : {}),
      submittedAtMs: pending.submittedAtMs,
      finishedAtMs: this.#now(),
      error: err.toWire(),
      httpStatus: err.httpStatus,
    };
  }

  /** The one place a record settles: kept in memory and written to the store. */
  #settle(run: Run, outcome: FinishedRecord): void {
    if (run.settled) return;
    run.settled = true;
    const { id } = run.record;
    const expiresAtMs = outcome.finishedAtMs + this.resultTtlMs;
    let record = outcome;
    let bytes: Uint8Array;
    try {
      bytes = encodeRecord(record, this.instanceId, expiresAtMs);
    } catch (err) {
      record = this.#failed(
        run.record,
        new InfergridError(
          'INTERNAL',
          `the response could not be serialised as JSON: ${(err as Error).message}`,
          {
            cause: err,
          },
        ),
      );
      bytes = encodeRecord(record, this.instanceId, expiresAtMs);
    }
    const store = this.#store;
    if (bytes.byteLength > this.#maxResultBytes) {
      if (store) {
        // bigger than the whole memory budget: left to the store alone
        this.#write(id, 'record the outcome', () => store.set(recordKey(id), bytes, this.resultTtlMs));
        return;
      }
      // too big to keep anywhere: the poll must still learn why there is no response
      record = this.#failed(
        run.record,
        new InfergridError(
          'PAYLOAD_TOO_LARGE',
          `the response is ${bytes.byteLength} bytes, more than the ${this.#maxResultBytes} bytes kept for asynchronous results (maxResultBytes); ask for fewer outputs or call synchronously`,
          { details: { responseBytes: bytes.byteLength, maxResultBytes: this.#maxResultBytes } },
        ),
      );
      bytes = encodeRecord(record, this.instanceId, expiresAtMs);
    }
    this.#keep(record, expiresAtMs, bytes.byteLength);
    if (store) this.#write(id, 'record the outcome', () => store.set(recordKey(id), bytes, this.resultTtlMs));
  }

  /** Keeps an outcome in memory, dropping the oldest others to stay within maxResults and maxResultBytes. */
  #keep(record: FinishedRecord, expiresAtMs: number, bytes: number): void {
    this.#drop(record.id);
    this.#finished.set(record.id, { record, expiresAtMs, bytes });
    this.#finishedBytes += bytes;
    for (const [id] of this.#finished) {
      if (this.#finished.size <= this.#maxResults && this.#finishedBytes <= this.#maxResultBytes) break;
      // the newest stays even alone over budget (a small failure record explaining a big response)
      if (id === record.id) break;
      this.#drop(id);
    }
  }

  #drop(id: string): void {
    const kept = this.#finished.get(id);
    if (!kept) return;
    this.#finished.delete(id);
    this.#finishedBytes -= kept.bytes;
  }

  #sweep(): void {
    const now = this.#now();
    for (const [id, kept] of this.#finished) {
      if (kept.expiresAtMs > now) break;
      this.#drop(id);
    }
  }

  #renewLease(): void {
    const store = this.#store;
    if (!store || this.#closed) return;
    this.#lease = this.#lease
      .then(() => store.set(instanceKey(this.instanceId), LEASE_VALUE, this.#instanceLeaseMs))
      .catch((err: unknown) => this.#storeFailed(err, 'renew the liveness lease', undefined));
  }

  /** Chains a store operation after the earlier ones for the same id; failures are logged, never thrown. */
  #write(id: string, what: string, op: () => Promise<unknown>): void {
    const previous = this.#writes.get(id) ?? Promise.resolve();
    const next = previous.then(op).then(
      () => undefined,
      (err: unknown) => this.#storeFailed(err, what, id),
    );
    this.#writes.set(id, next);
    void next.then(() => {
      if (this.#writes.get(id) === next) this.#writes.delete(id);
    });
  }

  #storeFailed(err: unknown, what: string, id: string | undefined): void {
    this.#storeErrors++;
    this.#logger.warn(
      { err, id, store: this.#store?.name },
      `async requests: could not ${what} in the store; other coordinators may not see it`,
    );
  }
}
