import assert from 'node:assert/strict';
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { ModelPaths, modelSchema } from '../../src/config/index.ts';
import {
  LabelFiles,
  MAX_LABELS_FILE_BYTES,
  applyClassification,
  checkClassification,
  classCountOf,
  classify,
  parseLabels,
} from '../../src/coordinator/classification.ts';
import { InfergridError } from '../../src/errors.ts';
import { type Tensor, bytesOf, decodeBytesElements, toHalfBits } from '../../src/tensor/index.ts';

function fp32(name: string, shape: number[], values: number[]): Tensor {
  return { name, datatype: 'FP32', shape, data: bytesOf(Float32Array.from(values)) };
}

function strings(t: Tensor): string[] {
  assert.equal(t.datatype, 'BYTES');
  return decodeBytesElements(t.data).map((e) => Buffer.from(e).toString('utf8'));
}

async function refusal(fn: () => unknown): Promise<InfergridError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof InfergridError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

test('classification - top N per batch item, highest first, "value:index:label"', () => {
  const out = classify(fp32('p', [2, 4], [1, 5, 10, 4, 0.25, 0.5, 0.125, 0.75]), 2, true, [
    'a',
    'b',
    'c',
    'd',
  ]);
  assert.deepEqual(out.shape, [2, 2]);
  assert.equal(out.name, 'p');
  assert.deepEqual(strings(out), ['10.000000:2:c', '5.000000:1:b', '0.750000:3:d', '0.500000:1:b']);
});

test('classification - ties go to the lower index', () => {
  const out = classify(fp32('p', [5], [3, 7, 7, 3, 7]), 4, false, undefined);
  assert.deepEqual(out.shape, [4]);
  assert.deepEqual(strings(out), ['7.000000:1', '7.000000:2', '7.000000:4', '3.000000:0']);
});

test('classification - without labels, or past the last label, classes have only value and index', () => {
  assert.deepEqual(strings(classify(fp32('p', [1, 3], [0.1, 0.9, 0.5]), 3, true, ['zero', 'one'])), [
    '0.900000:1:one',
    '0.500000:2',
    '0.100000:0:zero',
  ]);
});

test('classification - N above the number of classes returns every class', () => {
  const out = classify(fp32('p', [2, 2], [0.2, 0.8, 0.6, 0.4]), 5, true, ['0', '180']);
  assert.deepEqual(out.shape, [2, 2]);
  assert.deepEqual(strings(out), ['0.800000:1:180', '0.200000:0:0', '0.600000:0:0', '0.400000:1:180']);
});

test('classification - integer, 64-bit and FP16 outputs compare by value; NaN sorts last', () => {
  const i64: Tensor = {
    name: 'c',
    datatype: 'INT64',
    shape: [3],
    data: bytesOf(BigInt64Array.from([-5n, 9007199254740993n, 2n])),
  };
  assert.deepEqual(strings(classify(i64, 2, false, undefined)), ['9007199254740993:1', '2:2']);
  const i8: Tensor = { name: 'c', datatype: 'INT8', shape: [3], data: bytesOf(Int8Array.from([-1, -3, 4])) };
  assert.deepEqual(strings(classify(i8, 3, false, undefined)), ['4:2', '-1:0', '-3:1']);
  const half: Tensor = {
    name: 'h',
    datatype: 'FP16',
    shape: [3],
    data: bytesOf(Uint16Array.from([toHalfBits(0.5), toHalfBits(2), toHalfBits(-1)])),
  };
  assert.deepEqual(strings(classify(half, 1, false, undefined)), ['2.000000:1']);
  assert.deepEqual(strings(classify(fp32('n', [3], [Number.NaN, 1, 2]), 3, false, undefined)), [
    '2.000000:2',
    '1.000000:1',
    'nan:0',
  ]);
});

test('classification - an empty batch gives [0, N]', () => {
  const out = classify(fp32('p', [0, 2], []), 1, true, undefined);
  assert.deepEqual(out.shape, [0, 0]);
  assert.deepEqual(strings(out), []);
});

test('classification - the count parameter: classification or class_count, 1 to the limit', async () => {
  assert.equal(classCountOf({ classification: 3 }, 'p'), 3);
  assert.equal(classCountOf({ class_count: 2 }, 'p'), 2);
  assert.equal(classCountOf({ classification: 2, class_count: 2 }, 'p'), 2);
  assert.equal(classCountOf({ binary_data: true }, 'p'), undefined);
  assert.equal(classCountOf(undefined, 'p'), undefined);
  for (const bad of [0, -1, 1.5, '2', true, 65_537]) {
    const e = await refusal(() => classCountOf({ classification: bad }, 'p'));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, /output "p": class count must be an integer from 1 to 65536/);
  }
  const e = await refusal(() => classCountOf({ classification: 1, class_count: 2 }, 'p'));
  assert.match(e.message, /disagree/);
});

const SCHEMA = {
  name: 'm',
  inputs: [{ name: 'x', datatype: 'FP32' as const, shape: [-1, 4] }],
  outputs: [
    { name: 'p', datatype: 'FP32' as const, shape: [-1, 4] },
    { name: 'text', datatype: 'BYTES' as const, shape: [-1] },
    { name: 'ok', datatype: 'BOOL' as const, shape: [-1] },
  ],
  batchable: true,
  maxBatchSize: 0,
};

test('classification - refused for an output the model lacks, a non-numeric one, or one not requested', async () => {
  checkClassification(SCHEMA, new Map([['p', 1]]), undefined);
  checkClassification(SCHEMA, new Map([['p', 1]]), ['p', 'text']);
  const missing = await refusal(() => checkClassification(SCHEMA, new Map([['q', 1]]), undefined));
  assert.equal(missing.httpStatus, 400);
  assert.match(missing.message, /output "q", which the model does not have; its outputs: "p", "text", "ok"/);
  for (const name of ['text', 'ok']) {
    const e = await refusal(() => checkClassification(SCHEMA, new Map([[name, 1]]), undefined));
    assert.match(e.message, /classification needs a numeric output/);
  }
  const unasked = await refusal(() => checkClassification(SCHEMA, new Map([['p', 1]]), ['text']));
  assert.match(unasked.message, /which the request does not ask for/);
});

function tempDir(t: TestContext): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'infergrid-labels-')));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('classification - labels files: one per line, read once per config, limited in size', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'labels.txt'), 'zero\r\none\ntwo\n\nfour\n');
  writeFileSync(join(dir, 'big.txt'), Buffer.alloc(MAX_LABELS_FILE_BYTES + 1, 0x61));
  assert.deepEqual(parseLabels('a\nb\n'), ['a', 'b']);
  assert.deepEqual(parseLabels('a\nb'), ['a', 'b']);
  const files = new LabelFiles(new ModelPaths({ roots: [dir], baseDir: dir }));
  const config = modelSchema.parse({
    name: 'm',
    backend: 'sim',
    labels: { p: 'labels.txt', big: 'big.txt', gone: 'gone.txt', out: '/etc/hostname' },
  });
  assert.deepEqual(await files.labels(config, 'p'), ['zero', 'one', 'two', '', 'four']);
  assert.equal(files.labels(config, 'p'), files.labels(config, 'p'), 'read once, then kept');
  assert.equal(files.labels(config, 'other'), undefined);
  assert.equal(files.labels(undefined, 'p'), undefined);
  const big = await refusal(() => files.labels(config, 'big'));
  assert.equal(big.code, 'CONFIG_INVALID');
  assert.match(big.message, /has 4194305 bytes; at most 4194304/);
  assert.match((await refusal(() => files.labels(config, 'gone'))).message, /was not found/);
  assert.match((await refusal(() => files.labels(config, 'out'))).message, /outside the repository roots/);

  const outputs = await applyClassification(
    [fp32('p', [1, 5], [0.1, 0.2, 0.3, 0.4, 0.35]), fp32('q', [1], [7])],
    new Map([['p', 3]]),
    { ...SCHEMA, outputs: [...SCHEMA.outputs, { name: 'q', datatype: 'FP32', shape: [-1] }] },
    config,
    files,
  );
  // class 3's line is empty: no label
  assert.deepEqual(strings(outputs[0]!), ['0.400000:3', '0.350000:4:four', '0.300000:2:two']);
  assert.deepEqual(outputs[0]!.shape, [1, 3]);
  assert.equal(outputs[1]!.datatype, 'FP32', 'an output not classified is left as it is');
});
