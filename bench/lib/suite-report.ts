/**
 * docs/benchmarks.md and its charts (docs/benchmarks/*.svg) from one suite file: the machine,
 * how to reproduce the run, the targets, and per scenario a table and charts.
 *
 * Every section renders what its scenario's lines hold and skips, with a note, a chart whose
 * data is missing: the scenarios' JSON grows over time, and a page from an older or partial run
 * must still come out. The charts folder belongs to this report: SVGs it did not write this time
 * are removed, so no stale chart stays linked.
 */

import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { ScenarioRun, SuiteFile } from './suite-format.ts';
import { readSuite } from './suite-format.ts';
import { arr, cell, type Json, lines, num, obj, round, str } from './suite-json.ts';
import { barChart, type LinePoint, type LineSeries, lineChart } from './suite-svg.ts';
import {
  computeTargets,
  type ScaleOutPoint,
  saturationCores,
  scaleOutPoints,
  type TargetResult,
} from './suite-targets.ts';

export interface WrittenReport {
  markdownFile: string;
  svgFiles: string[];
  targets: TargetResult[];
}

/** Charts written for the page; `add` returns the Markdown image that links one. */
class Charts {
  readonly files = new Map<string, string>();

  add(name: string, svg: string, alt: string): string {
    this.files.set(`${name}.svg`, svg);
    return `![${alt}](benchmarks/${name}.svg)`;
  }
}

type Section = (run: ScenarioRun, charts: Charts) => string[];

function table(header: string[], rows: string[][]): string[] {
  const escapeCell = (c: string): string => c.replaceAll('|', '\\|');
  return [
    `| ${header.map(escapeCell).join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(escapeCell).join(' | ')} |`),
    '',
  ];
}

const skipped = (what: string, why: string): string => `_No ${what} chart: ${why}._`;
const pct = (v: number | undefined): string => (v === undefined ? '-' : `${Math.round(v * 100)}%`);
const jsons = (v: unknown): Json[] => arr(v).flatMap((x) => (obj(x) ? [obj(x)!] : []));
const latency = (o: unknown): string =>
  ['p50', 'p90', 'p99'].map((q) => cell(num(o, 'latencyMs', q), 3)).join(' / ');

/** Points (x, y) of a series, dropping the missing ones. */
function points(pairs: [number | undefined, number | undefined][]): LinePoint[] {
  return pairs.flatMap(([x, y]) => (x === undefined || y === undefined ? [] : [{ x, y }]));
}

function bytesText(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

// ---- overhead ------------------------------------------------------------------------------------

const overhead: Section = (run, charts) => {
  const line = lines(run, 'overhead')[0];
  if (!line) return ['_No overhead results in this run._', ''];
  const traced = lines(run, 'overhead-tracing-on')[0];
  const runs = jsons(line.runs);
  const tracedAt = (c: number | undefined): Json | undefined =>
    jsons(traced?.runs).find((r) => num(r, 'concurrency') === c);
  const sampleRatio = str(traced, 'params', 'sample-ratio');
  const out = [
    "The engine's own cost: the `sim` backend at 0 ms (no model compute) through HTTP → coordinator →",
    'worker → coordinator → HTTP, against a bare fastify route answering the same JSON (the floor for',
    `any HTTP service here), in the same run. Tensor ${str(line, 'params', 'tensor') ?? '-'}.`,
    '',
    ...table(
      [
        'concurrency',
        'engine req/s',
        'bare fastify req/s',
        'engine / bare',
        'engine p50 / p90 / p99 ms',
        'bare p50 / p90 / p99 ms',
        'added p50 ms',
        `engine + tracing req/s${sampleRatio ? ` (sample ${sampleRatio})` : ''}`,
      ],
      runs.map((r) => {
        const t = tracedAt(num(r, 'concurrency'));
        const vsOff = num(t, 'vsOff', 'throughput');
        return [
          cell(num(r, 'concurrency')),
          cell(num(r, 'engine', 'rps')),
          cell(num(r, 'bareFastify', 'rps')),
          pct(num(r, 'ratio', 'throughput')),
          latency(r.engine),
          latency(r.bareFastify),
          cell(num(r, 'engineAddedP50Ms'), 3),
          t ? `${cell(num(t, 'engine', 'rps'))}${vsOff === undefined ? '' : ` (${pct(vsOff)} of off)`}` : '-',
        ];
      }),
    ),
  ];
  // its latencies are below the millisecond rounding of the results: the rate says more
  const callsPerS = num(line, 'backendInProcess', 'callsPerS');
  if (callsPerS)
    out.push(
      `The backend called in-process (no HTTP, no processes): ${cell(callsPerS)} calls/s, ` +
        `${cell(1e6 / callsPerS, 2)} µs per call.`,
      '',
    );
  const series: LineSeries[] = [
    { name: 'engine', points: points(runs.map((r) => [num(r, 'concurrency'), num(r, 'engine', 'rps')])) },
    {
      name: 'bare fastify',
      points: points(runs.map((r) => [num(r, 'concurrency'), num(r, 'bareFastify', 'rps')])),
    },
    {
      name: 'engine + tracing',
      points: points(
        jsons(traced?.runs).map((r) => [num(r, 'concurrency'), num(r, 'engine', 'rps')] as const),
      ),
    },
  ];
  out.push(
    charts.add(
      'overhead-throughput',
      lineChart({
        title: 'Overhead: throughput vs concurrency (sim backend, 0 ms)',
        xLabel: 'concurrency (closed loop)',
        yLabel: 'requests / s',
        series,
      }),
      'Overhead: throughput vs concurrency, engine against bare fastify',
    ),
    '',
  );
  for (const r of runs) {
    const c = num(r, 'concurrency');
    const t = tracedAt(c);
    const qs = ['p50', 'p90', 'p99'];
    out.push(
      charts.add(
        `overhead-latency-c${c}`,
        barChart({
          title: `Overhead: latency percentiles at concurrency ${c}`,
          valueLabel: 'ms',
          categories: qs,
          series: [
            { name: 'engine', values: qs.map((q) => num(r, 'engine', 'latencyMs', q)) },
            { name: 'bare fastify', values: qs.map((q) => num(r, 'bareFastify', 'latencyMs', q)) },
            ...(t
              ? [{ name: 'engine + tracing', values: qs.map((q) => num(t, 'engine', 'latencyMs', q)) }]
              : []),
          ],
        }),
        `Overhead: latency percentiles at concurrency ${c}`,
      ),
      '',
    );
  }
  return out;
};

// ---- routing ---------------------------------------------------------------------------------------

const routing: Section = (run, charts) => {
  const line = lines(run, 'routing')[0];
  if (!line) return ['_No routing results in this run._', ''];
  const cases: [string, unknown][] = [
    ['baseline (filter, i % n)', line.baseline],
    ...Object.entries(obj(line.strategies) ?? {}),
    ['shard-key', line.shardKey],
  ].filter(([, v]) => obj(v) !== undefined) as [string, unknown][];
  const us = (v: number | undefined): number | undefined => (v === undefined ? undefined : v / 1000);
  return [
    `The router's own cost per pick over ${str(line, 'params', 'workers') ?? '-'} workers with`,
    `${str(line, 'params', 'in-flight') ?? '-'} requests in flight, in-process, for every strategy, against a baseline that`,
    'only filters the eligible workers and takes the i % n-th.',
    '',
    ...table(
      ['strategy', 'µs/pick mean', 'p50', 'p99', 'over baseline µs', 'picks/s', 'bytes/pick', 'spread CV'],
      cases.map(([name, c]) => [
        name,
        cell(us(num(c, 'nsPerPick', 'mean')), 3),
        cell(us(num(c, 'nsPerPick', 'p50')), 3),
        cell(us(num(c, 'nsPerPick', 'p99')), 3),
        cell(us(num(c, 'nsOverBaseline')), 3),
        cell(num(c, 'picksPerS')),
        cell(num(c, 'bytesPerPick')),
        cell(num(c, 'spread', 'picks', 'cv'), 4),
      ]),
    ),
    charts.add(
      'routing-pick',
      barChart({
        title: 'Routing: µs per pick',
        valueLabel: 'µs per pick',
        categories: cases.map(([name]) => name),
        series: [
          { name: 'mean', values: cases.map(([, c]) => us(num(c, 'nsPerPick', 'mean'))) },
          { name: 'p99 (over chunks)', values: cases.map(([, c]) => us(num(c, 'nsPerPick', 'p99'))) },
        ],
        horizontal: true,
      }),
      'Routing: microseconds per pick by strategy',
    ),
    '',
  ];
};

// ---- batching ------------------------------------------------------------------------------------

const batching: Section = (run, charts) => {
  const all = lines(run, 'batching');
  if (all.length === 0) return ['_No batching results in this run._', ''];
  const groups = new Map<string, typeof all>();
  for (const l of all) {
    const group = (str(l, 'model') ?? 'model').split('-')[0]!;
    groups.set(group, [...(groups.get(group) ?? []), l]);
  }
  const out = [
    'Dynamic batching on and off, on real processes (one coordinator, one worker), at closed-loop',
    "concurrencies. Mean batch size, queue wait and compute time are the worker's own statistics for",
    'each timed run.',
    '',
  ];
  for (const [group, variants] of groups) {
    const first = variants[0]!;
    const sim = obj(first.params)?.sim;
    out.push(
      `### ${group === 'sim' ? 'sim model with a GPU-like cost' : group === 'ocr' ? 'PaddleOCR recognizer (onnxruntime, CPU)' : group}`,
      '',
    );
    if (sim)
      out.push(
        `Cost per batch: ${cell(num(sim, 'latencyMs'))} ms + ${cell(num(sim, 'perItemMs'))} ms per row, ` +
          `maxBatchSize ${cell(num(first, 'params', 'maxBatchSize'))}.`,
        '',
      );
    const rows: string[][] = [];
    for (const v of variants)
      for (const r of jsons(v.runs))
        rows.push([
          str(v, 'model') ?? '-',
          batchingText(v),
          cell(num(r, 'concurrency')),
          cell(num(r, 'rps')),
          cell(num(r, 'latencyMs', 'p50'), 2),
          cell(num(r, 'latencyMs', 'p99'), 2),
          cell(num(r, 'worker', 'meanBatchSize')),
          cell(num(r, 'worker', 'queueMsMean'), 2),
          cell(num(r, 'worker', 'computeMsMean'), 2),
          pct(num(r, 'vsBatchingOff', 'throughput')),
          pct(num(r, 'ceiling', 'fractionOfMax')),
        ]);
    out.push(
      ...table(
        [
          'model',
          'batching',
          'concurrency',
          'req/s',
          'p50 ms',
          'p99 ms',
          'mean batch',
          'queue ms',
          'compute ms',
          'vs off',
          'of max',
        ],
        rows,
      ),
    );
    const series: LineSeries[] = variants.map((v) => ({
      name: str(v, 'model') ?? '-',
      points: points(jsons(v.runs).map((r) => [num(r, 'concurrency'), num(r, 'rps')])),
    }));
    const on = variants.find((v) => obj(v.batching)?.enabled === true);
    const ideal = num(jsons(on?.runs)[0], 'ceiling', 'theoreticalMaxRps');
    if (ideal !== undefined)
      series.push({
        name: 'one instance, full batches (max)',
        dashed: true,
        points: jsons(on?.runs).flatMap((r) => points([[num(r, 'concurrency'), ideal]])),
      });
    out.push(
      charts.add(
        `batching-${group}-throughput`,
        lineChart({
          title: `Batching (${group}): throughput vs concurrency`,
          xLabel: 'concurrency (closed loop)',
          yLabel: 'requests / s',
          series,
        }),
        `Batching (${group}): throughput vs concurrency`,
      ),
      '',
    );
    const sizes: LineSeries[] = variants.map((v) => ({
      name: str(v, 'model') ?? '-',
      points: points(jsons(v.runs).map((r) => [num(r, 'concurrency'), num(r, 'worker', 'meanBatchSize')])),
    }));
    out.push(
      sizes.some((s) => s.points.length)
        ? charts.add(
            `batching-${group}-batch-size`,
            lineChart({
              title: `Batching (${group}): mean executed batch size`,
              xLabel: 'concurrency (closed loop)',
              yLabel: 'rows per batch',
              series: sizes,
            }),
            `Batching (${group}): mean batch size vs concurrency`,
          )
        : skipped('batch size', 'no worker statistics in the results'),
      '',
    );
    const reference = obj(variants.find((v) => obj(v.reference))?.reference);
    if (reference) {
      const backend = obj(reference.backendInProcess) ?? {};
      const parts = Object.entries(backend).map(
        ([k, b]) => `${k} ${cell(num(b, 'medianMs'))} ms (${cell(num(b, 'perItemMs'))} ms per row)`,
      );
      out.push(
        `Reference, in-process: the backend alone, median ${parts.join(', ')}; the coordinator's JSON ` +
          `work per request (a ${cell(num(reference, 'responseBytes'))}-byte response) alone would allow ` +
          `${cell(num(reference, 'coordinatorJsonInProcess', 'jsonBoundRps'))} req/s on one core.`,
        '',
      );
    }
  }
  return out;
};

function batchingText(v: Json): string {
  const b = obj(v.batching);
  if (!b) return '-';
  return b.enabled === true ? `on, delay ${cell(num(b, 'maxQueueDelayMs'))} ms` : 'off';
}

// ---- cache ------------------------------------------------------------------------------------------

const cache: Section = (run, charts) => {
  const line = lines(run, 'cache')[0];
  if (!line) return ['_No cache results in this run._', ''];
  const summary = jsons(line.summary);
  const caseRun = (store: string | undefined, c: number | undefined): Json | undefined =>
    jsons(jsons(line.cases).find((x) => str(x, 'store') === store)?.runs).find(
      (r) => num(r, 'concurrency') === c,
    );
  const stores = [...new Set(summary.map((s) => str(s, 'store') ?? '-'))];
  const concurrencies = [...new Set(summary.flatMap((s) => num(s, 'concurrency') ?? []))];
  const value = (store: string, c: number, key: string): number | undefined =>
    num(
      summary.find((s) => str(s, 'store') === store && num(s, 'concurrency') === c),
      key,
    );
  return [
    'What a response-cache hit saves, per store: the same request with `cache: "bypass"` (all the way to',
    "the worker, `sim` at 0 ms) is the baseline in the same run, so a real model's compute comes on top of",
    'the saving. `-only-hits` stores answer nearly every hit from the lower tier (memory cut to one entry).',
    '',
    ...table(
      [
        'store',
        'concurrency',
        'hit req/s',
        'bypass req/s',
        'hit / bypass',
        'hit p50 ms',
        'bypass p50 ms',
        'p50 speedup',
        'p99 speedup',
        'coordinator CPU µs/req hit / bypass',
      ],
      summary.map((s) => {
        const r = caseRun(str(s, 'store'), num(s, 'concurrency'));
        return [
          `${str(s, 'store') ?? '-'}${str(s, 'hitFrom') && str(s, 'hitFrom') !== 'memory' ? ` (hits from ${str(s, 'hitFrom')})` : ''}`,
          cell(num(s, 'concurrency')),
          cell(num(s, 'hitRps')),
          cell(num(s, 'bypassRps')),
          `${cell(num(s, 'throughput'))}×`,
          cell(num(s, 'hitP50Ms'), 3),
          cell(num(s, 'bypassP50Ms'), 3),
          `${cell(num(s, 'p50Speedup'))}×`,
          `${cell(num(s, 'p99Speedup'))}×`,
          `${cell(num(r, 'hit', 'cpuUsPerRequest', 'coordinator'))} / ${cell(num(r, 'bypass', 'cpuUsPerRequest', 'coordinator'))}`,
        ];
      }),
    ),
    charts.add(
      'cache-speedup',
      barChart({
        title: 'Cache: p50 speedup of a hit over the bypassed path',
        valueLabel: 'bypass p50 / hit p50',
        categories: stores,
        series: concurrencies.map((c) => ({
          name: `concurrency ${c}`,
          values: stores.map((s) => value(s, c, 'p50Speedup')),
        })),
      }),
      'Cache: p50 speedup of a hit per store',
    ),
    '',
    charts.add(
      'cache-throughput',
      barChart({
        title: 'Cache: throughput, hit and bypass',
        valueLabel: 'requests / s',
        categories: stores,
        series: concurrencies.flatMap((c) => [
          { name: `hit, c=${c}`, values: stores.map((s) => value(s, c, 'hitRps')) },
          { name: `bypass, c=${c}`, values: stores.map((s) => value(s, c, 'bypassRps')) },
        ]),
      }),
      'Cache: throughput of hits and bypassed requests per store',
    ),
    '',
  ];
};

// ---- pipeline --------------------------------------------------------------------------------------

const pipeline: Section = (run, charts) => {
  const ocr = lines(run, 'pipeline', 'ocr-line');
  const hop = lines(run, 'pipeline', 'hop');
  const summary = lines(run, 'pipeline', 'hop-summary')[0];
  if (ocr.length + hop.length === 0) return ['_No pipeline results in this run._', ''];
  const out: string[] = [];
  if (ocr.length) {
    const topologies = [...new Set(ocr.map((l) => str(l, 'topology') ?? '-'))];
    const concurrencies = [...new Set(ocr.flatMap((l) => num(l, 'concurrency') ?? []))];
    const point = (t: string, c: number) =>
      ocr.find((l) => str(l, 'topology') === t && num(l, 'concurrency') === c);
    out.push(
      '### OCR line pipeline, by topology',
      '',
      'The demo pipeline (image → preprocess → classifier → prepare → recognizer → decode → text) on 16',
      'rendered lines in turn, cache off. `disaggregated`: the js steps on their own pool process;',
      '`colocated`: the same steps on the two model workers. CPU is per answered request.',
      '',
      ...table(
        [
          'topology',
          'concurrency',
          'req/s',
          'p50 ms',
          'p99 ms',
          'errors',
          'lines read',
          'CPU ms/req coordinator',
          'model workers',
          'pool',
          'vs disaggregated',
        ],
        ocr.map((l) => [
          str(l, 'topology') ?? '-',
          cell(num(l, 'concurrency')),
          cell(num(l, 'rps')),
          cell(num(l, 'latencyMs', 'p50'), 1),
          cell(num(l, 'latencyMs', 'p99'), 1),
          cell(num(l, 'errors')),
          str(l, 'linesReadExactly') ?? '-',
          cell(num(l, 'cpuMsPerRequest', 'coordinator')),
          cell(num(l, 'cpuMsPerRequest', 'modelWorkers')),
          cell(num(l, 'cpuMsPerRequest', 'pool')),
          pct(num(l, 'vsDisaggregated', 'throughput')),
        ]),
      ),
      charts.add(
        'pipeline-ocr-throughput',
        lineChart({
          title: 'Pipeline (ocr-line): throughput by topology',
          xLabel: 'concurrency (closed loop)',
          yLabel: 'requests / s',
          series: topologies.map((t) => ({
            name: t,
            points: points(concurrencies.map((c) => [c, num(point(t, c), 'rps')])),
          })),
        }),
        'Pipeline: OCR line throughput by topology',
      ),
      '',
      charts.add(
        'pipeline-ocr-latency',
        barChart({
          title: 'Pipeline (ocr-line): latency by topology',
          valueLabel: 'ms',
          categories: concurrencies.map((c) => `concurrency ${c}`),
          series: topologies.flatMap((t) =>
            ['p50', 'p99'].map((q) => ({
              name: `${t} ${q}`,
              values: concurrencies.map((c) => num(point(t, c), 'latencyMs', q)),
            })),
          ),
        }),
        'Pipeline: OCR line latency percentiles by topology',
      ),
      '',
    );
  }
  if (hop.length) {
    const steps = (model: string): number => Number(/-x(\d+)$/.exec(model)?.[1] ?? 1);
    const models = [...new Set(hop.flatMap((l) => Object.keys(obj(l.p50Ms) ?? {})))].sort(
      (a, b) => steps(a) - steps(b),
    );
    out.push(
      "### The coordinator's hop per step",
      '',
      'Identity `sim` models chained N times (each step a coordinator → worker → coordinator round trip of',
      'the tensor, binary both ways), against the same model called directly.',
      '',
      ...table(
        [
          'tensor',
          'concurrency',
          ...models.map((m) => `p50 ms ${m}`),
          'added ms/step (longest)',
          'marginal ms/step',
          'coordinator CPU ms/step',
        ],
        hop.map((l) => {
          const added = obj(l.addedMsPerStep) ?? {};
          return [
            bytesText(num(l, 'bytes') ?? 0),
            cell(num(l, 'concurrency')),
            ...models.map((m) => cell(num(l, 'p50Ms', m), 3)),
            cell(num(added, models.at(-1) ?? ''), 3),
            cell(num(l, 'marginalMsPerStep'), 3),
            cell(num(l, 'coordinatorCpuMsPerStep'), 3),
          ];
        }),
      ),
    );
    // one chart per tensor size: a 1 MiB step costs a hundred times a 4 KiB one
    for (const bytes of [...new Set(hop.flatMap((l) => num(l, 'bytes') ?? []))])
      out.push(
        charts.add(
          `pipeline-hop-${bytes}`,
          lineChart({
            title: `Pipeline (hop): p50 vs steps, ${bytesText(bytes)} tensor`,
            xLabel: 'worker calls per request (1 = the model called directly)',
            yLabel: 'p50 ms',
            xScale: 'linear',
            series: hop
              .filter((l) => num(l, 'bytes') === bytes)
              .map((l) => ({
                name: `concurrency ${cell(num(l, 'concurrency'))}`,
                points: points(models.map((m) => [steps(m), num(l, 'p50Ms', m)])),
              })),
          }),
          `Pipeline: p50 latency against the number of steps, ${bytesText(bytes)} tensor`,
        ),
        '',
      );
  }
  for (const s of jsons(summary?.byConcurrency)) {
    const direct = obj(s.directWorkerToWorker);
    out.push(
      `- concurrency ${cell(num(s, 'concurrency'))}: a step costs ${cell(num(s, 'msPerMiBPerStep'), 3)} ms p50 per MiB of ` +
        `tensor (coordinator CPU ${cell(num(s, 'coordinatorCpuMsPerMiBPerStep'), 3)} ms per MiB)` +
        (direct
          ? `; a direct worker-to-worker path in ${str(direct, 'pipeline') ?? '-'} at ${bytesText(num(direct, 'bytes') ?? 0)} ` +
            `would save about ${cell(num(direct, 'estimatedSavedP50Ms'), 3)} ms p50 (estimate).`
          : '.'),
    );
  }
  if (summary) out.push('');
  return out;
};

// ---- scale-out -------------------------------------------------------------------------------------

const scaleOut: Section = (run, charts) => {
  const pts = scaleOutPoints(run);
  const summary = lines(run, 'scale-out').find((l) => l.scenario === 'summary');
  if (pts.length === 0) return ['_No scale-out points in this run._', ''];
  const fleet = obj(summary?.fleet);
  const out = [
    'One coordinator in front of N `sim` workers with a GPU-like cost, each point at a concurrency that',
    "can fill every worker's batches, held against its ideal (every worker always running full batches).",
    '',
    ...table(
      [
        'workers',
        'clients',
        'req/s',
        'ideal req/s',
        'of ideal',
        'p50 ms',
        'p99 ms',
        'mean batch',
        'coordinator cores',
        'coordinator CPU ms/req',
        'machine cores',
        'saturated',
      ],
      pts.map((p: ScaleOutPoint) => [
        cell(p.workers),
        cell(p.concurrency),
        cell(p.rps),
        `${cell(p.idealRps)}${p.idealAssumed ? ' (assumed)' : ''}`,
        pct(p.ratio),
        cell(p.p50Ms, 1),
        cell(p.p99Ms, 1),
        cell(p.meanBatchSize, 1),
        cell(p.coordinatorCores),
        cell(p.coordinatorCpuMsPerRequest, 3),
        cell(p.machineCores),
        p.saturated === undefined ? '-' : p.saturated ? `yes${p.boundBy ? `: ${p.boundBy}` : ''}` : 'no',
      ]),
    ),
  ];
  const statement = str(summary, 'statement');
  if (statement) out.push(`**In short:** ${statement}.`, '');
  if (fleet)
    out.push(
      `Fleet: ${cell(num(fleet, 'workers'))} workers started in ${cell(num(fleet, 'startS'))} s; worker RSS ` +
        `${cell(num(fleet, 'workerRssMiBMean'))} MiB each, coordinator ${cell(num(fleet, 'coordinatorRssMiB'))} MiB.`,
      '',
    );
  const withIdeal = pts.filter((p) => p.idealRps !== undefined);
  out.push(
    charts.add(
      'scale-out-throughput',
      lineChart({
        title: 'Scale-out: throughput vs workers',
        xLabel: 'workers behind one coordinator',
        yLabel: 'requests / s',
        xScale: 'linear',
        series: [
          { name: 'measured', points: points(pts.map((p) => [p.workers, p.rps])) },
          {
            name: withIdeal.some((p) => p.idealAssumed) ? 'ideal (linear from the smallest fleet)' : 'ideal',
            dashed: true,
            points: points(withIdeal.map((p) => [p.workers, p.idealRps])),
          },
        ],
      }),
      'Scale-out: throughput against the ideal line',
    ),
    '',
  );
  const cpu = pts.filter((p) => p.coordinatorCpuMsPerRequest !== undefined);
  out.push(
    cpu.length
      ? charts.add(
          'scale-out-coordinator-cpu',
          barChart({
            title: 'Scale-out: coordinator CPU per request',
            valueLabel: 'coordinator CPU ms per request',
            categories: cpu.map((p) => `${p.workers} workers`),
            series: [{ name: 'coordinator', values: cpu.map((p) => p.coordinatorCpuMsPerRequest) }],
          }),
          'Scale-out: coordinator CPU time per request',
        )
      : skipped('coordinator CPU', 'the results carry no coordinator CPU time per request'),
    '',
    `A point counts as at the coordinator's limit when its coordinator keeps ≥ ${saturationCores(run)} cores busy.`,
    '',
  );
  return out;
};

// ---- real model ------------------------------------------------------------------------------------

const realModel: Section = (run, charts) => {
  const baseline = lines(run, 'real-model', 'baseline');
  const engine = lines(run, 'real-model', 'engine');
  const summary = lines(run, 'real-model', 'summary')[0];
  if (baseline.length + engine.length === 0) return generic(run, charts);
  const variantOf = (l: Json): string => (obj(l.batching)?.enabled === true ? 'batching on' : 'batching off');
  const bestBaseline = num(summary, 'baseline', 'best', 'rowsPerS') ?? num(engine[0], 'baselineRowsPerS');
  const out = [
    'The PaddleOCR recognizer through the engine (one coordinator, workers hosting the model, binary',
    'tensors both ways) against the same model run directly with onnxruntime-node in plain processes at',
    "each batch size: the best of those is the machine's own limit for this model.",
    '',
    ...table(
      ['onnxruntime alone, batch', 'rows/s', 'CPU ms per row', 'cores busy'],
      baseline.map((l) => [
        cell(num(l, 'batch')),
        cell(num(l, 'rowsPerS'), 1),
        cell(num(l, 'cpuMsPerRow', 'baseline') ?? num(l, 'cpuMsPerRequest', 'baseline')),
        cell(num(l, 'coresBusy', 'baseline')),
      ]),
    ),
    ...table(
      [
        'engine',
        'concurrency',
        'req/s',
        'p50 ms',
        'p99 ms',
        'errors',
        'mean batch',
        'CPU ms/req coordinator',
        'workers',
        'of onnxruntime alone',
      ],
      engine.map((l) => [
        variantOf(l),
        cell(num(l, 'concurrency')),
        cell(num(l, 'rps'), 1),
        cell(num(l, 'latencyMs', 'p50'), 1),
        cell(num(l, 'latencyMs', 'p99'), 1),
        cell(num(l, 'errors')),
        cell(num(l, 'worker', 'meanBatchSize')),
        cell(num(l, 'cpuMsPerRequest', 'coordinator')),
        cell(num(l, 'cpuMsPerRequest', 'workers')),
        pct(num(l, 'vsBaseline')),
      ]),
    ),
  ];
  const statement = str(summary, 'statement');
  if (statement) out.push(`**In short:** ${statement}.`, '');
  const variants = [...new Set(engine.map(variantOf))];
  const concurrencies = [...new Set(engine.flatMap((l) => num(l, 'concurrency') ?? []))];
  const series: LineSeries[] = variants.map((v) => ({
    name: `engine, ${v}`,
    points: points(
      engine.filter((l) => variantOf(l) === v).map((l) => [num(l, 'concurrency'), num(l, 'rps')]),
    ),
  }));
  if (bestBaseline !== undefined)
    series.push(
      {
        name: 'onnxruntime alone (best batch)',
        dashed: true,
        points: concurrencies.map((c) => ({ x: c, y: bestBaseline })),
      },
      {
        name: '90% of it (target)',
        dashed: true,
        points: concurrencies.map((c) => ({ x: c, y: 0.9 * bestBaseline })),
      },
    );
  out.push(
    engine.length
      ? charts.add(
          'real-model-throughput',
          lineChart({
            title: 'Real model: engine throughput against onnxruntime alone',
            xLabel: 'concurrency (closed loop)',
            yLabel: 'rows / s',
            series,
          }),
          'Real model: engine throughput against onnxruntime called directly',
        )
      : skipped('engine throughput', 'no engine points in the results'),
    '',
  );
  if (baseline.length)
    out.push(
      charts.add(
        'real-model-baseline',
        barChart({
          title: 'Real model: onnxruntime alone by batch size',
          valueLabel: 'rows / s',
          categories: baseline.map((l) => `batch ${cell(num(l, 'batch'))}`),
          series: [{ name: 'rows / s', values: baseline.map((l) => num(l, 'rowsPerS')) }],
        }),
        'Real model: onnxruntime alone, rows per second by batch size',
      ),
      '',
    );
  return out;
};

// ---- any other scenario ---------------------------------------------------------------------------

/** Throughput by concurrency of every sub-object with an `rps`, in lines or their `runs`. */
function genericThroughput(run: ScenarioRun): LineSeries[] {
  const series = new Map<string, LinePoint[]>();
  const push = (name: string, p: LinePoint): void => {
    series.set(name, [...(series.get(name) ?? []), p]);
  };
  const visit = (o: Json, label: string): void => {
    const c = num(o, 'concurrency');
    if (c === undefined) return;
    const own = num(o, 'rps');
    if (own !== undefined) push(label || 'rps', { x: c, y: own });
    for (const [key, v] of Object.entries(o)) {
      const rps = num(v, 'rps');
      if (rps !== undefined) push(label ? `${label} ${key}` : key, { x: c, y: rps });
    }
  };
  for (const line of run.results) {
    const label = str(line, 'model') ?? str(line, 'scenario') ?? '';
    visit(line, label);
    for (const r of jsons(line.runs)) visit(r, label);
  }
  return [...series].map(([name, pts]) => ({ name, points: pts }));
}

/** Scalar fields of a line (nested keys joined with dots), for a table. */
function scalars(value: unknown, prefix = '', depth = 0): [string, string][] {
  const o = obj(value);
  if (!o || depth > 3) return [];
  return Object.entries(o).flatMap(([k, v]): [string, string][] => {
    const key = prefix ? `${prefix}.${k}` : k;
    if (typeof v === 'number') return [[key, cell(v, 4)]];
    if (typeof v === 'string' || typeof v === 'boolean') return k === 'at' ? [] : [[key, String(v)]];
    if (Array.isArray(v)) return [[key, `${v.length} items`]];
    return k === 'machine' ? [] : scalars(v, key, depth + 1);
  });
}

const generic: Section = (run, charts) => {
  if (run.results.length === 0) return ['_No results in this run._', ''];
  const out: string[] = [];
  const series = genericThroughput(run);
  out.push(
    series.length
      ? charts.add(
          `${run.name}-throughput`,
          lineChart({
            title: `${run.name}: throughput vs concurrency`,
            xLabel: 'concurrency',
            yLabel: 'requests / s',
            series,
          }),
          `${run.name}: throughput vs concurrency`,
        )
      : skipped('throughput', 'no throughput by concurrency found in the results'),
    '',
  );
  for (const [i, line] of run.results.entries()) {
    const rows = scalars(line).slice(0, 60);
    out.push(
      `<details><summary>${line.bench} line ${i + 1}${typeof line.scenario === 'string' ? ` (${line.scenario})` : ''}</summary>`,
      '',
      ...table(
        ['field', 'value'],
        rows.map(([k, v]) => [k, v]),
      ),
      '</details>',
      '',
    );
  }
  return out;
};

// ---- the page --------------------------------------------------------------------------------------

const SECTIONS: Record<string, { title: string; section: Section }> = {
  overhead: { title: 'Overhead: the engine against a bare HTTP route', section: overhead },
  routing: { title: 'Routing: cost per pick', section: routing },
  batching: { title: 'Dynamic batching', section: batching },
  cache: { title: 'Response cache', section: cache },
  pipeline: { title: 'Pipelines', section: pipeline },
  'scale-out': { title: 'Scale-out: one coordinator, N workers', section: scaleOut },
  'real-model': { title: 'Real model: the engine against onnxruntime called directly', section: realModel },
};

/** Other work on the machine above this many cores busy makes a scenario's figures suspect. */
const DISTURBED_CORES = 0.25;

const disturbed = (run: ScenarioRun): boolean =>
  typeof run.otherCoresBusy === 'number' && run.otherCoresBusy > DISTURBED_CORES;

/** What bounds each measured target, as a list under the targets' table (none when unknown). */
function targetBounds(targets: TargetResult[]): string[] {
  const bounded = targets.filter((t) => t.bound && t.status !== 'not measured');
  if (bounded.length === 0) return [];
  return [
    'What bounds each figure, from what the same run measured:',
    '',
    ...bounded.map((t) => `- **${t.goal}** — ${t.bound}.`),
    '',
  ];
}

/** Shell lines with their comments aligned. */
function commented(lines: [string, string][]): string[] {
  const width = Math.max(...lines.map(([command]) => command.length));
  return lines.map(([command, comment]) => `${command.padEnd(width)}  # ${comment}`);
}

function flagsText(flags: Record<string, string>): string {
  return Object.entries(flags)
    .map(([f, v]) => (v === '' ? `--${f}` : `--${f} ${v}`))
    .join(' ');
}

function statusText(status: TargetResult['status']): string {
  return status === 'met' ? '✅ met' : status === 'not met' ? '❌ not met' : '➖ not measured';
}

function runStatus(run: ScenarioRun): string {
  if (run.status === 'ok') return 'ok';
  if (run.status === 'skipped') return '**not run** (the suite was interrupted first)';
  const how =
    run.status === 'timed-out'
      ? `timed out after ${run.timeoutS} s`
      : run.status === 'failed'
        ? `failed (exit ${run.exitCode ?? run.signal ?? '?'})`
        : run.status;
  return `**${how}**`;
}

export function renderReport(
  suite: SuiteFile,
  suiteFileName: string,
): { markdown: string; charts: Charts; targets: TargetResult[] } {
  const charts = new Charts();
  const targets = computeTargets(suite);
  const m = suite.machine;
  const gib = (bytes: number): string => `${round(bytes / 1024 ** 3, 1)} GiB`;
  const commit = suite.git.commit
    ? `\`${suite.git.commit.slice(0, 12)}\`${suite.git.dirty ? ' with uncommitted changes' : ''}`
    : 'unknown';
  // the page exists, so the run's --no-report (the report written apart) is left out
  const argv = suite.params.argv.filter((a) => a !== '--no-report').join(' ');
  const out: string[] = [
    '# Benchmarks',
    '',
    `<!-- Generated by bench/report.ts from ${suiteFileName}: do not edit; run \`npm run bench\` or \`npm run bench:report\`. -->`,
    '',
    `Measured ${suite.startedAt.slice(0, 16).replace('T', ' ')} UTC at commit ${commit}, in ${cell(suite.durationS, 0)} s.` +
      (suite.params.quick
        ? " **A quick run**: durations shortened for a smoke test, so the figures are noisier than a full run's."
        : ''),
    ...(suite.scenarios.some(disturbed)
      ? [
          `**${suite.scenarios.filter(disturbed).length} of ${suite.scenarios.length} scenarios ran while other work ` +
            'kept the cores busy** (see "other work" below): treat their figures as a smoke test, not a measurement.',
        ]
      : []),
    'Every process (load generator, coordinator, workers, baselines) shares the same cores, as on a laptop:',
    'compare the engine with the baseline measured in the same run, not absolute figures across machines.',
    "How the engine's cost was measured and cut, and what bounds the targets that are not met:",
    '[performance.md](performance.md).',
    '',
    '## Machine',
    '',
    ...table(
      ['CPU', 'cores', 'memory', 'Node', 'OS', 'load average at start'],
      [
        [
          m.cpuModel,
          String(m.cpus),
          gib(m.totalMemoryBytes),
          m.node,
          `${m.platform} ${m.osRelease} ${m.arch}`,
          `${m.loadAverage1m}${m.loadAverage1m > m.cpus ? ' (busy: other work shared the cores)' : ''}`,
        ],
      ],
    ),
    '## Targets',
    '',
    ...table(
      ['target', 'measured', 'status'],
      targets.map((t) => {
        const run = suite.scenarios.find((s) => s.name === t.scenario);
        const warning =
          run && t.status !== 'not measured' && disturbed(run)
            ? ` (⚠ other work kept ${cell(run.otherCoresBusy)} cores busy meanwhile)`
            : '';
        return [t.goal, `${t.measured}${warning}`, statusText(t.status)];
      }),
    ),
    ...targetBounds(targets),
    '## Scenarios in this run',
    '',
    ...table(
      ['scenario', 'status', 'time s', 'result lines', 'other work, cores busy', 'flags'],
      suite.scenarios.map((s) => [
        `[${s.name}](#${s.name})`,
        runStatus(s),
        cell(s.durationS, 1),
        String(s.results.length),
        disturbed(s) ? `**${cell(s.otherCoresBusy)}**` : cell(s.otherCoresBusy),
        flagsText(s.flags) ? `\`${flagsText(s.flags)}\`` : '(defaults)',
      ]),
    ),
    `Other work: the CPU the rest of the machine used while a scenario ran, in cores kept busy on average;`,
    `above ${DISTURBED_CORES} a scenario's figures are suspect (it shared the cores with something else).`,
    '',
    '## How to reproduce',
    '',
    '```sh',
    'npm ci',
    ...commented([
      [`npm run bench${argv ? ` -- ${argv}` : ''}`, 'this run'],
      ['npm run bench', 'every scenario at full length'],
      ['npm run bench -- overhead --duration-s 10 --concurrency 1,8,64', 'one scenario, its own parameters'],
      [`npm run bench:report -- ${REPORT_DATA}`, "this page again, from this run's data"],
    ]),
    '```',
    '',
    `\`npm run bench\` runs each scenario as its own process (a time limit of ${suite.params.timeoutS} s each here),`,
    'writes every JSON line they print to `bench/results/suite-<timestamp>.json` and regenerates this',
    `page, keeping the run's data beside it as \`${REPORT_DATA}\`; \`npm run bench:report -- <suite file>\``,
    'regenerates it from a given file (the newest in bench/results without one). Each scenario alone,',
    'with the flags of this run:',
    '',
    '```sh',
    ...suite.scenarios.map((s) => `node --import tsx ${s.file} ${flagsText(s.flags)}`.trimEnd()),
    '```',
    '',
    ...(Object.keys(suite.params.env).length
      ? [
          `Environment: ${Object.entries(suite.params.env)
            .map(([k, v]) => `\`${k}=${v}\``)
            .join(', ')}.`,
          '',
        ]
      : []),
    "The cache scenario's Redis stores need a Redis server at `redis://127.0.0.1:6379` (`--redis-url`);",
    'without one the runner leaves them out.',
    '',
  ];
  for (const run of suite.scenarios) {
    const known = SECTIONS[run.name];
    out.push(`## ${known?.title ?? run.name}`, '', `<a id="${run.name}"></a>`, '');
    out.push(
      `\`${run.file}\`, ${runStatus(run)}${run.status === 'skipped' ? '' : ` in ${cell(run.durationS, 1)} s`}` +
        (flagsText(run.flags) ? `, \`${flagsText(run.flags)}\`` : '') +
        '.' +
        (run.notes.length
          ? ` ${run.notes.map((n) => `${n[0]!.toUpperCase()}${n.slice(1)}`).join('. ')}.`
          : ''),
      '',
    );
    if (disturbed(run))
      out.push(
        `> **Disturbed:** other work kept ${cell(run.otherCoresBusy)} cores busy on average while this ran; ` +
          'its figures are suspect. Rerun on an idle machine.',
        '',
      );
    try {
      out.push(...(known?.section ?? generic)(run, charts));
    } catch (err) {
      // one scenario's unexpected results must not cost the rest of the page: shown there instead
      const message = (err as Error).stack ?? String(err);
      process.stderr.write(`bench:report: ${run.name}: ${message}\n`);
      out.push(`_This section could not be rendered from the results: ${(err as Error).message}._`, '');
    }
    if (run.status !== 'ok' && run.stderrTail) {
      out.push(
        '<details><summary>End of its stderr</summary>',
        '',
        '```text',
        ...run.stderrTail.trimEnd().split('\n').slice(-30),
        '```',
        '</details>',
        '',
      );
    }
  }
  return { markdown: `${out.join('\n').trimEnd()}\n`, charts, targets };
}

/** Where the suite file behind docs/benchmarks.md is kept, from the repository root. */
export const REPORT_DATA = 'docs/benchmarks/suite.json';

/** Writes docs/benchmarks.md and docs/benchmarks/*.svg under `root` from `suiteFile`. */
export function writeReport(suiteFile: string, root: string): WrittenReport {
  const suite = readSuite(suiteFile);
  // the data stays beside the page it made (bench/results is not committed)
  const dataFile = `${root}${REPORT_DATA}`;
  mkdirSync(dirname(dataFile), { recursive: true });
  if (resolve(suiteFile) !== resolve(dataFile)) copyFileSync(suiteFile, dataFile);
  const { markdown, charts, targets } = renderReport(suite, REPORT_DATA);
  const markdownFile = `${root}docs/benchmarks.md`;
  const svgDir = `${root}docs/benchmarks/`;
  mkdirSync(svgDir, { recursive: true });
  for (const name of readdirSync(svgDir))
    if (name.endsWith('.svg') && !charts.files.has(name)) rmSync(`${svgDir}${name}`);
  const svgFiles: string[] = [];
  for (const [name, svg] of charts.files) {
    writeFileSync(`${svgDir}${name}`, svg);
    svgFiles.push(`${svgDir}${name}`);
  }
  writeFileSync(markdownFile, markdown);
  return { markdownFile, svgFiles, targets };
}
