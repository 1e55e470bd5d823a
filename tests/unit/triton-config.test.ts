import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import {
  findTritonVersions,
  fromTritonConfig,
  isTritonConfig,
  modelSchema,
  toTritonConfig,
} from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';

/** The Triton config of the demo's text-direction classifier, as a Triton user writes it. */
const CLS = {
  name: 'cls',
  platform: 'onnxruntime_onnx',
  max_batch_size: 8,
  input: [{ name: 'x', data_type: 'TYPE_FP32', format: 'FORMAT_NONE', dims: [3, 48, 192] }],
  output: [{ name: 'softmax_0.tmp_0', data_type: 'TYPE_FP32', dims: [2], label_filename: 'labels.txt' }],
  dynamic_batching: { preferred_batch_size: [4, 8], max_queue_delay_microseconds: 2500 },
  instance_group: [
    { name: 'a', kind: 'KIND_CPU', count: 2 },
    { kind: 'KIND_AUTO', count: 1 },
  ],
  version_policy: { specific: { versions: [1, 3] } },
  response_cache: { enable: true },
};

function refusal(fn: () => unknown): InfergridError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InfergridError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

test('triton config - which shape a load body is: Triton keys or a backend not ours', () => {
  assert.equal(isTritonConfig(CLS), true);
  assert.equal(isTritonConfig({ name: 'm', backend: 'onnxruntime' }), true);
  assert.equal(isTritonConfig({ name: 'm', max_batch_size: 0 }), true);
  assert.equal(isTritonConfig({ name: 'm', backend: 'onnx', path: 'm.onnx', maxBatchSize: 4 }), false);
  assert.equal(isTritonConfig({ name: 'm', backend: 'sim', inputs: [] }), false);
  assert.equal(isTritonConfig('{}'), false);
});

test('triton config - every mapped field becomes the engine setting it means', () => {
  const { model, modelFilename, labelFiles } = fromTritonConfig(CLS, 'cls');
  assert.equal(modelFilename, 'model.onnx');
  assert.deepEqual(labelFiles, { 'softmax_0.tmp_0': 'labels.txt' });
  assert.deepEqual(model, {
    name: 'cls',
    backend: 'onnx',
    batchable: true,
    maxBatchSize: 8,
    // the batch dimension Triton leaves out of dims is the first one here
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
    outputs: [{ name: 'softmax_0.tmp_0', datatype: 'FP32', shape: [-1, 2] }],
    labels: { 'softmax_0.tmp_0': 'labels.txt' },
    batching: { enabled: true, preferredBatchSizes: [4, 8], maxQueueDelayMs: 2.5, instances: 3 },
    versionPolicy: { specific: ['1', '3'] },
    cache: { enabled: true },
  });
  // and the engine's own schema takes it once a path and version are added
  const parsed = modelSchema.parse({ ...model, path: '/r/cls/1/model.onnx', version: '1' });
  assert.equal(parsed.batching.instances, 3);
});

test('triton config - max_batch_size 0: dims are whole shapes and the model does not batch', () => {
  const { model } = fromTritonConfig(
    {
      backend: 'onnxruntime',
      max_batch_size: 0,
      input: [{ name: 'a', data_type: 'TYPE_STRING', dims: ['-1'] }],
      output: [{ name: 'b', data_type: 'TYPE_INT64', dims: [-1, 4] }],
      default_model_filename: 'net.onnx',
    },
    'm',
  );
  assert.equal(model.batchable, false);
  assert.equal(model.maxBatchSize, 0);
  assert.deepEqual(model.inputs, [{ name: 'a', datatype: 'BYTES', shape: [-1] }]);
  assert.deepEqual(model.outputs, [{ name: 'b', datatype: 'INT64', shape: [-1, 4] }]);
  // Triton's default version policy: the latest one
  assert.deepEqual(model.versionPolicy, { latest: 1 });
});

test('triton config - version policies: latest, all, specific', () => {
  const policy = (version_policy: unknown) =>
    fromTritonConfig({ platform: 'onnxruntime_onnx', version_policy }, 'm').model.versionPolicy;
  assert.deepEqual(policy({ latest: { num_versions: 2 } }), { latest: 2 });
  assert.deepEqual(policy({ latest: { num_versions: '3' } }), { latest: 3 });
  assert.equal(policy({ all: {} }), 'all');
  assert.deepEqual(policy({ specific: { versions: ['2'] } }), { specific: ['2'] });
  assert.match(refusal(() => policy({ newest: {} })).message, /version_policy: must be/);
});

test('triton config - KIND_GPU, TensorRT and reshape are refused, each named', () => {
  const e = refusal(() =>
    fromTritonConfig(
      {
        platform: 'tensorrt_plan',
        max_batch_size: 4,
        input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [4], reshape: { shape: [2, 2] } }],
        instance_group: [{ kind: 'KIND_GPU', count: 1, gpus: [0] }],
      },
      'm',
    ),
  );
  assert.equal(e.code, 'INVALID_ARGUMENT');
  assert.equal(e.httpStatus, 400);
  assert.match(e.message, /platform: "tensorrt_plan" is not served here; this engine runs ONNX models/);
  assert.match(e.message, /instance_group\[0\]\.kind: "KIND_GPU" is not supported: .*use KIND_CPU/);
  assert.match(e.message, /instance_group\[0\]\.gpus: not supported by this engine/);
  assert.match(e.message, /input\[0\]\.reshape: not supported by this engine/);
  assert.match(e.message, /has 4 fields/);
});

test('triton config - unknown and unsupported fields are all listed at once', () => {
  const e = refusal(() =>
    fromTritonConfig(
      {
        ...CLS,
        name: 'other',
        maxBatchSize: 4,
        sequence_batching: { max_sequence_idle_microseconds: 5 },
        ensemble_scheduling: { step: [{ model_name: 'a' }] },
        input: [{ name: 'x', data_type: 'TYPE_BF16', dims: [-2], colour: 'red' }],
        dynamic_batching: { max_queue_delay_microseconds: 10, default_queue_policy: { timeout_action: 1 } },
      },
      'cls',
    ),
  );
  assert.deepEqual((e.details as { fields: string[] }).fields, [
    'name: names model "other" but the URL loads "cls"',
    'input[0].colour: unknown field',
    'input[0].data_type: "TYPE_BF16" is not supported; one of TYPE_BOOL, TYPE_UINT8, TYPE_UINT16, TYPE_UINT32, TYPE_UINT64, TYPE_INT8, TYPE_INT16, TYPE_INT32, TYPE_INT64, TYPE_FP16, TYPE_FP32, TYPE_FP64, TYPE_STRING',
    'input[0].dims: must be a list of integers (-1 for a variable size), got [-2]',
    'dynamic_batching.default_queue_policy: not supported by this engine',
    'maxBatchSize: unknown field',
    'sequence_batching: not supported by this engine',
    'ensemble_scheduling: not supported by this engine',
  ]);
});

test('triton config - fields left at their empty value are accepted (a GET answer loads back)', () => {
  const { model } = fromTritonConfig(
    {
      ...CLS,
      batch_input: [],
      optimization: { input_pinned_memory: { enable: false } },
      parameters: {},
      model_warmup: [],
      instance_group: [{ name: 'cls', kind: 'KIND_CPU', count: 1, gpus: [], passive: false }],
    },
    'cls',
  );
  assert.equal((model.batching as { instances: number }).instances, 1);
});

test('triton config - dynamic batching without max_batch_size is refused', () => {
  const e = refusal(() =>
    fromTritonConfig({ platform: 'onnxruntime_onnx', max_batch_size: 0, dynamic_batching: {} }, 'm'),
  );
  assert.match(e.message, /dynamic_batching: needs max_batch_size > 0/);
});

test('triton config - the engine config shown in Triton shape, and read back to the same settings', () => {
  const engine = modelSchema.parse({
    name: 'cls',
    backend: 'onnx',
    path: 'cls.onnx',
    maxBatchSize: 8,
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
    outputs: [{ name: 'y', datatype: 'FP16', shape: [-1, 2] }],
    labels: { y: 'labels.txt' },
    batching: { enabled: true, maxQueueDelayMs: 1.5, preferredBatchSizes: [4], instances: 2 },
  });
  const triton = toTritonConfig({
    name: 'cls',
    config: engine,
    inputs: engine.inputs!,
    outputs: engine.outputs!,
    batchable: true,
    maxBatchSize: 8,
    platform: 'onnxruntime_onnx',
    versionPolicy: { latest: 2 },
  });
  assert.deepEqual(triton, {
    name: 'cls',
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    version_policy: { latest: { num_versions: 2 } },
    max_batch_size: 8,
    input: [{ name: 'x', data_type: 'TYPE_FP32', format: 'FORMAT_NONE', dims: [3, 48, 192] }],
    output: [{ name: 'y', data_type: 'TYPE_FP16', dims: [2], label_filename: 'labels.txt' }],
    dynamic_batching: {
      preferred_batch_size: [4],
      max_queue_delay_microseconds: 1500,
      priority_levels: 2,
      default_priority_level: 2,
    },
    instance_group: [{ name: 'cls', kind: 'KIND_CPU', count: 2 }],
    response_cache: { enable: false },
  });
  const back = fromTritonConfig(triton, 'cls').model;
  assert.deepEqual(back.inputs, engine.inputs);
  assert.deepEqual(back.outputs, engine.outputs);
  assert.deepEqual(back.batching, {
    enabled: true,
    preferredBatchSizes: [4],
    maxQueueDelayMs: 1.5,
    priorityLevels: 2,
    defaultPriorityLevel: 2,
    instances: 2,
  });
});

test('triton config - a model without a batch limit shows max_batch_size 0 and whole shapes', () => {
  const triton = toTritonConfig({
    name: 's',
    config: undefined,
    inputs: [{ name: 'x', datatype: 'BYTES', shape: [-1] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
    batchable: true,
    maxBatchSize: 0,
    platform: 'infergrid_sim',
    versionPolicy: 'all',
  });
  assert.equal(triton.max_batch_size, 0);
  assert.deepEqual(triton.input[0]!.dims, [-1]);
  assert.equal(triton.input[0]!.data_type, 'TYPE_STRING');
  assert.deepEqual(triton.version_policy, { all: {} });
  assert.equal(triton.platform, 'infergrid_sim');
});

function tempDir(t: TestContext): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'infergrid-triton-')));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("triton config - versions found in Triton's layout: numbered folders that hold the file", (t) => {
  const a = tempDir(t);
  const b = tempDir(t);
  for (const v of ['1', '3', '10']) {
    mkdirSync(join(b, 'm', v), { recursive: true });
    writeFileSync(join(b, 'm', v, 'model.onnx'), '');
  }
  mkdirSync(join(b, 'm', '2')); // no file: not a version
  mkdirSync(join(b, 'm', 'old'), { recursive: true });
  writeFileSync(join(b, 'm', 'old', 'model.onnx'), '');
  const found = findTritonVersions([a, b], 'm', 'model.onnx');
  assert.equal(found?.dir, join(b, 'm'));
  assert.deepEqual(
    found?.versions.map((v) => v.version),
    ['1', '3', '10'],
  );
  assert.equal(found?.versions[0]?.path, join(b, 'm', '1', 'model.onnx'));
  assert.equal(findTritonVersions([a, b], 'nothing', 'model.onnx'), undefined);
  assert.deepEqual(findTritonVersions([b], 'm', 'other.onnx')?.versions, []);
  // a name is never a path out of the root
  mkdirSync(join(a, 'inner'));
  assert.equal(findTritonVersions([join(a, 'inner')], '..', 'model.onnx'), undefined);
  assert.equal(findTritonVersions([b], 'm/1', 'model.onnx'), undefined);
  assert.match(
    refusal(() => fromTritonConfig({ platform: 'onnxruntime_onnx' }, '..')).message,
    /name: "\.\." is not a model name/,
  );
});
