/**
 * `infergrid bench` against a real coordinator and worker: closed loop by count, open loop by
 * rate (asserting the schedule, which is deterministic, never the timing), errors by kind, a
 * file sent as a BYTES input, and the start-up failures that exit 1 before any load.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import type { BenchReport } from '../../src/cli/bench/index.ts';
import {
  adminWorkers,
  BIN,
  startCoordinator,
  startWorker,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const BYTE_LENGTH_MODEL = fileURLToPath(new URL('../fixtures/models/byte-length.ts', import.meta.url));

function config(imageBytes: number): string {
  return `
models:
  - name: sim
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1, 4] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 4] }]
  - name: broken
    backend: sim
    sim: { failureRate: 1 }
    routing: { maxAttempts: 1 }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: cached
    backend: sim
    cache: { enabled: true, ttlMs: 600000 }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: length
    backend: js
    path: ${BYTE_LENGTH_MODEL}
    options: { expectBytes: ${imageBytes} }
`;
}

interface BenchRunOutput {
  code: number | null;
  out: string;
  err: string;
}

/** Runs `infergrid bench <args>` to its end without blocking this process (the servers' output keeps flowing). */
function bench(args: string[]): Promise<BenchRunOutput> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'bench', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bench ${args.join(' ')} did not finish:\n${out}\n${err}`));
    }, 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

async function benchJson(args: string[]): Promise<BenchReport> {
  const r = await bench([...args, '--json']);
  assert.equal(r.code, 0, `bench exited ${r.code}:\n${r.err}`);
  assert.equal(r.err, '', 'no progress bar when stderr is not a terminal');
  return JSON.parse(r.out) as BenchReport;
}

async function workerRequests(url: string): Promise<number> {
  return (await adminWorkers(url)).reduce((sum, w) => sum + w.requests, 0);
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('bench cli - drives a real coordinator by count, by rate, with failures and with a file', {
  timeout: 120_000,
}, async (t) => {
  const image = await sharp({ create: { width: 32, height: 16, channels: 3, background: '#336699' } })
    .png()
    .toBuffer();
  const configFile = writeConfig(t, config(image.byteLength));
  const dir = dirname(configFile);
  const coordinator = await startCoordinator(t, configFile);
  await startWorker(t, configFile, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['sim', 'broken', 'cached', 'length']);
  const { url } = coordinator;

  await t.test('closed loop: --requests 200 --concurrency 4 sends exactly 200, all answered', async () => {
    const before = await workerRequests(url);
    const report = await benchJson([
      '--url',
      url,
      '--model',
      'sim',
      '--requests',
      '200',
      '--concurrency',
      '4',
    ]);
    assert.equal(report.completed, 200);
    assert.equal(report.errors, 0);
    assert.equal(report.scheduled, 200);
    assert.deepEqual(report.errorKinds, {});
    assert.equal(await workerRequests(url), before + 200, 'the worker ran every request, no more');
    assert.equal(report.latencyMs.p50 > 0 && report.latencyMs.p50 <= report.latencyMs.p99, true);
    assert.ok(report.latencyMs.p99 <= report.latencyMs.max);
    assert.ok(report.throughput > 0);
    assert.deepEqual(report.parameters.body.inputs, [{ name: 'x', datatype: 'FP32', shape: [1, 4] }]);
    assert.equal(report.parameters.mode, 'concurrency');
    assert.equal(report.parameters.concurrency, 4);
  });

  await t.test('open loop: --rate 50 --duration 1s schedules 50 requests and accounts for each', async () => {
    const before = await workerRequests(url);
    const report = await benchJson(['--url', url, '--model', 'sim', '--rate', '50', '--duration', '1s']);
    // slots at 0, 20, ..., 980 ms: fixed by the rate and the window, whatever the timing
    assert.equal(report.scheduled, 50);
    assert.equal(report.sent + report.dropped, report.scheduled);
    assert.equal(report.completed + report.errors, report.sent);
    assert.equal(report.dropped, 0, 'no request waited behind 1000 in flight');
    assert.equal(report.completed + report.errors, 50);
    assert.equal(await workerRequests(url), before + report.sent);
    assert.equal(report.parameters.rate, 50);
  });

  await t.test('open loop with a warmup: the warmup slots are sent but not counted', async () => {
    const before = await workerRequests(url);
    const report = await benchJson([
      ...['--url', url, '--model', 'sim', '--rate', '40', '--requests', '10', '--warmup', '100ms'],
    ]);
    // warmup slots at 0, 25, 50, 75 ms; then 10 measured ones
    assert.equal(report.scheduled, 10);
    assert.equal(report.completed + report.errors, 10);
    assert.equal(await workerRequests(url), before + 14);
  });

  await t.test('the response cache is bypassed by default, measured with --cache use', async () => {
    const before = await workerRequests(url);
    const bypassed = await benchJson(['--url', url, '--model', 'cached', '--requests', '10']);
    assert.equal(bypassed.completed, 10);
    assert.equal(bypassed.parameters.cache, 'bypass');
    assert.equal(await workerRequests(url), before + 10, 'every request ran on the worker');
    const used = await benchJson(['--url', url, '--model', 'cached', '--requests', '10', '--cache', 'use']);
    assert.equal(used.completed, 10);
    assert.equal(await workerRequests(url), before + 11, 'one miss, then hits');
  });

  await t.test('a model that fails every request: errors by kind, exit 0', async () => {
    const report = await benchJson([
      '--url',
      url,
      '--model',
      'broken',
      '--requests',
      '20',
      '--concurrency',
      '2',
    ]);
    assert.equal(report.completed, 0);
    assert.equal(report.errors, 20);
    assert.deepEqual(report.errorKinds, { '503 WORKER_FAULT': 20 });
    assert.match(report.errorMessages['503 WORKER_FAULT']!, /failureRate/);

    const table = await bench(['--url', url, '--model', 'broken', '--requests', '5']);
    assert.equal(table.code, 0, table.err);
    assert.match(table.out, /^ {2}503 WORKER_FAULT: 5 /m);
    assert.match(table.out, /^ {2}requests +0 completed, 5 errors$/m);
    assert.match(table.out, /^ {2}load +closed loop, concurrency 1$/m);
  });

  await t.test('--input with an image file sends it whole as the BYTES input', async () => {
    const file = join(dir, 'tiny.png');
    writeFileSync(file, image);
    const report = await benchJson(['--url', url, '--model', 'length', '--input', file, '--requests', '20']);
    // the model refuses any element that is not exactly the image's length
    assert.deepEqual(report.errorKinds, {});
    assert.equal(report.completed, 20);
    assert.equal(report.parameters.body.source, 'binary-file');
    assert.equal(report.parameters.body.encoding, 'binary');
    assert.deepEqual(report.parameters.body.inputs, [{ name: 'file', datatype: 'BYTES', shape: [1] }]);
  });

  await t.test('--input with a KServe v2 JSON body, as JSON and as binary', async () => {
    const file = join(dir, 'body.json');
    writeFileSync(
      file,
      JSON.stringify({
        inputs: [
          {
            name: 'x',
            datatype: 'FP32',
            shape: [2, 4],
            data: [
              [1, 2, 3, 4],
              [5, 6, 7, 8],
            ],
          },
        ],
      }),
    );
    for (const binary of [false, true]) {
      const report = await benchJson([
        ...['--url', url, '--model', 'sim', '--input', file, '--requests', '10'],
        ...(binary ? ['--binary'] : []),
      ]);
      assert.deepEqual(report.errorKinds, {});
      assert.equal(report.completed, 10);
      assert.equal(report.parameters.body.encoding, binary ? 'binary' : 'json');
    }
    const shaped = await benchJson([
      '--url',
      url,
      '--model',
      'sim',
      '--shape',
      'x=3,4',
      '--binary',
      '--requests',
      '5',
    ]);
    assert.equal(shaped.completed, 5);
    assert.deepEqual(shaped.parameters.body.inputs, [{ name: 'x', datatype: 'FP32', shape: [3, 4] }]);
  });

  await t.test(
    'an unknown model, a wrong shape or an unreachable coordinator exit 1 before any load',
    async () => {
      const before = await workerRequests(url);
      const unknown = await bench(['--url', url, '--model', 'nope', '--requests', '5']);
      assert.equal(unknown.code, 1);
      assert.match(
        unknown.err,
        /^infergrid bench: model "nope" is not served here \(models: broken, cached, length, sim\)/,
      );
      assert.equal(unknown.out, '');

      const shape = await bench(['--url', url, '--model', 'sim', '--shape', 'x=2,3']);
      assert.equal(shape.code, 1);
      assert.match(shape.err, /--shape x=2,3 does not fit the model's x FP32 \[-1,4\]/);

      const noBytesInput = await bench(['--url', url, '--model', 'sim', '--input', BIN]);
      assert.equal(noBytesInput.code, 1);
      assert.match(noBytesInput.err, /sent as the model's BYTES input, but model "sim" has none/);
      assert.equal(await workerRequests(url), before, 'nothing was sent');

      const port = await closedPort();
      const unreachable = await bench(['--url', `http://127.0.0.1:${port}`, '--model', 'sim']);
      assert.equal(unreachable.code, 1);
      assert.match(
        unreachable.err,
        /cannot reach the coordinator at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/,
      );
    },
  );
});

test('bench cli - help, and flags checked together before anything is sent', async () => {
  const help = await bench(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.out, /^Usage: infergrid bench --model <name>/);
  for (const flag of [
    '--concurrency',
    '--rate',
    '--duration',
    '--requests',
    '--warmup',
    '--input',
    '--binary',
    '--shape',
    '--json',
  ])
    assert.ok(help.out.includes(flag), flag);

  const bad = await bench(['--concurrency', '2', '--rate', '5', '--duration', '10']);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /3 problems with the flags/);
  assert.match(bad.err, /--model <name> is required/);
  assert.match(bad.err, /--concurrency and --rate are two ways/);
  assert.match(bad.err, /--duration "10" is not a duration; write it like 500ms, 10s or 1m/);
});
