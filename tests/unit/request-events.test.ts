/**
 * Request events on the diagnostics channel, and their subscribers: request ends published by
 * a coordinator come out of its prom-client registry as counts and durations (a synchronous
 * request at its answer, an asynchronous one when its run finishes, not at its 202), and a
 * subscriber sees only its own coordinator's events.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CoordinatorMetrics,
  type RequestEndEvent,
  countedModel,
  requestEnd,
  subscribeMetrics,
  subscribeRequestEnd,
} from '../../src/telemetry/index.ts';

type ModelRef = { name: string; version: string };

function coordinatorMetrics(): CoordinatorMetrics {
  return new CoordinatorMetrics({
    workers: () => [],
    retries: () => 0,
    hedges: () => 0,
    circuits: () => [],
    cache: () => ({}),
    readyReplicas: () => [],
    pipelineRuns: () => 0,
    pipelineStepRuns: () => 0,
    prefixRouting: () => ({ queries: 0, hits: 0, entries: 0 }),
  });
}

/** A request's end as the coordinator publishes it: answered unless a code or phase is given. */
function ended(
  source: object,
  entry: ModelRef | undefined,
  options: { durationMs?: number; code?: string; phase?: RequestEndEvent['phase']; model?: string } = {},
): RequestEndEvent {
  const model = options.model ?? entry?.name ?? 'nope';
  return {
    source,
    model,
    entry,
    // the coordinator's rule, with 'a' and 'b' the names it serves
    countedModel: countedModel(model, entry, (name) => name === 'a' || name === 'b'),
    code: options.code,
    phase: options.phase ?? 'answered',
    durationMs: options.durationMs ?? 1,
    workerId: options.code ? undefined : 'w1',
    cache: undefined,
    requestId: 'req-1',
    traceparent: undefined,
  };
}

/** `infergrid_requests_total` by `model/version/code`. */
async function requestCounts(metrics: CoordinatorMetrics): Promise<Record<string, number>> {
  const counter = metrics.registry.getSingleMetric('infergrid_requests_total');
  assert.ok(counter);
  const out: Record<string, number> = {};
  for (const v of (await counter.get()).values)
    out[`${v.labels.model}/${v.labels.version}/${v.labels.code}`] = v.value;
  return out;
}

/** `infergrid_request_duration_seconds` count and sum for one model version. */
async function durations(
  metrics: CoordinatorMetrics,
  entry: ModelRef,
): Promise<{ count: number | undefined; sum: number | undefined }> {
  const histogram = metrics.registry.getSingleMetric('infergrid_request_duration_seconds');
  assert.ok(histogram);
  const values = (await histogram.get()).values.filter(
    (v) => v.labels.model === entry.name && v.labels.version === entry.version,
  );
  const named = (suffix: string) =>
    values.find((v) => (v as { metricName?: string }).metricName?.endsWith(suffix))?.value;
  return { count: named('_count'), sum: named('_sum') };
}

test('request events - metrics count request ends by model and code, and time the successful ones', async (t) => {
  const metrics = coordinatorMetrics();
  const source = {};
  t.after(subscribeMetrics(source, metrics));
  const a: ModelRef = { name: 'a', version: '1' };
  const b: ModelRef = { name: 'b', version: '2' };

  requestEnd.publish(ended(source, a, { durationMs: 5 }));
  requestEnd.publish(ended(source, a, { durationMs: 20 }));
  requestEnd.publish(ended(source, b, { durationMs: 7 }));
  requestEnd.publish(ended(source, a, { code: 'INVALID_ARGUMENT' }));
  requestEnd.publish(ended(source, a, { code: 'INVALID_ARGUMENT' }));
  requestEnd.publish(ended(source, b, { code: 'OVERLOADED' }));
  // a model nobody serves is counted with empty model and version
  requestEnd.publish(ended(source, undefined, { code: 'MODEL_NOT_FOUND' }));
  // refused before resolving (a body that did not parse, a version that does not exist) for a
  // served name: under that name, with empty version
  requestEnd.publish(ended(source, undefined, { code: 'INVALID_ARGUMENT', model: 'a' }));
  requestEnd.publish(ended(source, undefined, { code: 'MODEL_NOT_FOUND', model: 'b' }));
  // an accepted asynchronous request counts when its run finishes, with the run's time
  requestEnd.publish(ended(source, a, { durationMs: 2, phase: 'accepted' }));
  requestEnd.publish(ended(source, b, { durationMs: 2, phase: 'accepted' }));
  requestEnd.publish(ended(source, a, { durationMs: 100, phase: 'finished' }));
  requestEnd.publish(ended(source, b, { durationMs: 50, phase: 'finished', code: 'DEADLINE_EXCEEDED' }));

  assert.deepEqual(await requestCounts(metrics), {
    'a/1/OK': 3,
    'a/1/INVALID_ARGUMENT': 2,
    'b/2/OK': 1,
    'b/2/OVERLOADED': 1,
    'b/2/DEADLINE_EXCEEDED': 1,
    '//MODEL_NOT_FOUND': 1,
    'a//INVALID_ARGUMENT': 1,
    'b//MODEL_NOT_FOUND': 1,
  });
  const aTimes = await durations(metrics, a);
  assert.equal(aTimes.count, 3);
  assert.ok(Math.abs(aTimes.sum! - (0.005 + 0.02 + 0.1)) < 1e-9, `sum ${aTimes.sum}`);
  // failures are counted, not timed
  const bTimes = await durations(metrics, b);
  assert.equal(bTimes.count, 1);
  assert.ok(Math.abs(bTimes.sum! - 0.007) < 1e-9, `sum ${bTimes.sum}`);
});

test('request events - a subscriber sees only its own source; after unsubscribing nothing arrives', () => {
  const mine = {};
  const other = {};
  const seen: string[] = [];
  const unsubscribe = subscribeRequestEnd(mine, (e) => seen.push(e.model));
  assert.equal(requestEnd.hasSubscribers, true);
  requestEnd.publish(ended(mine, { name: 'a', version: '1' }));
  requestEnd.publish(ended(other, { name: 'b', version: '1' }));
  unsubscribe();
  requestEnd.publish(ended(mine, { name: 'c', version: '1' }));
  assert.deepEqual(seen, ['a']);
});

test('request events - a subscriber that throws is contained: the publisher goes on and the process stays up', async () => {
  const source = {};
  const warned = new Promise<Error>((resolve) => process.once('warning', resolve));
  const unsubscribe = subscribeRequestEnd(source, () => {
    throw new Error('subscriber bug');
  });
  try {
    assert.doesNotThrow(() => requestEnd.publish(ended(source, { name: 'a', version: '1' })));
    const warning = await warned;
    assert.match(warning.message, /infergrid:request:end failed.*subscriber bug/);
    // diagnostics_channel would rethrow an escaped error on the next tick; give it that tick
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    unsubscribe();
  }
});
