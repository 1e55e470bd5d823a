/**
 * Records from other coordinators applied to a real (unstarted) Coordinator: each change goes
 * through the coordinator's own code, is not journaled again, and a hostile or malformed record
 * is refused with a typed error (a config naming a file outside the repository roots, a split of
 * a version that is not served, payloads of the wrong shape or size) and changes nothing.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { type ControlRecord, coordinatorApplier } from '../../src/cluster/index.ts';
import { loadConfig } from '../../src/config/index.ts';
import { Coordinator, type ControlJournal } from '../../src/coordinator/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';

const SIM = {
  backend: 'sim',
  inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
  outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
};

function coordinator(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-applier-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    `models:
  - { name: c, version: "1", ${yamlOf(SIM)} }
  - { name: c, version: "2", ${yamlOf(SIM)} }
repository: { roots: ["${dir}"] }
`,
  );
  const { config, baseDir } = loadConfig({ file });
  const c = new Coordinator({ config, logger: silentLogger(), baseDir });
  // anything journaled would be a replicated change published again
  const journaled: string[] = [];
  const journal: ControlJournal = {
    begin(kind, target) {
      journaled.push(`${kind}:${target}`);
      return { commit() {}, abort() {} };
    },
  };
  c.controlJournal = journal;
  return { c, journaled, applier: coordinatorApplier(c, silentLogger()) };
}

function yamlOf(o: Record<string, unknown>): string {
  return Object.entries(o)
    .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
    .join(', ');
}

let seq = 0;
function record(
  kind: ControlRecord['kind'],
  target: string,
  op: ControlRecord['op'],
  payload = {},
): ControlRecord {
  return { seq: ++seq, kind, target, op, payload, by: 'other', at: Date.now() };
}

test('control applier - a split, an unload and a load from another coordinator apply here and are not journaled again', async (t) => {
  const { c, journaled, applier } = coordinator(t);
  await applier.apply(record('traffic', 'c', 'set', { split: { '1': 100 } }));
  assert.deepEqual(c.registry.traffic('c'), { '1': 100 });
  await applier.apply(record('repository', 'c', 'unload'));
  assert.equal(c.registry.isUnloaded('c'), true);
  // no worker is connected: declared and wanted, loaded by the workers that join
  await applier.apply(record('repository', 'fresh', 'load', { configs: [{ name: 'fresh', ...SIM }] }));
  assert.ok(c.registry.declared().some((m) => m.name === 'fresh'));
  // an unload of a model never known here is nothing to do
  await applier.apply(record('repository', 'never-seen', 'unload'));
  assert.deepEqual(journaled, []);
});

test('control applier - a removal blocks the worker id here even when it is not connected; a re-admission lets it back', async (t) => {
  const { c, journaled, applier } = coordinator(t);
  await applier.apply(record('removal', 'w9', 'remove', { timeoutMs: 10 }));
  assert.ok(c.pool.blocked.has('w9'));
  await applier.apply(record('removal', 'w9', 'readmit'));
  assert.ok(!c.pool.blocked.has('w9'));
  assert.deepEqual(journaled, []);
});

test('control applier - hostile or malformed records are refused and change nothing', async (t) => {
  const { c, applier } = coordinator(t);
  const refused = async (r: ControlRecord, code: string, message?: RegExp) => {
    await assert.rejects(applier.apply(r), (err: { code: string; message: string }) => {
      assert.equal(err.code, code, err.message);
      if (message) assert.match(err.message, message);
      return true;
    });
  };
  const outside = { name: 'evil', ...SIM, backend: 'onnx', path: '/etc/passwd' };
  await refused(
    record('repository', 'evil', 'load', { configs: [outside] }),
    'FORBIDDEN',
    /repository.roots/,
  );
  const js = { name: 'evil', backend: 'js', path: 'x.js' };
  await refused(record('repository', 'evil', 'load', { configs: [js] }), 'FORBIDDEN', /allowRuntimeJs/);
  await refused(
    record('repository', 'evil', 'load', { configs: [{ name: 'other', ...SIM }] }),
    'INVALID_ARGUMENT',
  );
  await refused(record('repository', 'evil', 'load', { configs: [] }), 'INVALID_ARGUMENT');
  const many = Array.from({ length: 65 }, (_, i) => ({ name: 'evil', version: String(i + 1), ...SIM }));
  await refused(record('repository', 'evil', 'load', { configs: many }), 'INVALID_ARGUMENT');
  await refused(record('repository', 'evil', 'load', { configs: 'all' }), 'INVALID_ARGUMENT');
  assert.ok(!c.registry.declared().some((m) => m.name === 'evil'), 'nothing declared');

  await refused(
    record('traffic', 'c', 'set', { split: { '3': 100 } }),
    'INVALID_ARGUMENT',
    /no served version "3"/,
  );
  await refused(record('traffic', 'c', 'set', { split: { '1': 'all' } }), 'INVALID_ARGUMENT');
  await refused(record('traffic', 'c', 'set', { split: { '1': 500 } }), 'INVALID_ARGUMENT');
  await refused(record('traffic', 'c', 'set', { split: { '1': 100 }, extra: 1 }), 'INVALID_ARGUMENT');
  await refused(record('traffic', 'nope', 'set', { split: { '1': 100 } }), 'MODEL_NOT_FOUND');
  assert.deepEqual(c.registry.traffic('c'), {}, 'the split is unchanged');

  await refused(record('removal', 'w1', 'remove', { timeoutMs: -1 }), 'INVALID_ARGUMENT');
  await refused(record('removal', 'w1', 'remove', { timeoutMs: 2 ** 40 }), 'INVALID_ARGUMENT');
  assert.ok(!c.pool.blocked.has('w1'));
});
