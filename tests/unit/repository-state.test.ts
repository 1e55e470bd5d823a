/**
 * Repository state on its own, over a real replica table: declared configs (replaced by
 * name@version, forgotten by name), unloaded and loading names, readiness of models and
 * pipelines, and the repository index with its states and reasons.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, modelSchema } from '../../src/config/index.ts';
import type { ModelStatus } from '../../src/protocol/index.ts';
import { ModelRepositoryState, ReplicaTable } from '../../src/registry/index.ts';

const X = [{ name: 'x', datatype: 'FP32', shape: [-1] }];

function model(name: string, version: string, extra: Record<string, unknown> = {}): ModelConfig {
  return modelSchema.parse({ name, version, backend: 'sim', inputs: X, outputs: X, ...extra });
}

/** A pipeline of one step per model named; `version` pins the first step. */
function pipeline(name: string, steps: string[], version?: string): ModelConfig {
  return modelSchema.parse({
    name,
    backend: 'pipeline',
    inputs: X,
    outputs: X,
    pipeline: {
      steps: steps.map((m, i) => ({
        name: `s${i}`,
        model: m,
        inputs: { x: '$x' },
        ...(i === 0 && version ? { version } : {}),
      })),
      outputs: { x: `s${steps.length - 1}.x` },
    },
  });
}

function status(
  name: string,
  version: string,
  state: ModelStatus['state'] = 'ready',
  error?: string,
): ModelStatus {
  return {
    name,
    version,
    state,
    ...(error ? { error } : {}),
    platform: 'infergrid_sim',
    inputs: X as ModelStatus['inputs'],
    outputs: X as ModelStatus['outputs'],
    batchable: true,
    maxBatchSize: 0,
  };
}

/** Repository state over a table with every declared config attached (all served). */
function setup(models: ModelConfig[]) {
  const replicas = new ReplicaTable();
  const repository = new ModelRepositoryState(replicas, models);
  for (const m of models) replicas.attach(m);
  return { replicas, repository };
}

test('repository state - declare replaces the same name@version, appends others, and clears unloaded', () => {
  const a1 = model('a', '1');
  const { repository } = setup([a1, model('b', '1')]);
  repository.markUnloaded('a');
  const a1again = model('a', '1', { quantized: true });
  repository.declare([a1again, model('a', '2')], 'a');
  assert.equal(repository.isUnloaded('a'), false);
  assert.deepEqual(
    repository.declared().map((m) => `${m.name}@${m.version}`),
    ['a@1', 'b@1', 'a@2'],
    'replaced in place, new ones at the end',
  );
  assert.equal(repository.declaredOf('a')[0], a1again);
  assert.equal(repository.isDeclared('a', '2'), true);
  assert.equal(repository.isDeclared('a', '3'), false);
  assert.equal(repository.isDeclared('b'), true);
  repository.markUnloaded('a');
  repository.forget('a');
  assert.deepEqual(
    repository.declared().map((m) => m.name),
    ['b'],
  );
  assert.equal(repository.isUnloaded('a'), false, 'forgotten: not unloaded either');
});

test('repository state - a model is ready with a ready replica, never while unloaded or loading', () => {
  const { replicas, repository } = setup([model('m', '1')]);
  const entry = replicas.get('m', '1')!;
  assert.equal(repository.isReady(entry), false);
  replicas.setWorkerModels('w1', [status('m', '1')]);
  assert.equal(repository.isReady(entry), true);
  repository.setLoading('m', true);
  assert.equal(repository.isLoading('m'), true);
  assert.equal(repository.isReady(entry), false, 'loading');
  repository.setLoading('m', false);
  repository.markUnloaded('m');
  assert.equal(repository.isReady(entry), false, 'unloaded');
});

test('repository state - a pipeline is ready when every step has a ready version it may go to', () => {
  const { replicas, repository } = setup([
    model('det', '1'),
    model('det', '2'),
    model('rec', '1'),
    pipeline('ocr', ['det', 'rec']),
    pipeline('pinned', ['det', 'rec'], '2'),
  ]);
  const ocr = replicas.get('ocr', '1')!;
  const pinned = replicas.get('pinned', '1')!;
  replicas.setWorkerModels('w1', [status('det', '1'), status('rec', '1', 'loading')]);
  assert.equal(repository.isReady(ocr), false, 'rec has no ready replica');
  replicas.setReplicaState('w1', 'rec', '1', 'ready');
  assert.equal(repository.isReady(ocr), true, 'any det version will do');
  assert.equal(repository.isReady(pinned), false, 'the pinned det@2 is not ready');
  replicas.setWorkerModels('w2', [status('det', '2')]);
  assert.equal(repository.isReady(pinned), true);
  repository.markUnloaded('rec');
  assert.equal(repository.isReady(ocr), false, 'a step model unloaded');
});

test('repository state - a pipeline that runs on its workers is ready when a worker reports it ready', () => {
  const onWorker = modelSchema.parse({
    ...pipeline('ocr', ['det']),
    pipeline: { ...pipeline('ocr', ['det']).pipeline!, runOn: 'worker' },
  });
  const { replicas, repository } = setup([model('det', '1'), onWorker]);
  const ocr = replicas.get('ocr', '1')!;
  replicas.setWorkerModels('w1', [status('det', '1')]);
  assert.equal(repository.isReady(ocr), false, 'its steps ready on a worker is not enough');
  replicas.setWorkerModels('w1', [
    status('det', '1'),
    { ...status('ocr', '1'), platform: 'infergrid_pipeline' },
  ]);
  assert.equal(repository.isReady(ocr), true);
});

test('repository state - allReady needs every served model ready, leaving out unloaded and loading names', () => {
  const { replicas, repository } = setup([model('a', '1'), model('b', '1')]);
  assert.equal(new ModelRepositoryState(new ReplicaTable()).allReady(), false, 'nothing served');
  replicas.setWorkerModels('w1', [status('a', '1')]);
  assert.equal(repository.allReady(), false);
  repository.setLoading('b', true);
  assert.equal(repository.allReady(), true, 'b is being loaded: it does not hold the server back');
  repository.setLoading('b', false);
  repository.markUnloaded('b');
  assert.equal(repository.allReady(), true, 'b is unloaded');
  repository.markUnloaded('a');
  assert.equal(repository.allReady(), false, 'nothing served is not ready');
});

test('repository state - the index shows every declared or reported version with its state and reason', () => {
  const { replicas, repository } = setup([
    model('a', '1'),
    model('b', '1'),
    model('c', '1'),
    model('d', '1'),
    model('e', '1'),
    pipeline('p', ['e']),
  ]);
  // a declared version the policy does not serve has no entry
  repository.declare([model('a', '2', { versionPolicy: { specific: ['1'] } })], 'a');
  replicas.setWorkerModels('w1', [
    status('a', '1'),
    status('b', '1', 'loading'),
    status('c', '1', 'unavailable', 'bad weights'),
    status('extra', '3'),
  ]);
  repository.setLoading('d', true);
  assert.deepEqual(
    repository.index().map((e) => [`${e.name}@${e.version}`, e.state, e.reason]),
    [
      ['a@2', 'UNAVAILABLE', 'not served: the version policy serves versions 1'],
      ['a@1', 'READY', ''],
      ['b@1', 'LOADING', ''],
      ['c@1', 'UNAVAILABLE', 'bad weights'],
      ['d@1', 'LOADING', ''],
      ['e@1', 'UNAVAILABLE', 'no worker hosts it'],
      ['extra@3', 'READY', ''],
      ['p@1', 'UNAVAILABLE', 'a step model has no ready replica'],
    ],
  );
  repository.markUnloaded('a');
  repository.markUnloaded('e');
  const states = Object.fromEntries(repository.index().map((e) => [`${e.name}@${e.version}`, e.state]));
  assert.equal(states['a@1'], 'UNLOADING', 'a worker still hosts it');
  assert.equal(states['e@1'], 'UNAVAILABLE', 'unloaded and hosted nowhere');
});
