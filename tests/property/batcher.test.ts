/**
 * The batcher's contract under arbitrary interleavings: requests of random rows, shape bucket,
 * priority, deadline and signal arrive while fake time passes, batches finish, fail, throw or
 * return outputs of the wrong size, and signals abort. After draining, every request was settled
 * exactly once (its resolve/reject calls counted), and along the way no batch went over
 * maxBatchSize or mixed buckets, no expired or cancelled request reached the model, no more
 * batches ran than instances, and the statistics add up.
 *
 * The fake clock and the counting promise repeat those of tests/unit/batcher.test.ts, so each
 * file stands alone.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { Batcher, type BatcherClock, ModelStats, type SubmitOptions } from '../../src/batching/index.ts';
import { InfergridError } from '../../src/errors.ts';
import type { Tensor } from '../../src/tensor/index.ts';

const NativePromise = Promise;

function flush(): Promise<void> {
  return new NativePromise((resolve) => setImmediate(resolve));
}

/** Timers fire only inside advance(), each at its own instant. */
class FakeClock implements BatcherClock {
  #now = 0;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  advance(ms: number): void {
    const end = this.#now + ms;
    for (let fired = 0; ; fired++) {
      if (fired > 10_000) throw new Error('timers keep re-arming without time passing');
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.#timers)
        if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fn();
    }
    this.#now = end;
  }
}

/** Counts its resolve/reject calls; the global Promise only during one synchronous submit. */
class CountingPromise<T> extends NativePromise<T> {
  readonly calls: { n: number };

  constructor(
    executor: (resolve: (value: T | PromiseLike<T>) => void, reject: (reason?: unknown) => void) => void,
  ) {
    const calls = { n: 0 };
    super((resolve, reject) =>
      executor(
        (value) => {
          calls.n++;
          resolve(value);
        },
        (reason) => {
          calls.n++;
          reject(reason);
        },
      ),
    );
    this.calls = calls;
  }

  static override get [Symbol.species](): PromiseConstructor {
    return NativePromise;
  }
}

function countedSubmit(batcher: Batcher, options: SubmitOptions): CountingPromise<Tensor[]> {
  const global = globalThis as { Promise: PromiseConstructor };
  global.Promise = CountingPromise as unknown as PromiseConstructor;
  let promise: Promise<Tensor[]>;
  try {
    promise = batcher.submit(options);
  } finally {
    global.Promise = NativePromise;
  }
  assert.ok(promise instanceof CountingPromise, 'submit builds its promise with the global Promise');
  return promise;
}

/** Input "x" FP32 [rows, width]: row r of request id holds id·1000 + r in every column. */
function inputOf(id: number, rows: number, width: number): Tensor {
  const values = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) values.fill(id * 1000 + r, r * width, (r + 1) * width);
  return { name: 'x', datatype: 'FP32', shape: [rows, width], data: new Uint8Array(values.buffer) };
}

function floats(t: Tensor): Float32Array {
  return new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
}

/** The model: y = x, so each request's rows come back as they went in. */
function echo(inputs: readonly Tensor[]): Tensor[] {
  const x = inputs[0]!;
  return [{ name: 'y', datatype: 'FP32', shape: [...x.shape], data: Buffer.from(x.data) }];
}

const WIDTHS = [2, 3] as const;

const configArb = fc.record({
  maxBatchSize: fc.oneof(
    { weight: 1, arbitrary: fc.constant(1) },
    { weight: 4, arbitrary: fc.integer({ min: 2, max: 6 }) },
  ),
  maxQueueDelayMs: fc.constantFrom(0, 10, 100),
  preferredBatchSizes: fc.constantFrom<number[]>([], [2], [2, 3]),
  instances: fc.integer({ min: 1, max: 2 }),
  maxQueueSize: fc.integer({ min: 1, max: 10 }),
  // a multiple of 4: the final probe is one request of exactly this many bytes
  maxQueueBytes: fc.integer({ min: 6, max: 60 }).map((n) => n * 4),
  defaultPriorityLevel: fc.integer({ min: 1, max: 2 }),
});

const opArb = fc.oneof(
  {
    weight: 16,
    arbitrary: fc.record({
      kind: fc.constant('submit' as const),
      rows: fc.oneof(
        { weight: 3, arbitrary: fc.constant(1) },
        { weight: 2, arbitrary: fc.integer({ min: 2, max: 3 }) },
      ),
      bucket: fc.integer({ min: 0, max: 1 }),
      priority: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom<number | undefined>(undefined, 0, 1, 2) },
        { weight: 1, arbitrary: fc.constant(3) }, // over priorityLevels 2: INVALID_ARGUMENT
      ),
      deadlineInMs: fc.option(fc.integer({ min: 0, max: 150 }), { nil: undefined }),
      // senders share the queue fairly: a full queue may push out another sender's request
      source: fc.constantFrom<string | undefined>(undefined, 'a', 'b'),
      signal: fc.oneof(
        { weight: 4, arbitrary: fc.constant('none' as const) },
        { weight: 4, arbitrary: fc.constant('live' as const) },
        { weight: 1, arbitrary: fc.constant('aborted' as const) },
      ),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({ kind: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 120 }) }),
  },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('finish' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('fail' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('wrongRows' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('throwNext' as const) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }) },
);

type Config = typeof configArb extends fc.Arbitrary<infer T> ? T : never;
type Op = typeof opArb extends fc.Arbitrary<infer T> ? T : never;

interface Req {
  readonly id: number;
  readonly rows: number;
  readonly width: number;
  readonly deadlineAt: number | undefined;
  readonly priority: number | undefined;
  readonly controller: AbortController | undefined;
  calls: { n: number };
  rejectedAtSubmit: boolean;
  /** The batch it ran in, if any. */
  batch: Batch | undefined;
  /** Not settled when its signal was aborted: queued, or running. */
  abortedOpen: boolean;
  /** Not yet run and not settled when its signal was aborted. */
  abortedWhileQueued: boolean;
  abortReason: InfergridError | undefined;
  outcome: { ok: true; outputs: Tensor[] } | { ok: false; error: unknown } | undefined;
  /** Settle callbacks that ran (the promise's own view). */
  observed: number;
}

interface Batch {
  readonly reqs: Req[];
  readonly inputs: Tensor[];
  done: boolean;
  /** How the test ended it: echo outputs, a rejection, a sync throw, or outputs of the wrong size. */
  end: 'ok' | 'fail' | 'throw' | 'wrongRows' | undefined;
  resolve(outputs: Tensor[]): void;
  reject(err: unknown): void;
}

async function run(config: Config, ops: Op[]): Promise<void> {
  const clock = new FakeClock();
  const stats = new ModelStats('m', '1');
  const requests: Req[] = [];
  const byId = new Map<number, Req>();
  const batches: Batch[] = [];
  const violations: string[] = [];
  let throwNext = false;
  let nextId = 1;
  const running = (): Batch[] => batches.filter((b) => !b.done);

  const batcher = new Batcher({
    name: 'model "m"',
    maxBatchSize: config.maxBatchSize,
    maxQueueDelayMs: config.maxQueueDelayMs,
    preferredBatchSizes: config.preferredBatchSizes,
    maxQueueSize: config.maxQueueSize,
    maxQueueBytes: config.maxQueueBytes,
    instances: config.instances,
    priorityLevels: 2,
    defaultPriorityLevel: config.defaultPriorityLevel,
    stats,
    clock,
    execute: (inputs) => {
      // checks are recorded, not thrown: the batcher would turn a throw into BACKEND_ERROR
      const x = inputs[0]!;
      const [rows = 0, width = 0] = x.shape;
      const values = floats(x);
      const reqs: Req[] = [];
      for (let r = 0; r < rows; r++) {
        const id = Math.floor(values[r * width]! / 1000);
        const req = byId.get(id);
        if (!req) {
          violations.push(`row ${r} of a batch belongs to no request (${values[r * width]})`);
          break;
        }
        if (reqs.at(-1) !== req) reqs.push(req);
      }
      const now = clock.now();
      const sum = reqs.reduce((n, q) => n + q.rows, 0);
      if (sum !== rows) violations.push(`a batch of ${rows} rows holds requests of ${sum} rows`);
      if (rows > config.maxBatchSize && !(config.maxBatchSize === 1 && reqs.length === 1)) {
        violations.push(`a batch of ${rows} rows, over maxBatchSize ${config.maxBatchSize}`);
      }
      for (const req of reqs) {
        if (req.width !== width)
          violations.push(`request ${req.id} of width ${req.width} in a batch of width ${width}`);
        if (req.batch) violations.push(`request ${req.id} ran twice`);
        if (req.deadlineAt !== undefined && req.deadlineAt <= now) {
          violations.push(`request ${req.id} ran at ${now}, after its deadline ${req.deadlineAt}`);
        }
        if (req.controller?.signal.aborted) violations.push(`request ${req.id} ran after its signal aborted`);
        if (req.calls.n !== 0) violations.push(`request ${req.id} ran after it was settled`);
      }
      let settle!: { resolve: (o: Tensor[]) => void; reject: (e: unknown) => void };
      const promise = new NativePromise<Tensor[]>((resolve, reject) => {
        settle = { resolve, reject };
      });
      const batch: Batch = { reqs, inputs, done: false, end: undefined, ...settle };
      for (const req of reqs) req.batch = batch;
      batches.push(batch);
      if (running().length > config.instances) {
        violations.push(`${running().length} batches running with instances ${config.instances}`);
      }
      if (throwNext) {
        throwNext = false;
        batch.done = true;
        batch.end = 'throw';
        throw new Error('execute threw');
      }
      return promise;
    },
  });

  const submit = (
    rows: number,
    width: number,
    extra: Partial<SubmitOptions>,
    controller?: AbortController,
  ) => {
    const id = nextId++;
    const { deadlineAt, priority } = extra;
    const req: Req = {
      id,
      rows,
      width,
      deadlineAt,
      priority,
      controller,
      calls: { n: 0 },
      rejectedAtSubmit: false,
      batch: undefined,
      abortedOpen: false,
      abortedWhileQueued: false,
      abortReason: undefined,
      outcome: undefined,
      observed: 0,
    };
    // known before submit: an idle model runs the request inside submit
    requests.push(req);
    byId.set(id, req);
    const promise = countedSubmit(batcher, { inputs: [inputOf(id, rows, width)], ...extra });
    req.calls = promise.calls;
    req.rejectedAtSubmit = promise.calls.n > 0;
    promise.then(
      (outputs) => {
        req.observed++;
        req.outcome = { ok: true, outputs };
      },
      (error: unknown) => {
        req.observed++;
        req.outcome = { ok: false, error };
      },
    );
    return req;
  };

  const endOldest = (how: 'ok' | 'fail' | 'wrongRows'): void => {
    const batch = running()[0];
    if (!batch) return;
    // a single request's outputs pass through whole, so wrong rows only show in a shared batch
    const end = how === 'wrongRows' && batch.reqs.length < 2 ? 'ok' : how;
    batch.done = true;
    batch.end = end;
    if (end === 'fail') batch.reject(new Error('the model failed'));
    else if (end === 'ok') batch.resolve(echo(batch.inputs));
    else {
      const y = echo(batch.inputs)[0]!;
      const row = (y.shape[1] ?? 1) * 4;
      batch.resolve([{ ...y, shape: [y.shape[0]! - 1, ...y.shape.slice(1)], data: y.data.subarray(row) }]);
    }
  };

  for (const op of ops) {
    switch (op.kind) {
      case 'submit': {
        const controller = op.signal === 'none' ? undefined : new AbortController();
        if (op.signal === 'aborted')
          controller!.abort(new InfergridError('CANCELLED', `aborted before ${nextId}`));
        submit(
          op.rows,
          WIDTHS[op.bucket]!,
          {
            priority: op.priority,
            deadlineAt: op.deadlineInMs === undefined ? undefined : clock.now() + op.deadlineInMs,
            signal: controller?.signal,
            source: op.source,
          },
          controller,
        );
        break;
      }
      case 'advance':
        clock.advance(op.ms);
        break;
      case 'finish':
        endOldest('ok');
        break;
      case 'fail':
        endOldest('fail');
        break;
      case 'wrongRows':
        endOldest('wrongRows');
        break;
      case 'throwNext':
        throwNext = true;
        break;
      case 'abort': {
        const live = requests.filter((r) => r.controller && !r.controller.signal.aborted);
        const req = live[op.pick % Math.max(1, live.length)];
        if (!req) break;
        const wasOpen = req.calls.n === 0;
        req.abortedOpen = wasOpen;
        req.abortedWhileQueued = wasOpen && req.batch === undefined;
        req.abortReason = new InfergridError('CANCELLED', `aborted ${req.id}`);
        req.controller!.abort(req.abortReason);
        if (wasOpen && req.calls.n !== 1) {
          violations.push(
            `request ${req.id} (${req.batch ? 'running' : 'queued'}) was not rejected at once on abort`,
          );
        }
        break;
      }
    }
    await flush();
  }

  // drain: finish what runs; when nothing runs, let the oldest queued request's delay run out
  throwNext = false;
  for (let guard = 0; batcher.queued > 0 || running().length > 0; guard++) {
    assert.ok(guard < 1000, `the batcher stalled with ${batcher.queued} queued, ${batcher.running} running`);
    if (running().length > 0) endOldest('ok');
    else clock.advance(config.maxQueueDelayMs + 1);
    await flush();
  }

  assert.deepEqual(violations, []);
  assert.equal(batcher.queued, 0);
  assert.equal(batcher.running, 0);

  let resolved = 0;
  let accepted = 0;
  const rejectedBy = { overloaded: 0, deadline: 0, cancelled: 0 };
  for (const req of requests) {
    assert.equal(req.calls.n, 1, `request ${req.id}: resolve/reject called ${req.calls.n} times`);
    assert.equal(req.observed, 1, `request ${req.id} settled`);
    const outcome = req.outcome!;
    if (!req.rejectedAtSubmit) accepted++;
    if (outcome.ok) {
      resolved++;
      assert.ok(req.batch?.end === 'ok', `request ${req.id} resolved only from a batch that succeeded`);
      assert.ok(!req.abortedOpen, `request ${req.id} resolved after it was aborted`);
      assert.deepEqual(
        outcome.outputs.map((t) => ({ ...t, data: Buffer.from(t.data).toString('hex') })),
        echo([inputOf(req.id, req.rows, req.width)]).map((t) => ({
          ...t,
          data: Buffer.from(t.data).toString('hex'),
        })),
        `request ${req.id} got exactly its own rows`,
      );
      continue;
    }
    const error = outcome.error;
    assert.ok(error instanceof InfergridError, `request ${req.id}: ${String(error)}`);
    if (req.abortReason && error === req.abortReason) {
      assert.ok(req.abortedOpen, `request ${req.id} rejected with the reason of an abort after it settled`);
      if (req.abortedWhileQueued) rejectedBy.cancelled++;
      continue;
    }
    switch (error.code) {
      case 'OVERLOADED':
        // at submit, or pushed out of the queue (never once running) for a sender under its share
        assert.ok(
          req.rejectedAtSubmit || (req.batch === undefined && /pushed out/.test(error.message)),
          `request ${req.id} OVERLOADED only at submit or pushed out while queued: ${error.message}`,
        );
        rejectedBy.overloaded++;
        break;
      case 'DEADLINE_EXCEEDED':
        assert.ok(req.deadlineAt !== undefined, `request ${req.id}: ${error.message}`);
        // a deadline that passes while the request runs answers it at once, too (not counted
        // as a queue rejection: it was not refused, it ran out of time)
        if (req.batch === undefined) rejectedBy.deadline++;
        else assert.match(error.message, /while it ran/, `request ${req.id}: ${error.message}`);
        break;
      case 'CANCELLED':
        assert.ok(
          req.rejectedAtSubmit && req.controller?.signal.aborted,
          `request ${req.id}: ${error.message}`,
        );
        rejectedBy.cancelled++;
        break;
      case 'INVALID_ARGUMENT':
        assert.ok(req.rejectedAtSubmit, `request ${req.id} INVALID_ARGUMENT only at submit`);
        assert.ok(
          req.priority === 3 ||
            (req.rows > config.maxBatchSize && config.maxBatchSize > 1) ||
            inputOf(req.id, req.rows, req.width).data.byteLength > config.maxQueueBytes,
          `request ${req.id}: ${error.message}`,
        );
        break;
      case 'BACKEND_ERROR':
        assert.ok(
          req.batch && req.batch.end !== 'ok',
          `request ${req.id} failed only with a batch that failed: ${error.message}`,
        );
        break;
      default:
        assert.fail(`request ${req.id}: unexpected ${error.code}: ${error.message}`);
    }
  }

  const s = stats.snapshot();
  assert.equal(s.success.count + s.fail.count, accepted, 'success + fail = submitted − rejected at submit');
  assert.equal(s.success.count, resolved);
  assert.deepEqual(s.rejected, rejectedBy);
  assert.equal(s.executionCount, batches.length);
  assert.equal(
    s.inferenceCount,
    batches.reduce((n, b) => n + b.reqs.reduce((m, q) => m + q.rows, 0), 0),
  );
  assert.equal(s.queueDepth, 0);

  // nothing leaked from the byte budget: one request of exactly maxQueueBytes is admitted
  const probe = submit(1, config.maxQueueBytes / 4, {});
  assert.equal(probe.calls.n, 0, 'a request of the whole byte budget is admitted once the queue is empty');
  await flush();
  // right after a batch of several, a lone request may wait for the rest to come back (refillWait)
  if (running().length === 0) clock.advance(1_000_000);
  await flush();
  endOldest('ok');
  await flush();
  assert.ok(probe.outcome?.ok);
}

test('batcher - every request settles exactly once under random interleavings, within every limit', async () => {
  await fc.assert(
    fc.asyncProperty(
      configArb,
      fc.array(opArb, { minLength: 1, maxLength: 80, size: 'max' }),
      (config, ops) => run(config, ops),
    ),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------------
// Fairness between two senders

const fairOpArb = fc.oneof(
  // a flooding sender: many at once
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('flood' as const), n: fc.integer({ min: 1, max: 30 }) }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('light' as const) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('finish' as const) }) },
);

test('batcher - a flooding sender never starves another: one holding under half the queue is always admitted', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 24 }),
      fc.integer({ min: 1, max: 4 }),
      fc.constantFrom(0, 0.5, 1),
      fc.array(fairOpArb, { minLength: 1, maxLength: 60 }),
      async (maxQueueSize, maxBatchSize, fairShareThreshold, ops) => {
        const clock = new FakeClock();
        const stats = new ModelStats('m', '1');
        const running: { resolve: (outputs: Tensor[]) => void; inputs: Tensor[] }[] = [];
        const sent = new Map<number, { who: 'heavy' | 'light'; started: boolean; calls: { n: number } }>();
        const batcher = new Batcher({
          name: 'model "m"',
          maxBatchSize,
          maxQueueDelayMs: 0,
          preferredBatchSizes: [],
          maxQueueSize,
          maxQueueBytes: 1 << 20,
          instances: 1,
          priorityLevels: 1,
          defaultPriorityLevel: 1,
          fairShareThreshold,
          stats,
          clock,
          execute: (inputs) => {
            const values = floats(inputs[0]!);
            for (let r = 0; r < values.length; r += 2)
              sent.get(Math.floor(values[r]! / 1000))!.started = true;
            return new NativePromise<Tensor[]>((resolve) => running.push({ resolve, inputs }));
          },
        });
        /** Requests of `who` waiting in the queue: neither started nor settled (counted synchronously). */
        const held = (who: 'heavy' | 'light'): number => {
          let n = 0;
          for (const s of sent.values()) if (s.who === who && !s.started && s.calls.n === 0) n++;
          return n;
        };
        const admitted = { heavy: 0, light: 0 };
        let nextId = 1;
        const send = (who: 'heavy' | 'light'): void => {
          const id = nextId++;
          const before = held(who);
          const entry = { who, started: false, calls: { n: 0 } };
          sent.set(id, entry);
          const promise = countedSubmit(batcher, { inputs: [inputOf(id, 1, 2)], source: who });
          entry.calls = promise.calls;
          promise.catch((err: unknown) => {
            assert.ok(err instanceof InfergridError && err.code === 'OVERLOADED', String(err));
          });
          if (promise.calls.n === 0) {
            admitted[who]++;
            return;
          }
          // refused at submit: only a sender already holding half the queue (its share of two)
          assert.ok(
            before >= Math.floor(maxQueueSize / 2),
            `${who} held ${before} of a queue of ${maxQueueSize} and was refused`,
          );
        };
        for (const op of ops) {
          if (op.kind === 'flood') for (let i = 0; i < op.n; i++) send('heavy');
          else if (op.kind === 'light') send('light');
          else {
            const batch = running.shift();
            batch?.resolve(echo(batch.inputs));
          }
          await flush();
          assert.ok(batcher.queued <= maxQueueSize, `${batcher.queued} queued, over ${maxQueueSize}`);
          assert.equal(batcher.queued, held('heavy') + held('light'));
        }
        // whatever the heavy one sent, the light one got every request in while under its share
        assert.ok(admitted.light > 0 || !ops.some((op) => op.kind === 'light'));
      },
    ),
    { numRuns: 300 },
  );
});
