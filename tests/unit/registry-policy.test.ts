/**
 * The registry's version routing under a version policy: the traffic split followed exactly at
 * its boundaries with an injected draw, ready versions preferred, shard keys, and setTraffic's
 * checks.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, modelSchema } from '../../src/config/index.ts';
import type { ModelStatus } from '../../src/protocol/index.ts';
import { ModelRegistry } from '../../src/registry/index.ts';
import { assertCode, caught } from '../fixtures/assert.ts';

const X = [{ name: 'x', datatype: 'FP32', shape: [-1] }];
const Y = [{ name: 'y', datatype: 'FP32', shape: [-1] }];

/** A sim model config as the schema makes it (defaults filled in). */
function model(name: string, version: string, extra: Record<string, unknown> = {}): ModelConfig {
  return modelSchema.parse({ name, version, backend: 'sim', inputs: X, outputs: Y, ...extra });
}

/** What a worker reports for name@version in `state`. */
function status(name: string, version: string, state: ModelStatus['state'] = 'ready'): ModelStatus {
  return {
    name,
    version,
    state,
    platform: 'infergrid_sim',
    inputs: X as ModelStatus['inputs'],
    outputs: Y as ModelStatus['outputs'],
    batchable: true,
    maxBatchSize: 0,
  };
}

/** A registry whose draws come from `draws` in order (failing if it runs out). */
function registryWith(models: ModelConfig[], draws: number[] = []): ModelRegistry {
  let i = 0;
  return new ModelRegistry(models, {
    random: () => {
      assert.ok(i < draws.length, 'the registry drew more random numbers than the test gave');
      return draws[i++]!;
    },
  });
}

test('registry - only served versions are entries; an unserved version is refused naming the policy', () => {
  const registry = registryWith([
    model('m', '1', { versionPolicy: { latest: 1 } }),
    model('m', '2'),
    model('m', '3'),
  ]);
  assert.deepEqual(registry.versions('m'), ['3']);
  assert.equal(registry.resolve('m').version, '3');
  const err = caught(() => registry.resolve('m', '1'));
  assertCode(err, 'MODEL_NOT_FOUND', /version "1" is not served: its version policy serves the latest 1/);
  assertCode(
    caught(() => registry.resolve('m', '9')),
    'MODEL_NOT_FOUND',
    /has no version "9"/,
  );
  const index = registry.index();
  assert.deepEqual(
    index.map((e) => [e.version, e.state, e.reason]),
    [
      ['3', 'UNAVAILABLE', 'no worker hosts it'],
      ['2', 'UNAVAILABLE', 'not served: the version policy serves the latest 1'],
      ['1', 'UNAVAILABLE', 'not served: the version policy serves the latest 1'],
    ],
  );
});

test('registry - route follows a 90/10 split exactly at the boundary draws', () => {
  const models = [model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })];
  const draws = [0, 0.5, 0.8999999, 0.9, 0.9000001, 0.95, 0.9999999];
  const registry = registryWith(models, draws);
  const picked = draws.map(() => registry.route('m').version);
  assert.deepEqual(picked, ['1', '1', '1', '2', '2', '2', '2']);
  assert.deepEqual(registry.traffic('m'), { '1': 90, '2': 10 });
});

test('registry - route follows a three-way split at every boundary, in the order declared', () => {
  const models = [
    model('m', '1', { traffic: 50 }),
    model('m', '2', { traffic: 30 }),
    model('m', '3', { traffic: 20 }),
  ];
  const registry = registryWith(models);
  const at = (key: number): string => registry.route('m', undefined, key).version;
  const edges: [string, number, number][] = [
    ['1', 0, 0.5],
    ['2', 0.5, 0.8],
    ['3', 0.8, 1],
  ];
  for (const [version, from, to] of edges) {
    assert.equal(at(from), version, `the draw ${from} starts version ${version}`);
    assert.equal(at(to - 1e-9), version, `the draw just under ${to} is still version ${version}`);
  }
});

test('registry - over evenly spaced draws each version gets exactly its share, whatever the order', () => {
  for (const order of [
    ['1', '2', '3'],
    ['3', '1', '2'],
  ]) {
    const shares: Record<string, number> = { '1': 50, '2': 30, '3': 20 };
    const registry = registryWith(order.map((v) => model('m', v, { traffic: shares[v] })));
    const counts: Record<string, number> = { '1': 0, '2': 0, '3': 0 };
    const n = 10_000;
    for (let i = 0; i < n; i++) counts[registry.route('m', undefined, (i + 0.5) / n).version]!++;
    assert.deepEqual(counts, { '1': 5000, '2': 3000, '3': 2000 }, `declared in order ${order.join(', ')}`);
  }
});

test('registry - a version with share 0 never gets traffic; shares need not add up to 100', () => {
  const registry = registryWith(
    [model('m', '1', { traffic: 0 }), model('m', '2', { traffic: 5 })],
    [0, 0.999],
  );
  assert.equal(registry.route('m').version, '2');
  assert.equal(registry.route('m').version, '2');
  registry.setTraffic('m', { '1': 1, '2': 3 }); // 25% / 75% of what they add up to
  assert.equal(registry.route('m', undefined, 0.2499).version, '1');
  assert.equal(registry.route('m', undefined, 0.25).version, '2');
});

test('registry - route with a version named ignores the split; without a split the newest serves', () => {
  const registry = registryWith([model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })], []);
  for (let i = 0; i < 5; i++) {
    assert.equal(registry.route('m', '2').version, '2', 'no draw for a versioned request');
    assert.equal(registry.route('m', '1').version, '1');
  }
  const plain = registryWith([model('n', '1'), model('n', '2')], []);
  assert.equal(plain.route('n').version, '2', 'no split: the newest, with no draw');
  assert.deepEqual(plain.traffic('n'), {});
});

test('registry - the same key always routes to the same version', () => {
  const registry = registryWith([model('m', '1', { traffic: 50 }), model('m', '2', { traffic: 50 })]);
  const seen = new Set<string>();
  for (let k = 0; k < 64; k++) {
    const key = k / 64;
    const first = registry.route('m', undefined, key).version;
    seen.add(first);
    for (let i = 0; i < 3; i++) assert.equal(registry.route('m', undefined, key).version, first);
  }
  assert.deepEqual([...seen].sort(), ['1', '2']);
});

test('registry - route prefers versions that are ready, and splits again once both are', () => {
  const registry = registryWith(
    [model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })],
    [0.95, 0.95, 0.1, 0.1, 0.95],
  );
  registry.setWorkerModels('w1', [status('m', '1'), status('m', '2', 'loading')]);
  assert.equal(registry.route('m').version, '1', 'v2 is loading: the draw that means v2 goes to v1');
  registry.setWorkerModels('w1', [status('m', '1', 'unavailable'), status('m', '2')]);
  assert.equal(registry.route('m').version, '2');
  assert.equal(registry.route('m').version, '2', 'v1 is down: the draw that means v1 goes to v2');
  registry.setWorkerModels('w1', [status('m', '1'), status('m', '2')]);
  assert.equal(registry.route('m').version, '1');
  assert.equal(registry.route('m').version, '2');
});

test('registry - setTraffic replaces the split, and {} clears it', () => {
  const registry = registryWith([model('m', '1'), model('m', '2')], []);
  assert.equal(registry.route('m').version, '2');
  registry.setTraffic('m', { '1': 100 });
  assert.deepEqual(registry.traffic('m'), { '1': 100 });
  assert.equal(registry.route('m', undefined, 0.999).version, '1');
  registry.setTraffic('m', { '1': 50, '2': 50 });
  assert.equal(registry.route('m', undefined, 0.49).version, '1');
  assert.equal(registry.route('m', undefined, 0.5).version, '2');
  registry.setTraffic('m', {});
  assert.deepEqual(registry.traffic('m'), {});
  assert.equal(registry.route('m').version, '2', 'cleared: the newest, with no draw');
});

test('registry - setTraffic refuses a bad split and keeps the one it had', () => {
  const registry = registryWith([model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })]);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ '1': 50, '3': 50 }, /model "m" has no served version "3" \(served: 2, 1\)/],
    [{ '1': -1, '2': 50 }, /share of version "1" must be a number from 0 to 100, got -1/],
    [{ '1': 101 }, /share of version "1" must be a number from 0 to 100, got 101/],
    [{ '1': '50' }, /share of version "1" must be a number from 0 to 100, got "50"/],
    [{ '1': null }, /got null/],
    [{ '1': Number.NaN }, /share of version "1" must be a number/],
    [{ '1': 0, '2': 0 }, /at least one version needs a share above 0/],
  ];
  for (const [split, message] of bad) {
    const err = caught(() => registry.setTraffic('m', split as Record<string, number>));
    assertCode(err, 'INVALID_ARGUMENT', message);
    assert.deepEqual(registry.traffic('m'), { '1': 90, '2': 10 }, `unchanged after ${JSON.stringify(split)}`);
  }
  assertCode(
    caught(() => registry.setTraffic('nope', { '1': 100 })),
    'MODEL_NOT_FOUND',
    /model "nope" is not served here \(models: m\)/,
  );
});

test('registry - a version the policy does not serve cannot take traffic', () => {
  const registry = registryWith([
    model('m', '1', { versionPolicy: { specific: ['1'] }, traffic: 50 }),
    model('m', '2', { traffic: 50 }),
  ]);
  assert.deepEqual(registry.traffic('m'), { '1': 50 }, 'the unserved version drops out of the split');
  assert.equal(registry.route('m', undefined, 0.99).version, '1');
  assertCode(
    caught(() => registry.setTraffic('m', { '2': 100 })),
    'INVALID_ARGUMENT',
    /no served version "2"/,
  );
});

test('registry - an unloaded name is not routed (whatever its split) and load serves it again', () => {
  const registry = registryWith([model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })], [0.5]);
  registry.setWorkerModels('w1', [status('m', '1'), status('m', '2')]);
  registry.markUnloaded('m');
  assertCode(
    caught(() => registry.route('m')),
    'MODEL_NOT_FOUND',
    /model "m" is unloaded; POST \/v2\/repository\/models\/m\/load to serve it again/,
  );
  assertCode(
    caught(() => registry.route('m', '1')),
    'MODEL_NOT_FOUND',
    /is unloaded/,
  );
  assert.deepEqual(
    registry.index().map((e) => [e.version, e.state, e.reason]),
    [
      ['2', 'UNLOADING', 'unloaded'],
      ['1', 'UNLOADING', 'unloaded'],
    ],
    'workers still host it: unloading',
  );
  registry.setWorkerModels('w1', []);
  assert.deepEqual(
    registry.index().map((e) => e.state),
    ['UNAVAILABLE', 'UNAVAILABLE'],
  );
  registry.declare(
    registry.declared().filter((m) => m.name === 'm'),
    'm',
  );
  assert.equal(registry.isUnloaded('m'), false);
  assert.equal(registry.route('m').version, '1');
});

test('registry - declaring a newer version under "latest 1" stops serving the old one', () => {
  const registry = registryWith([model('m', '1', { versionPolicy: { latest: 1 } })]);
  registry.setWorkerModels('w1', [status('m', '1')]);
  const served = registry.declare([model('m', '2', { versionPolicy: { latest: 1 } })], 'm');
  assert.deepEqual(
    served.map((c) => c.version),
    ['2'],
  );
  // v1 stays an entry while a worker hosts it, but is no longer declared as served
  assert.equal(registry.resolve('m').version, '2');
  registry.setWorkerModels('w1', [status('m', '2')]);
  assert.deepEqual(registry.versions('m'), ['2'], 'forgotten once no worker hosts it');
  assertCode(
    caught(() => registry.resolve('m', '1')),
    'MODEL_NOT_FOUND',
    /its version policy serves the latest 1/,
  );
});

test('registry - allReady leaves out a name an operator unloaded', () => {
  const registry = registryWith([model('m', '1'), model('n', '1')]);
  registry.setWorkerModels('w1', [status('n', '1')]);
  assert.equal(registry.allReady(), false, 'm has no ready replica');
  registry.markUnloaded('m');
  assert.equal(registry.allReady(), true, 'm is not served, n is ready');
  registry.markUnloaded('n');
  assert.equal(registry.allReady(), false, 'nothing served is not ready');
});
