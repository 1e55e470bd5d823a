/**
 * The suite's targets, computed from a hand-made suite file: each is met or not from the figures
 * the scenarios printed, and the report says what bounds each figure from what the same run
 * measured (CPU per request, the bare socket round trip, the scale-out scenario's saturation).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BenchLine, ScenarioRun, SuiteFile } from '../../bench/lib/suite-format.ts';
import { SUITE_FORMAT } from '../../bench/lib/suite-format.ts';
import { computeTargets } from '../../bench/lib/suite-targets.ts';

function run(name: string, results: BenchLine[]): ScenarioRun {
  return {
    name,
    file: `bench/${name}.ts`,
    flags: {},
    notes: [],
    status: 'ok',
    exitCode: 0,
    signal: null,
    startedAt: null,
    durationS: 1,
    timeoutS: 60,
    otherCoresBusy: 0,
    results,
    otherStdout: [],
  } as ScenarioRun;
}

function suite(scenarios: ScenarioRun[]): SuiteFile {
  return {
    format: SUITE_FORMAT,
    startedAt: '',
    finishedAt: '',
    durationS: 1,
    interrupted: false,
    machine: {
      cpuModel: 'test',
      cpus: 2,
      totalMemoryBytes: 1,
      node: 'v20',
      platform: 'linux',
      arch: 'x64',
      osRelease: '',
      loadAverage1m: 0,
    },
    git: { commit: null, dirty: null },
    params: { quick: false, timeoutS: 60, requested: [], passThrough: {}, sets: {}, env: {}, argv: [] },
    scenarios,
  } as SuiteFile;
}

const overhead = (c64Engine: number, c1EngineP50: number): BenchLine =>
  ({
    bench: 'overhead',
    runs: [
      {
        concurrency: 1,
        engine: {
          rps: 2000,
          latencyMs: { p50: c1EngineP50 },
          cpuUsPerRequest: { coordinator: 200, worker: 100 },
        },
        bareFastify: { rps: 4000, latencyMs: { p50: 0.25 }, cpuUsPerRequest: { server: 150 } },
      },
      {
        concurrency: 64,
        engine: {
          rps: c64Engine,
          latencyMs: { p50: 5 },
          cpuUsPerRequest: { coordinator: 90, worker: 40, loadGenerator: 60 },
        },
        bareFastify: {
          rps: 10000,
          latencyMs: { p50: 2 },
          cpuUsPerRequest: { server: 40, loadGenerator: 60 },
        },
      },
    ],
    processRoundTrip: { roundTrips: 100, latencyMs: { p50: 0.08 } },
  }) as unknown as BenchLine;

test('overhead targets: met and not met from the ratios, bounds from CPU per request and the socket floor', () => {
  const [throughput, latency] = computeTargets(suite([run('overhead', [overhead(4000, 0.6)])]));
  assert.equal(throughput!.status, 'not met');
  assert.match(throughput!.measured, /^40% \(4,000 vs 10,000 req\/s\)/);
  // engine 90 + 40 + 60 = 190 µs against bare 40 + 60 = 100 µs: 53% of bare is what the cores allow
  assert.match(throughput!.bound!, /engine 190 µs .*bare 100 µs.*about 53% of bare/);
  assert.equal(latency!.status, 'not met');
  assert.match(latency!.measured, /^2\.4×/);
  assert.match(latency!.bound!, /adds 350 µs .*round trip between two processes here is 80 µs/);
  assert.match(
    latency!.bound!,
    /spend 300 µs of CPU per request \(coordinator 200, worker 100\) where bare fastify spends 150/,
  );

  const [fast, quick] = computeTargets(suite([run('overhead', [overhead(6000, 0.45)])]));
  assert.equal(fast!.status, 'met');
  assert.equal(quick!.status, 'met');
});

test('real-model target: the best engine point against onnxruntime alone, bound by CPU per request', () => {
  const summary = {
    bench: 'real-model',
    scenario: 'summary',
    ratio: 0.75,
    bestEngine: { variant: 'on', concurrency: 4, rps: 70, ratio: 0.75 },
    baseline: { best: { batch: 2, rowsPerS: 93.3 } },
    cpuPerRow: {
      baselineMs: 21,
      engine: { coordinatorMs: 3, workersMs: 23, loadGeneratorMs: 1, totalMs: 27 },
    },
    transferFloor: {
      requestBytes: 184_320,
      responseBytes: 1_060_864,
      cpuMsPerRoundTrip: { sender: 0.4, receiver: 0.5 },
    },
  } as unknown as BenchLine;
  const target = computeTargets(suite([run('real-model', [summary])]))[2]!;
  assert.equal(target.status, 'not met');
  assert.match(
    target.measured,
    /^75% \(engine at its best: 70 req\/s at concurrency 4, batching on; onnxruntime alone: 93\.3 rows\/s at batch 2\)/,
  );
  assert.match(target.bound!, /engine 27 ms .*onnxruntime's 21 ms per row.*about 78% of direct/);
  assert.match(
    target.bound!,
    /same 180 KiB request and 1,036 KiB response cost 0\.9 ms of CPU per round trip/,
  );

  // a run that printed no engine point against the baseline measured nothing
  const none = computeTargets(suite([run('real-model', [])]))[2]!;
  assert.equal(none.status, 'not measured');
});

test('scale-out target: judged up to the first saturated fleet, which is named with its bound and the per-core limit', () => {
  const point = (workers: number, rps: number, ideal: number, extra: object = {}) => ({
    bench: 'scale-out',
    scenario: 'point',
    workers,
    rps,
    idealRps: ideal,
    ratio: rps / ideal,
    coordinatorCores: workers * 0.1,
    coordinatorRpsPerCore: 8000,
    saturated: false,
    ...extra,
  });
  const points = [
    point(1, 1550, 1600),
    point(2, 3000, 3200),
    point(4, 5000, 6400, { saturated: true, boundBy: 'machine CPU (1.9 of 2 cores busy)' }),
    point(8, 5100, 12800, { saturated: true, boundBy: 'machine CPU (2 of 2 cores busy)' }),
  ] as unknown as BenchLine[];
  const target = computeTargets(suite([run('scale-out', points)]))[3]!;
  assert.equal(target.status, 'met');
  assert.match(target.measured, /^94% of ideal at worst over 1–2 workers/);
  assert.match(
    target.measured,
    /limit is reached at 4 workers: 5,000 of 6,400 req\/s \(78%\), bound by machine CPU/,
  );
  assert.match(target.measured, /one coordinator core answers about 8,000 req\/s/);
  assert.match(target.bound!, /^at 4 workers, machine CPU/);

  // a fleet under 90% before any saturation is not met
  const early = [point(1, 1200, 1600), point(2, 3100, 3200)] as unknown as BenchLine[];
  const missed = computeTargets(suite([run('scale-out', early)]))[3]!;
  assert.equal(missed.status, 'not met');
  assert.match(missed.measured, /no fleet up to 2 workers ran out of CPU/);

  // the scenario marks a fleet under 90% saturated too; with CPU to spare it is judged, not the limit
  const slow = [
    point(1, 1550, 1600),
    point(2, 1600, 3200, { saturated: true, boundBy: 'round trips (0.9 of 2 cores busy)' }),
    point(4, 5000, 6400, { saturated: true, boundBy: 'machine CPU (1.9 of 2 cores busy)' }),
  ] as unknown as BenchLine[];
  const judged = computeTargets(suite([run('scale-out', slow)]))[3]!;
  assert.equal(judged.status, 'not met');
  assert.match(judged.measured, /^50% of ideal at worst over 1–2 workers/);
  assert.match(judged.measured, /limit is reached at 4 workers/);
});
