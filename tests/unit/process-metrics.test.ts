/**
 * The event-loop delay gauges: sampled every 100 ms, with the sampling interval taken off (Node's
 * histogram records the whole time between ticks, so an idle loop would read 0.1 s), and an
 * empty histogram (NaN mean, 2^63 ns min) leaving the last value instead of publishing garbage.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Gauge } from 'prom-client';
import { WorkerMetrics } from '../../src/telemetry/metrics.ts';

test('event-loop lag gauges say how late the loop was, not the sampling interval', async () => {
  const metrics = new WorkerMetrics({ snapshots: () => [], ready: () => [], inFlight: () => 0 });
  const value = async (name: string): Promise<number | undefined> => {
    const gauge = metrics.registry.getSingleMetric(name) as Gauge | undefined;
    return (await gauge?.get())?.values[0]?.value;
  };
  const p50 = metrics.registry.getSingleMetric('nodejs_eventloop_lag_p50_seconds') as Gauge;
  // what prom-client hands over at a scrape: the histogram's value, interval included
  p50.set({}, 0.1003);
  assert.ok(Math.abs((await value('nodejs_eventloop_lag_p50_seconds'))! - 0.0003) < 1e-9);
  p50.set({}, 0.0999);
  assert.equal(await value('nodejs_eventloop_lag_p50_seconds'), 0);
  // no sample since the last scrape: the last value stays
  p50.set({}, 0.125);
  p50.set({}, Number.NaN);
  p50.set({}, 9_223_372_036.854776);
  assert.ok(Math.abs((await value('nodejs_eventloop_lag_p50_seconds'))! - 0.025) < 1e-9);
  // every sampled statistic is adjusted; the standard deviation is not shifted by the interval
  for (const stat of ['min', 'max', 'mean', 'p90', 'p99']) {
    const name = `nodejs_eventloop_lag_${stat}_seconds`;
    (metrics.registry.getSingleMetric(name) as Gauge).set({}, 0.15);
    assert.ok(Math.abs((await value(name))! - 0.05) < 1e-9, name);
  }
  (metrics.registry.getSingleMetric('nodejs_eventloop_lag_stddev_seconds') as Gauge).set({}, 0.002);
  assert.equal(await value('nodejs_eventloop_lag_stddev_seconds'), 0.002);
});
