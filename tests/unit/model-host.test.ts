/**
 * ModelHost's run-time load and unload: a model unloaded while it is still loading is disposed
 * once its load ends (never left alive and unreachable); an unload waits for running requests;
 * a reload with another config keeps the old one serving until the new one is ready.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, LoadedModel } from '../../src/backends/index.ts';
import { modelSchema } from '../../src/config/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { deferred } from '../../src/util/deferred.ts';
import { MAX_RETIRED_STATS, ModelHost } from '../../src/worker/index.ts';
import { waitFor } from '../fixtures/processes.ts';

const SPEC = [{ name: 'x', datatype: 'FP32' as const, shape: [-1] }];

/** A backend whose loads finish when the test says, counting loads and disposals. */
function gatedBackend() {
  const gates: ReturnType<typeof deferred<void>>[] = [];
  const counts = { loads: 0, disposed: 0 };
  const backend: Backend = {
    name: 'sim',
    async load(): Promise<LoadedModel> {
      counts.loads++;
      const gate = deferred<void>();
      gates.push(gate);
      await gate.promise;
      return {
        info: { platform: 'test', inputs: SPEC, outputs: SPEC },
        infer: async (inputs) => inputs,
        dispose: async () => {
          counts.disposed++;
        },
      };
    },
  };
  return { backend, gates, counts };
}

const config = (path = 'a') =>
  modelSchema.parse({ name: 'm', backend: 'sim', inputs: SPEC, outputs: SPEC, options: { path } });

test('model host - a model unloaded while loading is disposed when its load ends', async () => {
  const { backend, gates, counts } = gatedBackend();
  const host = new ModelHost(new Map([['sim', backend]]), silentLogger());
  const loading = host.load(config());
  assert.equal(host.statuses()[0]!.state, 'loading');
  await host.unload('m');
  assert.equal(host.size, 0, 'forgotten at once');
  gates[0]!.resolve();
  const hosted = await loading;
  assert.equal(counts.disposed, 1, 'the late model was released');
  assert.notEqual(hosted.state, 'ready');
  assert.equal(host.size, 0);
  assert.throws(() => host.get('m', undefined), { code: 'MODEL_NOT_FOUND' });
});

test('model host - a reload keeps the old model serving until the new one is ready', async () => {
  const { backend, gates, counts } = gatedBackend();
  const host = new ModelHost(new Map([['sim', backend]]), silentLogger());
  const first = host.load(config('a'));
  gates[0]!.resolve();
  await first;
  const old = host.get('m', undefined);
  const reload = host.load(config('b'));
  assert.equal(host.get('m', undefined), old, 'the old one still answers while the new one loads');
  gates[1]!.resolve();
  await reload;
  const now = host.get('m', undefined);
  assert.notEqual(now, old);
  assert.deepEqual(now.config.options, { path: 'b' });
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(counts.disposed, 1, 'the old one was retired');
  // the same config again is a no-op
  await host.load(config('b'));
  assert.equal(counts.loads, 2);
});

test('model host - unload waits for running requests', async () => {
  const { backend, gates, counts } = gatedBackend();
  const host = new ModelHost(new Map([['sim', backend]]), silentLogger());
  const loading = host.load(config());
  gates[0]!.resolve();
  await loading;
  const ready = host.get('m', undefined);
  const hold = deferred<void>();
  // a request the batcher is running: wrap the model's infer to hold it
  const infer = ready.model.infer.bind(ready.model);
  (ready.model as { infer: LoadedModel['infer'] }).infer = async (inputs, ctx) => {
    await hold.promise;
    return infer(inputs, ctx);
  };
  const data = new Uint8Array(new Float32Array([1]).buffer);
  const running = host.run(ready, { inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data }] });
  let unloaded = false;
  const unload = host.unload('m').then(() => {
    unloaded = true;
  });
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(unloaded, false, 'unload waits for the request');
  assert.equal(counts.disposed, 0);
  hold.resolve();
  const outputs = await running;
  assert.equal(outputs.length, 1, 'the request was answered');
  await unload;
  assert.equal(counts.disposed, 1);
});

/** A backend that loads at once and echoes its inputs. */
const echoBackend: Backend = {
  name: 'sim',
  async load(): Promise<LoadedModel> {
    return {
      info: { platform: 'test', inputs: SPEC, outputs: SPEC },
      infer: async (inputs) => inputs,
      dispose: async () => {},
    };
  },
};

const versioned = (version: string, path = 'a') =>
  modelSchema.parse({ name: 'm', version, backend: 'sim', inputs: SPEC, outputs: SPEC, options: { path } });

const x = [{ name: 'x', datatype: 'FP32' as const, shape: [1], data: new Uint8Array(4) }];

async function runOnce(host: ModelHost, version: string): Promise<void> {
  await host.run(host.get('m', version), { inputs: x });
  // the batch is counted once its requests are answered
  await new Promise<void>((resolve) => setImmediate(resolve));
}

const executionsOf = (host: ModelHost, version: string): number | undefined =>
  host.statsSnapshots().find((s) => s.version === version)?.executionCount;

test('model host - statistics continue across unload and load, and across a reload with another config, of the same version', async () => {
  const host = new ModelHost(new Map([['sim', echoBackend]]), silentLogger());
  await host.load(versioned('1'));
  await runOnce(host, '1');
  await runOnce(host, '1');
  assert.equal(executionsOf(host, '1'), 2);
  await host.unload('m');
  assert.equal(host.statsSnapshots().length, 0, 'an unloaded version is not listed');
  await host.load(versioned('1'));
  assert.equal(executionsOf(host, '1'), 2, 'loaded again: its record continues');
  await runOnce(host, '1');
  assert.equal(executionsOf(host, '1'), 3);
  await host.load(versioned('1', 'b')); // another config: a reload
  await runOnce(host, '1');
  assert.equal(executionsOf(host, '1'), 4, 'reloaded: its record continues');
  const s = host.statsSnapshots()[0]!;
  assert.equal(s.success.count, 4);
  assert.equal(s.computeInput.count, 4);
  assert.equal(s.computeOutput.count, 4);
});

test('model host - a new version starts its own statistics; a removed one keeps its record until loaded again', async () => {
  const host = new ModelHost(new Map([['sim', echoBackend]]), silentLogger());
  await host.load(versioned('1'));
  await runOnce(host, '1');
  await host.load(versioned('2'));
  assert.equal(executionsOf(host, '2'), 0, 'a new version counts from zero');
  await runOnce(host, '2');
  await host.unload('m', ['1']);
  assert.equal(executionsOf(host, '1'), undefined, 'removed: not listed');
  assert.equal(executionsOf(host, '2'), 1);
  await host.load(versioned('1'));
  assert.equal(executionsOf(host, '1'), 1, 'back: where it was');
});

test(`model host - records of versions no longer hosted are bounded (${MAX_RETIRED_STATS}), the oldest forgotten`, async () => {
  const host = new ModelHost(new Map([['sim', echoBackend]]), silentLogger());
  // versions 1 .. MAX+1, each run once and unloaded: one retired record too many
  for (let v = 1; v <= MAX_RETIRED_STATS + 1; v++) {
    await host.load(versioned(String(v)));
    await runOnce(host, String(v));
    await host.unload('m');
  }
  await host.load(versioned('1'));
  assert.equal(executionsOf(host, '1'), 0, 'version 1 was the oldest retired record: forgotten');
  await host.load(versioned('2'));
  assert.equal(executionsOf(host, '2'), 1, 'version 2 was kept');
});

test('model host - the same load twice at once (two coordinators) loads the model once and does not flap', async () => {
  const { backend, gates, counts } = gatedBackend();
  const changes: string[] = [];
  const host = new ModelHost(new Map([['sim', backend]]), silentLogger(), () =>
    changes.push(
      host
        .statuses()
        .map((s) => s.state)
        .join(','),
    ),
  );
  const a = host.load(config('a'));
  const b = host.load(config('a'));
  assert.equal(counts.loads, 1, 'the second load joined the first');
  assert.equal(host.size, 1);
  gates[0]!.resolve();
  const [ha, hb] = await Promise.all([a, b]);
  assert.equal(ha, hb);
  assert.equal(ha.state, 'ready');
  assert.equal(counts.disposed, 0, 'nothing loaded twice, nothing thrown away');
  assert.deepEqual(changes, ['loading', 'ready'], 'one loading report, then ready: no flap');
  // and once ready, the same load again changes nothing
  await host.load(config('a'));
  assert.equal(counts.loads, 1);
  assert.deepEqual(changes, ['loading', 'ready']);
});

test('model host - a load overtaken by another config while loading releases its model', async () => {
  const { backend, gates, counts } = gatedBackend();
  const host = new ModelHost(new Map([['sim', backend]]), silentLogger());
  const a = host.load(config('a'));
  const b = host.load(config('b'));
  assert.equal(counts.loads, 2);
  gates[1]!.resolve();
  assert.equal((await b).state, 'ready');
  gates[0]!.resolve();
  const overtaken = await a;
  assert.equal(overtaken.state, 'unavailable');
  assert.match(overtaken.error ?? '', /replaced by a load of another config/);
  assert.equal(counts.disposed, 1, 'the overtaken model was released, not leaked');
  assert.deepEqual(host.get('m', undefined).config.options, { path: 'b' });
});

test('model host - two reloads with different configs at once: the first to finish replaces the served version, the other releases its model', async () => {
  const { backend, gates, counts } = gatedBackend();
  const host = new ModelHost(new Map([['sim', backend]]), silentLogger());
  const first = host.load(config('a'));
  gates[0]!.resolve();
  assert.equal((await first).state, 'ready');
  const b = host.load(config('b'));
  const c = host.load(config('c'));
  assert.equal(counts.loads, 3);
  gates[2]!.resolve();
  assert.equal((await c).state, 'ready');
  gates[1]!.resolve();
  const overtaken = await b;
  assert.equal(overtaken.state, 'unavailable');
  assert.match(overtaken.error ?? '', /replaced by a load of another config/);
  assert.deepEqual(host.get('m', undefined).config.options, { path: 'c' });
  // a (retired by c) and b (overtaken) are released; c is served, nothing leaked or released twice
  await waitFor('the old version and the overtaken load released', () => counts.disposed === 2);
  assert.equal(counts.disposed, 2);
});
