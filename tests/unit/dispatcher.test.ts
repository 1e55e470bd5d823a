/**
 * The Dispatcher on its own: a real Router and RetryBudget, fake replicas the test answers by
 * hand, and a manual clock for the hedge timer, attempt timeouts and budget refill. Each test
 * asserts what was recorded: which replicas were called and with what, the retry and hedge
 * counters, each replica's circuit as the router keeps it, the budget's tokens, and the error
 * the dispatch settles with. No test sleeps or reads wall time.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { modelSchema, routingSchema } from '../../src/config/index.ts';
import {
  type DispatchRequest,
  type DispatchResult,
  Dispatcher,
  RETRY_AFTER_SECONDS,
} from '../../src/coordinator/index.ts';
import { type ErrorCode, InfergridError } from '../../src/errors.ts';
import { type ModelEntry, modelKey } from '../../src/registry/index.ts';
import { RetryBudget, Router, hashBytes, rendezvousOrder } from '../../src/routing/index.ts';
import type { Tensor } from '../../src/tensor/index.ts';
import { assertCode } from '../fixtures/assert.ts';
import {
  type InferCall,
  FakeFleet,
  ManualClock,
  type Tracked,
  flush,
  replyFor,
  track,
} from '../fixtures/dispatch-fakes.ts';

const START_MS = 1_000_000;
const REQUEST_TIMEOUT_MS = 1000;
const INPUT: Tensor = { name: 'x', datatype: 'FP32', shape: [1], data: new Uint8Array([0, 0, 128, 63]) };

interface SetupOptions {
  ids?: string[];
  /** routingSchema input (defaults filled in). */
  routing?: Record<string, unknown>;
  /** The model's own routing (modelRoutingSchema input). */
  model?: Record<string, unknown>;
  /** Overrides of routing.retry's maxAttempts / attemptTimeoutMs as the Dispatcher gets them. */
  retry?: { maxAttempts?: number; attemptTimeoutMs?: number };
  /** Default: the routing config's budgetRatio and minRetriesPerSecond. */
  budget?: { ratio: number; minPerSecond: number };
}

function modelEntry(routing: Record<string, unknown>): ModelEntry {
  return {
    name: 'm',
    version: '1',
    config: modelSchema.parse({ name: 'm', backend: 'sim', routing }),
    spec: undefined,
    specKey: undefined,
    replicas: new Map(),
    generation: 'g1',
  };
}

function setup(options: SetupOptions = {}) {
  const clock = new ManualClock(START_MS);
  const routing = routingSchema.parse(options.routing ?? {});
  const fleet = new FakeFleet(clock, options.ids ?? ['a', 'b', 'c']);
  const router = new Router({ routing, now: clock.now, random: () => 0 });
  const budget = new RetryBudget({
    ratio: options.budget?.ratio ?? routing.retry.budgetRatio,
    minPerSecond: options.budget?.minPerSecond ?? routing.retry.minRetriesPerSecond,
    now: clock.now,
  });
  const dispatcher = new Dispatcher({
    replicas: fleet,
    router,
    budget,
    retry: {
      maxAttempts: options.retry?.maxAttempts ?? routing.retry.maxAttempts,
      attemptTimeoutMs: options.retry?.attemptTimeoutMs ?? routing.retry.attemptTimeoutMs,
    },
    clock,
  });
  const entry = modelEntry(options.model ?? {});
  const key = modelKey(entry.name, entry.version);
  return {
    clock,
    fleet,
    router,
    budget,
    dispatcher,
    entry,
    key,
    routing,
    dispatch: (over: Partial<DispatchRequest> = {}): Tracked<DispatchResult> =>
      track(dispatcher.dispatch({ entry, inputs: [INPUT], timeoutMs: REQUEST_TIMEOUT_MS, ...over })),
    /** The router's circuit facts for a replica (by id). */
    breaker: (id: string) => {
      const stats = router.stats(key, fleet.replica(id).key);
      assert.ok(stats, `the router has no state for replica ${id}`);
      return stats;
    },
    /** The n-th call (0-based), failing the test when it was never made. */
    call: (n: number): InferCall => {
      const c = fleet.calls[n];
      assert.ok(c, `expected at least ${n + 1} calls, got ${fleet.calls.length} (${fleet.calledIds})`);
      return c;
    },
  };
}

type Setup = ReturnType<typeof setup>;

function fault(code: ErrorCode, message = `${code} from the fake`): InfergridError {
  return new InfergridError(code, message);
}

function resolved(run: Tracked<DispatchResult>): DispatchResult {
  assert.equal(run.state, 'resolved', `dispatch ${run.state}: ${String(run.error)}`);
  return run.value!;
}

function rejected(run: Tracked<DispatchResult>): unknown {
  assert.equal(run.state, 'rejected', 'the dispatch did not reject');
  return run.error;
}

/** n successful dispatches, each answered after latencyMs of fake time: the model's p99 becomes latencyMs. */
async function warmUp(s: Setup, n: number, latencyMs: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const run = s.dispatch();
    const call = s.call(s.fleet.calls.length - 1);
    await s.clock.advance(latencyMs);
    call.answer();
    await flush();
    resolved(run);
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Success

test('dispatcher - a first attempt that succeeds is the only call', async () => {
  const s = setup();
  const budgetBefore = s.budget.available;
  const run = s.dispatch({ id: 'req-1' });
  assert.equal(s.fleet.calls.length, 1, 'the first attempt is sent before dispatch returns');
  const call = s.call(0);
  assert.equal(call.meta.model, 'm');
  assert.equal(call.meta.version, '1');
  assert.equal(call.meta.id, 'req-1');
  assert.deepEqual(call.meta.inputs, [{ name: 'x', datatype: 'FP32', shape: [1] }]);
  assert.equal(call.attachments[0], INPUT.data, 'the tensor bytes are passed as they are');
  assert.equal(
    call.meta.timeoutMs,
    REQUEST_TIMEOUT_MS,
    'no attempt timeout: the attempt gets the whole deadline',
  );
  assert.equal(call.timeoutMs, REQUEST_TIMEOUT_MS);
  assert.equal(call.signal, undefined, 'no request signal and no hedging: the attempt gets no signal');

  await s.clock.advance(30);
  const reply = replyFor(call.meta);
  call.answer(reply);
  await flush();

  const result = resolved(run);
  assert.equal(result.workerId, call.replica);
  assert.equal(result.attempts, 1);
  assert.equal(result.meta, reply.meta);
  assert.equal(s.fleet.calls.length, 1);
  assert.equal(s.dispatcher.retries, 0);
  assert.equal(s.dispatcher.hedges, 0);
  const stats = s.breaker(call.replica);
  assert.equal(stats.circuit, 'closed');
  assert.equal(stats.consecutiveFailures, 0);
  assert.equal(stats.picks, 1);
  assert.equal(stats.latencyMs, 30, 'the success reached the router with its latency');
  assert.equal(s.router.latencyPercentile(s.key, 99), 30);
  assert.equal(s.budget.available, budgetBefore, 'a request with no retry spends no budget');
  assert.equal(s.clock.pendingTimers, 0, 'nothing left armed');
});

// ---------------------------------------------------------------------------------------------
// 2. Retries of worker faults

for (const code of ['CONNECTION_LOST', 'WORKER_FAULT'] as const) {
  test(`dispatcher - ${code} is retried on another replica and counted against the first`, async () => {
    const s = setup();
    const budgetBefore = s.budget.available;
    const run = s.dispatch();
    const first = s.call(0);
    await s.clock.advance(10);
    first.fail(fault(code));
    await flush();

    assert.equal(s.fleet.calls.length, 2, 'no retry was sent');
    const second = s.call(1);
    assert.notEqual(second.replica, first.replica, 'retried on the replica that failed');
    assert.equal(second.meta.timeoutMs, REQUEST_TIMEOUT_MS - 10, 'the retry gets the time left');
    assert.equal(s.dispatcher.retries, 1);
    assert.equal(run.state, 'pending');

    second.answer();
    await flush();
    const result = resolved(run);
    assert.equal(result.workerId, second.replica);
    assert.equal(result.attempts, 2);
    assert.equal(s.fleet.calls.length, 2);
    assert.equal(s.dispatcher.hedges, 0);
    assert.equal(s.breaker(first.replica).consecutiveFailures, 1, 'the fault was not recorded as a failure');
    assert.equal(s.breaker(first.replica).circuit, 'closed');
    assert.equal(s.breaker(second.replica).consecutiveFailures, 0);
    assert.equal(s.budget.available, budgetBefore - 1, 'the retry took one token');
  });
}

test('dispatcher - retries never go back to a replica already tried', async () => {
  const s = setup({ ids: ['a', 'b', 'c'], retry: { maxAttempts: 5 } });
  const run = s.dispatch();
  const errors: InfergridError[] = [];
  for (let i = 0; i < 3; i++) {
    const err = fault('WORKER_FAULT', `fault ${i}`);
    errors.push(err);
    s.call(i).fail(err);
    await flush();
  }
  assert.equal(s.fleet.calls.length, 3, 'more attempts than replicas: one went to a replica twice');
  assert.deepEqual([...s.fleet.calledIds].sort(), ['a', 'b', 'c']);
  assert.equal(rejected(run), errors[2], 'rejects with the last attempt error');
  assert.equal(s.dispatcher.retries, 2);
  for (const id of ['a', 'b', 'c']) assert.equal(s.breaker(id).consecutiveFailures, 1, id);
});

test('dispatcher - an overloaded replica is retried elsewhere but not blamed', async () => {
  const s = setup({ ids: ['a', 'b'] });
  const run = s.dispatch();
  s.call(0).fail(fault('OVERLOADED'));
  await flush();
  s.call(1).answer();
  await flush();
  assert.equal(resolved(run).workerId, 'b');
  assert.deepEqual(s.fleet.calledIds, ['a', 'b']);
  assert.equal(s.dispatcher.retries, 1);
  assert.equal(s.breaker('a').consecutiveFailures, 0, 'a full queue is not a sick worker');
});

test('dispatcher - a retry is never sent to an unhealthy replica (no panic routing after the first attempt)', async () => {
  const s = setup({ ids: ['a', 'b'] });
  s.fleet.replica('b').health = 'unhealthy';
  const run = s.dispatch();
  assert.equal(s.call(0).replica, 'a');
  const err = fault('CONNECTION_LOST');
  s.call(0).fail(err);
  await flush();
  assert.equal(rejected(run), err);
  assert.deepEqual(s.fleet.calledIds, ['a']);
  assert.equal(s.dispatcher.retries, 0);
  assert.equal(s.router.panicPicks, 0);
});

// ---------------------------------------------------------------------------------------------
// 3. Errors that are not the worker's fault

for (const code of ['INVALID_ARGUMENT', 'BACKEND_ERROR'] as const) {
  test(`dispatcher - ${code} is not retried and opens no circuit, even failureThreshold times in a row`, async () => {
    const threshold = 3;
    const s = setup({ ids: ['a', 'b'], routing: { circuitBreaker: { failureThreshold: threshold } } });
    const budgetBefore = s.budget.available;
    for (let i = 0; i < 2 * threshold; i++) {
      const run = s.dispatch();
      const err = fault(code, `the model raised on input ${i}`);
      s.call(i).fail(err);
      await flush();
      assert.equal(rejected(run), err, 'the error passes through as it is');
      assert.equal(s.fleet.calls.length, i + 1, `dispatch ${i} was retried`);
    }
    // least-connections with nothing in flight alternates: each replica got threshold errors in a row
    assert.deepEqual(s.fleet.calledIds, ['a', 'b', 'a', 'b', 'a', 'b']);
    for (const id of ['a', 'b']) {
      const { circuit, consecutiveFailures, circuitOpens } = s.breaker(id);
      assert.deepEqual(
        { circuit, consecutiveFailures, circuitOpens },
        {
          circuit: 'closed',
          consecutiveFailures: 0,
          circuitOpens: 0,
        },
      );
    }
    assert.equal(s.dispatcher.retries, 0);
    assert.equal(s.budget.available, budgetBefore);
  });
}

test('dispatcher - failureThreshold worker faults in a row open the circuit and traffic moves away', async () => {
  const threshold = 3;
  const s = setup({
    ids: ['a', 'b'],
    routing: { circuitBreaker: { failureThreshold: threshold } },
    retry: { maxAttempts: 1 },
  });
  for (let i = 0; i < 10; i++) {
    const run = s.dispatch();
    const call = s.call(i);
    if (call.replica === 'a') call.fail(fault('WORKER_FAULT'));
    else call.answer();
    await flush();
    assert.notEqual(run.state, 'pending');
  }
  assert.deepEqual(s.fleet.calledIds, ['a', 'b', 'a', 'b', 'a', 'b', 'b', 'b', 'b', 'b']);
  assert.equal(s.breaker('a').circuit, 'open');
  assert.equal(s.breaker('a').circuitOpens, 1);
  assert.equal(s.breaker('a').consecutiveFailures, threshold);
  assert.equal(s.breaker('b').circuit, 'closed');
  assert.equal(s.dispatcher.retries, 0, 'maxAttempts 1 retried');
});

// ---------------------------------------------------------------------------------------------
// 4. maxAttempts

test('dispatcher - maxAttempts caps the attempts and the last error is the answer', async () => {
  const s = setup({ ids: ['a', 'b', 'c'], retry: { maxAttempts: 2 } });
  const run = s.dispatch();
  const first = fault('WORKER_FAULT', 'first');
  const last = fault('CONNECTION_LOST', 'last');
  s.call(0).fail(first);
  await flush();
  s.call(1).fail(last);
  await flush();
  assert.equal(rejected(run), last);
  assert.deepEqual(s.fleet.calledIds, ['a', 'b'], 'c was tried beyond maxAttempts');
  assert.equal(s.dispatcher.retries, 1);
  await s.clock.advance(2 * REQUEST_TIMEOUT_MS);
  assert.equal(s.fleet.calls.length, 2);
});

test("dispatcher - a model's own maxAttempts overrides the default", async () => {
  const s = setup({ ids: ['a', 'b', 'c'], retry: { maxAttempts: 3 }, model: { maxAttempts: 1 } });
  const run = s.dispatch();
  const err = fault('CONNECTION_LOST');
  s.call(0).fail(err);
  await flush();
  assert.equal(rejected(run), err);
  assert.equal(s.fleet.calls.length, 1);
  assert.equal(s.dispatcher.retries, 0);
});

// ---------------------------------------------------------------------------------------------
// 5. Retry budget

test('dispatcher - with the retry budget spent a retryable failure is not retried', async () => {
  const s = setup({ budget: { ratio: 0, minPerSecond: 0 } });
  assert.equal(s.budget.available, 1, 'a budget with no ratio and no floor starts with one retry');
  // spend it
  const first = s.dispatch();
  s.call(0).fail(fault('CONNECTION_LOST'));
  await flush();
  s.call(1).answer();
  await flush();
  assert.equal(resolved(first).attempts, 2);
  assert.equal(s.dispatcher.retries, 1);
  assert.equal(s.budget.available, 0);

  const exhaustedBefore = s.budget.exhausted;
  const second = s.dispatch();
  const call = s.call(2);
  assert.equal(call.replica, 'c');
  const err = fault('CONNECTION_LOST');
  call.fail(err);
  await flush();
  assert.equal(rejected(second), err);
  assert.equal(s.fleet.calls.length, 3, 'retried without budget');
  assert.equal(s.dispatcher.retries, 1);
  assert.ok(s.budget.exhausted > exhaustedBefore, 'the refusal was not counted');
  assert.equal(s.breaker('c').consecutiveFailures, 1, 'an unretried fault is still the replica failure');
  // the budget is asked before picking: a refused retry takes no replica's turn
  assert.deepEqual(
    ['a', 'b', 'c'].map((id) => s.breaker(id).picks),
    [1, 1, 1],
  );
});

test('dispatcher - the budget refills over time and retries resume', async () => {
  const s = setup({ ids: ['a', 'b'], budget: { ratio: 0, minPerSecond: 1 } });
  let drained = 0;
  while (s.budget.tryRetry()) drained++;
  assert.equal(drained, 10, 'capacity: ten seconds of the floor');

  const refused = s.dispatch();
  s.call(0).fail(fault('WORKER_FAULT'));
  await flush();
  assertCode(rejected(refused), 'WORKER_FAULT');
  assert.equal(s.fleet.calls.length, 1);

  await s.clock.advance(999);
  assert.equal(s.budget.available, 0, 'a whole retry refilled before a second passed');
  const stillRefused = s.dispatch();
  s.call(1).fail(fault('WORKER_FAULT'));
  await flush();
  assertCode(rejected(stillRefused), 'WORKER_FAULT');
  assert.equal(s.fleet.calls.length, 2);
  assert.equal(s.dispatcher.retries, 0);

  await s.clock.advance(1);
  assert.equal(s.budget.available, 1);
  const retried = s.dispatch();
  const failing = s.call(2);
  failing.fail(fault('WORKER_FAULT'));
  await flush();
  assert.equal(s.fleet.calls.length, 4, 'the refilled token did not buy a retry');
  assert.notEqual(s.call(3).replica, failing.replica);
  s.call(3).answer();
  await flush();
  assert.equal(resolved(retried).attempts, 2);
  assert.equal(s.dispatcher.retries, 1);
  assert.equal(s.budget.available, 0);
});

// ---------------------------------------------------------------------------------------------
// 6. Hedging

const HEDGE_AFTER_MS = 50;
const HEDGED = { hedge: { afterMs: HEDGE_AFTER_MS } };

test('dispatcher - hedge: a copy goes to another replica after afterMs; its answer wins and the first is cancelled', async () => {
  const s = setup({ model: HEDGED });
  const budgetBefore = s.budget.available;
  const request = new AbortController();
  const run = s.dispatch({ signal: request.signal });
  const first = s.call(0);
  assert.ok(first.signal, 'a hedged attempt has no signal of its own');
  assert.notEqual(first.signal, request.signal, 'a hedged attempt must be cancellable on its own');

  await s.clock.advance(HEDGE_AFTER_MS - 1);
  assert.equal(s.fleet.calls.length, 1, 'hedged before afterMs');
  assert.equal(s.dispatcher.hedges, 0);

  await s.clock.advance(1);
  assert.equal(s.fleet.calls.length, 2, 'no hedge after afterMs');
  assert.equal(s.dispatcher.hedges, 1);
  assert.equal(s.dispatcher.retries, 0);
  const hedge = s.call(1);
  assert.notEqual(hedge.replica, first.replica);
  assert.equal(hedge.meta.timeoutMs, REQUEST_TIMEOUT_MS - HEDGE_AFTER_MS);
  assert.equal(first.signal.aborted, false);

  const reply = replyFor(hedge.meta);
  hedge.answer(reply);
  await flush();
  const result = resolved(run);
  assert.equal(result.workerId, hedge.replica);
  assert.equal(result.meta, reply.meta);
  assert.equal(result.attempts, 2);
  assert.equal(first.signal.aborted, true, 'the losing attempt was not cancelled');
  assert.equal(first.state, 'cancelled');
  assertCode(first.signal.reason, 'CANCELLED');
  assert.equal(hedge.signal?.aborted, false);
  assert.equal(request.signal.aborted, false, "the request's own signal is not the dispatcher's to abort");
  assert.equal(s.breaker(first.replica).consecutiveFailures, 0, 'the cancelled loser was blamed');
  assert.equal(s.budget.available, budgetBefore - 1, 'a hedge spends a retry token');
  assert.equal(s.clock.pendingTimers, 0);
  assert.equal(s.fleet.calls.length, 2);
});

test('dispatcher - hedge: the first attempt answering after the copy was sent wins and cancels the copy', async () => {
  const s = setup({ model: HEDGED });
  const run = s.dispatch();
  await s.clock.advance(HEDGE_AFTER_MS + 5);
  const [first, hedge] = [s.call(0), s.call(1)];
  first.answer();
  await flush();
  assert.equal(resolved(run).workerId, first.replica);
  assert.equal(hedge.state, 'cancelled');
  assert.equal(hedge.signal?.aborted, true);
  assert.equal(s.dispatcher.hedges, 1);
  assert.equal(s.breaker(hedge.replica).consecutiveFailures, 0);
});

test('dispatcher - hedge: a first answer before afterMs sends no copy', async () => {
  const s = setup({ model: HEDGED });
  const run = s.dispatch();
  await s.clock.advance(HEDGE_AFTER_MS - 1);
  s.call(0).answer();
  await flush();
  assert.equal(resolved(run).attempts, 1);
  assert.equal(s.clock.pendingTimers, 0, 'the hedge timer was left armed');
  await s.clock.advance(10 * HEDGE_AFTER_MS);
  assert.equal(s.fleet.calls.length, 1);
  assert.equal(s.dispatcher.hedges, 0);
});

test('dispatcher - hedge: none when the model allows a single attempt', async () => {
  const s = setup({ model: { ...HEDGED, maxAttempts: 1 } });
  const run = s.dispatch();
  await s.clock.advance(2 * HEDGE_AFTER_MS);
  assert.equal(s.fleet.calls.length, 1);
  assert.equal(s.dispatcher.hedges, 0);
  s.call(0).answer();
  await flush();
  assert.equal(resolved(run).attempts, 1);
});

test('dispatcher - hedge: a retry restarts the hedge clock from its own start', async () => {
  const s = setup({ model: HEDGED });
  const run = s.dispatch();
  await s.clock.advance(20);
  s.call(0).fail(fault('CONNECTION_LOST'));
  await flush();
  const retry = s.call(1);
  assert.equal(s.dispatcher.retries, 1);
  await s.clock.advance(HEDGE_AFTER_MS - 1);
  assert.equal(s.fleet.calls.length, 2, 'hedged on the first attempt clock, not the retry one');
  await s.clock.advance(1);
  assert.equal(s.fleet.calls.length, 3);
  assert.equal(s.dispatcher.hedges, 1);
  const hedge = s.call(2);
  assert.equal(new Set(s.fleet.calledIds).size, 3, 'an attempt went to a replica already tried');
  hedge.answer();
  await flush();
  const result = resolved(run);
  assert.equal(result.workerId, hedge.replica);
  assert.equal(result.attempts, 3);
  assert.equal(retry.state, 'cancelled');
});

test('dispatcher - hedge: when the first attempt fails after the copy went out, the copy decides', async () => {
  const s = setup({ model: HEDGED, retry: { maxAttempts: 2 } });
  const run = s.dispatch();
  await s.clock.advance(HEDGE_AFTER_MS);
  const [first, hedge] = [s.call(0), s.call(1)];
  first.fail(fault('WORKER_FAULT'));
  await flush();
  assert.equal(run.state, 'pending', 'gave up while the copy was still running');
  assert.equal(s.fleet.calls.length, 2, 'attempts beyond maxAttempts');
  assert.equal(s.breaker(first.replica).consecutiveFailures, 1);
  hedge.answer();
  await flush();
  assert.equal(resolved(run).workerId, hedge.replica);
});

test('dispatcher - hedge: when both attempts fail the last error is the answer', async () => {
  const s = setup({ model: HEDGED, retry: { maxAttempts: 2 } });
  const run = s.dispatch();
  await s.clock.advance(HEDGE_AFTER_MS);
  s.call(1).fail(fault('WORKER_FAULT', 'the copy failed'));
  await flush();
  assert.equal(run.state, 'pending');
  const last = fault('CONNECTION_LOST', 'the first failed');
  s.call(0).fail(last);
  await flush();
  assert.equal(rejected(run), last);
  assert.equal(s.fleet.calls.length, 2);
  assert.equal(s.clock.pendingTimers, 0);
});

// ---------------------------------------------------------------------------------------------
// 7. Attempt timeout

test('dispatcher - an attempt timeout shorter than the request is sent as meta.timeoutMs; its expiry is retried and blamed', async () => {
  const s = setup({ ids: ['a', 'b'], retry: { attemptTimeoutMs: 100 } });
  const run = s.dispatch({ timeoutMs: REQUEST_TIMEOUT_MS });
  const first = s.call(0);
  assert.equal(first.meta.timeoutMs, 100);
  assert.equal(first.timeoutMs, 100);

  await s.clock.advance(100);
  assert.equal(first.state, 'timed-out');
  assert.equal(s.fleet.calls.length, 2, 'the timed-out attempt was not retried');
  const second = s.call(1);
  assert.notEqual(second.replica, first.replica);
  assert.equal(second.meta.timeoutMs, 100, 'time left (900 ms) is longer than the attempt timeout');
  assert.equal(s.dispatcher.retries, 1);
  assert.equal(s.breaker(first.replica).consecutiveFailures, 1, 'the slow replica was not blamed');

  second.answer();
  await flush();
  const result = resolved(run);
  assert.equal(result.workerId, second.replica);
  assert.equal(result.attempts, 2);
});

test('dispatcher - the last attempt gets only the time left and its expiry ends the request', async () => {
  const s = setup({ ids: ['a', 'b', 'c'], retry: { attemptTimeoutMs: 100 } });
  const run = s.dispatch({ timeoutMs: 150 });
  await s.clock.advance(100);
  const second = s.call(1);
  assert.equal(second.meta.timeoutMs, 50);
  await s.clock.advance(50);
  assert.equal(second.state, 'timed-out');
  assertCode(rejected(run), 'DEADLINE_EXCEEDED');
  assert.equal(s.fleet.calls.length, 2, 'retried with no time left');
  assert.equal(s.dispatcher.retries, 1);
  assert.equal(s.breaker(s.call(0).replica).consecutiveFailures, 1);
  assert.equal(
    s.breaker(second.replica).consecutiveFailures,
    0,
    "the request's own deadline is no one's fault",
  );
});

// ---------------------------------------------------------------------------------------------
// 8. Far too slow

test('dispatcher - an attempt ended by the request deadline far past 4 x p99 counts against its replica', async () => {
  const s = setup({ ids: ['a', 'b'] });
  await warmUp(s, 10, 50);
  assert.equal(s.router.latencyPercentile(s.key, 99), 50);
  const failuresBefore = s.fleet.members.map((m) => s.breaker(m.id).consecutiveFailures);
  assert.deepEqual(failuresBefore, [0, 0]);

  // 4 x p99 = 200 ms > the 100 ms floor
  const run = s.dispatch({ timeoutMs: 250 });
  const slow = s.call(10);
  await s.clock.advance(250);
  assert.equal(slow.state, 'timed-out');
  assertCode(rejected(run), 'DEADLINE_EXCEEDED');
  assert.equal(s.fleet.calls.length, 11, 'retried with no time left');
  assert.equal(s.dispatcher.retries, 0);
  assert.equal(s.breaker(slow.replica).consecutiveFailures, 1, 'the hanging replica was not blamed');
});

test('dispatcher - an attempt ended by the deadline below 4 x p99, or a quick DEADLINE_EXCEEDED, is neutral', async () => {
  const s = setup({ ids: ['a', 'b'] });
  await warmUp(s, 10, 50);

  // above the 100 ms floor but under 4 x p99 (200 ms)
  const late = s.dispatch({ timeoutMs: 199 });
  const lateCall = s.call(10);
  await s.clock.advance(199);
  assert.equal(lateCall.state, 'timed-out');
  assertCode(rejected(late), 'DEADLINE_EXCEEDED');
  assert.equal(s.breaker(lateCall.replica).consecutiveFailures, 0, 'blamed before 4 x p99');

  // the worker says so itself, early
  const quick = s.dispatch();
  const quickCall = s.call(11);
  await s.clock.advance(10);
  quickCall.fail(fault('DEADLINE_EXCEEDED'));
  await flush();
  assertCode(rejected(quick), 'DEADLINE_EXCEEDED');
  assert.equal(s.breaker(quickCall.replica).consecutiveFailures, 0);
  assert.equal(s.fleet.calls.length, 12, 'a DEADLINE_EXCEEDED with no attempt timeout was retried');
  assert.equal(s.dispatcher.retries, 0);
});

// ---------------------------------------------------------------------------------------------
// 9. No replica

test('dispatcher - no replica rejects UNAVAILABLE naming each replica state, with retryAfterSeconds', async () => {
  const s = setup({ ids: [] });
  s.fleet.descriptions = ['worker "w1": loading', 'worker "w2": model failed to load'];
  const run = s.dispatch();
  await flush();
  const err = rejected(run);
  assertCode(err, 'UNAVAILABLE', /no worker has model "m" version "1" ready/);
  assert.match(err.message, /\(worker "w1": loading, worker "w2": model failed to load\)/);
  assert.deepEqual(err.details, { retryAfterSeconds: RETRY_AFTER_SECONDS });
  assert.equal(RETRY_AFTER_SECONDS, 1);
  assert.equal(s.fleet.calls.length, 0);
  assert.equal(s.clock.pendingTimers, 0);
});

test('dispatcher - a request whose time is already up is DEADLINE_EXCEEDED, not UNAVAILABLE, and calls no replica', async () => {
  const s = setup();
  const run = s.dispatch({ timeoutMs: 0 });
  await flush();
  assertCode(rejected(run), 'DEADLINE_EXCEEDED', /ran out of time before it could be sent/);
  assert.equal(s.fleet.calls.length, 0);
});

test('dispatcher - replicas all draining or disconnected reject UNAVAILABLE naming each', async () => {
  const s = setup({ ids: ['a', 'b'] });
  s.fleet.replica('a').draining = true;
  s.fleet.replica('b').connected = false;
  const run = s.dispatch();
  await flush();
  const err = rejected(run);
  assertCode(err, 'UNAVAILABLE');
  assert.match(err.message, /worker "a": draining/);
  assert.match(err.message, /worker "b": disconnected/);
  assert.equal(err.details?.retryAfterSeconds, RETRY_AFTER_SECONDS);
  assert.equal(s.fleet.calls.length, 0);
});

test('dispatcher - a model no worker hosts says so', async () => {
  const s = setup({ ids: [] });
  const run = s.dispatch();
  await flush();
  const err = rejected(run);
  assertCode(err, 'UNAVAILABLE', /\(no worker hosts it\); retry later/);
});

// ---------------------------------------------------------------------------------------------
// 10. Cancel

test("dispatcher - aborting the request's signal mid-attempt rejects CANCELLED and retries nothing", async () => {
  const s = setup({ ids: ['a', 'b'] });
  const request = new AbortController();
  const run = s.dispatch({ signal: request.signal });
  const first = s.call(0);
  assert.equal(first.signal, request.signal, "without hedging the attempt carries the request's signal");
  await s.clock.advance(10);
  request.abort();
  await flush();
  assertCode(rejected(run), 'CANCELLED');
  assert.equal(first.state, 'cancelled');
  assert.equal(s.fleet.calls.length, 1);
  assert.equal(s.dispatcher.retries, 0);
  assert.equal(s.breaker(first.replica).consecutiveFailures, 0, 'a cancel blamed the worker');
  await s.clock.advance(2 * REQUEST_TIMEOUT_MS);
  assert.equal(s.fleet.calls.length, 1);
});

test('dispatcher - aborting a hedged request cancels its attempt and the pending hedge', async () => {
  const s = setup({ model: HEDGED });
  const request = new AbortController();
  const run = s.dispatch({ signal: request.signal });
  const first = s.call(0);
  request.abort(new InfergridError('CANCELLED', 'client went away'));
  await flush();
  assertCode(rejected(run), 'CANCELLED', /client went away/);
  assert.equal(first.state, 'cancelled');
  assert.equal(first.signal?.aborted, true);
  await s.clock.advance(2 * HEDGE_AFTER_MS);
  assert.equal(s.fleet.calls.length, 1, 'hedged a cancelled request');
  assert.equal(s.dispatcher.hedges, 0);
  assert.equal(s.clock.pendingTimers, 0);
});

test('dispatcher - a request cancelled before dispatch calls no replica', async () => {
  const s = setup();
  const request = new AbortController();
  request.abort();
  const run = s.dispatch({ signal: request.signal });
  await flush();
  assertCode(rejected(run), 'CANCELLED');
  assert.equal(s.fleet.calls.length, 0);
});

// ---------------------------------------------------------------------------------------------
// 11. Shard keys

test('dispatcher - the same shardKeyHash goes to the same replica every time', async () => {
  const ids = ['a', 'b', 'c', 'd'];
  const s = setup({ ids });
  const hash = 0x9e3779b9;
  const owner = rendezvousOrder(hash, ids)[0];
  for (let i = 0; i < 20; i++) {
    const run = s.dispatch({ shardKeyHash: hash });
    s.call(i).answer();
    await flush();
    assert.equal(resolved(run).workerId, owner);
  }
  assert.deepEqual(new Set(s.fleet.calledIds), new Set([owner]));

  // and different keys do spread: each to its own rendezvous owner
  const owners = new Set<string>();
  for (let h = 1; h <= 16; h++) {
    const run = s.dispatch({ shardKeyHash: h });
    s.call(s.fleet.calls.length - 1).answer();
    await flush();
    const { workerId } = resolved(run);
    assert.equal(workerId, rendezvousOrder(h, ids)[0], `hash ${h}`);
    owners.add(workerId);
  }
  assert.ok(owners.size > 1, `16 shard keys all went to ${[...owners]}`);
});

test("dispatcher - a shard key's retry goes to the next replica in its rendezvous order", async () => {
  const ids = ['a', 'b', 'c', 'd'];
  const s = setup({ ids });
  const hash = 12345;
  const order = rendezvousOrder(hash, ids);
  const run = s.dispatch({ shardKeyHash: hash });
  s.call(0).fail(fault('CONNECTION_LOST'));
  await flush();
  s.call(1).answer();
  await flush();
  assert.deepEqual(s.fleet.calledIds, order.slice(0, 2));
  assert.equal(resolved(run).workerId, order[1]);
});

test("dispatcher - a model's shardKeyInput hashes that input; an explicit shardKeyHash wins", async () => {
  const ids = ['a', 'b', 'c', 'd'];
  const s = setup({ ids, model: { shardKeyInput: 'x' } });
  const owner = rendezvousOrder(hashBytes(INPUT.data), ids)[0];
  for (let i = 0; i < 5; i++) {
    const run = s.dispatch();
    s.call(i).answer();
    await flush();
    assert.equal(resolved(run).workerId, owner);
  }
  const other = [1, 2, 3, 4, 5, 6, 7, 8].find((h) => rendezvousOrder(h, ids)[0] !== owner)!;
  const run = s.dispatch({ shardKeyHash: other });
  s.call(5).answer();
  await flush();
  assert.equal(resolved(run).workerId, rendezvousOrder(other, ids)[0]);
});
