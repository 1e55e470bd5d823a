import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ModelConfig, configSchema } from '../../src/config/index.ts';
import type { ModelStatus } from '../../src/protocol/index.ts';
import {
  type ModelSchema,
  ModelRegistry,
  type TensorDescriptor,
  compareVersionsDesc,
  validateInputs,
} from '../../src/registry/index.ts';
import { caught } from '../fixtures/assert.ts';

function invalid(model: ModelSchema, inputs: TensorDescriptor[], outputs?: string[]): string {
  const err = caught(() => validateInputs(model, inputs, outputs));
  assert.equal(err.code, 'INVALID_ARGUMENT');
  // a client's bad input is never retried and never counts against a worker
  assert.equal(err.retryable, false);
  assert.equal(err.isWorkerFault, false);
  return err.message;
}

const REC: ModelSchema = {
  name: 'rec',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, -1] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, -1, 97] }],
  batchable: true,
  maxBatchSize: 8,
};

const TWO: ModelSchema = {
  name: 'two',
  inputs: [
    { name: 'a', datatype: 'FP32', shape: [-1, 4] },
    { name: 'b', datatype: 'INT64', shape: [-1] },
  ],
  outputs: [
    { name: 'out1', datatype: 'FP32', shape: [-1] },
    { name: 'out2', datatype: 'FP32', shape: [-1] },
  ],
  batchable: true,
  maxBatchSize: 0,
};

// ---------------------------------------------------------------- validateInputs

test('validate - inputs matching the schema pass, -1 dims taking any size', () => {
  validateInputs(REC, [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 320] }]);
  validateInputs(REC, [{ name: 'x', datatype: 'FP32', shape: [8, 3, 48, 1] }], ['y']);
  validateInputs(REC, [{ name: 'x', datatype: 'FP32', shape: [0, 3, 48, 0] }], []);
  validateInputs(TWO, [
    { name: 'b', datatype: 'INT64', shape: [1000] },
    { name: 'a', datatype: 'FP32', shape: [1000, 4] },
  ]);
});

test('validate - an unknown input is named along with every input the model takes', () => {
  assert.equal(
    invalid(REC, [{ name: 'image', datatype: 'FP32', shape: [1, 3, 48, 320] }]),
    'model "rec": unknown input "image"; the model takes "x" FP32 [-1,3,48,-1]',
  );
  assert.equal(
    invalid(TWO, [{ name: 'c', datatype: 'FP32', shape: [1] }]),
    'model "two": unknown input "c"; the model takes "a" FP32 [-1,4], "b" INT64 [-1]',
  );
});

test('validate - a wrong datatype and shape says what was expected and what came', () => {
  assert.equal(
    invalid(REC, [{ name: 'x', datatype: 'INT64', shape: [3, 48] }]),
    'model "rec": input "x": expected FP32 [-1,3,48,-1], got INT64 [3,48]',
  );
});

test('validate - a wrong datatype alone, a wrong fixed dim alone and a wrong rank are each refused', () => {
  assert.match(
    invalid(REC, [{ name: 'x', datatype: 'FP64', shape: [1, 3, 48, 10] }]),
    /input "x": expected FP32 \[-1,3,48,-1\], got FP64 \[1,3,48,10\]$/,
  );
  assert.match(
    invalid(REC, [{ name: 'x', datatype: 'FP32', shape: [1, 1, 48, 10] }]),
    /expected FP32 \[-1,3,48,-1\], got FP32 \[1,1,48,10\]$/,
  );
  assert.match(
    invalid(REC, [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 10, 1] }]),
    /got FP32 \[1,3,48,10,1\]$/,
  );
  assert.match(invalid(REC, [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48] }]), /got FP32 \[1,3,48\]$/);
});

test('validate - a shape with negative or fractional dims is refused before it is compared', () => {
  assert.match(
    invalid(REC, [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 10] }]),
    /input "x": shape must be a list of non-negative integers, got \[-1,3,48,10\]/,
  );
  assert.match(
    invalid(REC, [{ name: 'x', datatype: 'FP32', shape: [1.5, 3, 48, 10] }]),
    /shape must be a list of non-negative integers/,
  );
});

test('validate - a missing input is named with its datatype and shape', () => {
  assert.equal(
    invalid(TWO, [{ name: 'a', datatype: 'FP32', shape: [2, 4] }]),
    'model "two": missing input "b" INT64 [-1]',
  );
  assert.equal(invalid(TWO, []), 'model "two": missing inputs "a" FP32 [-1,4], "b" INT64 [-1]');
});

test('validate - the same input given twice is refused', () => {
  const x: TensorDescriptor = { name: 'x', datatype: 'FP32', shape: [1, 3, 48, 10] };
  assert.equal(invalid(REC, [x, x]), 'model "rec": input "x" is given twice');
});

test('validate - a batch over maxBatchSize is refused, one at the limit passes', () => {
  validateInputs(REC, [{ name: 'x', datatype: 'FP32', shape: [8, 3, 48, 10] }]);
  assert.equal(
    invalid(REC, [{ name: 'x', datatype: 'FP32', shape: [9, 3, 48, 10] }]),
    `model "rec": input "x": batch of 9 is over the model's maxBatchSize 8; split the request`,
  );
  // maxBatchSize 0 means no limit; a model that does not batch has no batch dimension to limit
  validateInputs(TWO, [
    { name: 'a', datatype: 'FP32', shape: [100000, 4] },
    { name: 'b', datatype: 'INT64', shape: [100000] },
  ]);
  validateInputs({ ...REC, batchable: false }, [{ name: 'x', datatype: 'FP32', shape: [9, 3, 48, 10] }]);
});

test('validate - inputs that disagree on the batch size are refused', () => {
  assert.equal(
    invalid(TWO, [
      { name: 'a', datatype: 'FP32', shape: [2, 4] },
      { name: 'b', datatype: 'INT64', shape: [3] },
    ]),
    'model "two": inputs disagree on the batch size: "a" has 2, "b" has 3',
  );
  // without batching the first dimensions are unrelated
  validateInputs({ ...TWO, batchable: false }, [
    { name: 'a', datatype: 'FP32', shape: [2, 4] },
    { name: 'b', datatype: 'INT64', shape: [3] },
  ]);
});

test('validate - an unknown output name is refused, listing the outputs', () => {
  const a: TensorDescriptor = { name: 'a', datatype: 'FP32', shape: [2, 4] };
  const b: TensorDescriptor = { name: 'b', datatype: 'INT64', shape: [2] };
  validateInputs(TWO, [a, b], ['out2', 'out1']);
  assert.equal(
    invalid(TWO, [a, b], ['out1', 'logits']),
    'model "two": unknown output "logits"; the model has outputs "out1", "out2"',
  );
});

// ---------------------------------------------------------------- ModelRegistry

function models(list: readonly Record<string, unknown>[]): ModelConfig[] {
  return configSchema.parse({ models: list }).models;
}

const SIM_SCHEMA = {
  backend: 'sim',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 2] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 2] }],
};

function status(name: string, version: string, state: ModelStatus['state']): ModelStatus {
  return {
    name,
    version,
    state,
    platform: 'onnxruntime',
    inputs: [{ name: 'in', datatype: 'UINT8', shape: [-1, 7] }],
    outputs: [{ name: 'out', datatype: 'FP32', shape: [-1] }],
    batchable: false,
    maxBatchSize: 0,
  };
}

test('registry - without a version, resolve picks the newest, comparing numbers as numbers', () => {
  const r = new ModelRegistry(
    models([
      { name: 'm', version: '9', ...SIM_SCHEMA },
      { name: 'm', version: '10', ...SIM_SCHEMA },
      { name: 'm', version: 2, ...SIM_SCHEMA },
    ]),
  );
  assert.equal(r.resolve('m').version, '10');
  assert.deepStrictEqual(r.versions('m'), ['10', '9', '2']);
  assert.equal(r.resolve('m', '9').version, '9');
  assert.equal(r.resolve('m', '2').config?.name, 'm');
  assert.ok(compareVersionsDesc('10', '9') < 0);
  assert.ok(compareVersionsDesc('b', 'a') < 0);
  assert.ok(compareVersionsDesc('9', '10') > 0);
});

test('registry - the newest version does not depend on the order versions were declared', () => {
  const newest = (order: string[]): string =>
    new ModelRegistry(models(order.map((version) => ({ name: 'm', version, ...SIM_SCHEMA })))).resolve('m')
      .version;
  assert.equal(newest(['2', '10', '1a']), newest(['1a', '2', '10']));
});

test('registry - an unknown model or version is MODEL_NOT_FOUND naming what exists', () => {
  const r = new ModelRegistry(
    models([
      { name: 'rec', version: '1', ...SIM_SCHEMA },
      { name: 'det', version: '3', ...SIM_SCHEMA },
      { name: 'det', version: '11', ...SIM_SCHEMA },
    ]),
  );
  const model = caught(() => r.resolve('cls'));
  assert.equal(model.code, 'MODEL_NOT_FOUND');
  assert.equal(model.message, 'model "cls" is not served here (models: det, rec)');
  const version = caught(() => r.resolve('det', '4'));
  assert.equal(version.code, 'MODEL_NOT_FOUND');
  assert.equal(version.message, 'model "det" has no version "4" (versions: 11, 3)');
  assert.equal(caught(() => new ModelRegistry([]).resolve('x')).message, 'model "x" is not served here');
});

test('registry - replicas follow what each worker reports, and removeWorker forgets a worker', () => {
  const r = new ModelRegistry(models([{ name: 'm', version: '1', ...SIM_SCHEMA }]));
  let changes = 0;
  r.on('changed', () => changes++);
  const entry = r.resolve('m');
  assert.deepStrictEqual(r.readyReplicas(entry), []);

  r.setWorkerModels('w1', [status('m', '1', 'ready')]);
  r.setWorkerModels('w2', [status('m', '1', 'loading')]);
  assert.deepStrictEqual(r.readyReplicas(entry), ['w1']);
  assert.equal(entry.replicas.get('w2')?.state, 'loading');

  r.setReplicaState('w2', 'm', '1', 'ready');
  assert.deepStrictEqual(r.readyReplicas(entry).sort(), ['w1', 'w2']);
  r.setReplicaState('w2', 'm', '1', 'ready');
  // a report replaces the worker's previous one
  r.setWorkerModels('w1', []);
  assert.deepStrictEqual(r.readyReplicas(entry), ['w2']);
  r.removeWorker('w2');
  assert.deepStrictEqual(r.readyReplicas(entry), []);
  assert.equal(entry.replicas.size, 0);
  // setWorkerModels x3, one real state change (the repeated one is not), removeWorker
  assert.equal(changes, 5);
});

test('registry - allReady needs a ready replica of every model, and at least one model', () => {
  assert.equal(new ModelRegistry([]).allReady(), false);
  const r = new ModelRegistry(
    models([
      { name: 'a', version: '1', ...SIM_SCHEMA },
      { name: 'b', version: '1', ...SIM_SCHEMA },
    ]),
  );
  assert.equal(r.allReady(), false);
  r.setWorkerModels('w1', [status('a', '1', 'ready'), status('b', '1', 'loading')]);
  assert.equal(r.allReady(), false);
  r.setWorkerModels('w2', [status('b', '1', 'ready')]);
  assert.equal(r.allReady(), true);
  r.removeWorker('w2');
  assert.equal(r.allReady(), false);
});

test('registry - a ready replica’s schema replaces the declared one; a model nobody loaded has none', () => {
  const r = new ModelRegistry(models([{ name: 'm', version: '1', ...SIM_SCHEMA }]));
  const entry = r.resolve('m');
  assert.equal(r.specOf(entry).inputs[0]?.name, 'x');
  r.setWorkerModels('w1', [status('m', '1', 'ready')]);
  const spec = r.specOf(entry);
  assert.equal(spec.inputs[0]?.name, 'in');
  assert.equal(spec.platform, 'onnxruntime');
  assert.notEqual(entry.specKey, undefined, 'the schema came from a replica');

  // a model only a worker knows about is served under its name, schema from the worker
  r.setWorkerModels('w2', [status('extra', '5', 'loading')]);
  const extra = r.resolve('extra');
  assert.equal(extra.config, undefined);
  const err = caught(() => r.specOf(extra));
  assert.equal(err.code, 'UNAVAILABLE');
  r.setWorkerModels('w2', [status('extra', '5', 'ready')]);
  assert.equal(r.specOf(extra).inputs[0]?.datatype, 'UINT8');
});

test('registry - a model only workers reported is forgotten when its last replica leaves', () => {
  const r = new ModelRegistry([]);
  r.setWorkerModels('w1', [status('a', '1', 'ready')]);
  r.setWorkerModels('w2', [status('a', '2', 'ready')]);
  assert.equal(r.resolve('a').version, '2');
  r.removeWorker('w1');
  assert.equal(caught(() => r.resolve('a', '1')).code, 'MODEL_NOT_FOUND');
  assert.deepEqual(r.versions('a'), ['2']);
  assert.equal(r.allReady(), true, 'a version nobody serves any more does not keep the server unready');
  r.removeWorker('w2');
  assert.equal(caught(() => r.resolve('a')).message, 'model "a" is not served here');
});

test('registry - the schema follows the ready replicas, and traffic goes only to replicas that share it', () => {
  const r = new ModelRegistry(models([{ name: 'm', version: '1', ...SIM_SCHEMA }]));
  const entry = r.resolve('m');
  const other = {
    ...status('m', '1', 'ready'),
    inputs: [{ name: 'in', datatype: 'UINT8' as const, shape: [-1, 9] }],
  };
  r.setWorkerModels('w1', [status('m', '1', 'ready')]);
  r.setWorkerModels('w2', [other]);
  assert.deepEqual(
    r.specOf(entry).inputs[0]?.shape,
    [-1, 7],
    'the longest-registered ready replica sets the schema',
  );
  assert.deepEqual(r.readyReplicas(entry), ['w1'], 'w2 would refuse what the coordinator accepts');
  r.removeWorker('w1');
  assert.deepEqual(r.specOf(entry).inputs[0]?.shape, [-1, 9]);
  assert.deepEqual(r.readyReplicas(entry), ['w2']);
  // a re-registration with a new schema is followed
  r.setWorkerModels('w2', [status('m', '1', 'ready')]);
  assert.deepEqual(r.specOf(entry).inputs[0]?.shape, [-1, 7]);
  // with no replica left, the declared schema is what is known
  r.removeWorker('w2');
  assert.equal(r.specOf(entry).inputs[0]?.name, 'x');
  assert.deepEqual(r.readyReplicas(entry), []);
});
