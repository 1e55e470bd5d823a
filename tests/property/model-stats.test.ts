/**
 * The statistics record against a simple reference: any sequence of events (batches with their
 * phases, queue waits, outcomes, cache hits and misses, pipeline runs) recorded on one record
 * gives the same snapshot as the same events split over several records (workers, the
 * coordinator) and summed with mergeStats; and the Triton invariants hold: a hit counts in
 * success and queue but never in inference, execution or compute counts; each phase is counted
 * once per request of a batch, and per batch size once per execution.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ModelStats, type ModelStatsSnapshot, mergeStats } from '../../src/batching/index.ts';

type Event =
  | { kind: 'batch'; rows: number; requests: number; inputMs: number; inferMs: number; outputMs: number }
  | { kind: 'queued'; ms: number }
  | { kind: 'done'; ok: boolean; ms: number }
  | { kind: 'hit'; ms: number }
  | { kind: 'miss'; ms: number; insertMs: number }
  | { kind: 'pipeline'; ok: boolean; ms: number; rows: number; queueNs: number; inferNs: number };

// whole microseconds: ns stay integers, so sums do not depend on the order they are added in
const ms = fc.integer({ min: 0, max: 50_000 }).map((us) => us / 1000);
const event: fc.Arbitrary<Event> = fc.oneof(
  fc.record({
    kind: fc.constant('batch' as const),
    rows: fc.integer({ min: 1, max: 8 }),
    requests: fc.integer({ min: 1, max: 8 }),
    inputMs: ms,
    inferMs: ms,
    outputMs: ms,
  }),
  fc.record({ kind: fc.constant('queued' as const), ms }),
  fc.record({ kind: fc.constant('done' as const), ok: fc.boolean(), ms }),
  fc.record({ kind: fc.constant('hit' as const), ms }),
  fc.record({ kind: fc.constant('miss' as const), ms, insertMs: ms }),
  fc.record({
    kind: fc.constant('pipeline' as const),
    ok: fc.boolean(),
    ms,
    rows: fc.integer({ min: 1, max: 4 }),
    queueNs: fc.integer({ min: 0, max: 1e9 }),
    inferNs: fc.integer({ min: 0, max: 1e9 }),
  }),
);

function record(stats: ModelStats, e: Event, at: number): void {
  switch (e.kind) {
    case 'batch':
      stats.onBatch(e.rows, e.requests, e, at);
      break;
    case 'queued':
      stats.onQueued(e.ms);
      break;
    case 'done':
      stats.onDone(e.ok, e.ms);
      break;
    case 'hit':
      stats.onCacheHit(e.ms, at);
      break;
    case 'miss':
      stats.onCacheMiss(e.ms);
      stats.onCacheInsert(e.insertMs);
      break;
    case 'pipeline':
      stats.onPipeline(
        e.ok,
        e.ms,
        e.rows,
        { queueNs: e.queueNs, computeInputNs: 0, computeInferNs: e.inferNs, computeOutputNs: 0 },
        at,
      );
      break;
  }
}

/** The snapshot without what merging does not sum (gauges, a worker's queue maximum). */
const summed = (s: ModelStatsSnapshot) => ({ ...s, queueDepth: 0, maxQueueDepth: 0 });

test('model stats - events split over several records and merged equal the same events on one record', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(event, fc.integer({ min: 0, max: 3 })), { maxLength: 60 }), (events) => {
      const one = new ModelStats('m', '1');
      const parts = Array.from({ length: 4 }, () => new ModelStats('m', '1'));
      events.forEach(([e, part], i) => {
        record(one, e, i);
        record(parts[part]!, e, i);
      });
      const merged = mergeStats(parts.map((p) => p.snapshot()))!;
      assert.deepEqual(summed(merged), summed(one.snapshot()));
    }),
  );
});

test('model stats - hits count in success and queue only; phases count per request, batch sizes per execution', () => {
  fc.assert(
    fc.property(fc.array(event, { maxLength: 60 }), (events) => {
      const stats = new ModelStats('m', '1');
      for (const [i, e] of events.entries()) record(stats, e, i);
      const s = stats.snapshot();
      const of = <K extends Event['kind']>(kind: K) =>
        events.filter((e): e is Extract<Event, { kind: K }> => e.kind === kind);
      const batches = of('batch');
      const pipelinesOk = of('pipeline').filter((p) => p.ok);
      const hits = of('hit').length;
      const requests = batches.reduce((n, b) => n + b.requests, 0) + pipelinesOk.length;
      assert.equal(s.cacheHit.count, hits);
      assert.equal(s.cacheMiss.count, of('miss').length);
      assert.equal(s.success.count, hits + of('done').filter((d) => d.ok).length + pipelinesOk.length);
      assert.equal(s.queue.count, hits + of('queued').length + pipelinesOk.length);
      assert.equal(s.executionCount, batches.length + pipelinesOk.length, 'hits never execute');
      assert.equal(
        s.inferenceCount,
        batches.reduce((n, b) => n + b.rows, 0) + pipelinesOk.reduce((n, p) => n + p.rows, 0),
      );
      for (const phase of [s.computeInput, s.computeInfer, s.computeOutput])
        assert.equal(phase.count, requests);
      for (const b of s.batchStats) {
        assert.equal(b.computeInput.count, b.computeInfer.count);
        assert.equal(b.computeOutput.count, b.computeInfer.count);
      }
      assert.equal(
        s.batchStats.reduce((n, b) => n + b.computeInfer.count, 0),
        s.executionCount,
        'one entry per execution',
      );
    }),
  );
});
