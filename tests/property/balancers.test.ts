/**
 * Balancer and router properties over arbitrary sequences of operations: workers join and
 * leave, change load, weight, health and drain state, fail (circuit breaker) and answer (latency),
 * and time passes. After every pick, what the strategy promises is checked against a reference
 * computed here from the plain worker objects, never from the router's own filtering.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { modelRoutingSchema, routingSchema } from '../../src/config/schema.ts';
import {
  Balancer,
  type Random,
  type RouteRequest,
  Router,
  STRATEGIES,
  type StrategyName,
  type WorkerHealth,
  type WorkerLoad,
  hashString,
  rendezvousOrder,
} from '../../src/routing/index.ts';

const MODEL = 'model:1';
const MODEL_CONFIG = modelRoutingSchema.parse({});
const CIRCUIT = { failureThreshold: 2, openMs: 1000, maxOpenMs: 4000 };
const HALF_LIFE_MS = 1000;
/** Shard keys the op sequences use: few, so the same key comes back under the same membership. */
const SHARD_KEYS = Array.from({ length: 8 }, (_, i) => hashString(`shard-${i}`));

/** mulberry32: a small seeded PRNG, so statistical tests are deterministic. */
function seeded(seed: number): Random {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random source that replays fast-check's doubles in [0, 1), edges included, in a cycle. */
function replay(values: readonly number[]): Random {
  let i = 0;
  return () => values[i++ % values.length]!;
}

const unitDouble = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

interface TestWorker {
  id: string;
  inFlight: number;
  weight: number;
  draining: boolean;
  connected: boolean;
  health: WorkerHealth;
}

function testWorker(id: string, over: Partial<TestWorker> = {}): TestWorker {
  return { id, inFlight: 0, weight: 1, draining: false, connected: true, health: 'healthy', ...over };
}

/** A worker as a strategy sees it, for the Balancer-level tests. */
function load(id: string, weight = 1, inFlight = 0): WorkerLoad {
  return { id, inFlight, weight, latencyMs: undefined };
}

type Op =
  | { kind: 'pick'; times: number; exclude: number[]; shardKey: number | undefined }
  | { kind: 'add'; weight: number; inFlight: number }
  | { kind: 'remove'; at: number; forget: boolean }
  | { kind: 'inFlight'; at: number; value: number }
  | { kind: 'weight'; at: number; value: number }
  | { kind: 'health'; at: number; value: WorkerHealth }
  | { kind: 'draining'; at: number; value: boolean }
  | { kind: 'connected'; at: number; value: boolean }
  | { kind: 'failure'; at: number }
  | { kind: 'success'; at: number; latencyMs: number }
  | { kind: 'tick'; ms: number };

interface OpMix {
  /** Whether picks may carry a shard key. */
  shard?: boolean;
  /** Relative frequency of picks against every other op. */
  pickWeight?: number;
  /** Most picks in one pick op (a run of picks under the same membership). */
  maxRun?: number;
}

function opArb(mix: OpMix = {}): fc.Arbitrary<Op> {
  const at = fc.nat({ max: 63 });
  const pick = fc.record({
    kind: fc.constant('pick' as const),
    times: fc.integer({ min: 1, max: mix.maxRun ?? 8 }),
    exclude: fc.array(fc.nat({ max: 63 }), { maxLength: 2 }),
    shardKey: mix.shard
      ? fc.option(fc.nat({ max: SHARD_KEYS.length - 1 }), { nil: undefined, freq: 2 })
      : fc.constant(undefined),
  });
  return fc.oneof(
    { weight: mix.pickWeight ?? 6, arbitrary: pick },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('add' as const),
        weight: fc.integer({ min: 1, max: 5 }),
        inFlight: fc.nat({ max: 4 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), at, forget: fc.boolean() }) },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant('inFlight' as const), at, value: fc.nat({ max: 6 }) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('weight' as const),
        at,
        value: fc.integer({ min: 1, max: 5 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('health' as const),
        at,
        value: fc.constantFrom<WorkerHealth>('healthy', 'unhealthy'),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('draining' as const), at, value: fc.boolean() }) },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('connected' as const), at, value: fc.boolean() }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('failure' as const), at }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('success' as const),
        at,
        latencyMs: fc.integer({ min: 1, max: 500 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('tick' as const), ms: fc.nat({ max: 3000 }) }) },
  );
}

/** One pick as the reference sees it. */
interface PickContext {
  readonly router: Router;
  /** The workers handed to the router, in order (the removed ones are absent). */
  readonly workers: readonly TestWorker[];
  /** Connected, not draining, not excluded. */
  readonly usable: readonly TestWorker[];
  /** Usable, healthy and circuit not open: what the strategy must choose from. */
  readonly eligible: readonly TestWorker[];
  /** What the strategy chose from: the eligible, or the usable when none is (panic). */
  readonly candidates: readonly TestWorker[];
  readonly panic: boolean;
  readonly request: RouteRequest;
  /** Observed latency of each worker at the time of the pick (router's decayed average). */
  readonly latencyMs: ReadonlyMap<string, number | undefined>;
  /** Random numbers the router drew during this pick. */
  readonly draws: readonly number[];
  readonly chosen: TestWorker | undefined;
  readonly panicPicksBefore: number;
}

interface RunOptions {
  strategy: StrategyName;
  initial: readonly number[];
  ops: readonly Op[];
  random?: Random;
  onPick: (ctx: PickContext) => void;
}

/** Replays `ops` against a Router with plain-object workers, an injected clock and random source. */
function run(options: RunOptions): void {
  let now = 0;
  let nextId = 0;
  const draws: number[] = [];
  const random = options.random ?? seeded(1);
  const router = new Router({
    routing: routingSchema.parse({
      strategy: options.strategy,
      circuitBreaker: CIRCUIT,
      latencyHalfLifeMs: HALF_LIFE_MS,
    }),
    now: () => now,
    random: () => {
      const r = random();
      draws.push(r);
      return r;
    },
  });
  const workers: TestWorker[] = [];
  const add = (weight: number, inFlight: number): void => {
    workers.push(testWorker(`w${nextId++}`, { weight, inFlight }));
  };
  for (const weight of options.initial) add(weight, 0);

  for (const op of options.ops) {
    if (op.kind === 'pick') {
      for (let n = 0; n < op.times; n++) {
        const exclude = new Set(
          op.exclude.flatMap((i) => (workers.length ? [workers[i % workers.length]!.id] : [])),
        );
        const request: RouteRequest = {
          exclude,
          shardKeyHash: op.shardKey === undefined ? undefined : SHARD_KEYS[op.shardKey],
        };
        const usable = workers.filter((w) => w.connected && !w.draining && !exclude.has(w.id));
        const eligible = usable.filter(
          (w) => w.health === 'healthy' && router.stats(MODEL, w.id)?.circuit !== 'open',
        );
        const latencyMs = new Map(workers.map((w) => [w.id, router.stats(MODEL, w.id)?.latencyMs]));
        const panicPicksBefore = router.panicPicks;
        draws.length = 0;
        const chosen = router.pick(MODEL, MODEL_CONFIG, workers, request);
        options.onPick({
          router,
          workers,
          usable,
          eligible,
          candidates: eligible.length > 0 ? eligible : usable,
          panic: eligible.length === 0 && usable.length > 0,
          request,
          latencyMs,
          draws: [...draws],
          chosen,
          panicPicksBefore,
        });
      }
      continue;
    }
    if (op.kind === 'add') {
      add(op.weight, op.inFlight);
      continue;
    }
    if (op.kind === 'tick') {
      now += op.ms;
      continue;
    }
    if (workers.length === 0) continue;
    const index = op.at % workers.length;
    const w = workers[index]!;
    switch (op.kind) {
      case 'remove':
        workers.splice(index, 1);
        if (op.forget) router.forgetWorker(w.id);
        break;
      case 'inFlight':
        w.inFlight = op.value;
        break;
      case 'weight':
        w.weight = op.value;
        break;
      case 'health':
        w.health = op.value;
        break;
      case 'draining':
        w.draining = op.value;
        break;
      case 'connected':
        w.connected = op.value;
        break;
      case 'failure': {
        const probe = router.onSend(MODEL, w.id);
        router.onResult(MODEL, w.id, 'failure', 0, probe);
        break;
      }
      case 'success': {
        const probe = router.onSend(MODEL, w.id);
        router.onResult(MODEL, w.id, 'success', op.latencyMs, probe);
        break;
      }
    }
  }
}

const initialArb = fc.array(fc.integer({ min: 1, max: 5 }), { maxLength: 6 });
const ids = (ws: readonly { id: string }[]): string => ws.map((w) => w.id).join(',');

/** Counts picks per worker over runs of picks made from the same candidate set. */
class Windows {
  signature: string | undefined;
  readonly counts = new Map<string, number>();
  picks = 0;

  /** Starts a new window when `signature` differs from the current one. */
  enter(signature: string, members: readonly { id: string }[]): void {
    if (signature === this.signature) return;
    this.signature = signature;
    this.counts.clear();
    for (const m of members) this.counts.set(m.id, 0);
    this.picks = 0;
  }

  reset(): void {
    this.signature = undefined;
  }

  count(id: string): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.picks++;
  }
}

// ---------------------------------------------------------------------------------------------
// Every strategy

test('routing - for every strategy, picks only an eligible worker while one exists', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...STRATEGIES),
      initialArb,
      fc.array(opArb({ shard: true }), { maxLength: 60, size: 'max' }),
      fc.integer(),
      (strategy, initial, ops, seed) => {
        run({
          strategy,
          initial,
          ops,
          random: seeded(seed),
          onPick: ({ eligible, chosen, request, workers }) => {
            if (eligible.length === 0) return;
            assert.ok(chosen, 'a worker is eligible, yet nothing was picked');
            assert.ok(workers.includes(chosen), `${chosen.id} is not one of the workers handed in`);
            assert.ok(chosen.connected, `${chosen.id} is disconnected`);
            assert.ok(!chosen.draining, `${chosen.id} is draining`);
            assert.equal(chosen.health, 'healthy', `${chosen.id} is unhealthy`);
            assert.ok(!request.exclude?.has(chosen.id), `${chosen.id} was excluded`);
            assert.ok(eligible.includes(chosen), `${chosen.id} has an open circuit`);
          },
        });
      },
    ),
    { numRuns: 300 },
  );
});

test('routing - panic rule: with none eligible, picks among the connected, non-draining, non-excluded; undefined only when none is', () => {
  let panics = 0;
  fc.assert(
    fc.property(
      fc.constantFrom(...STRATEGIES),
      initialArb,
      fc.array(opArb({ shard: true }), { maxLength: 60, size: 'max' }),
      (strategy, initial, ops) => {
        run({
          strategy,
          initial,
          ops,
          onPick: ({ router, usable, eligible, panic, chosen, request, panicPicksBefore }) => {
            if (usable.length === 0) {
              assert.equal(chosen, undefined, 'nothing is usable, yet a worker was picked');
              assert.equal(router.panicPicks, panicPicksBefore);
              return;
            }
            assert.ok(chosen, `${usable.length} usable worker(s), yet nothing was picked`);
            assert.ok(usable.includes(chosen), `${chosen.id} is disconnected, draining or excluded`);
            assert.ok(!request.exclude?.has(chosen.id));
            assert.equal(
              router.panicPicks,
              panicPicksBefore + (panic ? 1 : 0),
              'panicPicks counts panic picks',
            );
            if (panic) {
              panics++;
              assert.equal(eligible.length, 0);
            }
          },
        });
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(panics > 0, 'the generated sequences reached panic routing');
});

// ---------------------------------------------------------------------------------------------
// Round-robin

test('routing - round-robin: while the candidate set is unchanged, per-worker picks differ by at most 1 and each is picked within N picks', () => {
  let longWindows = 0;
  fc.assert(
    fc.property(
      initialArb,
      fc.array(opArb({ shard: true, maxRun: 16 }), { maxLength: 60, size: 'max' }),
      (initial, ops) => {
        const windows = new Windows();
        run({
          strategy: 'round-robin',
          initial,
          ops,
          onPick: ({ candidates, chosen, request }) => {
            // a shard-keyed pick is the key's worker, not the next turn: it ends the window
            if (request.shardKeyHash !== undefined || !chosen) return windows.reset();
            windows.enter(ids(candidates), candidates);
            windows.count(chosen.id);
            const counts = [...windows.counts.values()];
            const spread = Math.max(...counts) - Math.min(...counts);
            assert.ok(
              spread <= 1,
              `counts ${JSON.stringify([...windows.counts])} after ${windows.picks} picks`,
            );
            if (windows.picks >= candidates.length) {
              longWindows++;
              for (const [id, c] of windows.counts) {
                assert.ok(c >= 1, `${id} not picked in ${windows.picks} picks among ${candidates.length}`);
              }
            }
          },
        });
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(longWindows > 0);
});

test('routing - round-robin: a worker that joins is picked within N picks, N the number of candidates', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.nat({ max: 30 }),
      fc.array(fc.nat({ max: 20 }), { maxLength: 4 }),
      (n, warmup, removals) => {
        // n workers with some history, a few leave, then w<n> joins and N + 1 picks follow
        const joiner = `w${n}`;
        const ops: Op[] = [{ kind: 'pick', times: warmup, exclude: [], shardKey: undefined }];
        for (const at of removals) ops.push({ kind: 'remove', at, forget: false });
        ops.push({ kind: 'add', weight: 1, inFlight: 0 });
        ops.push({ kind: 'pick', times: n + 1, exclude: [], shardKey: undefined });
        let since = 0;
        let pickedAfter: number | undefined;
        run({
          strategy: 'round-robin',
          initial: Array.from({ length: n }, () => 1),
          ops,
          onPick: ({ workers, candidates, chosen }) => {
            if (!workers.some((w) => w.id === joiner)) return;
            since++;
            if (chosen?.id === joiner) pickedAfter ??= since;
            if (since === candidates.length) {
              assert.ok(pickedAfter !== undefined, `${joiner} not picked within ${since} picks`);
            }
          },
        });
        assert.ok(pickedAfter !== undefined);
      },
    ),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------------------------
// Least connections

test('routing - least-connections never picks a worker with more in flight than another candidate', () => {
  fc.assert(
    fc.property(
      initialArb,
      fc.array(opArb({ maxRun: 4 }), { maxLength: 60, size: 'max' }),
      (initial, ops) => {
        run({
          strategy: 'least-connections',
          initial,
          ops,
          onPick: ({ candidates, chosen }) => {
            if (!chosen) return;
            const least = Math.min(...candidates.map((w) => w.inFlight));
            assert.equal(
              chosen.inFlight,
              least,
              `${chosen.id} has ${chosen.inFlight} in flight, another ${least}`,
            );
          },
        });
      },
    ),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------------------------------------
// Weighted

test('routing - weighted: over k·Σweights picks of a fixed set each worker gets exactly k·weight (smooth WRR)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 1, max: 3 }),
      (weights, k) => {
        const balancer = new Balancer('weighted');
        const loads = weights.map((weight, i) => load(`w${i}`, weight));
        const total = weights.reduce((a, b) => a + b, 0);
        const counts = new Map<string, number>();
        for (let p = 1; p <= k * total; p++) {
          const pick = balancer.pick(loads)!;
          counts.set(pick.id, (counts.get(pick.id) ?? 0) + 1);
          if (p % total === 0) {
            for (const w of loads)
              assert.equal(counts.get(w.id) ?? 0, (p / total) * w.weight, `${w.id} after ${p}`);
          }
        }
      },
    ),
    { numRuns: 300 },
  );
});

/**
 * Under churn the running weights start over whenever the candidate set changes, so each window
 * with a fixed set begins from zero. After p picks of a fixed set of total weight W,
 * |picks_i − p·w_i/W| = |c_i(start) − c_i(now)|/W, and the running weights c stay within ±Ŵ,
 * Ŵ the largest total weight seen. The tolerance checked at every pick of every window is
 * 2·Ŵ/W picks (2 picks when W = Ŵ); the exact-after-churn test below pins the reset itself.
 */
test("routing - weighted: under random membership changes each worker's share stays within 2·Ŵ/W picks of p·w/W", () => {
  let longWindows = 0;
  fc.assert(
    fc.property(
      initialArb,
      fc.array(opArb({ maxRun: 40, pickWeight: 8 }), { maxLength: 60, size: 'max' }),
      (initial, ops) => {
        const windows = new Windows();
        let heaviest = 0;
        run({
          strategy: 'weighted',
          initial,
          ops,
          onPick: ({ candidates, chosen }) => {
            if (!chosen) return windows.reset();
            windows.enter(candidates.map((w) => `${w.id}:${w.weight}`).join(','), candidates);
            windows.count(chosen.id);
            const total = candidates.reduce((a, w) => a + w.weight, 0);
            heaviest = Math.max(heaviest, total);
            if (windows.picks >= 2 * total) longWindows++;
            const tolerance = (2 * heaviest) / total;
            for (const w of candidates) {
              const expected = (windows.picks * w.weight) / total;
              const got = windows.counts.get(w.id) ?? 0;
              assert.ok(
                Math.abs(got - expected) <= tolerance,
                `${w.id} (weight ${w.weight} of ${total}, Ŵ ${heaviest}) got ${got} of ${windows.picks} picks, expected ${expected}`,
              );
            }
          },
        });
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(longWindows > 0);
});

test('routing - weighted: after a member leaves, each Σweights window of the new fixed set is exact', {}, () => {
  // picks from [a:1, b:1, c:9] go c c c a, leaving a at −7 and b at +4; once c leaves, the
  // fixed set {a:1, b:1} should alternate, but b is picked six times in a row: b b b b b b a b
  const balancer = new Balancer('weighted');
  const [a, b, c] = [load('a', 1), load('b', 1), load('c', 9)];
  const warmup = [0, 1, 2, 3].map(() => balancer.pick([a, b, c])!.id).join(' ');
  assert.equal(warmup, 'c c c a');
  const after = Array.from({ length: 8 }, () => balancer.pick([a, b])!.id);
  for (let end = 2; end <= after.length; end += 2) {
    const window = after.slice(0, end);
    assert.equal(window.filter((id) => id === 'a').length, end / 2, `picks ${after.join(' ')}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Random and power of two

test('routing - random and power-of-two pick only among the candidates, whatever the random source returns', () => {
  fc.assert(
    fc.property(
      fc.constantFrom<StrategyName>('random', 'power-of-two'),
      initialArb,
      fc.array(opArb(), { maxLength: 50, size: 'max' }),
      fc.array(unitDouble, { minLength: 1, maxLength: 16 }),
      (strategy, initial, ops, values) => {
        run({
          strategy,
          initial,
          ops,
          random: replay([...values, 0, 0.9999999999999999]),
          onPick: ({ candidates, chosen }) => {
            if (candidates.length === 0) return assert.equal(chosen, undefined);
            assert.ok(chosen && candidates.includes(chosen), `${chosen?.id} is not a candidate`);
          },
        });
      },
    ),
    { numRuns: 300 },
  );
});

test('routing - power-of-two picks the one of its two candidates with fewer in flight, never the unique busiest', () => {
  let pairs = 0;
  fc.assert(
    fc.property(
      initialArb,
      fc.array(opArb({ maxRun: 4 }), { maxLength: 50, size: 'max' }),
      fc.array(unitDouble, { minLength: 2, maxLength: 16 }),
      (initial, ops, values) => {
        run({
          strategy: 'power-of-two',
          initial,
          ops,
          random: replay(values),
          onPick: ({ candidates, chosen, draws }) => {
            const n = candidates.length;
            if (n < 2 || !chosen) return;
            const most = Math.max(...candidates.map((w) => w.inFlight));
            if (candidates.filter((w) => w.inFlight === most).length === 1) {
              assert.ok(chosen.inFlight < most, `picked ${chosen.id}, the only one with ${most} in flight`);
            }
            // the two candidates, from the two draws: i uniform over n, j uniform over the other n−1
            assert.equal(draws.length, 2, 'two draws per pick');
            const i = Math.min(n - 1, Math.floor(draws[0]! * n));
            let j = Math.min(n - 2, Math.floor(draws[1]! * (n - 1)));
            if (j >= i) j++;
            const a = candidates[i]!;
            const b = candidates[j]!;
            assert.ok(chosen === a || chosen === b, `${chosen.id} is neither ${a.id} nor ${b.id}`);
            const other = chosen === a ? b : a;
            assert.ok(
              chosen.inFlight <= other.inFlight,
              `${chosen.id}: ${chosen.inFlight} > ${other.id}: ${other.inFlight}`,
            );
            pairs++;
          },
        });
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(pairs > 0);
});

/**
 * Pearson's χ² against the uniform distribution, bounded by df + 8·√(2·df) + 10: above the
 * 99.9999th percentile for every df used here, so only a real bias (a worker never picked, the
 * ends picked half as often) fails. The seeds are fixed, so the outcome is deterministic.
 */
test('routing - random: picks are uniform over many picks (χ², seeded)', () => {
  for (let n = 2; n <= 12; n++) {
    for (const seed of [1, 2, 3]) {
      const balancer = new Balancer('random', seeded(seed * 1000 + n));
      const loads = Array.from({ length: n }, (_, i) => load(`w${i}`, 1, i));
      const picks = 2000 * n;
      const counts = new Map<string, number>();
      for (let p = 0; p < picks; p++) {
        const id = balancer.pick(loads)!.id;
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
      const expected = picks / n;
      let chi2 = 0;
      for (const w of loads) chi2 += ((counts.get(w.id) ?? 0) - expected) ** 2 / expected;
      const df = n - 1;
      const bound = df + 8 * Math.sqrt(2 * df) + 10;
      assert.ok(chi2 < bound, `n=${n} seed=${seed}: χ²=${chi2.toFixed(1)} ≥ ${bound.toFixed(1)}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Least latency

test('routing - least-latency never picks a worker whose decayed latency × (in-flight + 1) is higher than another candidate', () => {
  let observed = 0;
  fc.assert(
    fc.property(
      initialArb,
      fc.array(opArb({ maxRun: 4 }), { maxLength: 60, size: 'max' }),
      (initial, ops) => {
        run({
          strategy: 'least-latency',
          initial,
          ops,
          onPick: ({ candidates, chosen, latencyMs }) => {
            if (!chosen) return;
            // the documented score: a worker never observed counts as the candidates' mean latency
            const seen = candidates
              .map((w) => latencyMs.get(w.id))
              .filter((v): v is number => v !== undefined);
            const assumed = seen.length > 0 ? seen.reduce((a, b) => a + b, 0) / seen.length : 0;
            const score = (w: TestWorker): number => (latencyMs.get(w.id) ?? assumed) * (w.inFlight + 1);
            if (candidates.some((w) => latencyMs.get(w.id) !== undefined)) observed++;
            for (const w of candidates) {
              assert.ok(
                score(chosen) <= score(w),
                `${chosen.id} scores ${score(chosen)}, ${w.id} ${score(w)}`,
              );
            }
          },
        });
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(observed > 0);
});

test('routing - least-latency: a worker that was slow once is picked again once its latency has decayed', () => {
  let now = 0;
  const halfLifeMs = 10_000;
  const router = new Router({
    routing: routingSchema.parse({ strategy: 'least-latency', latencyHalfLifeMs: halfLifeMs }),
    now: () => now,
  });
  const slow = testWorker('slow');
  const fast = testWorker('fast');
  const workers = [slow, fast];
  router.pick(MODEL, MODEL_CONFIG, workers);
  router.onResult(MODEL, 'slow', 'success', 1000);
  router.onResult(MODEL, 'fast', 'success', 10);
  // the fast one keeps answering in 10 ms (its average, decaying between answers, stays a little
  // under); the slow one's 1000 ms halves every 10 s and is below 10 ms after ≈ 6.6 half-lives
  let slowPickedAt: number | undefined;
  for (now = 0; now <= 80_000 && slowPickedAt === undefined; now += 1000) {
    const chosen = router.pick(MODEL, MODEL_CONFIG, workers)!;
    if (chosen === slow) slowPickedAt = now;
    else router.onResult(MODEL, 'fast', 'success', 10);
  }
  assert.ok(slowPickedAt !== undefined, 'the slow worker was shunned for 80 s');
  // not before: at 60 s its average is still 1000 / 2^6 ≈ 15.6 ms, above the fast one's ≤ 10 ms
  assert.ok(slowPickedAt > 60_000, `tried again at ${slowPickedAt} ms`);
});

test('routing - least-latency: a worker with no latency yet does not take every pick while its requests pile up', {}, () => {
  const router = new Router({ routing: routingSchema.parse({ strategy: 'least-latency' }), now: () => 0 });
  const known = testWorker('known');
  const fresh = testWorker('fresh');
  router.pick(MODEL, MODEL_CONFIG, [known, fresh]);
  router.onResult(MODEL, 'known', 'success', 10);
  const chosen: string[] = [];
  for (let i = 0; i < 20; i++) {
    const w = router.pick(MODEL, MODEL_CONFIG, [known, fresh])!;
    chosen.push(w.id);
    if (w === fresh) fresh.inFlight++; // its answers are slow to come: nothing observed yet
  }
  assert.ok(
    chosen.includes('known'),
    `20 picks, ${fresh.inFlight} in flight on the unobserved worker: ${chosen.join(' ')}`,
  );
});

// ---------------------------------------------------------------------------------------------
// Rendezvous

const KEYS = Array.from({ length: 10_000 }, (_, i) => hashString(`key-${i}`));

test('routing - rendezvous: adding an (N+1)th worker moves at most 1.5/(N+1) of 10,000 keys, all to it, N = 2..32', () => {
  for (let n = 2; n <= 32; n++) {
    const before = Array.from({ length: n }, (_, i) => `worker-${i}`);
    const added = `worker-${n}`;
    const after = [...before, added];
    let moved = 0;
    for (const key of KEYS) {
      const was = rendezvousOrder(key, before)[0];
      const is = rendezvousOrder(key, after)[0];
      if (was !== is) {
        assert.equal(is, added, 'a key moved between two old workers');
        moved++;
      }
    }
    assert.ok(moved <= (1.5 / (n + 1)) * KEYS.length, `N=${n}: ${moved} of ${KEYS.length} keys moved`);
  }
});

test('routing - rendezvous: with any worker ids, adding one moves at most 1.5/(N+1) of the keys, all to it', () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), {
        minLength: 3,
        maxLength: 33,
        size: 'max',
      }),
      fc.integer(),
      (workerIds, seed) => {
        const before = workerIds.slice(0, -1);
        const added = workerIds.at(-1)!;
        const next = seeded(seed);
        let moved = 0;
        for (let k = 0; k < 10_000; k++) {
          const key = Math.floor(next() * 2 ** 32);
          const is = rendezvousOrder(key, workerIds)[0];
          if (is !== rendezvousOrder(key, before)[0]) {
            assert.equal(is, added);
            moved++;
          }
        }
        assert.ok(moved <= (1.5 / workerIds.length) * 10_000, `N=${before.length}: ${moved} moved`);
      },
    ),
    { numRuns: 8 },
  );
});

test("routing - rendezvous: removing a worker moves only that worker's keys, each to its second choice", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.string({ minLength: 1, maxLength: 12 }), {
        minLength: 2,
        maxLength: 16,
        size: 'max',
      }),
      fc.nat(),
      fc.array(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { minLength: 1, maxLength: 300, size: 'max' }),
      (workerIds, at, keys) => {
        const removed = workerIds[at % workerIds.length]!;
        const rest = workerIds.filter((id) => id !== removed);
        for (const key of keys) {
          const order = rendezvousOrder(key, workerIds);
          const expected = order[0] === removed ? order[1] : order[0];
          assert.equal(rendezvousOrder(key, rest)[0], expected);
        }
      },
    ),
    { numRuns: 200 },
  );
});

test('routing - rendezvous: the order is a permutation of the workers that does not depend on how they are listed', () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.string({ maxLength: 8 }), { minLength: 1, maxLength: 16 }),
      fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      fc.nat(),
      (workerIds, key, seed) => {
        const order = rendezvousOrder(key, workerIds);
        assert.deepEqual([...order].sort(), [...workerIds].sort());
        const shuffled = [...workerIds];
        const next = seeded(seed);
        for (let i = shuffled.length - 1; i > 0; i--) {
          const j = Math.floor(next() * (i + 1));
          [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
        }
        assert.deepEqual(rendezvousOrder(key, shuffled), order);
      },
    ),
    { numRuns: 300 },
  );
});

test('routing - rendezvous: ids whose hashes collide are ordered by id, by rendezvousOrder and the router alike', () => {
  // FNV-1a 32-bit collisions: equal worker hashes give equal scores for every key
  const pairs = [
    ['costarring', 'liquid'],
    ['macallums', 'declinate'],
    ['zinke', 'altarage'],
  ] as const;
  for (const [x, y] of pairs) assert.equal(hashString(x), hashString(y), `${x} and ${y} no longer collide`);
  const router = new Router({ routing: routingSchema.parse({}), now: () => 0 });
  const workerIds = pairs.flat();
  for (let k = 0; k < 200; k++) {
    const key = hashString(`key-${k}`);
    const order = rendezvousOrder(key, workerIds);
    assert.deepEqual(rendezvousOrder(key, [...workerIds].reverse()), order);
    for (const [x, y] of pairs) {
      assert.equal(order.indexOf(x) - order.indexOf(y), y < x ? 1 : -1, `${x} and ${y} are adjacent, by id`);
    }
    for (const listed of [workerIds, [...workerIds].reverse()]) {
      const chosen = router.pick(
        MODEL,
        MODEL_CONFIG,
        listed.map((id) => testWorker(id)),
        { shardKeyHash: key },
      );
      assert.equal(chosen?.id, order[0]);
    }
  }
});

test("routing - shard-keyed picks go to the first candidate in the key's rendezvous order, the same worker while membership is stable", () => {
  let fallbacks = 0;
  fc.assert(
    fc.property(
      fc.constantFrom(...STRATEGIES),
      initialArb,
      fc.array(opArb({ shard: true }), { maxLength: 60, size: 'max' }),
      (strategy, initial, ops) => {
        const memo = new Map<string, string | undefined>();
        run({
          strategy,
          initial,
          ops,
          onPick: ({ workers, candidates, chosen, request }) => {
            const key = request.shardKeyHash;
            if (key === undefined) return;
            const order = rendezvousOrder(
              key,
              workers.map((w) => w.id),
            );
            const expected = order.find((id) => candidates.some((w) => w.id === id));
            assert.equal(chosen?.id, expected, `key ${key}: order ${order.join(' ')}`);
            if (expected !== order[0]) fallbacks++;
            const stable = `${key}|${ids(candidates)}`;
            if (memo.has(stable))
              assert.equal(chosen?.id, memo.get(stable), 'same key, same membership, other worker');
            memo.set(stable, chosen?.id);
          },
        });
      },
    ),
    { numRuns: 300 },
  );
  assert.ok(fallbacks > 0, 'some keys fell back past a draining/unhealthy/open/excluded first choice');
});

test("routing - a shard key's worker going draining, unhealthy or circuit-open sends its picks to the key's next eligible worker", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 8 }),
      fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      fc.constantFrom('draining', 'unhealthy', 'circuit', 'disconnected'),
      (n, key, how) => {
        let now = 0;
        const router = new Router({
          routing: routingSchema.parse({ circuitBreaker: CIRCUIT }),
          now: () => now,
        });
        const workers = Array.from({ length: n }, (_, i) => testWorker(`w${i}`));
        const order = rendezvousOrder(
          key,
          workers.map((w) => w.id),
        );
        const first = workers.find((w) => w.id === order[0])!;
        assert.equal(router.pick(MODEL, MODEL_CONFIG, workers, { shardKeyHash: key }), first);
        if (how === 'draining') first.draining = true;
        else if (how === 'unhealthy') first.health = 'unhealthy';
        else if (how === 'disconnected') first.connected = false;
        else {
          for (let f = 0; f < CIRCUIT.failureThreshold; f++) router.onResult(MODEL, first.id, 'failure', 0);
        }
        const second = router.pick(MODEL, MODEL_CONFIG, workers, { shardKeyHash: key });
        assert.equal(second?.id, order[1]);
        // and back once the first is fine again
        first.draining = false;
        first.health = 'healthy';
        first.connected = true;
        if (how === 'circuit') {
          // an open circuit recovers through its half-open probe
          now += CIRCUIT.maxOpenMs;
          assert.equal(router.pick(MODEL, MODEL_CONFIG, workers, { shardKeyHash: key }), first);
          router.onResult(MODEL, first.id, 'success', 1, router.onSend(MODEL, first.id));
        }
        assert.equal(router.pick(MODEL, MODEL_CONFIG, workers, { shardKeyHash: key }), first);
      },
    ),
    { numRuns: 200 },
  );
});
