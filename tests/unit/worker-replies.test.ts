/**
 * A worker's replies are untrusted: STATS, METRICS and MODEL_CONTROL replies are checked field
 * by field like the INFER reply, and a malformed one is a PROTOCOL_ERROR naming the worker, the
 * reply kind and the field. The handle talks to a fake connection that answers with whatever
 * frame the test gives it.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ModelStats } from '../../src/batching/index.ts';
import { WorkerHandle } from '../../src/coordinator/index.ts';
import {
  FRAME_FLAG,
  type Frame,
  MESSAGE_KIND,
  type ModelStatus,
  checkMetricsResponse,
  checkModelControlResponse,
  checkStatsResponse,
} from '../../src/protocol/index.ts';
import type { RpcConnection } from '../../src/rpc/index.ts';
import { caught, isCode } from '../fixtures/assert.ts';

/** A handle on a connection whose every request is answered with `reply` (kind, meta). */
function handleAnswering(kind: number, meta: unknown): WorkerHandle {
  const conn = {
    closed: false,
    request: async (): Promise<Frame> => ({
      kind,
      flags: FRAME_FLAG.FINAL,
      requestId: 1,
      meta,
      attachments: [],
    }),
  } as unknown as RpcConnection;
  const register = { workerId: 'w1', pid: 1, models: [], draining: false };
  return new WorkerHandle(conn, register, 'static', { failureThreshold: 1, recoveryThreshold: 1 }, 1);
}

/** A deep copy of `value` with `path` set to `to` (or deleted when `to` is undefined). */
function mutated(value: unknown, path: (string | number)[], to: unknown): unknown {
  const copy = structuredClone(value) as Record<string | number, unknown>;
  let at = copy;
  for (const key of path.slice(0, -1)) at = at[key] as Record<string | number, unknown>;
  const last = path.at(-1)!;
  if (to === undefined) delete at[last];
  else at[last] = to;
  return copy;
}

function statsMeta(): { models: unknown[] } {
  const stats = new ModelStats('m', '1');
  stats.onQueued(2);
  stats.onBatch(4, 2, { inputMs: 1, inferMs: 10, outputMs: 0.5 }, 1_000);
  stats.onDone(true, 12);
  stats.onRejected('deadline');
  return { models: [stats.snapshot()] };
}

async function metricsMeta(): Promise<{ metrics: unknown[] }> {
  const registry = new Registry();
  new Counter({ name: 'c_total', help: 'a counter', labelNames: ['model'], registers: [registry] })
    .labels('m')
    .inc(3);
  new Gauge({ name: 'g', help: 'a gauge', registers: [registry] }).set(1.5);
  new Histogram({ name: 'h_seconds', help: 'a histogram', buckets: [0.1, 1], registers: [registry] }).observe(
    0.5,
  );
  return { metrics: await registry.getMetricsAsJSON() };
}

const STATUS: ModelStatus = {
  name: 'm',
  version: '1',
  state: 'ready',
  platform: 'infergrid_js',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
  batchable: true,
  maxBatchSize: 8,
};
const controlMeta = (): { models: unknown[] } => ({ models: [structuredClone(STATUS)] });

test('worker replies - well-formed STATS, METRICS and MODEL_CONTROL replies pass', async () => {
  const stats = statsMeta();
  assert.deepEqual(await handleAnswering(MESSAGE_KIND.STATS_RESPONSE, stats).stats(1000), stats.models);

  const metrics = await metricsMeta();
  const got = await handleAnswering(MESSAGE_KIND.METRICS_RESPONSE, metrics).metrics(1000);
  assert.equal(got.length, 3);
  // what prom-client produces survives the check, less exemplars (`exemplar: null` here): the
  // coordinator's Prometheus text page has no place for them
  const withoutExemplars = JSON.stringify(metrics.metrics, (key, value) =>
    key === 'exemplar' ? undefined : value,
  );
  assert.deepEqual(JSON.parse(JSON.stringify(got)), JSON.parse(withoutExemplars));

  const statuses = await handleAnswering(MESSAGE_KIND.MODEL_CONTROL_RESPONSE, controlMeta()).control(
    { action: 'unload', name: 'm' },
    1000,
  );
  assert.deepEqual(statuses, [STATUS]);
});

test('worker replies - statistics without the phase and cache figures (an older worker) read them as zero', () => {
  let meta = statsMeta();
  for (const field of ['computeInput', 'computeOutput', 'cacheHit', 'cacheMiss'])
    meta = mutated(meta, ['models', 0, field], undefined) as typeof meta;
  const s = checkStatsResponse(meta).models[0]!;
  assert.deepEqual(
    [s.computeInput, s.computeOutput, s.cacheHit, s.cacheMiss],
    Array(4).fill({ count: 0, ns: 0 }),
  );
});

test('worker replies - fields a worker adds to its statistics are dropped', () => {
  const meta = mutated(statsMeta(), ['models', 0, 'secret'], 'leak');
  const { models } = checkStatsResponse(meta);
  assert.equal('secret' in models[0]!, false);
});

interface Case {
  path: (string | number)[];
  /** undefined: the field is removed. */
  to: unknown;
  message: RegExp;
}

const STATS_CASES: Case[] = [
  { path: ['models'], to: undefined, message: /STATS_RESPONSE models: expected a list, got nothing/ },
  { path: ['models'], to: 'all', message: /STATS_RESPONSE models: expected a list, got a string/ },
  { path: ['models', 0], to: 7, message: /STATS_RESPONSE models\[0\]: expected an object/ },
  {
    path: ['models', 0, 'name'],
    to: undefined,
    message: /models\[0\]\.name: expected a string, got nothing/,
  },
  {
    path: ['models', 0, 'version'],
    to: 1,
    message: /models\[0\]\.version: expected a string, got the number 1/,
  },
  {
    path: ['models', 0, 'inferenceCount'],
    to: '4',
    message: /models\[0\]\.inferenceCount: expected a non-negative number, got a string/,
  },
  {
    path: ['models', 0, 'queueDepth'],
    to: -1,
    message: /models\[0\]\.queueDepth: expected a non-negative number, got the number -1/,
  },
  {
    path: ['models', 0, 'queue'],
    to: undefined,
    message: /models\[0\]\.queue: expected an object, got nothing/,
  },
  {
    path: ['models', 0, 'success', 'ns'],
    to: null,
    message: /models\[0\]\.success\.ns: expected a non-negative/,
  },
  {
    path: ['models', 0, 'batchStats'],
    to: {},
    message: /models\[0\]\.batchStats: expected a list, got a object/,
  },
  {
    path: ['models', 0, 'batchStats', 0, 'computeInfer', 'count'],
    to: 'x',
    message: /models\[0\]\.batchStats\[0\]\.computeInfer\.count: expected a non-negative number/,
  },
  {
    path: ['models', 0, 'rejected', 'deadline'],
    to: undefined,
    message: /models\[0\]\.rejected\.deadline: expected a non-negative number, got nothing/,
  },
  // figures an older worker does not send read as zero, but one that is sent is checked
  {
    path: ['models', 0, 'cacheHit', 'count'],
    to: -1,
    message: /models\[0\]\.cacheHit\.count: expected a non-negative number, got the number -1/,
  },
  {
    path: ['models', 0, 'batchStats', 0, 'computeOutput'],
    to: 5,
    message: /models\[0\]\.batchStats\[0\]\.computeOutput: expected an object, got the number 5/,
  },
];

const METRICS_CASES: Case[] = [
  { path: ['metrics'], to: undefined, message: /METRICS_RESPONSE metrics: expected a list, got nothing/ },
  { path: ['metrics', 0, 'name'], to: 3, message: /METRICS_RESPONSE metrics\[0\]\.name: expected a string/ },
  {
    path: ['metrics', 0, 'name'],
    to: 'c_total 1\nevil',
    message: /metrics\[0\]\.name: "c_total 1\nevil" is not a Prometheus metric name/,
  },
  {
    path: ['metrics', 0, 'help'],
    to: undefined,
    message: /metrics\[0\]\.help: expected a string, got nothing/,
  },
  {
    path: ['metrics', 0, 'type'],
    to: 'meter',
    message: /metrics\[0\]\.type: expected one of counter, .*"meter"/,
  },
  {
    path: ['metrics', 0, 'aggregator'],
    to: 'median',
    message: /metrics\[0\]\.aggregator: expected one of .*"median"/,
  },
  {
    path: ['metrics', 0, 'values'],
    to: undefined,
    message: /metrics\[0\]\.values: expected a list, got nothing/,
  },
  { path: ['metrics', 0, 'values', 0, 'value'], to: '3', message: /values\[0\]\.value: expected a number/ },
  { path: ['metrics', 0, 'values', 0, 'labels'], to: 5, message: /values\[0\]\.labels: expected an object/ },
  {
    path: ['metrics', 0, 'values', 0, 'labels', 'model'],
    to: true,
    message: /values\[0\]\.labels\.model: expected a string or a number, got a boolean/,
  },
  {
    path: ['metrics', 0, 'values', 0, 'labels', 'bad-label'],
    to: 'x',
    message: /values\[0\]\.labels: "bad-label" is not a Prometheus label name/,
  },
  {
    path: ['metrics', 2, 'values', 0, 'metricName'],
    to: 4,
    message: /values\[0\]\.metricName: expected a string/,
  },
];

const CONTROL_CASES: Case[] = [
  { path: ['models'], to: undefined, message: /MODEL_CONTROL_RESPONSE models: expected a list, got nothing/ },
  {
    path: ['models', 0, 'name'],
    to: undefined,
    message: /MODEL_CONTROL_RESPONSE models\[0\]\.name: expected a string/,
  },
  {
    path: ['models', 0, 'state'],
    to: 'fine',
    message: /models\[0\]\.state: expected one of loading, .*"fine"/,
  },
  { path: ['models', 0, 'state'], to: 1, message: /models\[0\]\.state: expected a string, got the number 1/ },
  {
    path: ['models', 0, 'inputs'],
    to: undefined,
    message: /models\[0\]\.inputs: expected a list, got nothing/,
  },
  {
    path: ['models', 0, 'outputs', 0],
    to: { name: 'y' },
    message: /models\[0\]\.outputs\[0\]: expected \{ name, datatype, shape \}/,
  },
  {
    path: ['models', 0, 'maxBatchSize'],
    to: 'eight',
    message: /models\[0\]\.maxBatchSize: expected a non-negative integer/,
  },
  {
    path: ['models', 0, 'batchable'],
    to: 'yes',
    message: /models\[0\]\.batchable: expected a boolean, got a string/,
  },
  {
    path: ['models', 0, 'error'],
    to: 42,
    message: /models\[0\]\.error: expected a string, got the number 42/,
  },
];

test('worker replies - a malformed STATS reply is a PROTOCOL_ERROR naming the field', async () => {
  for (const c of STATS_CASES) {
    const handle = handleAnswering(MESSAGE_KIND.STATS_RESPONSE, mutated(statsMeta(), c.path, c.to));
    await assert.rejects(handle.stats(1000), isCode('PROTOCOL_ERROR', c.message), c.path.join('.'));
    await assert.rejects(handle.stats(1000), isCode('PROTOCOL_ERROR', /^worker w1 sent STATS_RESPONSE/));
  }
});

test('worker replies - a malformed METRICS reply is a PROTOCOL_ERROR naming the field', async () => {
  const good = await metricsMeta();
  for (const c of METRICS_CASES) {
    const handle = handleAnswering(MESSAGE_KIND.METRICS_RESPONSE, mutated(good, c.path, c.to));
    await assert.rejects(handle.metrics(1000), isCode('PROTOCOL_ERROR', c.message), c.path.join('.'));
  }
});

test('worker replies - a malformed MODEL_CONTROL reply is a PROTOCOL_ERROR naming the field', async () => {
  for (const c of CONTROL_CASES) {
    const handle = handleAnswering(MESSAGE_KIND.MODEL_CONTROL_RESPONSE, mutated(controlMeta(), c.path, c.to));
    await assert.rejects(
      handle.control({ action: 'load', models: [] }, 1000),
      isCode('PROTOCOL_ERROR', c.message),
      c.path.join('.'),
    );
  }
});

test('worker replies - a reply of the wrong kind is a PROTOCOL_ERROR naming both kinds', async () => {
  // statistics sent under another reply kind are still not a STATS reply
  const handle = handleAnswering(MESSAGE_KIND.MODEL_CONTROL_RESPONSE, statsMeta());
  await assert.rejects(
    handle.stats(1000),
    isCode('PROTOCOL_ERROR', /worker w1 answered with MODEL_CONTROL_RESPONSE, expected STATS_RESPONSE/),
  );
  const infer = handleAnswering(MESSAGE_KIND.STATS_RESPONSE, { model: 'm', version: '1', outputs: [] });
  await assert.rejects(
    infer.infer({ model: 'm', version: '1', inputs: [] }, [], {}),
    isCode('PROTOCOL_ERROR', /answered with STATS_RESPONSE, expected INFER_RESPONSE/),
  );
  assert.equal(infer.failures, 1, "a lying worker's reply counts against it");
});

test('worker replies - the validators refuse a reply that is not an object', () => {
  for (const [check, kind] of [
    [checkStatsResponse, 'STATS_RESPONSE'],
    [checkMetricsResponse, 'METRICS_RESPONSE'],
    [checkModelControlResponse, 'MODEL_CONTROL_RESPONSE'],
  ] as const) {
    const err = caught(() => check(null));
    assert.equal(err.code, 'PROTOCOL_ERROR');
    assert.equal(err.message, `${kind}: expected an object, got null`);
  }
});

test("worker replies - a streaming model's stream and decode-loop counts are checked, and extras dropped", () => {
  const streams = { started: 3, running: 1, partials: 9, sent: 9, waiting: 0, cancelled: 1 };
  const llm = {
    running: 1,
    waiting: 0,
    kvTokens: 40,
    kvCapacityTokens: 1024,
    steps: 12,
    promptTokens: 30,
    cachedPromptTokens: 20,
  };
  const meta = mutated(
    mutated(statsMeta(), ['models', 0, 'streams'], { ...streams, extra: 1 }),
    ['models', 0, 'llm'],
    { ...llm, secret: 'leak' },
  );
  const [model] = checkStatsResponse(meta).models;
  assert.deepEqual(model!.streams, streams);
  assert.deepEqual(model!.llm, llm);
  for (const [path, to, message] of [
    [['models', 0, 'streams', 'sent'], -1, /models\[0\]\.streams\.sent/],
    [['models', 0, 'llm', 'kvTokens'], 'many', /models\[0\]\.llm\.kvTokens/],
    [['models', 0, 'llm'], 5, /models\[0\]\.llm: expected an object/],
  ] as const) {
    const bad = mutated(mutated(statsMeta(), ['models', 0, 'streams'], streams), ['models', 0, 'llm'], llm);
    assert.throws(() => checkStatsResponse(mutated(bad, [...path], to)), message);
  }
});

test("worker replies - an INFER reply's timings are checked and taken off its meta; an older worker may send none", async () => {
  const timings = { queueNs: 1, computeInputNs: 2, computeInferNs: 3, computeOutputNs: 4 };
  const ok = handleAnswering(MESSAGE_KIND.INFER_RESPONSE, { model: 'm', version: '1', outputs: [], timings });
  const reply = await ok.infer({ model: 'm', version: '1', inputs: [] }, [], {});
  assert.deepEqual(reply.timings, timings);
  assert.equal('timings' in reply.meta, false, 'never passed on with the meta (cache entries, clients)');

  const none = handleAnswering(MESSAGE_KIND.INFER_RESPONSE, { model: 'm', version: '1', outputs: [] });
  assert.equal((await none.infer({ model: 'm', version: '1', inputs: [] }, [], {})).timings, undefined);

  for (const [bad, message] of [
    [
      { ...timings, computeInferNs: -1 },
      /INFER_RESPONSE timings\.computeInferNs: expected a non-negative number/,
    ],
    [
      { ...timings, queueNs: undefined },
      /INFER_RESPONSE timings\.queueNs: expected a non-negative number, got nothing/,
    ],
    ['fast', /INFER_RESPONSE timings: expected an object, got a string/],
  ] as const) {
    const handle = handleAnswering(MESSAGE_KIND.INFER_RESPONSE, {
      model: 'm',
      version: '1',
      outputs: [],
      timings: bad,
    });
    await assert.rejects(
      handle.infer({ model: 'm', version: '1', inputs: [] }, [], {}),
      isCode('PROTOCOL_ERROR', message),
    );
  }
});
