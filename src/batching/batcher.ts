/**
 * The scheduler in front of one model on a worker: a bounded admission queue with priority
 * levels, and a dynamic batcher (Triton's, in spirit).
 *
 * When a model instance is free, the oldest request of the most urgent priority level heads
 * the next batch, joined by queued requests that may share it (same non-batch shapes, outputs
 * and model parameters; different shapes are bucketed, never padded) up to `maxBatchSize` rows.
 * The batch runs at once when it is full (or a preferred size), when its oldest request has
 * waited `maxQueueDelayMs`, or when the model is idle and that request is alone — so a lone
 * request never waits, and under load requests that queued while the model was busy leave
 * together.
 *
 * One exception (`refillWait`, on by default): right after a batch of several requests, the
 * clients it answered are about to send their next requests. Running the first to come back
 * alone would split the load into a batch of one and a batch of the rest, every round (measured:
 * batches of 1 and 31 alternating, 72% of the model's capacity at 32 clients). So for at most
 * half that batch's compute time, the batcher waits until as many requests as it had are queued.
 * A model serving one client at a time never waits: its batches have one request.
 *
 * Fairness between senders (`source`: on a worker, one per coordinator connection). Batches
 * form from every sender's requests alike; only admission tells them apart, so that one sender
 * flooding the queue cannot starve another. While one sender alone has requests queued, nothing
 * changes (one Map update per enqueue and dequeue). With several, each sender's fair share is
 * maxQueueSize / senders with requests queued (the newcomer counted):
 * - once the queue holds `fairShareThreshold` of maxQueueSize, a sender at or over its share is
 *   refused OVERLOADED while the others are still admitted;
 * - when the queue is full, a sender under its share pushes out the newest queued request of the
 *   sender holding the most (over its share, at the same or a less urgent level), which is
 *   answered OVERLOADED (retryable: its coordinator tries another worker).
 * Within a priority level the queue stays FIFO: a light sender's request waits behind at most
 * what the queue holds, of which a heavy sender holds about its share.
 *
 * Contract: every submitted request is settled exactly once — with its own outputs, or
 * OVERLOADED (queue full, or pushed out for a sender under its fair share), DEADLINE_EXCEEDED (expired before it ran; it never reaches
 * the model), its signal's reason (cancelled: removed from the queue), or the batch's error.
 * A request cancelled or expired while its batch runs is answered at once; the batch's own
 * signal aborts only when every request in it has been answered so, since until then someone
 * still wants the model's outputs. The instance stays busy until `execute` settles.
 */

import { InfergridError, toInfergridError } from '../errors.ts';
import { type Parameters, modelParameters } from '../protocol/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { BatchPhasesMs, ComputeTimings, ModelStats } from './stats.ts';
import { batchSizeOf, compatibilityKey, concatInputs, splitOutputs } from './tensor-batch.ts';

/** Timers the batcher uses; injectable so tests control time. */
export interface BatcherClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const REAL_CLOCK: BatcherClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface BatcherOptions {
  /** For messages: "model m". */
  name: string;
  /** Most rows in one execution; 1 runs requests one by one. */
  maxBatchSize: number;
  /** How long the oldest queued request may wait for company, ms. 0: never. */
  maxQueueDelayMs: number;
  /** Batch sizes to run as soon as they can be formed. */
  preferredBatchSizes: readonly number[];
  /** Requests that may wait; one more is refused with OVERLOADED. */
  maxQueueSize: number;
  /** Bytes of queued tensors that may wait; more is refused with OVERLOADED. */
  maxQueueBytes: number;
  /** Executions that may run at once. */
  instances: number;
  /** Priority levels; 1 is the most urgent. */
  priorityLevels: number;
  /**
   * With several senders queued, the fraction of maxQueueSize from which a sender holding its
   * fair share (maxQueueSize / senders) or more is refused. 0..1; default 0.5.
   */
  fairShareThreshold?: number;
  /** Level of a request that names none. */
  defaultPriorityLevel: number;
  /**
   * After a batch of several requests, wait (at most half its compute time) for as many to queue
   * before running fewer. Default true.
   */
  refillWait?: boolean;
  /**
   * Runs one batch: never more than maxBatchSize rows, except that with maxBatchSize 1 (no
   * batching) a request of several rows runs whole, alone. `ctx.signal` aborts once every
   * request of the batch was cancelled or passed its deadline (the reason: the last one's);
   * whatever `execute` returns after that is dropped. `ctx.runStarted`/`runEnded` mark the
   * model run itself (first call wins), so the time before it counts as input preparation and
   * the time after as output extraction; unmarked, the run is from the call to the settling.
   */
  execute: (inputs: Tensor[], ctx: ExecuteContext) => Promise<Tensor[]>;
  stats: ModelStats;
  clock?: BatcherClock;
}

/** What `execute` gets besides the batch's inputs. */
export interface ExecuteContext {
  readonly parameters: Parameters;
  readonly outputs: string[] | undefined;
  readonly signal: AbortSignal;
  /**
   * The `priority` the request heading the batch asked for (undefined: the default level), so
   * that a worker-run pipeline asks the same for its steps, as the coordinator's would.
   */
  readonly priority: number | undefined;
  /** The model run starts now (after the backend prepared its inputs). */
  runStarted(): void;
  /** The model run ended now (before the backend extracts its outputs). */
  runEnded(): void;
}

/**
 * Tracing hooks a request may carry into the batcher (the worker's; the batcher imports no
 * tracing library). Untraced requests carry none and cost one field check per batch member.
 */
export interface SubmitTrace {
  /** The request left the queue: its batch starts now. */
  dequeued(): void;
  /**
   * A batch starts and this is its first traced request; `members` are all its traced requests
   * (this one included), `rows` the batch's rows. The returned function is called once, when
   * the execution ends, with its error if it failed.
   */
  batchStarted(members: readonly SubmitTrace[], rows: number): (error?: InfergridError) => void;
}

export interface SubmitOptions {
  inputs: Tensor[];
  outputs?: string[] | undefined;
  parameters?: Parameters | undefined;
  /** 1..priorityLevels, 1 most urgent; 0 or absent: the default level. */
  priority?: number | undefined;
  /** In the batcher clock's time; a request still queued then is dropped with DEADLINE_EXCEEDED. */
  deadlineAt?: number | undefined;
  /** Aborting removes a queued request (settled with the signal's reason). */
  signal?: AbortSignal | undefined;
  /** Told when the request leaves the queue and when its batch runs. */
  trace?: SubmitTrace | undefined;
  /** Filled in when the request succeeds: its queue time and its batch's phases, ns. */
  timings?: ComputeTimings | undefined;
  /**
   * Who sent it, compared by identity (a worker passes the coordinator's connection): senders
   * share the queue fairly (see the header). Absent: one anonymous sender.
   */
  source?: BatcherSource | undefined;
}

/** A sender of requests, for fairness between senders; compared by identity. */
export type BatcherSource = object | string | number;

export const DEFAULT_FAIR_SHARE_THRESHOLD = 0.5;

/**
 * A batch being executed, and the context its `execute` gets. Its signal is made only when
 * read, or when the batch is aborted: an AbortSignal costs about 4.5 µs to make on Node 20, once
 * per batch, and most backends never look at it.
 */
class RunningBatch implements ExecuteContext {
  readonly parameters: Parameters;
  readonly outputs: string[] | undefined;
  readonly priority: number | undefined;
  /** Its requests not yet answered; at 0 by cancels and deadlines, nobody wants the outputs. */
  waiting: number;
  /** When the model run started and ended, as the backend marked them (batcher clock). */
  runStartedAt: number | undefined;
  runEndedAt: number | undefined;
  readonly #now: () => number;
  #controller: AbortController | undefined;
  #abortReason: InfergridError | undefined;

  constructor(
    parameters: Parameters,
    outputs: string[] | undefined,
    priority: number | undefined,
    waiting: number,
    now: () => number,
  ) {
    this.parameters = parameters;
    this.outputs = outputs;
    this.priority = priority;
    this.waiting = waiting;
    this.#now = now;
  }

  runStarted(): void {
    this.runStartedAt ??= this.#now();
  }

  runEnded(): void {
    this.runEndedAt ??= this.#now();
  }

  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#abortReason) this.#controller.abort(this.#abortReason);
    }
    return this.#controller.signal;
  }

  /** Why it was aborted; undefined while someone still wants its outputs. */
  get abortReason(): InfergridError | undefined {
    return this.#abortReason;
  }

  abort(reason: InfergridError): void {
    if (this.#abortReason) return;
    this.#abortReason = reason;
    this.#controller?.abort(reason);
  }
}

interface Item {
  readonly inputs: Tensor[];
  readonly outputs: string[] | undefined;
  readonly parameters: Parameters;
  readonly rows: number;
  readonly bytes: number;
  readonly key: string;
  readonly level: number;
  /** As submitted (its level's source); undefined or 0: the default level. */
  readonly priority: number | undefined;
  readonly deadlineAt: number;
  readonly enqueuedAt: number;
  readonly signal: AbortSignal | undefined;
  readonly trace: SubmitTrace | undefined;
  readonly timings: ComputeTimings | undefined;
  readonly source: BatcherSource | undefined;
  /** Time it waited in the queue, ms (once its batch starts). */
  queuedMs: number;
  readonly resolve: (outputs: Tensor[]) => void;
  readonly reject: (err: InfergridError) => void;
  onAbort: (() => void) | undefined;
  /** Fires at the deadline, queued or running: the request is answered DEADLINE_EXCEEDED then. */
  deadlineTimer: unknown;
  /** The batch it runs in, once it does. */
  batch: RunningBatch | undefined;
  queued: boolean;
  settled: boolean;
}

export class Batcher {
  readonly #o: Required<BatcherOptions>;
  /** One FIFO per priority level, index 0 most urgent. */
  readonly #levels: Item[][];
  #queued = 0;
  #queuedBytes = 0;
  /** Requests queued per sender; a sender with none is not in it. */
  readonly #bySource = new Map<BatcherSource | undefined, number>();
  /** Queued requests from which a sender at its fair share is refused. */
  readonly #fairFrom: number;
  #running = 0;
  #timer: unknown;
  #timerAt = Number.POSITIVE_INFINITY;
  /** The last finished batch: how many requests, when it ended, how long it ran. */
  #lastBatch = { requests: 0, endedAt: Number.NEGATIVE_INFINITY, computeMs: 0 };

  constructor(options: BatcherOptions) {
    const int = (v: number, min: number, what: string): void => {
      if (!Number.isInteger(v) || v < min)
        throw new RangeError(`${what} must be an integer >= ${min}, got ${v}`);
    };
    int(options.maxBatchSize, 1, 'maxBatchSize');
    int(options.maxQueueSize, 1, 'maxQueueSize');
    int(options.instances, 1, 'instances');
    int(options.priorityLevels, 1, 'priorityLevels');
    int(options.defaultPriorityLevel, 1, 'defaultPriorityLevel');
    if (!(options.maxQueueDelayMs >= 0)) throw new RangeError('maxQueueDelayMs must be >= 0');
    if (!(options.maxQueueBytes > 0)) throw new RangeError('maxQueueBytes must be > 0');
    if (!(options.defaultPriorityLevel >= 1 && options.defaultPriorityLevel <= options.priorityLevels)) {
      throw new RangeError('defaultPriorityLevel must be within 1..priorityLevels');
    }
    for (const p of options.preferredBatchSizes) int(p, 1, 'each preferred batch size');
    const threshold = options.fairShareThreshold ?? DEFAULT_FAIR_SHARE_THRESHOLD;
    if (!(threshold >= 0 && threshold <= 1)) {
      throw new RangeError(`fairShareThreshold must be within 0..1, got ${threshold}`);
    }
    this.#o = { clock: REAL_CLOCK, refillWait: true, fairShareThreshold: threshold, ...options };
    this.#fairFrom = Math.ceil(options.maxQueueSize * threshold);
    this.#levels = Array.from({ length: options.priorityLevels }, () => []);
  }

  /** Requests waiting (not yet in a running batch). */
  get queued(): number {
    return this.#queued;
  }

  /** Executions running now. */
  get running(): number {
    return this.#running;
  }

  submit(options: SubmitOptions): Promise<Tensor[]> {
    const o = this.#o;
    const now = o.clock.now();
    if (options.signal?.aborted) {
      o.stats.onRejected('cancelled');
      return Promise.reject(toInfergridError(options.signal.reason, 'CANCELLED'));
    }
    const level = this.#level(options.priority);
    if (level instanceof InfergridError) return Promise.reject(level);
    const rows = batchSizeOf(options.inputs);
    if (rows > o.maxBatchSize && o.maxBatchSize > 1) {
      return Promise.reject(
        new InfergridError(
          'INVALID_ARGUMENT',
          `${o.name}: a request of ${rows} rows is over maxBatchSize ${o.maxBatchSize}`,
        ),
      );
    }
    if (options.deadlineAt !== undefined && options.deadlineAt <= now) {
      o.stats.onRejected('deadline');
      return Promise.reject(
        new InfergridError(
          'DEADLINE_EXCEEDED',
          `${o.name}: the request's deadline passed before it was queued`,
        ),
      );
    }
    let bytes = 0;
    for (const t of options.inputs) bytes += t.data.byteLength;
    if (bytes > o.maxQueueBytes) {
      // it could never fit, however long the client waits: not an overload, the request is too big
      return Promise.reject(
        new InfergridError(
          'INVALID_ARGUMENT',
          `${o.name}: a request of ${bytes} input bytes is over the queue's limit of ${o.maxQueueBytes} (batching.maxQueueBytes)`,
        ),
      );
    }
    const source = options.source;
    const senders = this.#bySource;
    // several senders share the queue (a newcomer counts): their shares decide first
    if (senders.size > 1 || (senders.size === 1 && !senders.has(source))) {
      const refused = this.#fairAdmission(source, level, bytes);
      if (refused) {
        o.stats.onRejected('overloaded');
        return Promise.reject(refused);
      }
    }
    if (this.#queued >= o.maxQueueSize || this.#queuedBytes + bytes > o.maxQueueBytes) {
      o.stats.onRejected('overloaded');
      const full = this.#queued >= o.maxQueueSize ? `${this.#queued} requests` : `${this.#queuedBytes} bytes`;
      return Promise.reject(
        new InfergridError(
          'OVERLOADED',
          `${o.name}: the queue is full (${full} waiting); retry later or on another worker`,
          {
            details: { retryAfterSeconds: 1, queued: this.#queued },
          },
        ),
      );
    }
    const parameters = modelParameters(options.parameters);
    return new Promise<Tensor[]>((resolve, reject) => {
      const item: Item = {
        inputs: options.inputs,
        outputs: options.outputs,
        parameters,
        rows,
        bytes,
        key: compatibilityKey(options.inputs, options.outputs, JSON.stringify(parameters)),
        level,
        priority: options.priority || undefined,
        deadlineAt: options.deadlineAt ?? Number.POSITIVE_INFINITY,
        enqueuedAt: now,
        signal: options.signal,
        trace: options.trace,
        timings: options.timings,
        source,
        queuedMs: 0,
        resolve,
        reject,
        onAbort: undefined,
        deadlineTimer: undefined,
        batch: undefined,
        queued: true,
        settled: false,
      };
      if (options.deadlineAt !== undefined) {
        item.deadlineTimer = o.clock.setTimeout(() => {
          item.deadlineTimer = undefined;
          this.#abandon(item, this.#expired(item.queued ? 'while it was queued' : 'while it ran'));
        }, options.deadlineAt - now);
      }
      if (options.signal) {
        item.onAbort = () => this.#abandon(item, toInfergridError(options.signal!.reason, 'CANCELLED'));
        options.signal.addEventListener('abort', item.onAbort, { once: true });
      }
      this.#levels[level]!.push(item);
      this.#queued++;
      this.#queuedBytes += bytes;
      senders.set(source, (senders.get(source) ?? 0) + 1);
      o.stats.onQueueDepth(this.#queued);
      this.#schedule();
    });
  }

  /**
   * Admission with several senders queued: the error refusing `source`'s request, or undefined
   * to go on (after pushing another sender's request out when the queue was full).
   */
  #fairAdmission(
    source: BatcherSource | undefined,
    level: number,
    bytes: number,
  ): InfergridError | undefined {
    const { maxQueueSize, name } = this.#o;
    const senders = this.#bySource;
    const active = senders.size + (senders.has(source) ? 0 : 1);
    const share = Math.max(1, Math.floor(maxQueueSize / active));
    const mine = senders.get(source) ?? 0;
    if (this.#queued >= this.#fairFrom && mine >= share) {
      return new InfergridError(
        'OVERLOADED',
        `${name}: this sender has ${mine} of the ${this.#queued} queued requests, its fair share of the queue while ${active} senders share it; retry later or on another worker`,
        { details: { retryAfterSeconds: 1, queued: this.#queued, fairShare: share } },
      );
    }
    if (this.#queued < maxQueueSize) return undefined;
    // full, and this sender is under its share: the heaviest sender over its share makes room
    let heaviest: BatcherSource | undefined;
    let most = share;
    for (const [sender, n] of senders) {
      if (n > most) {
        heaviest = sender;
        most = n;
      }
    }
    if (most === share) return undefined; // nobody over their share: refused as full
    for (let l = this.#levels.length - 1; l >= level; l--) {
      const queue = this.#levels[l]!;
      for (let i = queue.length - 1; i >= 0; i--) {
        const victim = queue[i]!;
        if (victim.source !== heaviest) continue;
        // only when its room is enough: a push-out that still leaves no room helps nobody
        if (this.#queuedBytes - victim.bytes + bytes > this.#o.maxQueueBytes) return undefined;
        this.#o.stats.onRejected('overloaded');
        this.#settle(victim, {
          error: new InfergridError(
            'OVERLOADED',
            `${name}: pushed out of the full queue to admit a sender under its fair share (this one held ${most} of ${this.#queued}); retry later or on another worker`,
            { details: { retryAfterSeconds: 1, queued: this.#queued, fairShare: share } },
          ),
        });
        return undefined;
      }
    }
    return undefined;
  }

  #level(priority: number | undefined): number | InfergridError {
    const { priorityLevels, defaultPriorityLevel, name } = this.#o;
    if (priority === undefined || priority === 0) return defaultPriorityLevel - 1;
    if (!Number.isInteger(priority) || priority < 1 || priority > priorityLevels) {
      return new InfergridError(
        'INVALID_ARGUMENT',
        `${name}: parameter "priority" must be an integer from 1 (most urgent) to ${priorityLevels}, or 0 for the default; got ${priority}`,
      );
    }
    return priority - 1;
  }

  /** Settles an item (exactly once) and takes it out of the queue if it is still there. */
  #settle(item: Item, outcome: { outputs: Tensor[] } | { error: InfergridError }): void {
    if (item.settled) return;
    item.settled = true;
    if (item.queued) this.#unqueue(item);
    if (item.onAbort) item.signal!.removeEventListener('abort', item.onAbort);
    if (item.deadlineTimer !== undefined) this.#o.clock.clearTimeout(item.deadlineTimer);
    const now = this.#o.clock.now();
    if ('outputs' in outcome) {
      this.#o.stats.onDone(true, now - item.enqueuedAt);
      item.resolve(outcome.outputs);
    } else {
      this.#o.stats.onDone(false, now - item.enqueuedAt);
      item.reject(outcome.error);
    }
  }

  #unqueue(item: Item): void {
    const queue = this.#levels[item.level]!;
    const at = queue.indexOf(item);
    if (at >= 0) queue.splice(at, 1);
    item.queued = false;
    this.#queued--;
    this.#queuedBytes -= item.bytes;
    const left = this.#bySource.get(item.source)! - 1;
    if (left === 0) this.#bySource.delete(item.source);
    else this.#bySource.set(item.source, left);
    this.#o.stats.onQueueDepth(this.#queued);
  }

  /**
   * A cancel or deadline: a queued request leaves the queue; a running one's answer is dropped,
   * and when it was the last one its batch ran for, the batch's signal aborts.
   */
  #abandon(item: Item, reason: InfergridError): void {
    if (item.settled) return;
    if (item.queued) this.#o.stats.onRejected(reason.code === 'DEADLINE_EXCEEDED' ? 'deadline' : 'cancelled');
    this.#settle(item, { error: reason });
    const batch = item.batch;
    if (batch && --batch.waiting === 0) batch.abort(reason);
    this.#schedule();
  }

  /** Starts whatever batches may start now, or arms the timer for the next one that may. */
  #schedule(): void {
    const o = this.#o;
    while (this.#running < o.instances && this.#queued > 0) {
      const now = o.clock.now();
      const head = this.#head(now);
      if (!head) break;
      const batch = this.#gather(head, now);
      const rows = batch.reduce((sum, i) => sum + i.rows, 0);
      const preferred = this.#preferredCut(batch, rows);
      if (rows >= o.maxBatchSize || preferred !== undefined) {
        this.#start(preferred ?? batch, now);
        continue;
      }
      const refillUntil = this.#refillUntil(batch.length);
      const delayUntil =
        o.maxQueueDelayMs > 0 ? head.enqueuedAt + o.maxQueueDelayMs : Number.NEGATIVE_INFINITY;
      if (now < refillUntil) {
        // the clients of the last batch are coming back: wait for them (or the queue delay)
        this.#arm(Math.min(refillUntil, delayUntil > now ? delayUntil : refillUntil));
        return;
      }
      const idleAndAlone = this.#running === 0 && this.#queued === batch.length && batch.length === 1;
      if (idleAndAlone || now >= delayUntil) {
        this.#start(batch, now);
        continue;
      }
      this.#arm(delayUntil);
      return;
    }
    if (this.#queued === 0) this.#disarm();
  }

  /**
   * Until when to hold a partial batch of `requests` on an idle model because the last batch
   * had more requests and finished moments ago (see refillWait); -Infinity when not.
   */
  #refillUntil(requests: number): number {
    const last = this.#lastBatch;
    if (!this.#o.refillWait || this.#running > 0 || last.requests <= 1 || requests >= last.requests) {
      return Number.NEGATIVE_INFINITY;
    }
    return last.endedAt + last.computeMs / 2;
  }

  /** The oldest live request of the most urgent level; drops expired ones on the way. */
  #head(now: number): Item | undefined {
    for (const queue of this.#levels) {
      while (queue.length > 0) {
        const item = queue[0]!;
        if (item.deadlineAt <= now) {
          this.#o.stats.onRejected('deadline');
          this.#settle(item, { error: this.#expired() });
          continue;
        }
        return item;
      }
    }
    return undefined;
  }

  #expired(when = 'while it was queued'): InfergridError {
    return new InfergridError('DEADLINE_EXCEEDED', `${this.#o.name}: the request's deadline passed ${when}`);
  }

  /** The head and the queued requests that may share its batch, most urgent and oldest first. */
  #gather(head: Item, now: number): Item[] {
    const { maxBatchSize } = this.#o;
    const batch = [head];
    let rows = head.rows;
    if (maxBatchSize === 1) return batch;
    for (const queue of this.#levels) {
      for (const item of queue) {
        if (rows >= maxBatchSize) return batch;
        if (item === head || item.key !== head.key || rows + item.rows > maxBatchSize) continue;
        if (item.deadlineAt <= now) continue; // dropped when it reaches the head
        batch.push(item);
        rows += item.rows;
      }
    }
    return batch;
  }

  /**
   * The batch cut to the largest preferred size it can fill exactly, its head always included
   * (a preferred size never lets younger or less urgent requests overtake it); undefined when none.
   */
  #preferredCut(batch: Item[], rows: number): Item[] | undefined {
    const head = batch[0]!;
    const sizes = [...this.#o.preferredBatchSizes]
      .filter((p) => p >= head.rows && p <= rows)
      .sort((a, b) => b - a);
    for (const size of sizes) {
      const cut: Item[] = [];
      let n = 0;
      for (const item of batch) {
        if (n + item.rows > size) continue;
        cut.push(item);
        n += item.rows;
      }
      if (n === size) return cut;
    }
    return undefined;
  }

  #arm(at: number): void {
    if (at >= this.#timerAt) return;
    this.#disarm();
    const { clock } = this.#o;
    this.#timerAt = at;
    this.#timer = clock.setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = Number.POSITIVE_INFINITY;
        this.#schedule();
      },
      Math.max(0, at - clock.now()),
    );
  }

  #disarm(): void {
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  #start(batch: Item[], now: number): void {
    const o = this.#o;
    const head = batch[0]!;
    const running = new RunningBatch(head.parameters, head.outputs, head.priority, batch.length, () =>
      o.clock.now(),
    );
    let traced: SubmitTrace[] | undefined;
    for (const item of batch) {
      this.#unqueue(item);
      item.batch = running;
      item.queuedMs = now - item.enqueuedAt;
      o.stats.onQueued(item.queuedMs);
      if (item.trace) {
        item.trace.dequeued();
        traced ??= [];
        traced.push(item.trace);
      }
    }
    this.#running++;
    const sizes = batch.map((i) => i.rows);
    const rows = sizes.reduce((a, b) => a + b, 0);
    const endTrace = traced ? traced[0]!.batchStarted(traced, rows) : undefined;
    // until the backend marks its run, it is from the call (after concatenating) to the settling
    let calledAt = now;
    let phases: BatchPhasesMs | undefined;
    const measure = (): BatchPhasesMs => {
      const doneAt = o.clock.now();
      const runStart = Math.min(doneAt, Math.max(now, running.runStartedAt ?? calledAt));
      const runEnd = Math.min(doneAt, Math.max(runStart, running.runEndedAt ?? doneAt));
      return { inputMs: runStart - now, inferMs: runEnd - runStart, outputMs: doneAt - runEnd };
    };
    let run: Promise<Tensor[]>;
    try {
      const inputs = concatInputs(batch.map((i) => i.inputs));
      calledAt = o.clock.now();
      run = o.execute(inputs, running);
    } catch (err) {
      run = Promise.reject(err);
    }
    run
      .then(
        (outputs) => {
          endTrace?.();
          const perRequest = splitOutputs(outputs, sizes);
          phases = measure();
          for (const [i, item] of batch.entries()) {
            if (item.timings) fillTimings(item.timings, item.queuedMs, phases);
            this.#settle(item, { outputs: perRequest[i]! });
          }
        },
        (err: unknown) => {
          phases = measure();
          // a batch that was aborted ends with why, whatever the backend threw on stopping
          const error = toInfergridError(running.abortReason ?? err, 'BACKEND_ERROR');
          endTrace?.(error);
          for (const item of batch) this.#settle(item, { error });
        },
      )
      .catch((err: unknown) => {
        // splitOutputs refused the model's outputs
        const error = toInfergridError(err, 'BACKEND_ERROR');
        for (const item of batch) this.#settle(item, { error });
      })
      .finally(() => {
        const endedAt = o.clock.now();
        o.stats.onBatch(rows, batch.length, phases ?? measure(), Date.now());
        this.#lastBatch = { requests: batch.length, endedAt, computeMs: endedAt - now };
        this.#running--;
        this.#schedule();
      });
  }
}

const nsOf = (ms: number): number => Math.max(0, Math.round(ms * 1e6));

function fillTimings(timings: ComputeTimings, queuedMs: number, phases: BatchPhasesMs): void {
  timings.queueNs = nsOf(queuedMs);
  timings.computeInputNs = nsOf(phases.inputMs);
  timings.computeInferNs = nsOf(phases.inferMs);
  timings.computeOutputNs = nsOf(phases.outputMs);
}
