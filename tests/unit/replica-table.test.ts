/**
 * The replica table on its own: entries made by attach (a served config) or by a worker's
 * report, the schema a version is checked against, which replicas get traffic, and when an
 * entry is forgotten. No policy, traffic or repository state is involved.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, modelSchema } from '../../src/config/index.ts';
import type { ModelStatus } from '../../src/protocol/index.ts';
import { ReplicaTable } from '../../src/registry/index.ts';
import { assertCode, caught } from '../fixtures/assert.ts';

const X = [{ name: 'x', datatype: 'FP32', shape: [-1, 2] }];
const Y = [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }];

function model(name: string, version: string, extra: Record<string, unknown> = {}): ModelConfig {
  return modelSchema.parse({ name, version, backend: 'sim', inputs: X, outputs: Y, ...extra });
}

/** What a worker reports for name@version; `width` changes the schema it reports. */
function status(
  name: string,
  version: string,
  state: ModelStatus['state'] = 'ready',
  width = 7,
): ModelStatus {
  return {
    name,
    version,
    state,
    platform: 'onnxruntime',
    inputs: [{ name: 'in', datatype: 'UINT8', shape: [-1, width] }],
    outputs: [{ name: 'out', datatype: 'FP32', shape: [-1] }],
    batchable: false,
    maxBatchSize: 0,
  };
}

test('replica table - attach makes an entry with the config and its declared schema, versions newest first', () => {
  const table = new ReplicaTable();
  for (const v of ['2', '10', 'b', '9']) table.attach(model('m', v));
  assert.deepEqual(table.versions('m'), ['10', '9', '2', 'b']);
  assert.deepEqual(table.versions('other'), []);
  const entry = table.get('m', '9')!;
  assert.equal(entry.config?.version, '9');
  assert.equal(entry.spec?.platform, 'infergrid_sim');
  assert.equal(entry.spec?.inputs[0]?.name, 'x');
  assert.equal(entry.specKey, undefined, 'the schema came from config, not a replica');
  assert.equal(table.attach(model('m', '9')).version, '9', 'attaching again keeps one entry');
  assert.deepEqual(table.versions('m'), ['10', '9', '2', 'b']);
  assert.deepEqual(table.names(), ['m']);
});

test('replica table - a config with no declared schema leaves the schema unknown until a replica is ready', () => {
  const table = new ReplicaTable();
  const entry = table.attach(modelSchema.parse({ name: 'm', backend: 'onnx', path: 'm.onnx' }));
  assert.equal(entry.spec, undefined);
  assertCode(
    caught(() => table.specOf(entry)),
    'UNAVAILABLE',
    /model "m" version "1" has no loaded replica yet/,
  );
  table.setWorkerModels('w1', [status('m', '1', 'loading')]);
  assert.equal(entry.spec, undefined, 'a loading replica does not set the schema');
  table.setWorkerModels('w1', [status('m', '1', 'ready')]);
  assert.equal(table.specOf(entry).inputs[0]?.name, 'in');
});

test('replica table - a worker report replaces its last one; replica states and ready ids follow', () => {
  const table = new ReplicaTable();
  const entry = table.attach(model('m', '1'));
  table.setWorkerModels('w1', [status('m', '1')]);
  table.setWorkerModels('w2', [status('m', '1', 'loading')]);
  assert.deepEqual(table.readyReplicas(entry), ['w1']);
  assert.deepEqual([...entry.replicas.keys()], ['w1', 'w2'], 'in registration order');

  assert.equal(table.setReplicaState('w2', 'm', '1', 'ready'), true);
  assert.equal(table.setReplicaState('w2', 'm', '1', 'ready'), false, 'no change, no news');
  assert.equal(table.setReplicaState('w3', 'm', '1', 'ready'), false, 'an unknown replica');
  assert.equal(table.setReplicaState('w1', 'nope', '1', 'ready'), false, 'an unknown model');
  assert.deepEqual(table.readyReplicas(entry), ['w1', 'w2']);

  table.setWorkerModels('w1', []);
  assert.deepEqual(table.readyReplicas(entry), ['w2']);
  table.removeWorker('w2');
  assert.equal(entry.replicas.size, 0);
  assert.equal(table.hasReadyReplica(entry), false);
  assert.equal(table.get('m', '1'), entry, 'an attached entry stays with no replica');
});

test('replica table - the longest-registered ready replica sets the schema; others that differ get no traffic', () => {
  const table = new ReplicaTable();
  const entry = table.attach(model('m', '1'));
  table.setWorkerModels('w1', [status('m', '1', 'ready', 7)]);
  table.setWorkerModels('w2', [status('m', '1', 'ready', 9)]);
  assert.deepEqual(table.specOf(entry).inputs[0]?.shape, [-1, 7]);
  assert.deepEqual(table.readyReplicas(entry), ['w1']);
  assert.equal(table.hasReadyReplica(entry), true);
  table.setReplicaState('w1', 'm', '1', 'unavailable');
  assert.deepEqual(table.specOf(entry).inputs[0]?.shape, [-1, 9], 'the next ready replica');
  assert.deepEqual(table.readyReplicas(entry), ['w2']);
  table.removeWorker('w2');
  assert.equal(table.specOf(entry).inputs[0]?.name, 'x', 'no ready replica: the declared schema');
  assert.equal(entry.specKey, undefined);
});

test('replica table - quantized comes from the config; a reported-only entry says false', () => {
  const table = new ReplicaTable();
  const entry = table.attach(model('q', '1', { quantized: true }));
  table.setWorkerModels('w1', [status('q', '1'), status('extra', '1')]);
  assert.equal(table.specOf(entry).quantized, true);
  assert.equal(table.specOf(table.get('extra', '1')!).quantized, false);
});

test('replica table - detach keeps an entry while a worker hosts it and forgets it after', () => {
  const table = new ReplicaTable();
  table.attach(model('m', '1'));
  table.attach(model('m', '2'));
  table.setWorkerModels('w1', [status('m', '1', 'loading')]);
  table.detach('m', '1');
  const stale = table.get('m', '1')!;
  assert.equal(stale.config, undefined, 'no longer served');
  assert.equal(stale.spec, undefined, 'no config and no ready replica: no schema');
  assert.deepEqual(table.versions('m'), ['2', '1']);
  table.removeWorker('w1');
  assert.equal(table.get('m', '1'), undefined);
  assert.deepEqual(table.versions('m'), ['2']);
  table.detach('m', '2');
  assert.deepEqual(table.versions('m'), []);
  assert.deepEqual(table.names(), []);
  table.detach('m', '3'); // nothing to detach: no error
});

test('replica table - attach with a new config for the same version replaces its schema', () => {
  const table = new ReplicaTable();
  const first = table.attach(model('m', '1'));
  const wider = model('m', '1', { inputs: [{ name: 'wide', datatype: 'FP32', shape: [-1, 4] }] });
  const second = table.attach(wider);
  assert.equal(second, first, 'the same live entry');
  assert.equal(first.config, wider);
  assert.equal(first.spec?.inputs[0]?.name, 'wide');
});

test('replica table - an entry only workers reported lives as long as a worker hosts it', () => {
  const table = new ReplicaTable();
  table.setWorkerModels('w1', [status('a', '1')]);
  table.setWorkerModels('w2', [status('a', '2'), status('b', '1')]);
  assert.deepEqual(table.names(), ['a', 'b']);
  assert.deepEqual(table.versions('a'), ['2', '1']);
  assert.equal(table.get('a', '1')?.config, undefined);
  table.removeWorker('w1');
  assert.equal(table.get('a', '1'), undefined);
  assert.deepEqual(
    [...table.entries()].map((e) => `${e.name}@${e.version}`),
    ['a@2', 'b@1'],
  );
  table.removeWorker('w2');
  assert.deepEqual([...table.entries()], []);
});

test('replica table - the generation follows the config and the model files, and is the same after a restart', () => {
  const built = (options: Record<string, unknown>, fingerprint: string | undefined) => {
    const table = new ReplicaTable();
    table.attach(model('m', '1', options));
    table.setWorkerModels('w1', [{ ...status('m', '1'), ...(fingerprint ? { fingerprint } : {}) }]);
    return table.get('m', '1')!.generation;
  };
  const first = built({ options: { factor: 2 } }, 'aa');
  assert.match(first, /^[0-9a-f]{32}$/);
  assert.equal(
    built({ options: { factor: 2 } }, 'aa'),
    first,
    'same config and file: same generation (a restart keeps the cache)',
  );
  assert.notEqual(built({ options: { factor: 3 } }, 'aa'), first, 'another config');
  assert.notEqual(built({ options: { factor: 2 } }, 'bb'), first, 'another model file');

  const table = new ReplicaTable();
  const before = table.attach(model('m', '1')).generation;
  table.setWorkerModels('w1', [{ ...status('m', '1'), fingerprint: 'cc' }]);
  const loaded = table.get('m', '1')!.generation;
  assert.notEqual(loaded, before, 'a replica reporting its file changes it');
  table.attach(model('m', '1', { options: { reloaded: true } }));
  assert.notEqual(table.get('m', '1')!.generation, loaded, 'a run-time load with a new config changes it');
});
