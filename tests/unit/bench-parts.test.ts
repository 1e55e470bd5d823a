/**
 * The load engine's parts: `infergrid bench`'s latency histogram, flags and runner accounting
 * without a server; then the same engine as bench/ scenarios drive it (against a loopback
 * server), and a scenario's flags.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { figures, type LoadFigures, openLoad, spreadSenders, targetIndex } from '../../bench/lib/load.ts';
import { parseParams } from '../../bench/lib/scenario.ts';
import {
  COORDINATOR_PARAMS,
  capacityRps,
  combineParallel,
  coordinatorSettings,
  poolRounds,
  speedUps,
  splitClients,
  type VerdictInput,
  verdictOf,
} from '../../bench/scenarios/scale-out-coordinators.ts';
import {
  BenchRun,
  LatencyHistogram,
  type RequestSender,
  type SendOutcome,
  parseBenchOptions,
  parseDurationMs,
} from '../../src/cli/bench/index.ts';
import { makeTestPki } from '../fixtures/tls.ts';

test('bench histogram - quantiles stay within 1% of a sorted reference, mean/min/max exact', () => {
  let seed = 42;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const samples = Array.from({ length: 20_000 }, () => Math.exp(random() * 12 - 4)); // 0.018 ms .. 2981 ms
  const histogram = new LatencyHistogram();
  for (const s of samples) histogram.record(s);
  const sorted = [...samples].sort((a, b) => a - b);
  for (const q of [0.01, 0.5, 0.9, 0.99, 0.999, 1]) {
    const exact = sorted[Math.ceil(q * sorted.length) - 1]!;
    const approx = histogram.quantileMs(q);
    // 1% of the value, or the whole-microsecond rounding for the smallest values
    assert.ok(Math.abs(approx - exact) <= Math.max(exact * 0.01, 0.001), `q${q}: ${approx} vs ${exact}`);
  }
  const summary = histogram.summary();
  assert.equal(summary.count, samples.length);
  assert.equal(summary.maxMs, Math.round(sorted.at(-1)! * 1000) / 1000);
  assert.equal(summary.minMs, Math.round(sorted[0]! * 1000) / 1000);
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.equal(summary.meanMs, Math.round(mean * 1000) / 1000);
  assert.equal(new LatencyHistogram().summary().p99Ms, 0);
});

test('bench histogram - known values in, known percentiles out; runs added together summarise as one', () => {
  // 1..1000 ms: the q quantile is q × 1000 ms, to the histogram's 3 significant digits
  const histogram = new LatencyHistogram();
  for (let ms = 1; ms <= 1000; ms++) histogram.record(ms);
  const near = (actual: number, expected: number): void =>
    assert.ok(Math.abs(actual - expected) <= expected * 0.001, `${actual} vs ${expected}`);
  near(histogram.quantileMs(0.5), 500);
  near(histogram.quantileMs(0.9), 900);
  near(histogram.quantileMs(0.99), 990);
  assert.equal(histogram.quantileMs(1), 1000, 'the top is the exact max, not its bucket');
  near(histogram.quantileMs(0.001), 1);
  const summary = histogram.summary();
  assert.deepEqual(
    { count: summary.count, meanMs: summary.meanMs, minMs: summary.minMs, maxMs: summary.maxMs },
    { count: 1000, meanMs: 500.5, minMs: 1, maxMs: 1000 },
  );
  // values below 2 µs are kept exactly: 0.001 ms (1 µs) 90 times, 0.002 ms 10 times
  const small = new LatencyHistogram();
  for (let i = 0; i < 100; i++) small.record(i < 90 ? 0.001 : 0.002);
  assert.equal(small.quantileMs(0.9), 0.001);
  assert.equal(small.quantileMs(0.91), 0.002);
  // two halves added together answer what one histogram of all the values answers
  const low = new LatencyHistogram();
  const high = new LatencyHistogram();
  for (let ms = 1; ms <= 1000; ms++) (ms <= 500 ? low : high).record(ms);
  low.add(high);
  assert.deepEqual(low.summary(), summary);
});

test('bench options - durations need a unit; defaults; every problem listed at once', () => {
  assert.equal(parseDurationMs('500ms'), 500);
  assert.equal(parseDurationMs('1.5s'), 1500);
  assert.equal(parseDurationMs('2m'), 120_000);
  assert.equal(parseDurationMs('10'), undefined);
  const options = parseBenchOptions({ model: 'm' });
  assert.deepEqual(options.mode, { kind: 'concurrency', concurrency: 1 });
  assert.equal(options.durationMs, 10_000);
  assert.equal(options.requests, undefined);
  assert.equal(parseBenchOptions({ model: 'm', requests: '5' }).durationMs, undefined);
  assert.deepEqual(parseBenchOptions({ model: 'm', rate: '2.5' }).mode, {
    kind: 'rate',
    ratePerS: 2.5,
    maxInFlight: 1000,
  });
  assert.throws(
    () => parseBenchOptions({ url: 'ftp://x', concurrency: '0', 'max-in-flight': '3', data: 'ones' }),
    (err: Error) => {
      for (const problem of [
        '--model <name> is required',
        '--url "ftp://x" is not an http:// or https:// URL',
        '--concurrency must be a positive integer, got "0"',
        '--max-in-flight applies to --rate',
        '--data must be random or zero, got "ones"',
      ])
        assert.ok(err.message.includes(problem), problem);
      return /^5 problems with the flags:/.test(err.message);
    },
  );
});

/** A sender whose requests stay outstanding until released; counts what it was asked to send. */
function heldSender(): RequestSender & { sends: number; release(outcome?: SendOutcome): void } {
  const pending: ((o: SendOutcome) => void)[] = [];
  return {
    sends: 0,
    send() {
      this.sends++;
      return new Promise<SendOutcome>((resolve) => pending.push(resolve));
    },
    release(outcome: SendOutcome = { ok: true }) {
      for (const resolve of pending.splice(0)) resolve(outcome);
    },
    close() {},
  };
}

test('bench runner - open loop: slots are fixed by the plan; past maxInFlight they are dropped, and late', async () => {
  const sender = heldSender();
  // the clock reads 0 at the start and an hour later ever after: every slot is due, and late
  let calls = 0;
  const now = (): number => (calls++ === 0 ? 0 : 3_600_000);
  const run = new BenchRun(
    {
      mode: { kind: 'rate', ratePerS: 100, maxInFlight: 3 },
      durationMs: 1000,
      requests: undefined,
      warmupMs: 0,
    },
    sender,
    now,
  );
  const done = run.run();
  await new Promise((resolve) => setImmediate(resolve));
  sender.release({ ok: false, kind: '429 OVERLOADED', message: 'queue full' });
  const result = await done;
  assert.equal(result.scheduled, 100);
  assert.equal(sender.sends, 3);
  assert.equal(result.sent, 3);
  assert.equal(result.dropped, 97);
  assert.equal(result.late, 3);
  assert.equal(result.errors, 3);
  assert.deepEqual(result.errorKinds, [['429 OVERLOADED', { count: 3, message: 'queue full' }]]);
});

test('bench runner - closed loop: exactly `requests` are sent, never more than the concurrency at once', async () => {
  let inFlight = 0;
  let most = 0;
  let sends = 0;
  const sender: RequestSender = {
    async send() {
      const nth = ++sends;
      most = Math.max(most, ++inFlight);
      await new Promise((resolve) => setImmediate(resolve));
      inFlight--;
      return nth % 5 === 0 ? { ok: false, kind: 'network ECONNRESET', message: 'reset' } : { ok: true };
    },
    close() {},
  };
  const result = await new BenchRun(
    { mode: { kind: 'concurrency', concurrency: 3 }, durationMs: undefined, requests: 25, warmupMs: 0 },
    sender,
  ).run();
  assert.equal(sends, 25);
  assert.equal(most, 3);
  assert.equal(result.scheduled, 25);
  assert.equal(result.completed, 20);
  assert.equal(result.errors, 5);
  assert.equal(result.latency.count, 20);
  assert.equal(result.interrupted, false);
});

test('bench load - the engine in a scenario: bodies in turn, one connection per loop, window hooks, runs pooled', async (t) => {
  const sockets = new Set<number>();
  const seen: string[] = [];
  const server = createServer((req, res) => {
    sockets.add(req.socket.remotePort!);
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      seen.push(body);
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const { port } = server.address() as AddressInfo;
  const bodies = ['a', 'b', 'c', 'd'].map((text) => ({ body: Buffer.from(text), headers: {} }));
  const load = openLoad({
    url: `http://127.0.0.1:${port}/`,
    bodies,
    concurrency: 3,
    connections: 'per-loop',
  });
  t.after(() => load.close());
  const phases: string[] = [];
  const first = await load.run(
    { durationMs: 150, warmupMs: 50 },
    { onMeasureStart: () => phases.push('start'), onMeasureEnd: () => phases.push('end') },
  );
  const second = await load.run({ durationMs: 100 });
  assert.deepEqual(phases, ['start', 'end']);
  assert.equal(sockets.size, 3, 'three loops, three connections, kept from one run to the next');
  // every body is sent in turn, whichever loop sends it: as many a's as d's, give or take one
  const count = (text: string): number => seen.filter((b) => b === text).length;
  assert.ok(seen.length >= 8, `${seen.length} requests`);
  assert.ok(count('a') - count('d') <= 1 && count('a') >= count('d'), `a ${count('a')}, d ${count('d')}`);
  const pooled = figures([first, second]);
  assert.equal(pooled.requests, first.completed + second.completed);
  assert.equal(pooled.durationS, Math.round(first.elapsedMs + second.elapsedMs) / 1000);
  assert.equal(pooled.errors, 0);
  assert.ok(pooled.latencyMs.p50 > 0 && pooled.latencyMs.p50 <= pooled.latencyMs.p99);
});

test('bench load - https with a private CA: the certificate checked against it, connections kept alive', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makeTestPki(dir, { names: ['127.0.0.1', 'localhost'] });
  const sockets = new Set<number>();
  let handshakes = 0;
  const server = createHttpsServer(
    { cert: readFileSync(pki.certFile), key: readFileSync(pki.keyFile) },
    (req, res) => {
      sockets.add(req.socket.remotePort!);
      req.resume().on('end', () => res.end('{}'));
    },
  );
  server.on('secureConnection', () => handshakes++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const { port } = server.address() as AddressInfo;
  const spec = {
    url: `https://127.0.0.1:${port}/`,
    bodies: [{ body: Buffer.from('x'), headers: {} }],
    concurrency: 2,
  };

  const trusted = openLoad({ ...spec, ca: readFileSync(pki.caFile, 'utf8') });
  t.after(() => trusted.close());
  const run = await trusted.run({ durationMs: 150 });
  assert.equal(run.errors, 0);
  assert.ok(run.completed >= 4, `${run.completed} requests`);
  assert.ok(handshakes <= 2 && sockets.size <= 2, `${handshakes} handshakes on ${sockets.size} connections`);

  const untrusted = openLoad(spec);
  t.after(() => untrusted.close());
  const refused = figures(await untrusted.run({ durationMs: 50 }));
  assert.equal(refused.requests, 0);
  assert.ok(refused.errors > 0);
  assert.ok(
    Object.keys(refused.errorKinds).every((kind) => kind === 'network UNABLE_TO_VERIFY_LEAF_SIGNATURE'),
    JSON.stringify(refused.errorKinds),
  );
});

test('bench scenario flags - the command line over BENCH_* over --quick over the default', () => {
  const scenario = {
    name: 'x',
    title: 'x',
    params: { 'duration-s': '5', concurrency: '1,64', rounds: '3' },
    quick: { 'duration-s': '2', concurrency: '1' },
    run: async () => undefined,
    section: () => [],
  };
  const parsed = parseParams(scenario, ['--quick', '--concurrency', '8'], { BENCH_DURATION_S: '9' });
  assert.deepEqual(parsed, { quick: true, params: { 'duration-s': '9', concurrency: '8', rounds: '3' } });
  assert.deepEqual(parseParams(scenario, [], {}).params, scenario.params);
  assert.throws(() => parseParams(scenario, ['--durations-s', '1'], {}), /durations-s/);
});

test('bench load - spread over several targets: closed loop i always to target i mod n, open loops in turn', async () => {
  const calls: [number, number | undefined][] = [];
  const fake = (target: number): RequestSender => ({
    send: async (loop) => {
      calls.push([target, loop]);
      return { ok: true };
    },
    close: () => calls.push([target, -1]),
  });
  const sender = spreadSenders([fake(0), fake(1), fake(2)]);
  for (const loop of [0, 1, 2, 3, 4, 5, 3]) await sender.send(loop);
  // each target numbers its own loops densely (0, 1, ...), so its per-loop connections do too
  assert.deepEqual(calls.splice(0), [
    [0, 0],
    [1, 0],
    [2, 0],
    [0, 1],
    [1, 1],
    [2, 1],
    [0, 1],
  ]);
  for (let i = 0; i < 4; i++) await sender.send();
  assert.deepEqual(
    calls.splice(0).map(([target]) => target),
    [0, 1, 2, 0],
  );
  sender.close();
  assert.deepEqual(calls, [
    [0, -1],
    [1, -1],
    [2, -1],
  ]);
  assert.equal(targetIndex(7, 0, 3), 1);
  assert.equal(targetIndex(undefined, 7, 3), 1);
  const one = fake(9);
  assert.equal(spreadSenders([one]), one, 'one target: its sender as it is');
  assert.throws(() => spreadSenders([]), /at least one sender/);
});

test('bench load - several URLs: each loop keeps one connection to its own server, the requests split evenly', async (t) => {
  const servers = [0, 1].map(() => {
    const sockets = new Set<number>();
    let requests = 0;
    const server = createServer((req, res) => {
      sockets.add(req.socket.remotePort!);
      requests++;
      req.resume();
      req.on('end', () => res.end('{}'));
    });
    return { server, sockets, requests: () => requests };
  });
  const urls: string[] = [];
  for (const { server } of servers) {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
  }
  const load = openLoad({
    url: urls,
    bodies: [{ body: Buffer.from('x'), headers: {} }],
    concurrency: 4,
    connections: 'per-loop',
  });
  t.after(() => load.close());
  const result = await load.run({ durationMs: 150 });
  assert.deepEqual(
    servers.map((s) => s.sockets.size),
    [2, 2],
    'four loops over two servers: two connections each',
  );
  const [a, b] = servers.map((s) => s.requests());
  assert.equal(result.errors, 0);
  assert.ok(a! + b! >= result.completed, 'the servers saw every answered request');
  // closed loops on equal servers: each server gets about half (two loops each), never all
  assert.ok(a! > 0 && b! > 0 && Math.abs(a! - b!) <= Math.max(8, 0.5 * Math.max(a!, b!)), `${a} vs ${b}`);
});

const roundFigures = (requests: number, durationS: number, p50: number): LoadFigures => ({
  requests,
  errors: 1,
  errorKinds: { timeout: 1 },
  durationS,
  rps: Math.round(requests / durationS),
  latencyMs: { mean: p50, p50, p90: p50 * 2, p99: p50 * 3, max: p50 * 4 },
});

test('bench scale-out coordinators - rounds pooled exactly, speed-ups against one coordinator, capacity per core', () => {
  const pooled = poolRounds([roundFigures(3000, 1, 10), roundFigures(1000, 1, 30)]);
  assert.equal(pooled.requests, 4000);
  assert.equal(pooled.errors, 2);
  assert.deepEqual(pooled.errorKinds, { timeout: 2 });
  assert.equal(pooled.durationS, 2);
  assert.equal(pooled.rps, 2000);
  // percentiles weighted by each round's requests: (3000 × 10 + 1000 × 30) / 4000
  assert.equal(pooled.latencyMs.p50, 15);
  assert.equal(pooled.latencyMs.p99, 45);
  assert.equal(pooled.latencyMs.max, 120);
  assert.equal(poolRounds([]).rps, 0);

  assert.deepEqual(
    speedUps([
      { coordinators: 1, rps: 1000 },
      { coordinators: 2, rps: 1850 },
      { coordinators: 3, rps: 2400 },
    ]),
    [1, 1.85, 2.4],
  );
  assert.deepEqual(
    speedUps([{ coordinators: 2, rps: 1850 }]),
    [null],
    'no one-coordinator point: no speed-up',
  );
  assert.equal(capacityRps(2, 250), 8000);
  assert.equal(capacityRps(1, null), null);
  assert.equal(capacityRps(1, 0), null);

  assert.deepEqual(coordinatorSettings(COORDINATOR_PARAMS).problems, []);
  assert.deepEqual(
    coordinatorSettings({ ...COORDINATOR_PARAMS, coordinators: '3,1,2,2' }).settings.counts,
    [1, 2, 3],
  );
  assert.deepEqual(coordinatorSettings({ ...COORDINATOR_PARAMS, coordinators: 'none' }).settings.counts, []);
  const bad = coordinatorSettings({
    ...COORDINATOR_PARAMS,
    coordinators: 'two',
    'coordinator-workers': '0',
    'coordinator-rounds': '1.5',
  }).problems;
  assert.equal(bad.length, 3, bad.join('; '));
  assert.match(bad[0]!, /--coordinators must list positive integers or be "none", got "two"/);
});

test('bench scale-out coordinators - the verdict names the bound, the bound with a core per process, and whether CPU per request stayed flat', () => {
  const point = (
    coordinators: number,
    busy: Partial<VerdictInput['coresBusy']>,
    coordinatorUs: number,
    vsOne: number | null,
  ): VerdictInput => ({
    coordinators,
    coresBusy: {
      coordinators: 0.5,
      busiestCoordinator: 0.5,
      idleCoordinators: 0,
      workers: 0.3,
      loadGenerator: 0.3,
      machine: 1.2,
      outsideBench: 0,
      ...busy,
    },
    cpuUsPerRequest: { coordinators: coordinatorUs, idleCoordinators: 0, workers: 50, loadGenerator: 80 },
    capacityRps: {
      coordinators: capacityRps(coordinators, coordinatorUs),
      workers: capacityRps(2, 50),
      loadGenerator: capacityRps(1, 80),
    },
    cpuPerRequestVsOne: vsOne,
  });
  const options = { cores: 2, workers: 2, loadGenerators: 1, saturationCores: 0.85 };

  // one coordinator's event loop full: it bounds the point, even on a busy machine
  const one = verdictOf(
    point(1, { coordinators: 0.9, busiestCoordinator: 0.9, machine: 1.7 }, 200, null),
    options,
  );
  assert.equal(one.boundBy, 'coordinator CPU');
  assert.match(
    one.verdict,
    /coordinators ~5,000, workers ~40,000, load generator ~12,500 req\/s, so the coordinators would bound it/,
  );
  assert.doesNotMatch(one.verdict, /against one/);

  // two coordinators on 2 saturated cores: the machine; CPU per request flat
  const two = verdictOf(
    point(2, { coordinators: 1.1, busiestCoordinator: 0.56, machine: 1.95 }, 210, 1.05),
    options,
  );
  assert.equal(two.boundBy, 'machine CPU');
  assert.match(
    two.verdict,
    /^machine CPU \(1\.95 of 2 cores busy: coordinators 1\.10, workers 0\.30, load generator 0\.30, rest 0\.25\)/,
  );
  assert.match(
    two.verdict,
    /210 µs, \+5% against one coordinator's: adding coordinators does not make a request cost more/,
  );

  // ... and rising: contention, said as such
  assert.match(
    verdictOf(point(3, { machine: 1.95 }, 300, 1.5), options).verdict,
    /\+50% against one coordinator's: each request costs more/,
  );
  // with a core per process, the single load generator runs out before three coordinators
  assert.match(verdictOf(point(3, {}, 200, 1), options).verdict, /so the load generator would bound it/);
  // the load generator's own loop, the workers', then round trips
  assert.equal(verdictOf(point(1, { loadGenerator: 0.9 }, 200, null), options).boundBy, 'load generator CPU');
  assert.equal(verdictOf(point(1, { workers: 1.8 }, 200, null), options).boundBy, 'workers CPU');
  assert.equal(verdictOf(point(1, {}, 200, null), options).boundBy, 'round trips');
  // two load generators at 0.9 cores: each has a core to spare; their capacity doubles
  const twoGenerators = verdictOf(point(1, { loadGenerator: 0.9 }, 200, null), {
    ...options,
    loadGenerators: 2,
  });
  assert.equal(twoGenerators.boundBy, 'round trips');
  assert.match(twoGenerators.verdict, /load generators \(2\) ~12,500 req\/s/);
  // other work on the cores: the verdict says the figures are suspect
  assert.match(
    verdictOf(point(1, { outsideBench: 0.6 }, 200, null), options).verdict,
    /other work kept 0\.60 cores busy meanwhile: these figures are suspect$/,
  );
  assert.doesNotMatch(verdictOf(point(1, { outsideBench: 0.1 }, 200, null), options).verdict, /suspect/);
});

test('bench scale-out coordinators - clients split over load generators keep client g on target g mod K; parallel figures add up', () => {
  // 7 clients, 3 generators, 2 targets: 3 + 2 + 2 clients, the generators starting at clients 0, 3, 5
  assert.deepEqual(splitClients(7, 3, 2), [
    { clients: 3, firstTarget: 0 },
    { clients: 2, firstTarget: 1 },
    { clients: 2, firstTarget: 1 },
  ]);
  // every client's target, as the generators' rotated URL lists give it, is its global index mod K
  for (const [clients, generators, targets] of [
    [192, 3, 3],
    [128, 3, 2],
    [64, 1, 1],
    [10, 4, 3],
  ] as const) {
    const split = splitClients(clients, generators, targets);
    assert.equal(
      split.reduce((n, g) => n + g.clients, 0),
      clients,
    );
    const seen: number[] = [];
    for (const g of split) for (let i = 0; i < g.clients; i++) seen.push((g.firstTarget + i) % targets);
    assert.deepEqual(
      seen,
      Array.from({ length: clients }, (_, g) => g % targets),
    );
  }
  assert.deepEqual(
    splitClients(2, 4, 1),
    [
      { clients: 1, firstTarget: 0 },
      { clients: 1, firstTarget: 0 },
    ],
    'generators left without clients are left out',
  );

  const both = combineParallel([roundFigures(3000, 1, 10), roundFigures(1000, 1.02, 30)]);
  assert.equal(both.requests, 4000);
  assert.equal(both.rps, 3000 + 980);
  assert.equal(both.durationS, 1.02);
  assert.equal(both.latencyMs.p50, 15);
});
