/** The CLI as a user meets it: help, and start-up errors that say what to fix and exit 1. */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { BIN, writeConfig } from '../fixtures/processes.ts';

function run(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('cli - help lists the commands and each command documents its options', () => {
  const main = run(['--help']);
  assert.equal(main.code, 0);
  for (const command of ['serve', 'coordinator', 'worker']) {
    assert.match(main.out, new RegExp(`^  ${command} `, 'm'));
    const help = run([command, '--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, new RegExp(`^Usage: infergrid ${command}`));
    assert.match(help.out, /--config/);
  }
});

test('cli - bad flags, a missing config and a bad config exit 1 saying what to fix', (t) => {
  const bogus = run(['worker', '--bogus']);
  assert.equal(bogus.code, 1);
  assert.equal(bogus.err.trim(), "infergrid worker: Unknown option '--bogus'; see infergrid worker --help");
  assert.match(run(['serve']).err, /--config <file> is required/);
  const unknown = run(['nope']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /unknown command "nope"/);

  const config = writeConfig(
    t,
    'coordinator: { port: 70000 }\nmodels:\n  - { name: a, backend: onnx }\n  - { name: b, backend: sim }\n',
  );
  const bad = run(['serve', '--config', config]);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /has 3 problems/);
  assert.match(bad.err, /coordinator\.port: Too big/);
  assert.match(bad.err, /models\[0\]\.path: required for backend "onnx"/);
  assert.match(bad.err, /models\[1\]: backend "sim" needs inputs and outputs declared/);
  assert.doesNotMatch(bad.err, /at .*\.ts:\d+/, 'no stack trace for a user error');
});
