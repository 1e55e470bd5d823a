/**
 * The backend contract, run against every backend (sim, js, onnx), then each backend's own
 * behaviour: schema from the model, declared schema reconciled, failures typed.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Backend, type LoadedModel, createBackends } from '../../src/backends/index.ts';
import { type ModelConfig, configSchema } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';
import { ELEMENT_BYTES, type Tensor, bytesOf, elementCount } from '../../src/tensor/index.ts';
import { resolveOcrAssets } from '../../examples/ocr/index.ts';

const backends = createBackends();
const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));
const noWarn = { warn: () => {} };
const live = (): AbortSignal => new AbortController().signal;

function model(raw: Record<string, unknown>): ModelConfig {
  return configSchema.parse({ models: [raw] }).models[0]!;
}

async function load(raw: Record<string, unknown>): Promise<LoadedModel> {
  const config = model(raw);
  return (backends.get(config.backend) as Backend).load(config, noWarn);
}

function fp32(name: string, shape: number[], values?: number[]): Tensor {
  const data = new Float32Array(elementCount(shape));
  if (values) data.set(values);
  return { name, datatype: 'FP32', shape, data: bytesOf(data) };
}

async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof InfergridError, `expected an InfergridError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const SIM = {
  name: 'sim',
  backend: 'sim',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1, 4] }],
};
const { classifierPath } = resolveOcrAssets();
const CONFORMANCE: { label: string; raw: Record<string, unknown>; input: Tensor }[] = [
  { label: 'sim', raw: SIM, input: fp32('x', [2, 4]) },
  {
    label: 'js',
    raw: { name: 'double', backend: 'js', path: fixture('double.ts') },
    input: fp32('x', [2, 3]),
  },
  {
    label: 'onnx',
    raw: { name: 'cls', backend: 'onnx', path: classifierPath },
    input: fp32('x', [1, 3, 48, 192]),
  },
];

for (const { label, raw, input } of CONFORMANCE) {
  test(`backends - ${label} keeps the backend contract`, async (t) => {
    const m = await load(raw);
    t.after(() => m.dispose());
    assert.ok(m.info.platform.length > 0);
    assert.ok(m.info.inputs.length > 0 && m.info.outputs.length > 0);
    const outputs = await m.infer([input], { signal: live(), parameters: {} });
    assert.deepEqual(
      outputs.map((o) => o.name),
      m.info.outputs.map((o) => o.name),
      'all outputs, in declared order',
    );
    for (const o of outputs) {
      assert.equal(
        o.data.byteLength,
        ELEMENT_BYTES[o.datatype] * elementCount(o.shape),
        `${o.name} bytes match its shape`,
      );
      assert.ok(o.data instanceof Uint8Array);
    }
    const one = await m.infer([input], {
      signal: live(),
      parameters: {},
      outputs: [m.info.outputs[0]!.name],
    });
    assert.equal(one.length, 1);
    // the batcher makes a batch's signal only when it is read (an AbortSignal costs microseconds
    // per batch), and a batch never starts aborted: a backend with nothing to wait on never reads it
    const lazy = {
      parameters: {},
      get signal(): AbortSignal {
        throw new Error(`${label} read the signal of a batch it does not wait in`);
      },
    };
    assert.equal((await m.infer([input], lazy)).length, m.info.outputs.length);
  });
}

test('backends - sim echoes its inputs and spends its latency on a timer that a cancel interrupts', async () => {
  const m = await load({ ...SIM, sim: { latencyMs: 60_000 } });
  const controller = new AbortController();
  const pending = m.infer([fp32('x', [1, 4], [1, 2, 3, 4])], { signal: controller.signal, parameters: {} });
  controller.abort(new InfergridError('CANCELLED', 'stop'));
  await rejectsWith(pending, 'CANCELLED', /stop/);

  const quick = await load(SIM);
  const [y] = await quick.infer([fp32('x', [1, 4], [1, 2, 3, 4])], { signal: live(), parameters: {} });
  assert.deepEqual(Array.from(new Float32Array(y!.data.slice().buffer)), [1, 2, 3, 4]);
  assert.equal(y!.name, 'y');
});

test('backends - sim fails at its failure rate with WORKER_FAULT, reproducibly with a seed', async () => {
  const always = await load({ ...SIM, sim: { failureRate: 1 } });
  await rejectsWith(
    always.infer([fp32('x', [1, 4])], { signal: live(), parameters: {} }),
    'WORKER_FAULT',
    /injected failure/,
  );
  const outcomes = async (): Promise<boolean[]> => {
    const m = await load({ ...SIM, sim: { failureRate: 0.5, seed: 42 } });
    const out: boolean[] = [];
    for (let i = 0; i < 40; i++) {
      out.push(
        await m.infer([fp32('x', [1, 4])], { signal: live(), parameters: {} }).then(
          () => true,
          () => false,
        ),
      );
    }
    return out;
  };
  const first = await outcomes();
  assert.deepEqual(await outcomes(), first, 'same seed, same failures');
  const failures = first.filter((ok) => !ok).length;
  assert.ok(failures > 5 && failures < 35, `about half fail (${failures}/40)`);
});

test('backends - js runs a user module, and a broken one fails to load with a clear error', async () => {
  const m = await load({ name: 'double', backend: 'js', path: fixture('double.ts') });
  const [y] = await m.infer([fp32('x', [1, 2], [1.5, -2])], { signal: live(), parameters: {} });
  assert.deepEqual(Array.from(new Float32Array(y!.data.slice().buffer)), [3, -4]);
  await rejectsWith(
    load({ ...SIM, name: 'broken', backend: 'js', path: fixture('bad-init.ts') }),
    'MODEL_LOAD_FAILED',
    /model "broken": load\(\) threw: weights file is corrupt/,
  );
  await rejectsWith(
    load({ name: 'nope', backend: 'js', path: fixture('missing.ts') }),
    'MODEL_LOAD_FAILED',
    /cannot import/,
  );
  await rejectsWith(
    load({
      name: 'double',
      backend: 'js',
      path: fixture('double.ts'),
      inputs: [{ name: 'x', datatype: 'INT32', shape: [-1, -1] }],
    }),
    'MODEL_LOAD_FAILED',
    /input "x": declared INT32 \[-1,-1\], model has FP32 \[-1,-1\]/,
  );
});

test('backends - onnx reads its schema from the session and reconciles a declared one', async (t) => {
  const open = await load({ name: 'cls', backend: 'onnx', path: classifierPath });
  t.after(() => open.dispose());
  assert.deepEqual(open.info.inputs, [{ name: 'x', datatype: 'FP32', shape: [-1, 3, -1, -1] }]);
  assert.deepEqual(open.info.outputs, [{ name: 'softmax_0.tmp_0', datatype: 'FP32', shape: [-1, 2] }]);

  const narrowed = await load({
    name: 'cls',
    backend: 'onnx',
    path: classifierPath,
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
  });
  t.after(() => narrowed.dispose());
  assert.deepEqual(
    narrowed.info.inputs[0]!.shape,
    [-1, 3, 48, 192],
    'a declared fixed dimension narrows an open one',
  );

  await rejectsWith(
    load({
      name: 'cls',
      backend: 'onnx',
      path: classifierPath,
      inputs: [{ name: 'x', datatype: 'FP32', shape: [-1, 4, 48, 192] }],
    }),
    'MODEL_LOAD_FAILED',
    /declared FP32 \[-1,4,48,192\], model has FP32 \[-1,3,-1,-1\]/,
  );
  await rejectsWith(
    load({
      name: 'cls',
      backend: 'onnx',
      path: classifierPath,
      inputs: [{ name: 'image', datatype: 'FP32', shape: [-1, 3, 48, 192] }],
    }),
    'MODEL_LOAD_FAILED',
    /input "image" is declared but the model has inputs "x"/,
  );
  await rejectsWith(
    load({ name: 'ghost', backend: 'onnx', path: fixture('double.ts') }),
    'MODEL_LOAD_FAILED',
    /onnxruntime could not load/,
  );
  await rejectsWith(
    open.infer([fp32('x', [1, 3, 48, 192])], { signal: live(), parameters: {}, outputs: ['nope'] }),
    'INVALID_ARGUMENT',
    /unknown output "nope"/,
  );
});

test('backends - js returns only the outputs asked for, in that order; a declared one missing is the model\u2019s fault', async () => {
  const m = await load({ name: 'two', backend: 'js', path: fixture('two-outputs.ts') });
  const x = fp32('x', [2], [1, 2]);
  const all = await m.infer([x], { signal: live(), parameters: {} });
  assert.deepEqual(
    all.map((o) => o.name),
    ['a', 'b'],
  );
  const some = await m.infer([x], { signal: live(), parameters: {}, outputs: ['b', 'a'] });
  assert.deepEqual(
    some.map((o) => o.name),
    ['b', 'a'],
  );
  await rejectsWith(
    m.infer([x], { signal: live(), parameters: {}, outputs: ['never'] }),
    'BACKEND_ERROR',
    /returned no output "never"/,
  );
});
