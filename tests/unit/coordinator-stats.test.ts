/**
 * The coordinator's own statistics records: keyed by name and version (so a reload of the
 * same version continues), a pipeline's latency window for the dashboard's percentiles, and
 * the records of versions no longer served bounded, the oldest forgotten first.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CoordinatorStats, MAX_RETIRED_RECORDS } from '../../src/coordinator/coordinator-stats.ts';

test('coordinator stats - one record per name and version, the same object each time it is asked for', () => {
  const stats = new CoordinatorStats(() => true);
  const a = stats.of('m', '1');
  a.onCacheHit(2, 1000);
  assert.equal(stats.of('m', '1'), a);
  assert.notEqual(stats.of('m', '2'), a);
  assert.equal(stats.snapshot('m', '1')!.cacheHit.count, 1);
  assert.equal(stats.snapshot('m', '2')!.cacheHit.count, 0);
  assert.equal(stats.snapshot('other', '1'), undefined, 'nothing made by reading');
});

test('coordinator stats - a pipeline has percentiles once it has succeeded, none before', () => {
  const stats = new CoordinatorStats(() => true);
  assert.equal(stats.latencyPercentile('p', '1', 50), undefined);
  for (let i = 1; i <= 100; i++) stats.observePipelineLatency('p', '1', i);
  assert.equal(stats.latencyPercentile('p', '1', 50), 50);
  assert.equal(stats.latencyPercentile('p', '1', 99), 99);
  assert.equal(stats.latencyPercentile('p', '2', 50), undefined, 'per version');
});

test(`coordinator stats - records of versions no longer served are bounded (${MAX_RETIRED_RECORDS}), the oldest first; served ones are kept`, () => {
  const served = new Set(['keep@1']);
  const stats = new CoordinatorStats((name, version) => served.has(`${name}@${version}`));
  stats.of('keep', '1').onCacheMiss(1);
  for (let v = 1; v <= MAX_RETIRED_RECORDS + 1; v++) stats.of('gone', String(v)).onCacheMiss(1);
  assert.equal(stats.snapshot('gone', '1'), undefined, 'the oldest retired record was forgotten');
  assert.equal(stats.snapshot('gone', '2')!.cacheMiss.count, 1);
  assert.equal(stats.snapshot('gone', String(MAX_RETIRED_RECORDS + 1))!.cacheMiss.count, 1);
  assert.equal(stats.snapshot('keep', '1')!.cacheMiss.count, 1, 'a served version is never forgotten');
});

test("coordinator stats - an entry finds its version's record; a new entry object for the same version (a reload) the same one", () => {
  const stats = new CoordinatorStats(() => true);
  const first = { name: 'm', version: '1' };
  stats.forEntry(first).onCacheMiss(1);
  const reloaded = { name: 'm', version: '1' };
  assert.equal(stats.forEntry(reloaded), stats.forEntry(first));
  assert.equal(stats.forEntry(reloaded), stats.of('m', '1'));
  assert.equal(stats.snapshot('m', '1')!.cacheMiss.count, 1);
});

test('coordinator stats - an entry whose record the bound forgot gets the current record of its version', () => {
  const served = new Set<string>();
  const stats = new CoordinatorStats((name, version) => served.has(`${name}@${version}`));
  const entry = { name: 'gone', version: '1' };
  const old = stats.forEntry(entry);
  for (let v = 2; v <= MAX_RETIRED_RECORDS + 1; v++) stats.of('gone', String(v));
  assert.equal(stats.snapshot('gone', '1'), undefined, 'forgotten');
  served.add('gone@1');
  const now = stats.forEntry(entry);
  assert.notEqual(now, old);
  assert.equal(now, stats.of('gone', '1'));
});
