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
import { figures, openLoad } from '../../bench/lib/load.ts';
import { parseParams } from '../../bench/lib/scenario.ts';
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
