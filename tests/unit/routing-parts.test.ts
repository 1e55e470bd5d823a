/**
 * The routing parts one by one, each with an injected clock: circuit breaker, retry budget,
 * latency average and window, active health, and the router's outcome bookkeeping, hedging
 * delay and forgetting. No test sleeps or reads wall time.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { modelRoutingSchema, routingSchema } from '../../src/config/index.ts';
import {
  Balancer,
  CircuitBreaker,
  type CircuitBreakerOptions,
  HealthCheck,
  LatencyEwma,
  LatencyWindow,
  RetryBudget,
  type RoutableWorker,
  Router,
} from '../../src/routing/index.ts';

interface ManualClock {
  now: () => number;
  set: (t: number) => void;
  advance: (ms: number) => void;
}

/** A clock the test moves by hand. */
function manualClock(start = 0): ManualClock {
  let t = start;
  return {
    now: () => t,
    set: (to) => {
      t = to;
    },
    advance: (ms) => {
      t += ms;
    },
  };
}

function breaker(options: Partial<CircuitBreakerOptions> & { now: () => number }): CircuitBreaker {
  return new CircuitBreaker({ failureThreshold: 3, openMs: 100, maxOpenMs: 300, ...options });
}

// ---------------------------------------------------------------------------------------------
// CircuitBreaker

test('circuit breaker - opens after exactly failureThreshold consecutive failures', () => {
  for (let threshold = 1; threshold <= 6; threshold++) {
    const b = breaker({ failureThreshold: threshold, now: () => 0 });
    for (let f = 1; f < threshold; f++) {
      b.onFailure();
      assert.equal(b.state, 'closed', `threshold ${threshold}: open after ${f} failures`);
      assert.ok(b.allowsRequest);
    }
    b.onFailure();
    assert.equal(b.state, 'open', `threshold ${threshold}: still closed after ${threshold} failures`);
    assert.equal(b.allowsRequest, false);
    assert.equal(b.opens, 1);
    assert.equal(b.consecutiveFailures, threshold);
  }
});

test('circuit breaker - a success in between resets the failure count', () => {
  const b = breaker({ now: () => 0 });
  b.onFailure();
  b.onFailure();
  b.onSuccess();
  assert.equal(b.consecutiveFailures, 0);
  b.onFailure();
  b.onFailure();
  assert.equal(b.state, 'closed', 'two failures after a success opened a threshold-3 circuit');
  b.onFailure();
  assert.equal(b.state, 'open');
});

test('circuit breaker - neutral outcomes neither count nor reset', () => {
  const b = breaker({ now: () => 0 });
  b.onFailure();
  b.onNeutral();
  b.onNeutral();
  b.onFailure();
  assert.equal(b.consecutiveFailures, 2, 'a neutral outcome reset or added to the count');
  assert.equal(b.state, 'closed');
  b.onNeutral();
  b.onFailure();
  assert.equal(b.state, 'open', 'failures separated by neutral outcomes are still consecutive');
});

test('circuit breaker - open turns half-open after openMs, not before', () => {
  const clock = manualClock(1000);
  const b = breaker({ failureThreshold: 1, openMs: 500, maxOpenMs: 500, now: clock.now });
  b.onFailure();
  clock.set(1499);
  assert.equal(b.state, 'open');
  assert.equal(b.allowsRequest, false);
  clock.set(1500);
  assert.equal(b.state, 'half-open');
  assert.equal(b.allowsRequest, true);
});

test('circuit breaker - failures of requests sent before it opened do not extend the open period', () => {
  const clock = manualClock();
  const b = breaker({ failureThreshold: 1, now: clock.now });
  b.onFailure();
  clock.set(50);
  b.onFailure();
  b.onFailure();
  assert.equal(b.opens, 1);
  clock.set(100);
  assert.equal(b.state, 'half-open');
});

test('circuit breaker - half-open lets exactly one probe out; its success closes the circuit', () => {
  const clock = manualClock();
  const b = breaker({ failureThreshold: 2, now: clock.now });
  b.onFailure();
  b.onFailure();
  clock.set(100);
  assert.equal(b.allowsRequest, true);
  const probe = b.onSend();
  assert.equal(probe, true);
  assert.equal(b.state, 'half-open');
  assert.equal(b.allowsRequest, false, 'a second request was let through while the probe is out');
  assert.equal(b.onSend(), false, 'only one probe');
  b.onSuccess(false);
  assert.equal(b.state, 'half-open', 'a late answer to a request sent before it opened closed the circuit');
  clock.set(10_000);
  assert.equal(b.allowsRequest, false, 'the probe is still out, however long it takes');
  b.onSuccess(probe);
  assert.equal(b.state, 'closed');
  assert.equal(b.allowsRequest, true);
  assert.equal(b.consecutiveFailures, 0);
  // closed again means the full threshold is needed to reopen
  b.onFailure();
  assert.equal(b.state, 'closed');
});

test('circuit breaker - a failed probe reopens for twice as long, capped at maxOpenMs; a good probe resets the period', () => {
  const clock = manualClock();
  const b = breaker({ failureThreshold: 1, openMs: 100, maxOpenMs: 300, now: clock.now });
  b.onFailure(); // open [0, 100)
  const expectOpenUntil = (until: number): void => {
    clock.set(until - 1);
    assert.equal(b.state, 'open', `not open at ${until - 1}`);
    clock.set(until);
    assert.equal(b.state, 'half-open', `not half-open at ${until}`);
  };
  expectOpenUntil(100);
  b.onFailure(b.onSend()); // 2 × 100
  expectOpenUntil(300);
  b.onFailure(b.onSend()); // 2 × 200 = 400, capped at 300
  expectOpenUntil(600);
  b.onFailure(b.onSend()); // stays at the cap
  expectOpenUntil(900);
  assert.equal(b.opens, 4);
  b.onSuccess(b.onSend());
  assert.equal(b.state, 'closed');
  b.onFailure(); // the first period again
  expectOpenUntil(1000);
});

test('circuit breaker - a neutral outcome releases the probe', () => {
  const clock = manualClock();
  const b = breaker({ failureThreshold: 1, now: clock.now });
  b.onFailure();
  clock.set(100);
  const probe = b.onSend();
  assert.equal(b.allowsRequest, false);
  b.onNeutral(false);
  assert.equal(b.allowsRequest, false, 'a neutral outcome of another request released the probe');
  b.onNeutral(probe);
  assert.equal(b.state, 'half-open');
  assert.equal(b.allowsRequest, true, 'a cancelled probe kept the circuit shut');
  assert.equal(b.opens, 1);
  b.onSend();
  assert.equal(b.allowsRequest, false);
});

test('circuit breaker - sending while closed is not a probe', () => {
  const clock = manualClock();
  const b = breaker({ failureThreshold: 2, now: clock.now });
  const probe = b.onSend();
  assert.equal(probe, false);
  b.onFailure(probe);
  assert.equal(b.state, 'closed', 'one failure of a closed circuit counted as a failed probe');
});

test('circuit breaker - constructor checks its options', () => {
  const now = (): number => 0;
  for (const failureThreshold of [0, -1, 1.5, Number.NaN]) {
    assert.throws(
      () => new CircuitBreaker({ failureThreshold, openMs: 100, maxOpenMs: 100, now }),
      { name: 'RangeError', message: /failureThreshold must be a positive integer/ },
      `failureThreshold ${failureThreshold}`,
    );
  }
  for (const [openMs, maxOpenMs] of [
    [0, 100],
    [-5, 100],
    [Number.NaN, 100],
    [200, 100],
    [100, Number.NaN],
  ] as const) {
    assert.throws(
      () => new CircuitBreaker({ failureThreshold: 1, openMs, maxOpenMs, now }),
      { name: 'RangeError', message: /openMs/ },
      `openMs ${openMs}, maxOpenMs ${maxOpenMs}`,
    );
  }
  assert.doesNotThrow(() => new CircuitBreaker({ failureThreshold: 1, openMs: 100, maxOpenMs: 100, now }));
});

// ---------------------------------------------------------------------------------------------
// RetryBudget

/** A budget with its initial capacity spent. */
function drained(options: { ratio: number; minPerSecond: number; now: () => number }): RetryBudget {
  const budget = new RetryBudget(options);
  while (budget.tryRetry()) {
    // spend
  }
  budget.exhausted = 0;
  return budget;
}

function retriesAllowed(budget: RetryBudget): number {
  let n = 0;
  while (budget.tryRetry()) n++;
  return n;
}

test('retry budget - starts full at its capacity: max(1, 10 × minPerSecond, 100 × ratio) retries', () => {
  const cases = [
    { ratio: 0.2, minPerSecond: 0, capacity: 20 },
    { ratio: 0, minPerSecond: 0, capacity: 1 },
    { ratio: 0, minPerSecond: 3, capacity: 30 },
    { ratio: 0.2, minPerSecond: 10, capacity: 100 },
  ];
  for (const { ratio, minPerSecond, capacity } of cases) {
    const budget = new RetryBudget({ ratio, minPerSecond, now: () => 0 });
    assert.equal(budget.available, capacity);
    assert.equal(retriesAllowed(budget), capacity, `ratio ${ratio}, minPerSecond ${minPerSecond}`);
    assert.equal(budget.exhausted, 1);
    assert.equal(budget.available, 0);
  }
});

test('retry budget - each request earns ratio of a retry: at 0.2, one retry per 5 requests', () => {
  const budget = drained({ ratio: 0.2, minPerSecond: 0, now: () => 0 });
  for (let round = 1; round <= 20; round++) {
    for (let r = 0; r < 4; r++) budget.onRequest();
    assert.equal(budget.tryRetry(), false, `round ${round}: a retry after 4 requests`);
    budget.onRequest();
    assert.equal(budget.tryRetry(), true, `round ${round}: no retry after 5 requests`);
  }
  assert.equal(budget.exhausted, 20);
});

test('retry budget - after N requests (capacity spent) floor(0.2 × N) retries are allowed, N not a multiple of 5', () => {
  for (let n = 1; n <= 99; n++) {
    const budget = drained({ ratio: 0.2, minPerSecond: 0, now: () => 0 });
    for (let r = 0; r < n; r++) budget.onRequest();
    assert.equal(budget.available, Math.floor(0.2 * n), `available after ${n} requests`);
    assert.equal(retriesAllowed(budget), Math.floor(0.2 * n), `retries after ${n} requests`);
    assert.equal(budget.exhausted, 1);
  }
});

test('retry budget - after N requests exactly ratio × N retries when that is a whole number', {}, () => {
  const at02 = drained({ ratio: 0.2, minPerSecond: 0, now: () => 0 });
  for (let r = 0; r < 10; r++) at02.onRequest();
  assert.equal(retriesAllowed(at02), 2, '10 requests at ratio 0.2');
  const at01 = drained({ ratio: 0.1, minPerSecond: 0, now: () => 0 });
  for (let r = 0; r < 10; r++) at01.onRequest();
  assert.equal(retriesAllowed(at01), 1, '10 requests at ratio 0.1');
});

test('retry budget - the floor refills minPerSecond per second of (injected) time, up to capacity', () => {
  const clock = manualClock();
  const budget = drained({ ratio: 0, minPerSecond: 10, now: clock.now });
  assert.equal(budget.tryRetry(), false);
  clock.set(1000);
  assert.equal(retriesAllowed(budget), 10, 'one second at 10/s');
  clock.set(1500);
  assert.equal(retriesAllowed(budget), 5, 'half a second at 10/s');
  clock.set(1_000_000);
  assert.equal(retriesAllowed(budget), 100, 'capped at capacity (10 s of the floor)');
  assert.equal(budget.exhausted, 4, 'every refusal counted, and only refusals');
});

test('retry budget - requests cannot push the balance past capacity', () => {
  const budget = new RetryBudget({ ratio: 0.2, minPerSecond: 0, now: () => 0 });
  for (let r = 0; r < 1000; r++) budget.onRequest();
  assert.equal(budget.available, 20);
  assert.equal(retriesAllowed(budget), 20);
});

test('retry budget - available counts what the floor has refilled since the last retry', {}, () => {
  const clock = manualClock();
  const budget = drained({ ratio: 0, minPerSecond: 10, now: clock.now });
  clock.set(2000);
  assert.equal(budget.available, 20, 'two seconds at 10/s, as /admin shows it');
});

test('retry budget - constructor checks its options', () => {
  for (const ratio of [-0.1, Number.NaN]) {
    assert.throws(() => new RetryBudget({ ratio, minPerSecond: 0 }), {
      name: 'RangeError',
      message: /ratio/,
    });
  }
  for (const minPerSecond of [-1, Number.NaN]) {
    assert.throws(() => new RetryBudget({ ratio: 0, minPerSecond }), {
      name: 'RangeError',
      message: /minPerSecond/,
    });
  }
});

// ---------------------------------------------------------------------------------------------
// LatencyEwma and LatencyWindow

test('latency ewma - undefined before any sample; the first sample is the value', () => {
  const ewma = new LatencyEwma({ halfLifeMs: 1000 });
  assert.equal(ewma.valueAt(0), undefined);
  ewma.observe(123, 5000);
  assert.equal(ewma.valueAt(5000), 123);
});

test('latency ewma - each sample moves the average by alpha of the difference (default 0.3)', () => {
  const half = new LatencyEwma({ alpha: 0.5, halfLifeMs: 1000 });
  half.observe(100, 0);
  half.observe(200, 0);
  assert.equal(half.valueAt(0), 150);
  half.observe(50, 0);
  assert.equal(half.valueAt(0), 100);
  const byDefault = new LatencyEwma({ halfLifeMs: 1000 });
  byDefault.observe(100, 0);
  byDefault.observe(200, 0);
  assert.ok(Math.abs(byDefault.valueAt(0)! - 130) < 1e-9, `got ${byDefault.valueAt(0)}`);
});

test('latency ewma - halves after each half-life without samples, and blends a new sample with the decayed value', () => {
  const ewma = new LatencyEwma({ alpha: 0.5, halfLifeMs: 1000 });
  ewma.observe(80, 10_000);
  assert.equal(ewma.valueAt(11_000), 40);
  assert.equal(ewma.valueAt(12_000), 20);
  assert.ok(Math.abs(ewma.valueAt(10_500)! - 80 / Math.SQRT2) < 1e-9);
  assert.equal(ewma.valueAt(9_000), 80, 'a time before the last sample does not grow it');
  ewma.observe(80, 11_000); // decayed 40, then half-way to 80
  assert.equal(ewma.valueAt(11_000), 60);
});

test('latency window - undefined when empty; percentiles of known data, sorted as numbers', () => {
  const window = new LatencyWindow();
  assert.equal(window.percentile(50), undefined);
  // 10, 20, …, 310 in a scrambled order (a string sort would put 100 before 20)
  for (let i = 0; i < 31; i++) window.observe(((i * 17) % 31) * 10 + 10);
  assert.equal(window.count, 31);
  assert.equal(window.percentile(50), 160);
  const fresh = (): LatencyWindow => {
    const w = new LatencyWindow();
    for (let i = 0; i < 31; i++) w.observe(((i * 17) % 31) * 10 + 10);
    return w;
  };
  assert.equal(fresh().percentile(95), 300);
  assert.equal(fresh().percentile(99.9), 310);
  assert.equal(fresh().percentile(10), 40);
});

test('latency window - keeps only the last `size` samples', () => {
  const window = new LatencyWindow(4);
  for (let v = 1; v <= 6; v++) window.observe(v);
  assert.equal(window.count, 6);
  assert.equal(window.percentile(10), 3, 'samples 1 and 2 were overwritten');
  const other = new LatencyWindow(4);
  for (let v = 1; v <= 6; v++) other.observe(v);
  assert.equal(other.percentile(99), 6);
});

test('latency window - a percentile is cached for 31 more samples and recomputed at the 32nd', () => {
  const window = new LatencyWindow();
  for (let v = 1; v <= 32; v++) window.observe(v * 10);
  assert.equal(window.percentile(50), 160);
  for (let i = 0; i < 31; i++) window.observe(10_000);
  assert.equal(window.percentile(50), 160, 'recomputed before 32 new samples');
  window.observe(10_000);
  assert.equal(window.percentile(50), 320, 'not recomputed after 32 new samples');
});

test('latency window - the cache is per percentile: asking for another recomputes at once', () => {
  const window = new LatencyWindow();
  for (let v = 1; v <= 31; v++) window.observe(v * 10);
  assert.equal(window.percentile(50), 160);
  window.observe(1);
  window.observe(1);
  assert.equal(window.percentile(10), 20, 'served the p50 cache for p10');
  assert.equal(window.percentile(50), 150, 'served a stale p50 after switching percentile');
});

test('latency window - p-th percentile is the nearest rank: p50 of 1..100 is 50, p95 is 95', {}, () => {
  const window = new LatencyWindow();
  for (let v = 1; v <= 100; v++) window.observe(v);
  assert.equal(window.percentile(50), 50);
  const again = new LatencyWindow();
  for (let v = 1; v <= 100; v++) again.observe(v);
  assert.equal(again.percentile(95), 95);
});

// ---------------------------------------------------------------------------------------------
// HealthCheck

test('health check - unhealthy after failureThreshold consecutive failures, not before; the call that tips it returns true', () => {
  const health = new HealthCheck({ failureThreshold: 3, recoveryThreshold: 2 });
  assert.equal(health.state, 'healthy');
  assert.equal(health.onFailure(), false);
  assert.equal(health.onFailure(), false);
  assert.equal(health.state, 'healthy');
  assert.equal(health.onFailure(), true);
  assert.equal(health.state, 'unhealthy');
  assert.equal(health.onFailure(), false, 'only the transition returns true');
  assert.equal(health.consecutiveFailures, 4);
  assert.equal(health.checks, 4);
});

test('health check - a success between failures resets the count', () => {
  const health = new HealthCheck({ failureThreshold: 3, recoveryThreshold: 2 });
  health.onFailure();
  health.onFailure();
  assert.equal(health.onSuccess(5), false);
  health.onFailure();
  assert.equal(health.onFailure(), false);
  assert.equal(health.state, 'healthy');
  assert.equal(health.lastRttMs, 5);
});

test('health check - healthy again after recoveryThreshold consecutive successes; a failure restarts the count', () => {
  const health = new HealthCheck({ failureThreshold: 1, recoveryThreshold: 3 });
  // successes banked while healthy do not count toward a later recovery
  for (let i = 0; i < 5; i++) assert.equal(health.onSuccess(1), false);
  assert.equal(health.onFailure(), true);
  assert.equal(health.onSuccess(1), false);
  assert.equal(health.onSuccess(1), false);
  assert.equal(health.onFailure(), false);
  assert.equal(health.state, 'unhealthy');
  assert.equal(health.onSuccess(1), false);
  assert.equal(health.onSuccess(1), false);
  assert.equal(health.state, 'unhealthy');
  assert.equal(health.onSuccess(7), true);
  assert.equal(health.state, 'healthy');
  assert.equal(health.onSuccess(1), false, 'only the transition returns true');
  assert.equal(health.lastRttMs, 1);
});

test('health check - constructor checks its thresholds', () => {
  assert.throws(() => new HealthCheck({ failureThreshold: 0, recoveryThreshold: 1 }), RangeError);
  assert.throws(() => new HealthCheck({ failureThreshold: 1, recoveryThreshold: 0 }), RangeError);
  assert.throws(() => new HealthCheck({ failureThreshold: Number.NaN, recoveryThreshold: 1 }), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Router

const MODEL = 'resnet:1';
const NO_HEDGE = modelRoutingSchema.parse({});

function worker(id: string, over: Partial<RoutableWorker> = {}): RoutableWorker {
  return { id, inFlight: 0, weight: 1, draining: false, connected: true, health: 'healthy', ...over };
}

/** Round-robin (so picks are predictable), circuits open after 3 failures for 1 s, half-life 1 s. */
function router(clock: { now: () => number }): Router {
  return new Router({
    routing: routingSchema.parse({
      strategy: 'round-robin',
      circuitBreaker: { failureThreshold: 3, openMs: 1000, maxOpenMs: 8000 },
      latencyHalfLifeMs: 1000,
    }),
    now: clock.now,
    random: () => 0.5,
  });
}

/** The ids of the next n picks ('-' for none). */
function picks(r: Router, workers: readonly RoutableWorker[], n: number): string[] {
  return Array.from({ length: n }, () => r.pick(MODEL, NO_HEDGE, workers)?.id ?? '-');
}

test('router - the configured failures open a worker circuit, which keeps it out of picks until a probe succeeds', () => {
  const clock = manualClock();
  const r = router(clock);
  const workers = [worker('a'), worker('b')];
  assert.deepEqual(picks(r, workers, 2), ['a', 'b']);
  for (let f = 1; f <= 2; f++) {
    r.onSend(MODEL, 'a');
    r.onResult(MODEL, 'a', 'failure', 0);
  }
  assert.deepEqual(
    { circuit: r.stats(MODEL, 'a')?.circuit, failures: r.stats(MODEL, 'a')?.consecutiveFailures },
    { circuit: 'closed', failures: 2 },
  );
  r.onResult(MODEL, 'a', 'neutral', 0);
  assert.equal(r.stats(MODEL, 'a')?.consecutiveFailures, 2, 'a neutral outcome reset the count');
  r.onSend(MODEL, 'a');
  r.onResult(MODEL, 'a', 'failure', 0);
  assert.equal(r.stats(MODEL, 'a')?.circuit, 'open');
  assert.equal(r.stats(MODEL, 'a')?.circuitOpens, 1);
  assert.deepEqual(picks(r, workers, 6), ['b', 'b', 'b', 'b', 'b', 'b']);
  assert.equal(r.panicPicks, 0);
  // after openMs one probe goes to a; while it is out a gets nothing more
  clock.advance(1000);
  assert.equal(r.stats(MODEL, 'a')?.circuit, 'half-open');
  assert.deepEqual(picks(r, workers, 1), ['a']);
  const probe = r.onSend(MODEL, 'a');
  assert.equal(probe, true, 'the request sent through a half-open circuit is its probe');
  assert.deepEqual(picks(r, workers, 3), ['b', 'b', 'b']);
  r.onResult(MODEL, 'a', 'failure', 0, false);
  assert.equal(
    r.stats(MODEL, 'a')?.circuit,
    'half-open',
    'a late failure of an older request reopened the circuit',
  );
  r.onResult(MODEL, 'a', 'success', 42, probe);
  assert.equal(r.stats(MODEL, 'a')?.circuit, 'closed');
  assert.equal(r.stats(MODEL, 'a')?.consecutiveFailures, 0);
  assert.deepEqual(picks(r, workers, 2).sort(), ['a', 'b']);
});

test('router - with every circuit open it still picks (panic) and counts it', () => {
  const clock = manualClock();
  const r = router(clock);
  const workers = [worker('a'), worker('b')];
  picks(r, workers, 1);
  for (const id of ['a', 'b']) for (let f = 0; f < 3; f++) r.onResult(MODEL, id, 'failure', 0);
  assert.deepEqual(picks(r, workers, 4).sort(), ['a', 'a', 'b', 'b']);
  assert.equal(r.panicPicks, 4);
  assert.equal(r.pick(MODEL, NO_HEDGE, workers, { exclude: new Set(['a', 'b']) }), undefined);
  assert.equal(r.pick(MODEL, NO_HEDGE, [worker('c', { draining: true })]), undefined);
  assert.equal(r.panicPicks, 4, 'nothing usable is not a panic pick');
});

test('router - stats: picks, last pick time and the decayed latency of a (model, worker)', () => {
  const clock = manualClock(5000);
  const r = router(clock);
  const workers = [worker('a'), worker('b')];
  assert.equal(r.stats(MODEL, 'a'), undefined, 'nothing known before the first pick');
  picks(r, workers, 3); // a, b, a
  clock.set(6000);
  picks(r, workers, 1); // b
  r.onResult(MODEL, 'a', 'success', 80);
  assert.deepEqual(r.stats(MODEL, 'a'), {
    circuit: 'closed',
    consecutiveFailures: 0,
    circuitOpens: 0,
    latencyMs: 80,
    picks: 2,
    lastPickedAt: 5000,
  });
  assert.equal(r.stats(MODEL, 'b')?.picks, 2);
  assert.equal(r.stats(MODEL, 'b')?.lastPickedAt, 6000);
  assert.equal(r.stats(MODEL, 'b')?.latencyMs, undefined);
  clock.set(7000);
  assert.equal(r.stats(MODEL, 'a')?.latencyMs, 40, 'one half-life later');
  assert.equal(r.stats('other:1', 'a'), undefined);
  r.onResult('other:1', 'a', 'failure', 0);
  assert.equal(r.stats('other:1', 'a'), undefined, 'an outcome for a model never routed is ignored');
});

test('router - hedge delay: none without hedge config, a fixed afterMs at once, a percentile only after minSamples successes', () => {
  const clock = manualClock();
  const r = router(clock);
  const fixed = modelRoutingSchema.parse({ hedge: { afterMs: 250 } });
  const byPercentile = modelRoutingSchema.parse({ hedge: { percentile: 72, minSamples: 20 } });
  assert.equal(r.hedgeDelayMs(MODEL, NO_HEDGE), undefined);
  assert.equal(r.hedgeDelayMs(MODEL, fixed), 250, 'afterMs needs no samples');
  assert.equal(r.hedgeDelayMs(MODEL, byPercentile), undefined);
  const workers = [worker('a')];
  // another model's successes are not this model's latencies
  for (let i = 0; i < 30; i++) r.pick('other:1', NO_HEDGE, workers);
  for (let i = 0; i < 30; i++) r.onResult('other:1', 'a', 'success', 5);
  picks(r, workers, 1);
  // 10, 20, …, 200 in a scrambled order; failures and cancels in between are not samples
  for (let i = 0; i < 20; i++) {
    assert.equal(r.hedgeDelayMs(MODEL, byPercentile), undefined, `a percentile after ${i} successes`);
    r.onResult(MODEL, 'a', 'failure', 0);
    r.onResult(MODEL, 'a', 'neutral', 0);
    r.onResult(MODEL, 'a', 'success', ((i * 7) % 20) * 10 + 10);
  }
  assert.equal(r.hedgeDelayMs(MODEL, byPercentile), 150, 'p72 of 10..200');
  assert.equal(r.hedgeDelayMs(MODEL, fixed), 250, 'afterMs wins over the percentile');
  assert.equal(r.hedgeDelayMs('other:1', byPercentile), 5);
});

test("router - forgetWorker resets a worker's circuit, pick count and turn, in every model", () => {
  const clock = manualClock();
  const r = router(clock);
  const workers = [worker('a'), worker('b'), worker('c')];
  assert.deepEqual(picks(r, workers, 5), ['a', 'b', 'c', 'a', 'b']);
  r.pick('other:1', NO_HEDGE, workers);
  for (let f = 0; f < 3; f++) r.onResult(MODEL, 'b', 'failure', 0);
  assert.equal(r.stats(MODEL, 'b')?.circuit, 'open');
  r.forgetWorker('b');
  assert.equal(r.stats(MODEL, 'b'), undefined);
  assert.equal(r.stats('other:1', 'b'), undefined);
  assert.equal(r.stats(MODEL, 'a')?.picks, 2, 'other workers are kept');
  // b comes back as new: circuit closed and never picked, so it takes the next turn
  assert.deepEqual(picks(r, workers, 3), ['b', 'c', 'a']);
  assert.deepEqual(
    {
      circuit: r.stats(MODEL, 'b')?.circuit,
      opens: r.stats(MODEL, 'b')?.circuitOpens,
      picks: r.stats(MODEL, 'b')?.picks,
    },
    { circuit: 'closed', opens: 0, picks: 1 },
  );
});

test("router - a model's own strategy overrides routing.strategy", () => {
  const r = router(manualClock());
  const leastConnections = modelRoutingSchema.parse({ strategy: 'least-connections' });
  const workers = [worker('a', { inFlight: 3 }), worker('b', { inFlight: 1 }), worker('c', { inFlight: 2 })];
  assert.equal(r.strategyFor(leastConnections), 'least-connections');
  assert.equal(r.strategyFor(NO_HEDGE), 'round-robin');
  for (let i = 0; i < 3; i++) assert.equal(r.pick(MODEL, leastConnections, workers)?.id, 'b');
  const others = Array.from({ length: 3 }, () => r.pick('other:1', NO_HEDGE, workers)?.id);
  assert.deepEqual(others, ['a', 'b', 'c'], 'round-robin by default');
});

test('router - outcomes that arrive after a worker incarnation was forgotten never reach its successor', () => {
  const clock = manualClock();
  const r = router(clock);
  const old = worker('w', { key: 'w#1' });
  assert.equal(r.pick(MODEL, NO_HEDGE, [old])?.id, 'w');
  const probes = Array.from({ length: 5 }, () => r.onSend(MODEL, 'w#1'));
  r.forgetWorker('w', 'w#1'); // its connection closed
  for (const probe of probes) r.onResult(MODEL, 'w#1', 'failure', 0, probe); // CONNECTION_LOST, late
  const restarted = worker('w', { key: 'w#2' });
  assert.equal(r.pick(MODEL, NO_HEDGE, [restarted])?.id, 'w');
  assert.deepEqual(
    { circuit: r.stats(MODEL, 'w#2')?.circuit, failures: r.stats(MODEL, 'w#2')?.consecutiveFailures },
    { circuit: 'closed', failures: 0 },
  );
  assert.equal(r.stats(MODEL, 'w#1'), undefined, 'the dead incarnation was not brought back');
});

test('router - retries and hedges never fall back on sick workers (no panic routing for them)', () => {
  const r = router(manualClock());
  const workers = [worker('ok'), worker('sick', { health: 'unhealthy' })];
  assert.equal(r.pick(MODEL, NO_HEDGE, workers, { exclude: new Set(['ok']), allowPanic: false }), undefined);
  assert.equal(r.panicPicks, 0);
  assert.equal(
    r.pick(MODEL, NO_HEDGE, workers, { exclude: new Set(['ok']) })?.id,
    'sick',
    'a first attempt may',
  );
  assert.equal(r.panicPicks, 1);
});

test('balancer - weighted keeps its running weights when a retry narrows the candidates, and breaks ties by turn', () => {
  const b = new Balancer('weighted');
  const [a, c, d] = ['a', 'c', 'd'].map((id) => ({ id, inFlight: 0, weight: 1 }));
  const members = [a!, c!, d!];
  const counts: Record<string, number> = { a: 0, c: 0, d: 0 };
  for (let i = 0; i < 300; i++) {
    const first = b.pick(members, members)!;
    counts[first.id]!++;
    // every other request is retried on the others (the tried one excluded)
    if (i % 2 === 0)
      counts[
        b.pick(
          members.filter((m) => m !== first),
          members,
        )!.id
      ]!++;
  }
  // the load each worker takes (first attempts and retries) stays in proportion to its weight
  for (const n of Object.values(counts))
    assert.ok(Math.abs(n - 150) <= 2, `unfair under retries: ${JSON.stringify(counts)}`);
  // a membership change does start over
  const e = { id: 'e', inFlight: 0, weight: 1 };
  const after = Array.from({ length: 4 }, () => b.pick([...members, e], [...members, e])!.id).sort();
  assert.deepEqual(after, ['a', 'c', 'd', 'e']);
});

test('retry budget - a refused retry is counted, and a fractional floor still refills', () => {
  const clock = manualClock();
  const b = new RetryBudget({ ratio: 0, minPerSecond: 0.5, now: clock.now });
  while (b.tryRetry());
  const refusedAfterDrain = b.exhausted;
  assert.equal(b.canRetry(), false);
  assert.equal(b.exhausted, refusedAfterDrain + 1, 'canRetry saying no counts as a refusal');
  for (let ms = 1; ms <= 2000; ms++) {
    clock.set(ms);
    b.canRetry(); // checked every millisecond, as under steady failing traffic
  }
  assert.equal(b.available, 1, 'half a retry a second for two seconds is one retry');
});

test('latency window - a percentile computed from the first samples is recomputed as the window grows', () => {
  const w = new LatencyWindow(512);
  w.observe(1);
  assert.equal(w.percentile(99), 1);
  for (let i = 0; i < 30; i++) w.observe(300);
  // a value cached from one sample must not be served for the next 31 (it made healthy replicas "too slow")
  assert.equal(w.percentile(99), 300);
});
