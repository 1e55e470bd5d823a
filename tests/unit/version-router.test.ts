/**
 * Version routing on its own, over a real replica table and a 20-line fake of the repository
 * state (declared configs, unloaded names, readiness): served versions and the split they
 * state, resolve's errors, route's draw and its preference for ready versions, setTraffic.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, modelSchema } from '../../src/config/index.ts';
import {
  type ModelEntry,
  ReplicaTable,
  type VersionRepository,
  VersionRouter,
  modelKey,
} from '../../src/registry/index.ts';
import { assertCode, caught } from '../fixtures/assert.ts';

const X = [{ name: 'x', datatype: 'FP32', shape: [-1] }];

function model(name: string, version: string, extra: Record<string, unknown> = {}): ModelConfig {
  return modelSchema.parse({ name, version, backend: 'sim', inputs: X, outputs: X, ...extra });
}

/** The repository state as version routing sees it: a list, a set of unloaded names, a set of ready keys. */
class FakeRepository implements VersionRepository {
  readonly models: ModelConfig[];
  readonly unloaded = new Set<string>();
  readonly ready = new Set<string>();
  constructor(models: ModelConfig[]) {
    this.models = models;
  }
  declaredOf(name: string): ModelConfig[] {
    return this.models.filter((m) => m.name === name);
  }
  isDeclared(name: string, version?: string): boolean {
    return this.models.some((m) => m.name === name && (version === undefined || m.version === version));
  }
  isUnloaded(name: string): boolean {
    return this.unloaded.has(name);
  }
  isReady(entry: ModelEntry): boolean {
    return this.ready.has(modelKey(entry.name, entry.version));
  }
}

/** A router over `models`, with their served versions attached as the registry would. */
function setup(models: ModelConfig[], draws: number[] = []) {
  const replicas = new ReplicaTable();
  const repository = new FakeRepository(models);
  let i = 0;
  const router = new VersionRouter({
    replicas,
    repository,
    random: () => {
      assert.ok(i < draws.length, 'the router drew more random numbers than the test gave');
      return draws[i++]!;
    },
  });
  for (const name of new Set(models.map((m) => m.name)))
    for (const m of router.applyDeclared(name).served) replicas.attach(m);
  return { router, replicas, repository };
}

test('version router - applyDeclared splits served from unserved and takes the served versions’ shares', () => {
  const models = [
    model('m', '1', { versionPolicy: { latest: 2 }, traffic: 5 }),
    model('m', '2', { traffic: 20 }),
    model('m', '3', { traffic: 80 }),
  ];
  const repo = new FakeRepository(models);
  const r = new VersionRouter({ replicas: new ReplicaTable(), repository: repo });
  const { served, unserved } = r.applyDeclared('m');
  assert.deepEqual(
    served.map((m) => m.version),
    ['2', '3'],
    'in declared order',
  );
  assert.deepEqual(
    unserved.map((m) => m.version),
    ['1'],
  );
  assert.deepEqual(r.traffic('m'), { '2': 20, '3': 80 }, 'an unserved version’s share is dropped');
  assert.deepEqual(r.policy('m'), { latest: 2 });
  assert.deepEqual(
    r.servedConfigs('m').map((m) => m.version),
    ['2', '3'],
  );
  assert.equal(r.policy('unknown'), 'all');
});

test('version router - declaring again resets a split set at run time to the configs’ shares', () => {
  const { router } = setup([model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })]);
  router.setTraffic('m', { '2': 100 });
  assert.deepEqual(router.traffic('m'), { '2': 100 });
  router.applyDeclared('m');
  assert.deepEqual(router.traffic('m'), { '1': 90, '2': 10 });
  router.clearTraffic('m');
  assert.deepEqual(router.traffic('m'), {});
});

test('version router - resolve: the version named, else the newest; MODEL_NOT_FOUND says why', () => {
  const { router, repository } = setup([
    model('m', '1', { versionPolicy: { latest: 1 } }),
    model('m', '2'),
    model('n', '1'),
  ]);
  assert.equal(router.resolve('m').version, '2');
  assert.equal(router.resolve('m', '2').version, '2');
  assertCode(
    caught(() => router.resolve('m', '1')),
    'MODEL_NOT_FOUND',
    /^model "m" version "1" is not served: its version policy serves the latest 1 \(served: 2\)$/,
  );
  assertCode(
    caught(() => router.resolve('m', '7')),
    'MODEL_NOT_FOUND',
    /^model "m" has no version "7" \(versions: 2\)$/,
  );
  assertCode(
    caught(() => router.resolve('k')),
    'MODEL_NOT_FOUND',
    /^model "k" is not served here \(models: m, n\)$/,
  );
  repository.unloaded.add('n');
  assertCode(
    caught(() => router.resolve('n', '1')),
    'MODEL_NOT_FOUND',
    /^model "n" is unloaded; POST \/v2\/repository\/models\/n\/load to serve it again$/,
  );
});

test('version router - route draws over the split at its exact boundaries; a named version draws nothing', () => {
  const draws = [0, 0.6999999, 0.7, 0.9999999];
  const { router } = setup([model('m', '1', { traffic: 70 }), model('m', '2', { traffic: 30 })], draws);
  assert.deepEqual(
    draws.map(() => router.route('m').version),
    ['1', '1', '2', '2'],
  );
  assert.equal(router.route('m', '1').version, '1', 'the version named, no draw');
  assert.equal(router.route('m', undefined, 0.75).version, '2', 'a key instead of a draw');
});

test('version router - route prefers ready versions, and an unloaded name is refused whatever its split', () => {
  const { router, repository } = setup([model('m', '1', { traffic: 50 }), model('m', '2', { traffic: 50 })]);
  assert.equal(router.route('m', undefined, 0.9).version, '2', 'none ready: the split as stated');
  repository.ready.add('m@1');
  assert.equal(router.route('m', undefined, 0.9).version, '1', 'only v1 ready: it takes every draw');
  repository.ready.add('m@2');
  assert.equal(router.route('m', undefined, 0.9).version, '2', 'both ready: the split again');
  repository.unloaded.add('m');
  assertCode(
    caught(() => router.route('m', undefined, 0.1)),
    'MODEL_NOT_FOUND',
    /is unloaded/,
  );
});

test('version router - without a split, route is resolve: the newest version, no draw', () => {
  const { router } = setup([model('m', '1'), model('m', '3'), model('m', '2')]);
  assert.equal(router.route('m').version, '3');
  assert.deepEqual(router.traffic('m'), {});
});

test('version router - setTraffic checks every version and share, and a refused split keeps the old one', () => {
  const { router, repository } = setup([model('m', '1', { traffic: 90 }), model('m', '2', { traffic: 10 })]);
  assertCode(
    caught(() => router.setTraffic('m', { '3': 100 })),
    'INVALID_ARGUMENT',
    /^model "m" has no served version "3" \(served: 2, 1\)$/,
  );
  assertCode(
    caught(() => router.setTraffic('m', { '1': 100.5 })),
    'INVALID_ARGUMENT',
    /share of version "1" must be a number from 0 to 100, got 100.5/,
  );
  assertCode(
    caught(() => router.setTraffic('m', { '1': 0 })),
    'INVALID_ARGUMENT',
    /at least one version needs a share above 0/,
  );
  assertCode(
    caught(() => router.setTraffic('none', { '1': 100 })),
    'MODEL_NOT_FOUND',
    /model "none" is not served here/,
  );
  assert.deepEqual(router.traffic('m'), { '1': 90, '2': 10 });
  router.setTraffic('m', { '1': 0, '2': 1 });
  repository.ready.add('m@1');
  assert.equal(
    router.route('m', undefined, 0.1).version,
    '2',
    'a 0 share never draws, even when only it is ready',
  );
  router.setTraffic('m', {});
  assert.deepEqual(router.traffic('m'), {});
});
