/**
 * The batcher on a fake clock whose timers fire only when a test advances time, in front of a
 * fake `execute` that records every batch (its rows and which requests) and finishes or fails
 * only when the test says so. Nothing here waits on wall time: `flush()` only lets promise
 * callbacks that are already due run.
 *
 * Each request's input encodes its id and its own row numbers, so a batch tells which requests
 * it holds, and the echo model's outputs tell whether every request got exactly its own rows.
 */

import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { test } from 'node:test';
import {
  Batcher,
  type BatcherClock,
  type BatcherOptions,
  type ExecuteContext,
  ModelStats,
  type SubmitOptions,
} from '../../src/batching/index.ts';
import { InfergridError } from '../../src/errors.ts';
import type { Parameters } from '../../src/protocol/index.ts';
import { type Tensor, decodeBytesElements, encodeBytesElements } from '../../src/tensor/index.ts';
import { assertCode } from '../fixtures/assert.ts';

/** Captured before any test swaps the global (see `countedSubmit`). */
const NativePromise = Promise;

/** A queue delay far longer than any test advances the clock: "only size flushes". */
const HUGE_DELAY_MS = 1_000_000;

/** Lets every promise callback already due run (settlements, the batcher's follow-ups); no time passes. */
function flush(): Promise<void> {
  return new NativePromise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------
// Fake clock

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

  /** Timers armed and not yet fired or cleared. */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Moves time forward by ms, firing each due timer at its own instant, earliest (then oldest) first. */
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

// ---------------------------------------------------------------------------------------------
// Counting the batcher's resolve/reject calls

/**
 * A promise that counts the calls made to its resolve and reject functions. Installed as the
 * global `Promise` only for the synchronous span of one `submit`, so the promise the batcher
 * hands back (built with `new Promise` or `Promise.reject`) reports how many times the batcher
 * tried to settle it; a settled promise ignores a second call, so only this can see one.
 */
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

  // promises derived with then/catch are plain ones
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
  assert.ok(
    promise instanceof CountingPromise,
    'submit must return a promise built with the global Promise, so the test can count its settle calls',
  );
  return promise;
}

// ---------------------------------------------------------------------------------------------
// Requests and the echo model

function floats(t: Tensor): Float32Array {
  return new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
}

/** Input "x" FP32 [rows, width]: element (r, c) = id·1000 + r·10 + c, so any row tells whose it is. */
function inputOf(id: number, rows: number, width: number): Tensor {
  const values = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < width; c++) values[r * width + c] = id * 1000 + r * 10 + c;
  return { name: 'x', datatype: 'FP32', shape: [rows, width], data: new Uint8Array(values.buffer) };
}

/** Which request each row of a batch's "x" belongs to. */
function rowOwners(x: Tensor): number[] {
  const width = x.shape[1]!;
  const values = floats(x);
  return Array.from({ length: x.shape[0]! }, (_, r) => Math.floor(values[r * width]! / 1000));
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * The echo model, row by row: y FP32 = x; label BYTES [rows, 2] of variable length; score FP64
 * [rows] — an 8-byte type, so splitting by a wrong element size shows. Filtered to `outputs`.
 */
function echo(inputs: readonly Tensor[], outputs?: readonly string[]): Tensor[] {
  const x = inputs.find((t) => t.name === 'x')!;
  const [rows = 0, width = 0] = x.shape;
  const values = floats(x);
  const labels: Uint8Array[] = [];
  const score = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const first = values[r * width]!;
    const id = Math.floor(first / 1000);
    const own = Math.round((first % 1000) / 10);
    labels.push(text(`${id}.${own}`), text('#'.repeat((id % 7) + own)));
    score[r] = id + own / 8;
  }
  const all: Tensor[] = [
    { name: 'y', datatype: 'FP32', shape: [rows, width], data: Buffer.from(x.data) },
    { name: 'label', datatype: 'BYTES', shape: [rows, 2], data: encodeBytesElements(labels) },
    { name: 'score', datatype: 'FP64', shape: [rows], data: new Uint8Array(score.buffer) },
  ];
  return outputs ? all.filter((t) => outputs.includes(t.name)) : all;
}

interface Spec {
  rows?: number;
  width?: number;
  priority?: number;
  deadlineAt?: number;
  signal?: AbortSignal;
  outputs?: string[];
  parameters?: Parameters;
  source?: string;
}

interface Req {
  readonly id: number;
  readonly rows: number;
  readonly width: number;
  readonly outputs: string[] | undefined;
  /** resolve/reject calls the batcher made for this request */
  readonly calls: { n: number };
  outcome: { ok: true; outputs: Tensor[] } | { ok: false; error: unknown } | undefined;
}

interface Batch {
  /** The requests in the batch, in row order. */
  readonly ids: number[];
  readonly rows: number;
  readonly inputs: Tensor[];
  readonly ctx: ExecuteContext;
  readonly startedAt: number;
  done: boolean;
  /** Resolves with the echo model's outputs. */
  finish(): void;
  resolveWith(outputs: Tensor[]): void;
  fail(err: unknown): void;
}

type HarnessOptions = Partial<Omit<BatcherOptions, 'execute' | 'stats' | 'clock'>>;

class Harness {
  readonly clock = new FakeClock();
  readonly stats = new ModelStats('m', '1');
  readonly batches: Batch[] = [];
  readonly batcher: Batcher;
  /** The most batches that were running at once. */
  maxRunning = 0;
  /** When set, the next execute throws it synchronously. */
  throwNext: unknown;
  #nextId = 1;

  constructor(options: HarnessOptions = {}) {
    this.batcher = new Batcher({
      name: 'model "m"',
      maxBatchSize: 4,
      maxQueueDelayMs: HUGE_DELAY_MS,
      preferredBatchSizes: [],
      maxQueueSize: 100,
      maxQueueBytes: 1 << 20,
      instances: 1,
      priorityLevels: 1,
      defaultPriorityLevel: 1,
      ...options,
      stats: this.stats,
      clock: this.clock,
      execute: (inputs, ctx) => this.#execute(inputs, ctx),
    });
  }

  /** Batches started and not yet finished or failed by the test. */
  get running(): Batch[] {
    return this.batches.filter((b) => !b.done);
  }

  #execute(inputs: Tensor[], ctx: Batch['ctx']): Promise<Tensor[]> {
    const x = inputs.find((t) => t.name === 'x')!;
    const ids: number[] = [];
    for (const id of rowOwners(x)) if (ids.at(-1) !== id) ids.push(id);
    let settle!: { resolve: (outputs: Tensor[]) => void; reject: (err: unknown) => void };
    const promise = new NativePromise<Tensor[]>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const batch: Batch = {
      ids,
      rows: x.shape[0]!,
      inputs,
      ctx,
      startedAt: this.clock.now(),
      done: false,
      finish: () => batch.resolveWith(echo(inputs, ctx.outputs)),
      resolveWith: (outputs) => {
        assert.ok(!batch.done, 'the test settles a batch once');
        batch.done = true;
        settle.resolve(outputs);
      },
      fail: (err) => {
        assert.ok(!batch.done, 'the test settles a batch once');
        batch.done = true;
        settle.reject(err);
      },
    };
    this.batches.push(batch);
    this.maxRunning = Math.max(this.maxRunning, this.running.length);
    if (this.throwNext !== undefined) {
      const err = this.throwNext;
      this.throwNext = undefined;
      batch.done = true;
      throw err;
    }
    return promise;
  }

  submit(spec: Spec = {}): Req {
    const id = this.#nextId++;
    const rows = spec.rows ?? 1;
    const width = spec.width ?? 2;
    const promise = countedSubmit(this.batcher, {
      inputs: [inputOf(id, rows, width)],
      outputs: spec.outputs,
      parameters: spec.parameters,
      priority: spec.priority,
      deadlineAt: spec.deadlineAt,
      signal: spec.signal,
      source: spec.source,
    });
    const req: Req = { id, rows, width, outputs: spec.outputs, calls: promise.calls, outcome: undefined };
    promise.then(
      (outputs) => {
        req.outcome = { ok: true, outputs };
      },
      (error: unknown) => {
        req.outcome = { ok: false, error };
      },
    );
    return req;
  }

  /** Finishes the oldest running batch with the echo model's outputs and lets the batcher react. */
  async finishOldest(): Promise<Batch> {
    const batch = this.running[0];
    assert.ok(batch, 'a batch is running');
    batch.finish();
    await flush();
    return batch;
  }

  /** The ids of every batch started so far, after the first `skip`. */
  idsOfBatches(skip = 0): number[][] {
    return this.batches.slice(skip).map((b) => b.ids);
  }
}

const ids = (...reqs: Req[]): number[] => reqs.map((r) => r.id);

function assertOwnOutputs(req: Req): void {
  const { outcome } = req;
  assert.ok(outcome, `request ${req.id} is settled`);
  assert.ok(outcome.ok, `request ${req.id} succeeded: ${outcome.ok ? '' : String(outcome.error)}`);
  const expected = echo([inputOf(req.id, req.rows, req.width)], req.outputs);
  assert.deepEqual(
    outcome.outputs.map((t) => ({ ...t, data: Buffer.from(t.data).toString('hex') })),
    expected.map((t) => ({ ...t, data: Buffer.from(t.data).toString('hex') })),
    `request ${req.id} gets exactly its own ${req.rows} rows`,
  );
  assert.equal(req.calls.n, 1, `request ${req.id} settled exactly once`);
}

function assertRejected(req: Req, code: string): InfergridError {
  const { outcome } = req;
  assert.ok(outcome, `request ${req.id} is settled`);
  assert.ok(!outcome.ok, `request ${req.id} was rejected`);
  assertCode(outcome.error, code);
  assert.equal(req.calls.n, 1, `request ${req.id} settled exactly once`);
  return outcome.error;
}

function assertPending(req: Req): void {
  assert.equal(req.outcome, undefined, `request ${req.id} is not settled yet`);
  assert.equal(req.calls.n, 0);
}

function executed(h: Harness, req: Req): boolean {
  return h.batches.some((b) => b.ids.includes(req.id));
}

/** A harness with one request running (the "blocker"), so that what follows queues. */
async function busy(options: HarnessOptions = {}): Promise<{ h: Harness; blocker: Req }> {
  const h = new Harness(options);
  const blocker = h.submit();
  await flush();
  assert.equal(h.batches.length, 1, 'the blocker runs');
  return { h, blocker };
}

// ---------------------------------------------------------------------------------------------
// Options

test('batcher - the constructor refuses options out of range, naming the option', () => {
  const base: BatcherOptions = {
    name: 'model "m"',
    maxBatchSize: 4,
    maxQueueDelayMs: 0,
    preferredBatchSizes: [],
    maxQueueSize: 10,
    maxQueueBytes: 1000,
    instances: 1,
    priorityLevels: 2,
    defaultPriorityLevel: 1,
    execute: async () => [],
    stats: new ModelStats('m', '1'),
  };
  assert.doesNotThrow(() => new Batcher(base));
  assert.doesNotThrow(() => new Batcher({ ...base, defaultPriorityLevel: 2, preferredBatchSizes: [2, 4] }));
  const bad: [Partial<BatcherOptions>, RegExp][] = [
    [{ maxBatchSize: 0 }, /maxBatchSize/],
    [{ maxBatchSize: 2.5 }, /maxBatchSize/],
    [{ maxBatchSize: Number.NaN }, /maxBatchSize/],
    [{ maxQueueSize: 0 }, /maxQueueSize/],
    [{ instances: 0 }, /instances/],
    [{ instances: 1.5 }, /instances/],
    [{ priorityLevels: 0 }, /priorityLevels/],
    [{ maxQueueDelayMs: -1 }, /maxQueueDelayMs/],
    [{ maxQueueDelayMs: Number.NaN }, /maxQueueDelayMs/],
    [{ maxQueueBytes: 0 }, /maxQueueBytes/],
    [{ maxQueueBytes: Number.NaN }, /maxQueueBytes/],
    [{ defaultPriorityLevel: 0 }, /defaultPriorityLevel/],
    [{ defaultPriorityLevel: 3 }, /defaultPriorityLevel/],
    [{ preferredBatchSizes: [0] }, /preferred/],
    [{ preferredBatchSizes: [2, 2.5] }, /preferred/],
  ];
  for (const [patch, message] of bad) {
    assert.throws(() => new Batcher({ ...base, ...patch }), message, JSON.stringify(patch));
  }
});

test('batcher - the constructor refuses a defaultPriorityLevel that is not an integer', () => {
  const options: BatcherOptions = {
    name: 'model "m"',
    maxBatchSize: 4,
    maxQueueDelayMs: 0,
    preferredBatchSizes: [],
    maxQueueSize: 10,
    maxQueueBytes: 1000,
    instances: 1,
    priorityLevels: 2,
    defaultPriorityLevel: 1.5,
    execute: async () => [],
    stats: new ModelStats('m', '1'),
  };
  assert.throws(() => new Batcher(options), /defaultPriorityLevel/);
});

// ---------------------------------------------------------------------------------------------
// When a batch runs

test('batcher - a lone request on an idle model starts at once, with no delay', async () => {
  const h = new Harness();
  const a = h.submit();
  await flush();
  assert.deepEqual(h.idsOfBatches(), [[a.id]]);
  assert.equal(h.batches[0]!.startedAt, 0);
  assert.equal(h.batcher.running, 1);
  assert.equal(h.batcher.queued, 0);
  await h.finishOldest();
  assertOwnOutputs(a);
  assert.equal(h.batcher.running, 0);
});

test('batcher - while a batch runs, maxBatchSize queued requests start together as soon as it finishes', async () => {
  const { h, blocker } = await busy({ maxBatchSize: 4 });
  const four = [h.submit(), h.submit(), h.submit(), h.submit()];
  await flush();
  assert.equal(h.batches.length, 1, 'nothing else starts while the only instance is busy');
  assert.equal(h.batcher.queued, 4);
  await h.finishOldest();
  assertOwnOutputs(blocker);
  assert.deepEqual(h.idsOfBatches(1), [ids(...four)], 'the four leave together, with no time passing');
  assert.equal(h.batches[1]!.rows, 4);
  assert.equal(h.batcher.queued, 0);
  await h.finishOldest();
  for (const r of four) assertOwnOutputs(r);
});

test('batcher - a partial batch waits for company; the request that fills it starts it at once', async () => {
  const { h } = await busy({ maxBatchSize: 4 });
  const three = [h.submit(), h.submit(), h.submit()];
  await h.finishOldest();
  assert.equal(h.batches.length, 1, 'three of four wait, though the instance is free');
  assert.equal(h.batcher.queued, 3);
  const fourth = h.submit({ rows: 1 });
  await flush();
  assert.deepEqual(
    h.idsOfBatches(1),
    [ids(...three, fourth)],
    'the fourth fills the batch: it leaves with no time passing',
  );
  await h.finishOldest();
  for (const r of [...three, fourth]) assertOwnOutputs(r);
});

test('batcher - five queued behind a running batch leave as a batch of four, then one', async () => {
  const { h } = await busy({ maxBatchSize: 4 });
  const five = [h.submit(), h.submit(), h.submit(), h.submit(), h.submit()];
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(...five.slice(0, 4))], 'the oldest four first');
  assert.equal(h.batcher.queued, 1);
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(...five.slice(0, 4)), [five[4]!.id]]);
  await h.finishOldest();
  for (const r of five) assertOwnOutputs(r);
  assert.equal(h.clock.now(), 0, 'no time was needed');
});

test('batcher - a partial batch starts exactly maxQueueDelayMs after its oldest request queued, not before', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 100 });
  h.clock.advance(10);
  const b = h.submit(); // queued at 10: its delay is up at 110
  h.clock.advance(20);
  const c = h.submit(); // queued at 30
  h.clock.advance(20);
  await h.finishOldest(); // at 50 the instance is free, but the batch is partial
  assert.equal(h.batches.length, 1, 'a partial batch waits for company');
  h.clock.advance(59);
  await flush();
  assert.equal(h.batches.length, 1, 'nothing starts at 109');
  h.clock.advance(1);
  await flush();
  assert.deepEqual(h.idsOfBatches(1), [ids(b, c)]);
  assert.equal(h.batches[1]!.startedAt, 110, 'it starts at 110, the oldest request queued at 10 + 100');
  await h.finishOldest();
  assertOwnOutputs(b);
  assertOwnOutputs(c);
});

test('batcher - a partial batch whose delay ran out while the instance was busy starts the moment it frees', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 100 });
  const b = h.submit();
  const c = h.submit();
  h.clock.advance(500);
  await flush();
  assert.equal(h.batches.length, 1, 'the instance is still busy');
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b, c)]);
  assert.equal(h.batches[1]!.startedAt, 500);
});

test('batcher - with maxQueueDelayMs 0 a partial batch never waits for company', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 0 });
  const b = h.submit();
  const c = h.submit();
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b, c)]);
  assert.equal(h.batches[1]!.startedAt, 0);
});

test('batcher - a queue that can form a preferred batch size starts it at once', async () => {
  // one instance: four wait behind the blocker; 2 and 3 can be formed the moment it finishes
  const { h } = await busy({ maxBatchSize: 8, preferredBatchSizes: [2, 3] });
  const [b, c, d, e] = [h.submit(), h.submit(), h.submit(), h.submit()];
  await h.finishOldest();
  assert.deepEqual(
    h.idsOfBatches(1),
    [ids(b, c, d)],
    'the largest preferred size that can be formed leaves at once',
  );
  assert.equal(h.batcher.queued, 1, 'the fourth waits');
  await h.finishOldest();
  assert.deepEqual(
    h.idsOfBatches(1),
    [ids(b, c, d), ids(e)],
    'alone on an idle model, the fourth leaves too',
  );

  // the same queue without preferred sizes waits for company (so the above is the preference)
  const plain = await busy({ maxBatchSize: 8 });
  plain.h.submit();
  plain.h.submit();
  plain.h.submit();
  await plain.h.finishOldest();
  assert.equal(plain.h.batches.length, 1);

  // two instances, one busy: the second request completes a preferred batch on the free one
  const two = await busy({ maxBatchSize: 8, preferredBatchSizes: [2], instances: 2 });
  const first = two.h.submit();
  await flush();
  assert.equal(two.h.batches.length, 1, 'one request is not a preferred batch: it waits for company');
  const second = two.h.submit();
  await flush();
  assert.deepEqual(
    two.h.idsOfBatches(1),
    [ids(first, second)],
    'two are: they start without the first finishing',
  );
});

test('batcher - a batch never holds more than maxBatchSize rows; a 3-row request does not join a batch it would overflow', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 0 });
  const b = h.submit({ rows: 2 });
  const c = h.submit({ rows: 3 });
  const d = h.submit({ rows: 2 });
  const e = h.submit({ rows: 1 });
  await h.finishOldest();
  assert.deepEqual(
    h.idsOfBatches(1),
    [ids(b, d)],
    '2 + 3 would be 5: the 3-row request waits; 2 + 2 fill it',
  );
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b, d), ids(c, e)]);
  await h.finishOldest();
  for (const batch of h.batches) {
    assert.ok(batch.rows <= 4, `a batch of ${batch.rows} rows`);
    assert.deepEqual(batch.inputs[0]!.shape, [batch.rows, 2]);
  }
  for (const r of [b, c, d, e]) assertOwnOutputs(r);

  const tooBig = h.submit({ rows: 5 });
  await flush();
  assertRejected(tooBig, 'INVALID_ARGUMENT');
  assert.ok(!executed(h, tooBig));
});

test('batcher - with maxBatchSize 1 (not batchable) every request runs alone, whatever its first dimension', async () => {
  const { h } = await busy({ maxBatchSize: 1, maxQueueDelayMs: HUGE_DELAY_MS });
  const b = h.submit({ rows: 3 });
  const c = h.submit();
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b)]);
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b), ids(c)]);
  await h.finishOldest();
  assertOwnOutputs(b);
  assertOwnOutputs(c);
});

// ---------------------------------------------------------------------------------------------
// What may share a batch

test('batcher - requests of different shapes, outputs or model parameters never share a batch; engine parameters do not separate them', async () => {
  const { h } = await busy({ maxBatchSize: 8, maxQueueDelayMs: 0 });
  const plain = h.submit();
  const wide = h.submit({ width: 3 });
  const onlyY = h.submit({ outputs: ['y'] });
  const warm = h.submit({ parameters: { temperature: 0.5, top_k: 3 } });
  const hot = h.submit({ parameters: { temperature: 0.7, top_k: 3 } });
  const engine = h.submit({
    parameters: {
      priority: 1,
      timeout: 5,
      timeout_ms: 5,
      shard_key: 'k',
      cache: false,
      binary_data_output: true,
    },
  });
  const warmAgain = h.submit({ parameters: { top_k: 3, temperature: 0.5, shard_key: 'other' } });
  const wideAgain = h.submit({ width: 3 });
  const all = [plain, wide, onlyY, warm, hot, engine, warmAgain, wideAgain];
  await h.finishOldest();
  while (h.running.length > 0) await h.finishOldest();
  assert.equal(h.batcher.queued, 0);
  assert.deepEqual(h.idsOfBatches(1), [
    ids(plain, engine),
    ids(wide, wideAgain),
    ids(onlyY),
    ids(warm, warmAgain),
    ids(hot),
  ]);
  const ctxOf = (r: Req) => {
    const { parameters, outputs } = h.batches.find((b) => b.ids.includes(r.id))!.ctx;
    return { parameters, outputs };
  };
  assert.deepEqual(
    ctxOf(engine),
    { parameters: {}, outputs: undefined },
    'engine parameters stay out of the model',
  );
  assert.deepEqual(ctxOf(warm), { parameters: { temperature: 0.5, top_k: 3 }, outputs: undefined });
  assert.deepEqual(ctxOf(onlyY), { parameters: {}, outputs: ['y'] });
  for (const r of all) assertOwnOutputs(r);
});

// ---------------------------------------------------------------------------------------------
// Priorities

test('batcher - more urgent levels run first; priority 0 or absent means the default level', async () => {
  const { h } = await busy({ maxBatchSize: 1, priorityLevels: 3, defaultPriorityLevel: 2 });
  const p3 = h.submit({ priority: 3 });
  const zero = h.submit({ priority: 0 });
  const absent = h.submit();
  const p1 = h.submit({ priority: 1 });
  const p2 = h.submit({ priority: 2 });
  while (h.running.length > 0) await h.finishOldest();
  assert.deepEqual(
    h.idsOfBatches(1).flat(),
    ids(p1, zero, absent, p2, p3),
    'level 1, then level 2 in arrival order (0 and absent are level 2), then level 3',
  );
  for (const r of [p1, zero, absent, p2, p3]) assertOwnOutputs(r);
});

test('batcher - in a batch, urgent requests that queued later take the places before older, less urgent ones', async () => {
  const { h } = await busy({
    maxBatchSize: 2,
    maxQueueDelayMs: 0,
    priorityLevels: 2,
    defaultPriorityLevel: 2,
  });
  const x = h.submit();
  const y = h.submit();
  const z1 = h.submit({ priority: 1 });
  const w = h.submit();
  const z2 = h.submit({ priority: 1 });
  while (h.running.length > 0) await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(z1, z2), ids(x, y), ids(w)]);
  for (const r of [x, y, z1, w, z2]) assertOwnOutputs(r);
});

test('batcher - a priority outside 1..priorityLevels (or not an integer) is INVALID_ARGUMENT at once', async () => {
  const h = new Harness({ priorityLevels: 2, defaultPriorityLevel: 2 });
  const bad = [3, -1, 1.5, Number.NaN].map((priority) => h.submit({ priority }));
  await flush();
  for (const r of bad) {
    const err = assertRejected(r, 'INVALID_ARGUMENT');
    assert.match(err.message, /priority/);
  }
  assert.equal(h.batches.length, 0, 'none reaches the model');
  assert.equal(h.batcher.queued, 0);
  const ok = h.submit({ priority: 2 });
  await h.finishOldest();
  assertOwnOutputs(ok);
});

// ---------------------------------------------------------------------------------------------
// Deadlines

test('batcher - a request whose deadline passes while it is queued never reaches the model and gets DEADLINE_EXCEEDED', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 100 });
  const b = h.submit({ deadlineAt: 50 });
  const c = h.submit();
  const d = h.submit({ deadlineAt: 500 });
  h.clock.advance(60);
  await h.finishOldest();
  assertRejected(b, 'DEADLINE_EXCEEDED');
  h.clock.advance(40);
  await flush();
  assert.deepEqual(h.idsOfBatches(1), [ids(c, d)]);
  await h.finishOldest();
  assertOwnOutputs(c);
  assertOwnOutputs(d);
  assert.ok(!executed(h, b));
  assert.equal(h.stats.rejected.deadline, 1);
  assert.equal(h.batcher.queued, 0);
});

test('batcher - an expired request behind the head of the queue is not taken into its batch', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 100 });
  const b = h.submit();
  const c = h.submit({ deadlineAt: 50 });
  h.clock.advance(100);
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b)], 'c expired at 50, before the batch formed at 100');
  await h.finishOldest();
  assertOwnOutputs(b);
  assertRejected(c, 'DEADLINE_EXCEEDED');
  assert.ok(!executed(h, c));
  assert.equal(h.stats.rejected.deadline, 1);
  assert.equal(h.batcher.queued, 0);
});

test('batcher - a request already expired at submit is rejected at once, even on an idle model', async () => {
  const h = new Harness();
  h.clock.advance(1000);
  const atNow = h.submit({ deadlineAt: 1000 });
  const past = h.submit({ deadlineAt: 10 });
  assert.equal(atNow.calls.n, 1, 'rejected inside submit');
  assert.equal(past.calls.n, 1);
  await flush();
  assertRejected(atNow, 'DEADLINE_EXCEEDED');
  assertRejected(past, 'DEADLINE_EXCEEDED');
  assert.equal(h.batches.length, 0);
  assert.equal(h.batcher.queued, 0);
  assert.equal(h.stats.rejected.deadline, 2);
  const live = h.submit({ deadlineAt: 1001 });
  await h.finishOldest();
  assertOwnOutputs(live);

  // and on a busy model, where it would otherwise wait in the queue
  const busyModel = await busy();
  const expired = busyModel.h.submit({ deadlineAt: 0 });
  assert.equal(expired.calls.n, 1, 'rejected inside submit');
  assert.equal(busyModel.h.batcher.queued, 0, 'never queued');
  await flush();
  assertRejected(expired, 'DEADLINE_EXCEEDED');
  assert.equal(busyModel.h.stats.rejected.deadline, 1);
});

test('batcher - a queued request is rejected when its deadline passes, even while every instance stays busy', async () => {
  const { h } = await busy({ maxBatchSize: 4 });
  const b = h.submit({ deadlineAt: 50 });
  h.clock.advance(60);
  await flush();
  assertRejected(b, 'DEADLINE_EXCEEDED');
  assert.equal(h.batcher.queued, 0);
  assert.equal(h.stats.rejected.deadline, 1);
});

// ---------------------------------------------------------------------------------------------
// Cancellation

test('batcher - aborting a queued request rejects it at once with the signal reason and takes it out of the queue', async () => {
  const { h } = await busy({ maxBatchSize: 4 });
  const controller = new AbortController();
  const b = h.submit({ signal: controller.signal });
  const c = h.submit();
  await h.finishOldest();
  assert.equal(h.batches.length, 1, 'b and c wait for company on the idle model');
  assert.equal(h.batcher.queued, 2);
  const reason = new InfergridError('CANCELLED', 'the client went away');
  controller.abort(reason);
  assert.equal(
    h.batcher.queued,
    0,
    'b is out of the queue at once, and c, alone now on an idle model, leaves',
  );
  assert.equal(b.calls.n, 1, 'rejected at once');
  await flush();
  assert.deepEqual(b.outcome, { ok: false, error: reason }, 'with the signal reason itself');
  assert.equal(h.stats.rejected.cancelled, 1);
  assert.deepEqual(h.idsOfBatches(1), [ids(c)]);
  await h.finishOldest();
  assertOwnOutputs(c);
  assert.ok(!executed(h, b));
  assert.equal(b.calls.n, 1);
});

test('batcher - a signal aborted without an InfergridError reason rejects CANCELLED, keeping it as the cause', async () => {
  const { h } = await busy();
  const controller = new AbortController();
  const b = h.submit({ signal: controller.signal });
  controller.abort();
  await flush();
  const err = assertRejected(b, 'CANCELLED');
  assert.equal(err.cause, controller.signal.reason);
  await h.finishOldest();
  assert.equal(h.batches.length, 1);
});

test('batcher - a request whose signal is already aborted is rejected at submit', async () => {
  const h = new Harness();
  const reason = new InfergridError('CANCELLED', 'gone');
  const b = h.submit({ signal: AbortSignal.abort(reason) });
  assert.equal(b.calls.n, 1);
  await flush();
  assert.deepEqual(b.outcome, { ok: false, error: reason });
  assert.equal(h.batches.length, 0);
  assert.equal(h.stats.rejected.cancelled, 1);
});

test('batcher - aborting a request whose batch runs rejects it at once; the others of the batch still get their outputs', async () => {
  const { h, blocker } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 0 });
  const controller = new AbortController();
  const b = h.submit({ rows: 2, signal: controller.signal });
  const c = h.submit({ rows: 1 });
  const d = h.submit({ rows: 1 });
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b, c, d)]);
  const reason = new InfergridError('CANCELLED', 'the client went away');
  controller.abort(reason);
  assert.equal(b.calls.n, 1, 'rejected at once, before the batch finishes');
  await flush();
  assert.deepEqual(b.outcome, { ok: false, error: reason });
  await h.finishOldest();
  assertOwnOutputs(c);
  assertOwnOutputs(d);
  assert.equal(b.calls.n, 1, 'its outputs are dropped: no second settle');
  assert.deepEqual(b.outcome, { ok: false, error: reason });
  assertOwnOutputs(blocker);
  assert.equal(h.stats.success.count, 3);
  assert.equal(h.stats.fail.count, 1);
  assert.equal(h.stats.rejected.cancelled, 0, 'it had left the queue: a failure, not a rejection');
  assert.equal(h.batcher.running, 0);
});

test("batcher - a running batch's signal aborts only when every request in it was cancelled or expired", async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 0, refillWait: false });
  const controller = new AbortController();
  const b = h.submit({ signal: controller.signal });
  const c = h.submit({ deadlineAt: 50 });
  const d = h.submit({ deadlineAt: 80 });
  const first = await h.finishOldest();
  assert.equal(first.ctx.signal.aborted, false, 'a batch that finished was never aborted');
  const batch = h.running[0]!;
  assert.deepEqual(batch.ids, ids(b, c, d));

  controller.abort(new InfergridError('CANCELLED', 'b went away'));
  h.clock.advance(60);
  await flush();
  assertRejected(b, 'CANCELLED');
  assertRejected(c, 'DEADLINE_EXCEEDED');
  assert.equal(batch.ctx.signal.aborted, false, 'd still waits for the outputs');

  h.clock.advance(30);
  await flush();
  const error = assertRejected(d, 'DEADLINE_EXCEEDED');
  assert.equal(batch.ctx.signal.aborted, true, 'nobody waits any more');
  assert.equal(batch.ctx.signal.reason, error, "the reason is the last request's error");

  // the model stops (or not) in its own time: the instance is busy until it does
  const e = h.submit();
  await flush();
  assert.equal(h.batcher.running, 1);
  assertPending(e);
  batch.fail(batch.ctx.signal.reason);
  await flush();
  assert.equal(b.calls.n + c.calls.n + d.calls.n, 3, 'what the aborted batch threw is dropped');
  assert.deepEqual(h.idsOfBatches(2), [ids(e)]);
  await h.finishOldest();
  assertOwnOutputs(e);
});

test('batcher - a batch that finishes while some of its requests were cancelled is not aborted', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 0 });
  const controller = new AbortController();
  const b = h.submit({ signal: controller.signal });
  const c = h.submit();
  await h.finishOldest();
  const batch = h.running[0]!;
  controller.abort();
  await h.finishOldest();
  assertRejected(b, 'CANCELLED');
  assertOwnOutputs(c);
  assert.equal(batch.ctx.signal.aborted, false);
});

test('batcher - a settled request leaves no listener on its signal', async () => {
  // one long-lived signal (a connection's, say) shared by many requests must not collect listeners
  const { h } = await busy({ maxBatchSize: 1 });
  const shared = new AbortController().signal;
  const ok = h.submit({ signal: shared });
  const failed = h.submit({ signal: shared });
  const expired = h.submit({ signal: shared, deadlineAt: 10 });
  assert.equal(getEventListeners(shared, 'abort').length, 3);
  await h.finishOldest(); // the blocker: ok starts
  await h.finishOldest(); // ok is answered: failed starts
  h.clock.advance(20);
  h.running[0]!.fail(new Error('boom'));
  await flush(); // expired is dropped when it comes to the head
  assertOwnOutputs(ok);
  assertRejected(failed, 'BACKEND_ERROR');
  assertRejected(expired, 'DEADLINE_EXCEEDED');
  assert.equal(getEventListeners(shared, 'abort').length, 0);
});

// ---------------------------------------------------------------------------------------------
// Admission

test('batcher - one request over maxQueueSize is OVERLOADED at once, with retryAfterSeconds', async () => {
  const { h } = await busy({ maxQueueSize: 2, maxQueueDelayMs: 0 });
  const b = h.submit();
  const c = h.submit();
  const d = h.submit();
  assert.equal(d.calls.n, 1, 'refused inside submit');
  await flush();
  const err = assertRejected(d, 'OVERLOADED');
  assert.ok(err.retryable);
  const retryAfter = err.details?.retryAfterSeconds;
  assert.ok(typeof retryAfter === 'number' && retryAfter > 0, `retryAfterSeconds ${String(retryAfter)}`);
  assert.equal(h.batcher.queued, 2);
  assert.equal(h.stats.rejected.overloaded, 1);
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(b, c)], 'the refused one never runs');
  const e = h.submit();
  await flush();
  assertPending(e);
  assert.equal(h.batcher.queued, 1, 'room again once the queue has left for the model');
});

test('batcher - queued input bytes over maxQueueBytes are OVERLOADED at once; bytes come back when requests leave', async () => {
  // a row of width 2 is 8 bytes; the blocker runs, so it holds none
  const { h } = await busy({ maxQueueBytes: 24, maxQueueDelayMs: 0, maxBatchSize: 4 });
  const controller = new AbortController();
  const b = h.submit({ signal: controller.signal });
  const c = h.submit();
  const d = h.submit({ rows: 2 }); // 16 + 16 > 24
  await flush();
  const err = assertRejected(d, 'OVERLOADED');
  assert.equal(typeof err.details?.retryAfterSeconds, 'number');
  const e = h.submit(); // 16 + 8 = 24: just fits
  await flush();
  assertPending(e);
  assert.equal(h.stats.rejected.overloaded, 1);
  controller.abort(new InfergridError('CANCELLED', 'gone'));
  const f = h.submit(); // b's 8 bytes are back
  await flush();
  assertPending(f);
  await h.finishOldest(); // c, e, f leave for the model: the queue is empty
  assert.deepEqual(h.idsOfBatches(1), [ids(c, e, f)]);
  const g = h.submit({ rows: 3 }); // 24 bytes: the whole budget
  await flush();
  assertPending(g);
  assert.equal(h.stats.rejected.overloaded, 1);
  assertRejected(b, 'CANCELLED');
});

// ---------------------------------------------------------------------------------------------
// Splitting outputs

test('batcher - each request of a batch gets exactly its own rows of every output (FP32, BYTES, FP64)', async () => {
  const { h } = await busy({ maxBatchSize: 8, maxQueueDelayMs: 0 });
  const one = h.submit({ rows: 1 });
  const two = h.submit({ rows: 2 });
  const three = h.submit({ rows: 3 });
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(one, two, three)]);
  assert.equal(h.batches[1]!.rows, 6);
  await h.finishOldest();
  for (const r of [one, two, three]) assertOwnOutputs(r);
  const labels = (r: Req) => {
    const outcome = r.outcome as { outputs: Tensor[] };
    const label = outcome.outputs.find((t) => t.name === 'label')!;
    return decodeBytesElements(label.data).map((e) => Buffer.from(e).toString());
  };
  assert.deepEqual(labels(two), [
    `${two.id}.0`,
    '#'.repeat(two.id % 7),
    `${two.id}.1`,
    '#'.repeat((two.id % 7) + 1),
  ]);
});

test('batcher - an output whose first dimension is not the batch total fails every request of the batch with BACKEND_ERROR', async () => {
  const { h } = await busy({ maxBatchSize: 8, maxQueueDelayMs: 0 });
  const b = h.submit({ rows: 1 });
  const c = h.submit({ rows: 2 });
  await h.finishOldest();
  const next = h.submit();
  const batch = h.running[0]!;
  const good = echo(batch.inputs);
  const y = good[0]!;
  batch.resolveWith([
    { ...y, shape: [4, 2], data: Buffer.concat([y.data, new Uint8Array(8)]) },
    ...good.slice(1),
  ]);
  await flush();
  assertRejected(b, 'BACKEND_ERROR');
  assertRejected(c, 'BACKEND_ERROR');
  assert.deepEqual(h.idsOfBatches(2), [ids(next)], 'the batcher carries on');
  await h.finishOldest();
  assertOwnOutputs(next);
});

// ---------------------------------------------------------------------------------------------
// Failing executions

test('batcher - an execute that throws, synchronously or not, rejects its whole batch and the batcher carries on', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 0 });
  const a1 = h.submit();
  const a2 = h.submit();
  h.throwNext = new Error('boom (sync)');
  await h.finishOldest(); // a1, a2 start and throw
  assert.deepEqual(h.idsOfBatches(1), [ids(a1, a2)]);
  for (const r of [a1, a2]) {
    const err = assertRejected(r, 'BACKEND_ERROR');
    assert.match(err.message, /boom \(sync\)/);
  }
  assert.equal(h.batcher.running, 0);

  const b1 = h.submit();
  await flush();
  const b2 = h.submit(); // queued behind b1
  const b3 = h.submit();
  h.running[0]!.fail(new Error('boom (async)'));
  await flush();
  const errB = assertRejected(b1, 'BACKEND_ERROR');
  assert.match(errB.message, /boom \(async\)/);
  assert.deepEqual(h.idsOfBatches(3), [ids(b2, b3)], 'the next batch starts');

  const own = new InfergridError('MODEL_NOT_READY', 'unloading');
  h.running[0]!.fail(own);
  await flush();
  assert.equal(assertRejected(b2, 'MODEL_NOT_READY'), own, 'a typed error keeps its code');
  assert.equal(assertRejected(b3, 'MODEL_NOT_READY'), own);

  const c = h.submit();
  await h.finishOldest();
  assertOwnOutputs(c);
  assert.equal(h.batcher.running, 0);
  assert.equal(h.stats.fail.count, 5);
  assert.equal(h.stats.success.count, 2);
});

// ---------------------------------------------------------------------------------------------
// Instances and statistics

test('batcher - with instances 2, two batches run at once, never three', async () => {
  const h = new Harness({ maxBatchSize: 1, instances: 2 });
  const reqs = [h.submit(), h.submit(), h.submit(), h.submit()];
  await flush();
  assert.equal(h.batches.length, 2, 'two start at once');
  assert.equal(h.batcher.running, 2);
  assert.equal(h.batcher.queued, 2);
  await h.finishOldest();
  assert.equal(h.batches.length, 3, 'a freed instance takes the next');
  assert.equal(h.batcher.running, 2);
  while (h.running.length > 0) await h.finishOldest();
  assert.equal(h.maxRunning, 2);
  assert.deepEqual(h.idsOfBatches().flat(), ids(...reqs));
  for (const r of reqs) assertOwnOutputs(r);
});

test('batcher - once nothing waits, no timer stays armed', async () => {
  const { h } = await busy({ maxBatchSize: 4, maxQueueDelayMs: 100, instances: 2 });
  const controller = new AbortController();
  h.submit({ signal: controller.signal }); // partial, with a free instance: a timer waits for its delay
  await flush();
  assert.equal(h.clock.pendingTimers, 1);
  controller.abort(new InfergridError('CANCELLED', 'gone'));
  assert.equal(h.batcher.queued, 0);
  assert.equal(h.clock.pendingTimers, 0, 'no stray wake-up (a real timer would also keep the process alive)');
});

test('batcher - when the head of the queue leaves, the next one waits only its own delay', async () => {
  const { h } = await busy({
    maxBatchSize: 4,
    maxQueueDelayMs: 100,
    priorityLevels: 2,
    defaultPriorityLevel: 2,
  });
  const old = h.submit({ priority: 2 }); // queued at 0: due at 100
  h.submit({ priority: 2, width: 3 }); // another bucket, so that old is never alone
  h.clock.advance(10);
  const controller = new AbortController();
  h.submit({ priority: 1, signal: controller.signal }); // queued at 10: heads the queue, due at 110
  h.clock.advance(10);
  await h.finishOldest(); // at 20 the instance frees; the urgent one waits for company
  h.clock.advance(10);
  controller.abort(new InfergridError('CANCELLED', 'gone')); // at 30 it leaves
  h.clock.advance(69);
  await flush();
  assert.equal(h.batches.length, 1, 'nothing at 99');
  h.clock.advance(1);
  await flush();
  assert.deepEqual(h.idsOfBatches(1), [ids(old)]);
  assert.equal(
    h.batches[1]!.startedAt,
    100,
    "the older request starts at its own 0 + 100, not at the urgent one's 110",
  );
});

test('batcher - statistics count rows, batches, queue and compute time on the batcher clock', async () => {
  const { h } = await busy({ maxBatchSize: 4 });
  h.clock.advance(10);
  const four = [h.submit(), h.submit(), h.submit(), h.submit()];
  h.clock.advance(30);
  await h.finishOldest(); // at 40: the four start, each having waited 30 ms
  h.clock.advance(25);
  await h.finishOldest(); // at 65: computed for 25 ms
  for (const r of four) assertOwnOutputs(r);
  const s = h.stats.snapshot();
  assert.equal(s.executionCount, 2);
  assert.equal(s.inferenceCount, 5);
  // the fake model marks no run: all of its time is the run; concatenating and splitting take no fake time
  const none = { count: 1, ns: 0 };
  assert.deepEqual(s.batchStats, [
    { batchSize: 1, computeInput: none, computeInfer: { count: 1, ns: 40e6 }, computeOutput: none },
    { batchSize: 4, computeInput: none, computeInfer: { count: 1, ns: 25e6 }, computeOutput: none },
  ]);
  assert.deepEqual(s.computeInfer, { count: 5, ns: 40e6 + 4 * 25e6 }, "per request, its batch's time");
  assert.deepEqual(s.computeInput, { count: 5, ns: 0 });
  assert.deepEqual(s.computeOutput, { count: 5, ns: 0 });
  assert.deepEqual(s.queue, { count: 5, ns: 4 * 30e6 });
  assert.equal(s.queueMaxNs, 30e6);
  assert.equal(s.success.count, 5);
  assert.equal(s.fail.count, 0);
  assert.equal(s.queueDepth, 0);
  assert.equal(s.maxQueueDepth, 4);
  assert.deepEqual(s.rejected, { overloaded: 0, deadline: 0, cancelled: 0 });
});

test('batcher - a preferred batch size never leaves the oldest, most urgent request behind', async () => {
  const { h } = await busy({
    maxBatchSize: 8,
    maxQueueDelayMs: 100,
    preferredBatchSizes: [2],
    priorityLevels: 2,
    defaultPriorityLevel: 2,
  });
  const urgent = h.submit({ rows: 3, priority: 1 });
  h.submit({ priority: 2 });
  h.submit({ priority: 2 });
  h.clock.advance(200); // the urgent request's delay is long up
  await h.finishOldest();
  assert.ok(
    h.batches[1]!.ids.includes(urgent.id),
    `next batch ${JSON.stringify(h.batches[1]!.ids)} holds ${urgent.id}`,
  );
});

test('batcher - right after a batch of several, a lone request waits for the others to come back (refillWait)', async () => {
  const h = new Harness({ maxBatchSize: 8, maxQueueDelayMs: 0 });
  const first = h.submit(); // idle and alone: runs at once
  const queued = [h.submit(), h.submit(), h.submit()];
  await flush();
  h.clock.advance(20);
  await h.finishOldest(); // batch [first]
  assert.deepEqual(h.idsOfBatches(1), [ids(...queued)], 'the three that queued leave together');
  h.clock.advance(20); // that batch of 3 runs for 20 ms
  await h.finishOldest();
  // its three clients come back one by one: the first does not run alone
  const back = [h.submit()];
  await flush();
  assert.equal(h.running.length, 0, 'a lone request right after a batch of 3 waited for company');
  back.push(h.submit(), h.submit());
  await flush();
  assert.deepEqual(
    h.idsOfBatches(2),
    [ids(...back)],
    'as many as the last batch had: they run together at once',
  );
  await h.finishOldest();
  assert.ok(first.outcome?.ok);
});

test('batcher - refillWait waits at most half the last batch compute time, and never after batches of one', async () => {
  const h = new Harness({ maxBatchSize: 8, maxQueueDelayMs: 0 });
  h.submit();
  const two = [h.submit(), h.submit()];
  await flush();
  await h.finishOldest();
  assert.deepEqual(h.idsOfBatches(1), [ids(...two)]);
  h.clock.advance(40); // the batch of two runs 40 ms
  await h.finishOldest();
  const lone = h.submit();
  await flush();
  assert.equal(h.running.length, 0, 'waits for the second client of the last batch');
  h.clock.advance(19);
  await flush();
  assert.equal(h.running.length, 0, 'still within half of 40 ms');
  h.clock.advance(1);
  await flush();
  assert.deepEqual(h.idsOfBatches(2), [ids(lone)], 'at 20 ms it gives up waiting and runs alone');
  h.clock.advance(5);
  await h.finishOldest();
  // the last batch had one request: a lone request runs at once again
  const next = h.submit();
  await flush();
  assert.deepEqual(h.idsOfBatches(3), [ids(next)]);
  await h.finishOldest();

  const off = new Harness({ maxBatchSize: 8, maxQueueDelayMs: 0, refillWait: false });
  off.submit();
  off.submit();
  off.submit();
  await flush();
  await off.finishOldest();
  off.clock.advance(40);
  await off.finishOldest();
  off.submit();
  await flush();
  assert.equal(off.running.length, 1, 'with refillWait off a lone request runs at once');
});

test('batcher - a backend that marks its run splits the batch time into input, infer and output, per request and per batch size', async () => {
  const clock = new FakeClock();
  const stats = new ModelStats('m', '1');
  let release!: () => void;
  const batcher = new Batcher({
    name: 'model "m"',
    maxBatchSize: 4,
    maxQueueDelayMs: 0,
    preferredBatchSizes: [],
    maxQueueSize: 10,
    maxQueueBytes: 1 << 20,
    instances: 1,
    priorityLevels: 1,
    defaultPriorityLevel: 1,
    stats,
    clock,
    execute: async (inputs, ctx) => {
      clock.advance(5); // preparing the backend's inputs
      ctx.runStarted();
      await new NativePromise<void>((resolve) => {
        release = resolve;
      });
      ctx.runEnded();
      ctx.runEnded(); // a second mark does not move the first
      clock.advance(3); // extracting outputs
      return echo(inputs);
    },
  });
  const timings = { queueNs: 0, computeInputNs: 0, computeInferNs: 0, computeOutputNs: 0 };
  const done = batcher.submit({ inputs: [inputOf(1, 2, 2)], timings });
  await flush();
  clock.advance(20); // the run
  release();
  await done;
  await flush(); // the batch is counted once every request of it is answered
  assert.deepEqual(timings, { queueNs: 0, computeInputNs: 5e6, computeInferNs: 20e6, computeOutputNs: 3e6 });
  const s = stats.snapshot();
  assert.deepEqual(s.computeInput, { count: 1, ns: 5e6 });
  assert.deepEqual(s.computeInfer, { count: 1, ns: 20e6 });
  assert.deepEqual(s.computeOutput, { count: 1, ns: 3e6 });
  assert.deepEqual(s.batchStats, [
    {
      batchSize: 2,
      computeInput: { count: 1, ns: 5e6 },
      computeInfer: { count: 1, ns: 20e6 },
      computeOutput: { count: 1, ns: 3e6 },
    },
  ]);
});

test("batcher - a failed batch leaves the request's timings unfilled and counts its phases up to the failure", async () => {
  const clock = new FakeClock();
  const stats = new ModelStats('m', '1');
  const batcher = new Batcher({
    name: 'model "m"',
    maxBatchSize: 1,
    maxQueueDelayMs: 0,
    preferredBatchSizes: [],
    maxQueueSize: 10,
    maxQueueBytes: 1 << 20,
    instances: 1,
    priorityLevels: 1,
    defaultPriorityLevel: 1,
    stats,
    clock,
    execute: async (_inputs, ctx) => {
      ctx.runStarted();
      clock.advance(7);
      throw new InfergridError('BACKEND_ERROR', 'boom');
    },
  });
  const timings = { queueNs: 0, computeInputNs: 0, computeInferNs: 0, computeOutputNs: 0 };
  await assert.rejects(batcher.submit({ inputs: [inputOf(1, 1, 2)], timings }));
  await flush();
  assert.deepEqual(timings, { queueNs: 0, computeInputNs: 0, computeInferNs: 0, computeOutputNs: 0 });
  const s = stats.snapshot();
  assert.equal(s.fail.count, 1);
  assert.deepEqual(s.computeInfer, { count: 1, ns: 7e6 });
  assert.deepEqual(s.computeOutput, { count: 1, ns: 0 }, 'nothing was extracted');
});

// ---------------------------------------------------------------------------------------------
// Fairness between senders

/** Submits `n` requests from `source`; returns them. */
function flood(h: Harness, source: string, n: number, spec: Spec = {}): Req[] {
  return Array.from({ length: n }, () => h.submit({ ...spec, source }));
}

function refused(reqs: Req[]): Req[] {
  return reqs.filter((r) => r.outcome && !r.outcome.ok);
}

test('batcher - one sender alone fills the whole queue, as with no senders at all', async () => {
  const { h } = await busy({ maxQueueSize: 10 });
  const a = flood(h, 'a', 12);
  await flush();
  assert.equal(h.batcher.queued, 10);
  assert.deepEqual(
    refused(a).map((r) => r.id),
    ids(a[10]!, a[11]!),
  );
  for (const r of refused(a)) assert.match(assertRejected(r, 'OVERLOADED').message, /the queue is full/);
});

test('batcher - a sender flooding a full queue cannot starve another: the light one pushes out the newest of the heavy one', async () => {
  const { h } = await busy({ maxQueueSize: 10, maxQueueDelayMs: 0 });
  const a = flood(h, 'a', 20);
  await flush();
  assert.equal(refused(a).length, 10, 'a alone filled the queue');
  const b = flood(h, 'b', 5);
  await flush();
  assert.equal(refused(b).length, 0, 'every request of b, up to its share of 5, is admitted');
  // a's five newest queued requests made room, each answered OVERLOADED (retryable)
  const pushed = a.slice(5, 10);
  for (const r of pushed) {
    const err = assertRejected(r, 'OVERLOADED');
    assert.ok(err.retryable);
    assert.match(err.message, /pushed out of the full queue to admit a sender under its fair share/);
  }
  for (const r of a.slice(0, 5)) assertPending(r);
  assert.equal(h.batcher.queued, 10);
  // both at their share on a full queue: a new one from either is refused, and pushes nobody out
  const more = [h.submit({ source: 'a' }), h.submit({ source: 'b' })];
  await flush();
  for (const r of more) assert.match(assertRejected(r, 'OVERLOADED').message, /fair share/);
  assert.equal(h.stats.rejected.overloaded, 10 + 5 + 2);
  // every admitted request runs and gets its own outputs
  while (h.running.length > 0) await h.finishOldest();
  for (const r of [...a.slice(0, 5), ...b]) assertOwnOutputs(r);
});

test('batcher - above fairShareThreshold a sender at its share is refused while a light one is still admitted', async () => {
  const { h } = await busy({ maxQueueSize: 10, fairShareThreshold: 0.5 });
  const b = h.submit({ source: 'b' });
  const a = flood(h, 'a', 8);
  await flush();
  // two senders: a's share is 5; refused from its 6th on once 5 are queued in all
  assert.deepEqual(
    a.map((r) => (r.outcome ? 'refused' : 'queued')),
    ['queued', 'queued', 'queued', 'queued', 'queued', 'refused', 'refused', 'refused'],
  );
  assert.match(assertRejected(a[5]!, 'OVERLOADED').message, /has 5 of the 6 queued requests, its fair share/);
  assert.equal(assertRejected(a[5]!, 'OVERLOADED').details?.fairShare, 5);
  const lightOnes = flood(h, 'b', 4);
  await flush();
  assert.equal(refused(lightOnes).length, 0, 'b, under its share, is admitted');
  assertPending(b);
  assert.equal(h.batcher.queued, 10);
});

test('batcher - a push-out never takes a request more urgent than the newcomer', async () => {
  const { h } = await busy({ maxQueueSize: 4, priorityLevels: 2, defaultPriorityLevel: 2 });
  const urgent = flood(h, 'a', 4, { priority: 1 });
  const b = h.submit({ source: 'b', priority: 2 });
  await flush();
  for (const r of urgent) assertPending(r);
  assert.match(assertRejected(b, 'OVERLOADED').message, /the queue is full/);
  const bUrgent = h.submit({ source: 'b', priority: 1 });
  await flush();
  assertPending(bUrgent);
  assertRejected(urgent[3]!, 'OVERLOADED');
});

test('batcher - fairShareThreshold out of 0..1 is refused', () => {
  assert.throws(
    () => new Harness({ fairShareThreshold: 1.5 }),
    /fairShareThreshold must be within 0\.\.1, got 1\.5/,
  );
  assert.throws(() => new Harness({ fairShareThreshold: Number.NaN }), /fairShareThreshold/);
});
