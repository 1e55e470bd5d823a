/**
 * Request events on diagnostics channels, and the metrics subscriber: request ends published on
 * the channels come out of the coordinator's prom-client registry as the counts and durations
 * the HTTP route records today (a synchronous request at its answer, an asynchronous one when its
 * run settles, not at its 202).
 */

import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { test } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import {
  type AsyncEndEvent,
  CoordinatorMetrics,
  type ModelRef,
  REQUEST_CHANNELS,
  REQUEST_EVENT_NAMES,
  type RequestEndEvent,
  isolatedRequestChannels,
  subscribeMetrics,
} from '../../src/telemetry/index.ts';

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
  });
}

/** A request's end as the HTTP route would publish it: answered 200 unless `error` is given. */
function requestEnd(
  entry: ModelRef | undefined,
  options: { durationMs?: number; error?: InfergridError; asyncAccepted?: boolean } = {},
): RequestEndEvent {
  const { error } = options;
  return {
    requestId: 'req-1',
    method: 'POST',
    route: '/v2/models/:model/infer',
    path: `/v2/models/${entry?.name ?? 'nope'}/infer`,
    headers: {},
    model: entry?.name ?? 'nope',
    startedAtMs: 0,
    traceContext: undefined,
    entry,
    outcome: error ? 'error' : 'ok',
    code: error ? error.code : 'OK',
    error,
    durationMs: options.durationMs ?? 1,
    statusCode: error ? error.httpStatus : options.asyncAccepted ? 202 : 200,
    cache: undefined,
    workerId: error ? undefined : 'w1',
    asyncAccepted: options.asyncAccepted ?? false,
  };
}

function asyncEnd(entry: ModelRef, durationMs: number, error?: InfergridError): AsyncEndEvent {
  return {
    requestId: 'req-1',
    entry,
    outcome: error ? 'error' : 'ok',
    code: error ? error.code : 'OK',
    error,
    durationMs,
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
  const channels = REQUEST_CHANNELS;
  const unsubscribe = subscribeMetrics(channels, metrics);
  t.after(unsubscribe);
  const a: ModelRef = { name: 'a', version: '1' };
  const b: ModelRef = { name: 'b', version: '2' };

  channels.requestEnd.publish(requestEnd(a, { durationMs: 5 }));
  channels.requestEnd.publish(requestEnd(a, { durationMs: 20 }));
  channels.requestEnd.publish(requestEnd(b, { durationMs: 7 }));
  channels.requestEnd.publish(requestEnd(a, { error: new InfergridError('INVALID_ARGUMENT', 'bad input') }));
  channels.requestEnd.publish(requestEnd(a, { error: new InfergridError('INVALID_ARGUMENT', 'bad again') }));
  channels.requestEnd.publish(requestEnd(b, { error: new InfergridError('OVERLOADED', 'queue full') }));
  // a model that does not resolve is counted with empty model and version
  channels.requestEnd.publish(requestEnd(undefined, { error: new InfergridError('MODEL_NOT_FOUND', 'no') }));
  // an accepted asynchronous request counts when its run settles, with the run's time
  channels.requestEnd.publish(requestEnd(a, { durationMs: 2, asyncAccepted: true }));
  channels.requestEnd.publish(requestEnd(b, { durationMs: 2, asyncAccepted: true }));
  channels.asyncEnd.publish(asyncEnd(a, 100));
  channels.asyncEnd.publish(asyncEnd(b, 50, new InfergridError('DEADLINE_EXCEEDED', 'too slow')));

  assert.deepEqual(await requestCounts(metrics), {
    'a/1/OK': 3,
    'a/1/INVALID_ARGUMENT': 2,
    'b/2/OK': 1,
    'b/2/OVERLOADED': 1,
    'b/2/DEADLINE_EXCEEDED': 1,
    '//MODEL_NOT_FOUND': 1,
  });
  const aTimes = await durations(metrics, a);
  assert.equal(aTimes.count, 3);
  assert.ok(Math.abs(aTimes.sum! - (0.005 + 0.02 + 0.1)) < 1e-9, `sum ${aTimes.sum}`);
  // failures are counted, not timed
  const bTimes = await durations(metrics, b);
  assert.equal(bTimes.count, 1);
  assert.ok(Math.abs(bTimes.sum! - 0.007) < 1e-9, `sum ${bTimes.sum}`);
});

test('request events - publishers can tell nobody listens; after unsubscribing nothing is counted', async () => {
  const metrics = coordinatorMetrics();
  const channels = isolatedRequestChannels();
  const a: ModelRef = { name: 'a', version: '1' };
  assert.equal(channels.requestEnd.hasSubscribers, false);
  assert.equal(channels.asyncEnd.hasSubscribers, false);
  channels.requestEnd.publish(requestEnd(a));

  const unsubscribe = subscribeMetrics(channels, metrics);
  assert.equal(channels.requestEnd.hasSubscribers, true);
  assert.equal(channels.asyncEnd.hasSubscribers, true);
  // the metrics need only the ends
  assert.equal(channels.requestStart.hasSubscribers, false);
  assert.equal(channels.attemptStart.hasSubscribers, false);
  channels.requestEnd.publish(requestEnd(a));

  unsubscribe();
  assert.equal(channels.requestEnd.hasSubscribers, false);
  assert.equal(channels.asyncEnd.hasSubscribers, false);
  channels.requestEnd.publish(requestEnd(a));
  channels.asyncEnd.publish(asyncEnd(a, 1));

  assert.deepEqual(await requestCounts(metrics), { 'a/1/OK': 1 });
});

test('request events - the named channels are the process-wide ones; isolated ones see only their own', async (t) => {
  assert.equal(REQUEST_CHANNELS.requestEnd, diagnosticsChannel.channel('infergrid:request:end'));
  for (const [key, name] of Object.entries(REQUEST_EVENT_NAMES))
    assert.equal(REQUEST_CHANNELS[key as keyof typeof REQUEST_EVENT_NAMES].name, name);

  const first = isolatedRequestChannels();
  const second = isolatedRequestChannels();
  const firstMetrics = coordinatorMetrics();
  const secondMetrics = coordinatorMetrics();
  t.after(subscribeMetrics(first, firstMetrics));
  t.after(subscribeMetrics(second, secondMetrics));
  const a: ModelRef = { name: 'a', version: '1' };
  first.requestEnd.publish(requestEnd(a));
  first.requestEnd.publish(requestEnd(a));
  second.requestEnd.publish(requestEnd(a, { error: new InfergridError('CANCELLED', 'client went away') }));
  // nor do the process-wide channels reach them
  REQUEST_CHANNELS.requestEnd.publish(requestEnd(a));

  assert.deepEqual(await requestCounts(firstMetrics), { 'a/1/OK': 2 });
  assert.deepEqual(await requestCounts(secondMetrics), { 'a/1/CANCELLED': 1 });
});
