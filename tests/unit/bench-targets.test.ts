/**
 * The suite's targets, computed from hand-made typed results: each is met or not from the figures
 * the scenarios measured, the report says what bounds each figure from what the same run measured
 * (CPU per request, the bare socket round trip, the scale-out scenario's saturation), and a
 * scenario that did not run leaves its targets "not measured".
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LoadFigures } from '../../bench/lib/load.ts';
import { computeTargets } from '../../bench/lib/page.ts';
import { foldSuite, SUITE_FORMAT, type ScenarioRun, type SuiteFile } from '../../bench/lib/suite.ts';
import { PAGE_SCENARIOS } from '../../bench/scenarios/index.ts';
import type { OverheadPoint, OverheadResult } from '../../bench/scenarios/overhead.ts';
import type { OcrBaselinePoint, OcrPoint, PipelineResult } from '../../bench/scenarios/pipeline.ts';
import type { EnginePoint, RealModelResult } from '../../bench/scenarios/real-model.ts';
import type { ScaleOutPoint, ScaleOutResult } from '../../bench/scenarios/scale-out.ts';
import type {
  CoordinatorPoint,
  CoordinatorSweepResult,
} from '../../bench/scenarios/scale-out-coordinators.ts';
import type { SecurityResult, SecurityRun } from '../../bench/scenarios/security.ts';
import type { TargetResult } from '../../bench/lib/scenario.ts';

function run(name: string, result: unknown): ScenarioRun {
  return {
    name,
    file: `bench/scenarios/${name}.ts`,
    flags: {},
    notes: [],
    status: 'ok',
    exitCode: 0,
    signal: null,
    startedAt: null,
    durationS: 1,
    timeoutS: 60,
    otherCoresBusy: 0,
    ...(result === undefined ? {} : { result }),
    otherStdout: [],
  };
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
  };
}

const load = (rps: number, p50: number): LoadFigures => ({
  requests: rps * 5,
  errors: 0,
  errorKinds: {},
  durationS: 5,
  rps,
  latencyMs: { mean: p50, p50, p90: p50 * 1.5, p99: p50 * 3, max: p50 * 5 },
});

function overheadPoint(
  concurrency: number,
  engine: [rps: number, p50: number, cpu: [number, number, number]],
  bare: [rps: number, p50: number, cpu: [number, number]],
): OverheadPoint {
  const [coordinator, worker, loadGenerator] = engine[2];
  const engineRun = {
    ...load(engine[0], engine[1]),
    cpuUsPerRequest: { coordinator, worker, loadGenerator },
  };
  const bareRun = {
    ...load(bare[0], bare[1]),
    cpuUsPerRequest: { server: bare[2][0], loadGenerator: bare[2][1] },
  };
  return {
    concurrency,
    engine: engineRun,
    bareFastify: bareRun,
    traced: engineRun,
    ratio: { throughput: engine[0] / bare[0], p50: engine[1] / bare[1], p99: engine[1] / bare[1] },
    engineAddedP50Ms: engine[1] - bare[1],
    tracedVsOff: { throughput: 1, addedP50Ms: 0, addedP99Ms: 0 },
  };
}

function overhead(c64Engine: number, c1EngineP50: number): OverheadResult {
  const percentiles = { mean: 0.08, p50: 0.08, p90: 0.1, p99: 0.2, max: 1 };
  return {
    params: {
      'duration-s': '5',
      concurrency: '1,64',
      elements: '16',
      'warmup-s': '1',
      'sample-ratio': '1',
      rounds: '3',
    },
    tensor: 'FP32 [1,16]',
    points: [
      overheadPoint(1, [2000, c1EngineP50, [200, 100, 80]], [4000, 0.25, [150, 70]]),
      overheadPoint(64, [c64Engine, 5, [90, 40, 60]], [10000, 2, [40, 60]]),
    ],
    backendInProcess: { callsPerS: 2_000_000, latencyMs: percentiles },
    processRoundTrip: { roundTrips: 100, latencyMs: percentiles },
    tracingReceiver: { exports: 0, spans: 0, bytes: 0 },
  };
}

const byId = (targets: TargetResult[], id: string): TargetResult => {
  const found = targets.find((t) => t.id === id);
  assert.ok(found, `no target ${id}`);
  return found;
};

test('bench targets - every target of the page, in the order the README states them', () => {
  const targets = computeTargets(suite([]), PAGE_SCENARIOS);
  assert.deepEqual(
    targets.map((t) => [t.id, t.status]),
    [
      ['overhead-c64-throughput', 'not measured'],
      ['overhead-c1-p50', 'not measured'],
      ['overhead-cache-hit-c1', 'not measured'],
      ['overhead-cache-hit-c32', 'not measured'],
      ['real-model-vs-direct', 'not measured'],
      ['scale-out-vs-ideal', 'not measured'],
      ['scale-out-coordinators-x2', 'not measured'],
      ['security-auth-c64-throughput', 'not measured'],
      ['pipeline-ocr-vs-in-process', 'not measured'],
      ['pipeline-hop-1mib-c1', 'not measured'],
    ],
  );
});

test('bench targets - overhead: met and not met from the ratios, bounds from CPU per request and the socket floor', () => {
  const [throughput, latency] = computeTargets(suite([run('overhead', overhead(4000, 0.6))]), PAGE_SCENARIOS);
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

  // the bars: 60% of bare at 64, 1.6× bare's p50 at 1
  const [fast, quick] = computeTargets(suite([run('overhead', overhead(6000, 0.375))]), PAGE_SCENARIOS);
  assert.equal(fast!.status, 'met');
  assert.equal(quick!.status, 'met');
  const [, slow] = computeTargets(suite([run('overhead', overhead(6000, 0.45))]), PAGE_SCENARIOS);
  assert.equal(slow!.status, 'not met', '1.8× is over the bar');
});

test('bench targets - overhead: a memory cache hit against bare fastify, and never slower than a miss', () => {
  const withHits = (hitRps: number, hitP50: number): OverheadResult => {
    const result = overhead(6000, 0.375);
    for (const p of result.points) {
      const hit = {
        ...load(hitRps, hitP50),
        cpuUsPerRequest: { coordinator: 50, worker: 0, loadGenerator: 60 },
      };
      p.cached = hit;
      p.cachedRatio = {
        throughput: hitRps / p.bareFastify.rps,
        p50: hitP50 / p.bareFastify.latencyMs.p50,
        vsMissThroughput: hitRps / p.engine.rps,
        vsMissP50: hitP50 / p.engine.latencyMs.p50,
      };
    }
    return result;
  };
  const hitTargets = (r: OverheadResult) =>
    computeTargets(suite([run('overhead', r)]), PAGE_SCENARIOS).filter((t) =>
      t.id.startsWith('overhead-cache-hit'),
    );
  // c=1 point: bare 4,000 req/s, engine 2,000 at 0.375 ms; c=64: bare 10,000, engine 6,000 at 5 ms
  const [c1] = hitTargets(withHits(3400, 0.3));
  assert.equal(c1!.status, 'met', c1!.measured);
  assert.match(c1!.measured, /^85% of bare \(3,400 vs 4,000 req\/s\)/);
  assert.match(c1!.bound!, /hit 50 µs \(a miss: 200 µs/);
  const [under] = hitTargets(withHits(3000, 0.3));
  assert.equal(under!.status, 'not met', '75% of bare');
  const [slower] = hitTargets(withHits(3400, 0.4));
  assert.equal(slower!.status, 'not met', 'a hit slower than a miss at p50');
  // no c=32 point in this run
  assert.equal(hitTargets(withHits(3400, 0.3))[1]!.status, 'not measured');
});

function security(authRps: number): SecurityResult {
  const setup = (rps: number, coordinator: number): SecurityRun => ({
    ...load(rps, 5),
    cpuUsPerRequest: { coordinator, worker: 40, loadGenerator: 60 },
    otherCoresBusy: 0.1,
  });
  return {
    params: { 'duration-s': '5', concurrency: '64', elements: '16', 'warmup-s': '1', rounds: '3', keys: '8' },
    tensor: 'FP32 [1,16]',
    notMeasured: { 'rpc-tls': 'rpc.tls not supported by this build' },
    points: [{ concurrency: 64, runs: { open: setup(10000, 90), auth: setup(authRps, 95) }, vsOpen: {} }],
    disturbed: [],
  };
}

test("bench targets - security: API keys judged against the open API at concurrency 64, bound by the coordinator's CPU", () => {
  const securityTarget = (result: SecurityResult) =>
    computeTargets(suite([run('security', result)]), PAGE_SCENARIOS).find(
      (t) => t.id === 'security-auth-c64-throughput',
    )!;
  const met = securityTarget(security(9600));
  assert.equal(met.status, 'met');
  assert.match(met.measured, /^96% \(9,600 vs 10,000 req\/s\)/);
  assert.match(met.bound!, /open 190 µs \(coordinator 90\), with keys 195 µs \(coordinator 95\).* by \+5 µs/);
  const notMet = securityTarget(security(9400));
  assert.equal(notMet.status, 'not met');
});

test('bench targets - real model: the best engine point against onnxruntime alone, bound by CPU per request', () => {
  const cpu = { coordinator: 3, workers: 23, loadGenerator: 1 };
  const point = (concurrency: number, rps: number): EnginePoint => ({
    variant: 'on',
    model: 'ocr-rec-batching-on',
    concurrency,
    ...load(rps, 50),
    worker: {
      inferences: 1,
      executions: 1,
      meanBatchSize: 1,
      failed: 0,
      queueMsMean: 0,
      computeMsMean: 20,
      byWorker: {},
    },
    coresBusy: { coordinator: 0.2, workers: 1.6, loadGenerator: 0.1, machine: 1.9, outsideBench: 0 },
    cpuMsPerRequest: cpu,
    vsBaseline: Math.round((rps / 93.3) * 1000) / 1000,
  });
  const best = {
    batch: 2,
    rowsPerS: 93.3,
    perProcess: [],
    coresBusy: { baseline: 1.9, machine: 1.9, outsideBench: 0 },
    cpuMsPerRequest: { baseline: 21 },
  };
  const engine = [point(2, 60), point(4, 70)];
  const result = {
    engine,
    bestEngine: engine[1]!,
    best,
    baseline: [best],
    cpuPerRow: {
      baselineMs: 21,
      engine: { coordinatorMs: 3, workersMs: 23, loadGeneratorMs: 1, totalMs: 27 },
      overheadMs: 6,
    },
    transferFloor: {
      requestBytes: 184_320,
      responseBytes: 1_060_864,
      roundTrips: 100,
      perS: 100,
      cpuMsPerRoundTrip: { sender: 0.4, receiver: 0.5 },
    },
  } as unknown as RealModelResult;
  const target = byId(
    computeTargets(suite([run('real-model', result)]), PAGE_SCENARIOS),
    'real-model-vs-direct',
  );
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

  // a run that printed no result measured nothing
  const none = byId(
    computeTargets(suite([run('real-model', undefined)]), PAGE_SCENARIOS),
    'real-model-vs-direct',
  );
  assert.equal(none.status, 'not measured');
});

test('bench targets - scale-out: judged up to the first saturated fleet, which is named with its bound and the per-core limit', () => {
  const point = (
    workers: number,
    rps: number,
    ideal: number,
    extra: Partial<ScaleOutPoint> = {},
  ): ScaleOutPoint => ({
    workers,
    concurrency: workers * 64,
    ...load(rps, 40),
    idealRps: ideal,
    idealBound: 'workers',
    ratio: rps / ideal,
    worker: {
      inferences: 1,
      executions: 1,
      meanBatchSize: 32,
      failed: 0,
      queueMsMean: 1,
      computeMsMean: 20,
      perWorkerRequests: { min: 1, max: 1 },
    },
    coresBusy: {
      coordinator: workers * 0.1,
      workers: 0.1,
      loadGenerator: 0.1,
      machine: 0.5,
      outsideBench: 0,
    },
    cpuMsPerRequest: { coordinator: 0.125, workers: 0.1, loadGenerator: 0.1 },
    coordinatorRpsPerCore: 8000,
    saturated: false,
    saturatedBecause: [],
    ...extra,
  });
  const result = (points: ScaleOutPoint[]) =>
    ({ params: { 'saturation-cores': '0.85' }, points }) as unknown as ScaleOutResult;
  const target = (points: ScaleOutPoint[]) =>
    byId(computeTargets(suite([run('scale-out', result(points))]), PAGE_SCENARIOS), 'scale-out-vs-ideal');
  const saturated = (boundBy: string) => ({ saturated: true, saturatedBecause: ['x'], boundBy });

  const met = target([
    point(1, 1550, 1600),
    point(2, 3000, 3200),
    point(4, 5000, 6400, saturated('machine CPU (1.9 of 2 cores busy)')),
    point(8, 5100, 12800, saturated('machine CPU (2 of 2 cores busy)')),
  ]);
  assert.equal(met.status, 'met');
  assert.match(met.measured, /^94% of ideal at worst over 1–2 workers/);
  assert.match(
    met.measured,
    /limit is reached at 4 workers: 5,000 of 6,400 req\/s \(78%\), bound by machine CPU/,
  );
  assert.match(met.measured, /one coordinator core answers about 8,000 req\/s/);
  assert.match(met.bound!, /^at 4 workers, machine CPU/);

  // a fleet under 90% before any saturation is not met
  const missed = target([point(1, 1200, 1600), point(2, 3100, 3200)]);
  assert.equal(missed.status, 'not met');
  assert.match(missed.measured, /no fleet up to 2 workers ran out of CPU/);

  // the scenario marks a fleet under 90% saturated too; with CPU to spare it is judged, not the limit
  const judged = target([
    point(1, 1550, 1600),
    point(2, 1600, 3200, saturated('round trips (0.9 of 2 cores busy)')),
    point(4, 5000, 6400, saturated('machine CPU (1.9 of 2 cores busy)')),
  ]);
  assert.equal(judged.status, 'not met');
  assert.match(judged.measured, /^50% of ideal at worst over 1–2 workers/);
  assert.match(judged.measured, /limit is reached at 4 workers/);
});

test('bench report - runs folded into the page data replace their namesakes, keep the suite order and say where they were measured', () => {
  const base = suite([run('overhead', overhead(4000, 0.6)), run('routing', undefined)]);
  const added = {
    ...suite([run('security', security(9600)), run('overhead', overhead(6000, 0.45))]),
    startedAt: '2026-12-07T01:44:03.000Z',
    git: { commit: '0123456789abcdef', dirty: false },
  };
  const folded = foldSuite(base, added, ['overhead', 'routing', 'security']);
  assert.deepEqual(
    folded.scenarios.map((s) => s.name),
    ['overhead', 'routing', 'security'],
  );
  assert.equal((folded.scenarios[0]!.result as OverheadResult).points[1]!.engine.rps, 6000);
  assert.deepEqual(folded.scenarios[1]!.notes, []);
  assert.match(
    folded.scenarios[2]!.notes.at(-1)!,
    /^measured apart .*2026-12-07 01:44 UTC at commit 0123456789ab, on test \(2 cores/,
  );
  assert.equal(folded.startedAt, base.startedAt, "the page's header still describes the base run");
});

test('bench targets - scale-out coordinators: 2 coordinators against one, met at 1.8x; on saturated cores not measured, with why', () => {
  const point = (coordinators: number, rps: number, speedUp: number, extra: Partial<CoordinatorPoint> = {}) =>
    ({
      coordinators,
      rps,
      speedUp,
      cpuUsPerRequest: { coordinators: 200, idleCoordinators: 0, workers: 60, loadGenerator: 80 },
      coresBusy: { machine: 1.2 },
      boundBy: 'round trips',
      verdict: 'round trips (...)',
      ...extra,
    }) as CoordinatorPoint;
  const target = (points: CoordinatorPoint[]) => {
    const coordinators = { cores: 2, points } as unknown as CoordinatorSweepResult;
    const result = {
      params: { 'saturation-cores': '0.85' },
      points: [],
      coordinators,
    } as unknown as ScaleOutResult;
    return byId(
      computeTargets(suite([run('scale-out', result)]), PAGE_SCENARIOS),
      'scale-out-coordinators-x2',
    );
  };
  const met = target([point(1, 5000, 1), point(2, 9500, 1.9), point(3, 13000, 2.6)]);
  assert.equal(met.id, 'scale-out-coordinators-x2');
  assert.equal(met.status, 'met');
  assert.match(met.measured, /^1\.9× \(9,500 vs 5,000 req\/s\); coordinators' CPU per request 200 vs 200 µs/);

  const machine = target([
    point(1, 5000, 1),
    point(2, 5200, 1.04, {
      boundBy: 'machine CPU',
      coresBusy: { machine: 1.96 } as CoordinatorPoint['coresBusy'],
      verdict: 'machine CPU (1.96 of 2 cores busy)',
    }),
  ]);
  assert.equal(machine.status, 'not measured');
  assert.match(
    machine.measured,
    /the machine's 2 cores ran out first \(1\.96 busy with 2 coordinators\); 1\.04×/,
  );
  assert.match(machine.bound!, /^with 2 coordinators, machine CPU/);

  // cores to spare and still short: not met
  assert.equal(target([point(1, 5000, 1), point(2, 7000, 1.4)]).status, 'not met');
  // no one-coordinator point: nothing to compare with
  assert.equal(target([point(2, 7000, 1.4)]).status, 'not measured');
});

test('bench targets - ocr-line pipeline: the best engine point against the same steps in one process at its best, bound by CPU per request', () => {
  const enginePoint = (topology: OcrPoint['topology'], concurrency: number, rps: number, alone: number) =>
    ({
      topology,
      concurrency,
      ...load(rps, 100),
      coresBusy: {
        coordinator: 0.3,
        modelWorkers: 1.2,
        pool: 0.4,
        loadGenerator: 0.05,
        machine: 1.95,
        outsideBench: 0,
      },
      cpuMsPerRequest: { coordinator: 6, modelWorkers: 29, pool: 11, loadGenerator: 1 },
      vsBaseline: { throughput: Math.round((rps / alone) * 1000) / 1000, p50: 1, p99: 1 },
    }) as unknown as OcrPoint;
  const baselinePoint = (concurrency: number, rps: number): OcrBaselinePoint => ({
    concurrency,
    ...load(rps, 90),
    coresBusy: { baseline: 1.9, loadGenerator: 0.05, machine: 1.95, outsideBench: 0 },
    cpuMsPerRequest: { baseline: 43, loadGenerator: 1 },
  });
  const result = (engineAt8: number, differs: boolean) =>
    ({
      ocr: [
        enginePoint('disaggregated', 1, 22, 30),
        enginePoint('disaggregated', 8, engineAt8, 42),
        enginePoint('colocated', 1, 21, 30),
        enginePoint('colocated', 8, 38, 42),
      ],
      ocrBaseline: {
        processes: 2,
        cores: 2,
        linesReadExactly: '16/16',
        misread: [],
        differsFromEngine: differs
          ? [{ topology: 'colocated', line: 3, engine: 'VAT 20%', baseline: 'VAT 20% 214.08' }]
          : [],
        points: [baselinePoint(1, 30), baselinePoint(8, 42)],
      },
      hop: [],
      hopSummary: [],
      disturbed: [],
    }) as unknown as PipelineResult;
  const target = (r: PipelineResult | undefined) =>
    computeTargets(suite([run('pipeline', r)]), PAGE_SCENARIOS).find(
      (t) => t.id === 'pipeline-ocr-vs-in-process',
    )!;

  const met = target(result(40, false));
  assert.equal(met.status, 'met');
  assert.match(
    met.measured,
    /^95%: the engine at its best, 40 req\/s \(disaggregated, concurrency 8\), is 95% of the same steps in 2 plain processes at their best, 42 req\/s \(concurrency 8\); by topology disaggregated 95%, colocated 91%/,
  );
  assert.match(
    met.measured,
    /at equal concurrency \(disaggregated \/ colocated\) 1: 73% \/ 70%, 8: 95% \/ 91%$/,
  );
  assert.match(
    met.bound!,
    /engine 47 ms \(coordinator 6, model workers 29, pool 11, load generator 1\) against 44 ms .*about 94% of the baseline/,
  );
  assert.match(met.bound!, /spend 40 ms per request against the baseline's 43 ms/);
  assert.equal(target(result(39, false)).status, 'not met');

  // not the same work when they read a line differently; nothing measured without a baseline
  const differs = target(result(40, true));
  assert.equal(differs.status, 'not measured');
  assert.match(differs.measured, /colocated, line 3: "VAT 20%" against "VAT 20% 214.08"/);
  assert.equal(target({ ...result(40, false), ocrBaseline: undefined }).status, 'not measured');
  assert.equal(target(undefined).status, 'not measured');
});

test('bench targets - pipeline hop: a 1 MiB step at concurrency 1, the worker-run pipeline judged, the coordinator-run one shown', () => {
  const hopPoint = (bytes: number, concurrency: number, added: Record<string, number>) =>
    ({ bytes, concurrency, addedMsPerStep: added }) as unknown as PipelineResult['hop'][number];
  const target = (hop: PipelineResult['hop']) =>
    computeTargets(
      suite([run('pipeline', { ocr: [], hop, hopSummary: [], disturbed: [] } as unknown as PipelineResult)]),
      PAGE_SCENARIOS,
    ).find((t) => t.id === 'pipeline-hop-1mib-c1')!;
  const both = { 'ident-x2': 1.4, 'ident-x4': 1.3, 'ident-x2-worker': 0.2, 'ident-x4-worker': 0.1 };
  const met = target([hopPoint(4096, 1, { 'ident-x4': 0.2 }), hopPoint(1048576, 1, both)]);
  assert.equal(met.status, 'met');
  assert.match(
    met.measured,
    /^0\.1 ms per step with `runOn: worker` \(ident-x4-worker\); 1\.3 ms per step run by the coordinator \(ident-x4\)/,
  );
  // without the worker-run pipelines the coordinator's figure is judged
  assert.equal(target([hopPoint(1048576, 1, { 'ident-x2': 1.4, 'ident-x4': 1.3 })]).status, 'not met');
  assert.equal(target([hopPoint(1048576, 1, { 'ident-x4': 0.6 })]).status, 'met');
  // no 1 MiB point at concurrency 1
  assert.equal(target([hopPoint(1048576, 8, both)]).status, 'not measured');
});
