/**
 * Version policy: which declared versions of a name are served, and in what order. Pure
 * functions of the declared configs, so config owns them (and checks pipeline steps with them).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type ModelConfig,
  compareVersionsDesc,
  describePolicy,
  modelSchema,
  policyOf,
  selectVersions,
  servedModels,
} from '../../src/config/index.ts';

const X = [{ name: 'x', datatype: 'FP32', shape: [-1] }];

function model(name: string, version: string, extra: Record<string, unknown> = {}): ModelConfig {
  return modelSchema.parse({ name, version, backend: 'sim', inputs: X, outputs: X, ...extra });
}

test('policy - selectVersions orders newest first and applies all / latest / specific', () => {
  const versions = ['2', '10', '1', '3'];
  assert.deepEqual(selectVersions(versions, 'all'), ['10', '3', '2', '1'], 'numbers by value, not text');
  assert.deepEqual(selectVersions(versions, { latest: 1 }), ['10']);
  assert.deepEqual(selectVersions(versions, { latest: 2 }), ['10', '3']);
  assert.deepEqual(selectVersions(versions, { latest: 9 }), ['10', '3', '2', '1'], 'more than there are');
  assert.deepEqual(selectVersions(versions, { specific: ['1', '3'] }), ['3', '1']);
  assert.deepEqual(selectVersions(versions, { specific: ['4'] }), [], 'a missing version serves nothing');
  assert.deepEqual(selectVersions(['b', '2', 'a'], 'all'), ['2', 'b', 'a'], 'numeric labels first');
  assert.deepEqual(versions, ['2', '10', '1', '3'], 'the input is left as it was');
});

test('policy - policyOf takes the first entry of the name that states one, else "all"', () => {
  const models = [
    model('m', '1'),
    model('m', '2', { versionPolicy: { latest: 1 } }),
    model('n', '1', { versionPolicy: { specific: ['1'] } }),
  ];
  assert.deepEqual(policyOf(models, 'm'), { latest: 1 });
  assert.deepEqual(policyOf(models, 'n'), { specific: ['1'] });
  assert.equal(policyOf(models, 'other'), 'all');
});

test('policy - describePolicy says each policy in words', () => {
  assert.equal(describePolicy('all'), 'all versions');
  assert.equal(describePolicy({ latest: 2 }), 'the latest 2');
  assert.equal(describePolicy({ specific: ['1', '3'] }), 'versions 1, 3');
});

test('policy - servedModels keeps the served entries of every name in declared order', () => {
  const models = [
    model('m', '1', { versionPolicy: { latest: 1 } }),
    model('n', '1'),
    model('m', '3'),
    model('n', '2'),
    model('m', '2'),
    model('k', '1', { versionPolicy: { specific: ['1', '3'] } }),
    model('k', '2'),
    model('k', '3'),
  ];
  assert.deepEqual(
    servedModels(models).map((m) => `${m.name}@${m.version}`),
    ['n@1', 'm@3', 'n@2', 'k@1', 'k@3'],
  );
  assert.deepEqual(servedModels([]), []);
});

test('policy - compareVersionsDesc puts numbers by value first, then other labels, in a total order', () => {
  const labels = ['a', '2', '10', 'b', '1.5', '01', ' '];
  const sorted = [...labels].sort(compareVersionsDesc);
  assert.deepEqual(sorted, ['10', '2', '1.5', '01', 'b', 'a', ' ']);
  for (const a of labels) {
    assert.equal(compareVersionsDesc(a, a), 0, `"${a}" equals itself`);
    for (const b of labels)
      if (a !== b) assert.equal(Math.sign(compareVersionsDesc(a, b)), -Math.sign(compareVersionsDesc(b, a)));
  }
  assert.notEqual(compareVersionsDesc('1', '01'), 0, 'equal numbers, different labels: still ordered');
});
