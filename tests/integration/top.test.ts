/**
 * `infergrid top` against a real coordinator and worker: one snapshot with --once (and when
 * stdout is not a terminal), the raw overview with --json, and a clear error with exit code 1
 * when nothing listens at --url.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { BIN, startCoordinator, startWorker, waitForWorkers, writeConfig } from '../fixtures/processes.ts';

const CONFIG = `
models:
  - name: sim
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: cached-sim
    backend: sim
    cache: { enabled: true }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;
const x = [{ name: 'x', datatype: 'FP32' as const, shape: [1], data: [1] }];

function top(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'top', ...args], { timeout: 30_000 }, (error, out, err) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, out, err });
    });
  });
}

/** A loopback port nothing listens on: taken from the OS, then let go. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('top - prints the workers and models of a running coordinator', { timeout: 60_000 }, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'top-w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['sim', 'cached-sim']);
  for (let i = 0; i < 20; i++) await coordinator.client.infer('cached-sim', x);
  // traffic on sim while top runs, so its throughput is not zero however slowly top starts
  let stopped = false;
  let sent = 0;
  const lane = (async () => {
    while (!stopped) {
      await coordinator.client.infer('sim', x);
      sent++;
    }
  })();
  const stop = async () => {
    stopped = true;
    await lane;
  };
  t.after(() => {
    stopped = true;
  });

  await t.test('--once: one snapshot with the worker, the models and their throughput', async () => {
    const { code, out, err } = await top(['--once', '--url', coordinator.url]);
    assert.equal(code, 0, err);
    const lines = out.trimEnd().split('\n');
    assert.match(lines[0]!, new RegExp(`^infergrid \\S+ at ${coordinator.url} `));
    assert.match(lines[1]!, /^[\d,]+(\.\d)? req\/s \(last 5 s\) {2}requests [\d,]+ {2}errors 0 /);
    const workerRow = lines.find((l) => l.startsWith('top-w1 '));
    assert.ok(workerRow, out);
    assert.match(workerRow, /ready\s+healthy/);
    assert.match(workerRow, /sim,cached-sim$/);

    const header = lines.find((l) => l.startsWith('MODEL '))!;
    assert.match(header, /REQ\/S\s+REQUESTS\s+ERRORS\s+P50 MS\s+P99 MS\s+BATCH\s+QUEUE\s+CACHE HIT/);
    const cells = (name: string) =>
      lines
        .find((l) => l.startsWith(`${name} `))!
        .trim()
        .split(/\s+/);
    const [, ready, rps, requests, errors] = cells('sim');
    assert.equal(ready, 'yes');
    assert.ok(Number(rps!.replaceAll(',', '')) > 0, `sim's throughput column: ${rps}`);
    assert.ok(Number(requests!.replaceAll(',', '')) > 0);
    assert.equal(errors, '0');
    // 20 identical requests: 1 miss then 19 hits
    assert.equal(cells('cached-sim').at(-1), '95.0%');
  });

  await t.test('without a terminal: one snapshot, no screen control codes', async () => {
    const { code, out } = await top(['--url', coordinator.url]);
    assert.equal(code, 0);
    assert.match(out, /^top-w1 /m);
    assert.doesNotMatch(out, /\x1b\[/);
  });

  await t.test('--json: the raw overview', async () => {
    await stop();
    const { code, out } = await top(['--json', '--url', `${coordinator.url}/`]);
    assert.equal(code, 0);
    const overview = JSON.parse(out) as {
      server: { requests: number };
      workers: { id: string }[];
      models: { name: string; requests: number }[];
    };
    assert.equal(overview.server.requests, 20 + sent);
    assert.deepEqual(
      overview.workers.map((w) => w.id),
      ['top-w1'],
    );
    assert.deepEqual(
      overview.models.map((m) => [m.name, m.requests]),
      [
        ['cached-sim', 20],
        ['sim', sent],
      ],
    );
  });
});

test('top - an unreachable coordinator is a clear error and exit code 1', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  for (const args of [['--once'], ['--json'], []]) {
    const { code, out, err } = await top([...args, '--url', url]);
    assert.equal(code, 1);
    assert.equal(out, '');
    assert.equal(
      err.trim(),
      `infergrid top: cannot reach the coordinator at ${url} (ECONNREFUSED); is it running? Pass its address with --url`,
    );
  }
  const bad = await top(['--url', 'localhost:8000']);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /--url must start with http:\/\/ or https:\/\//);
});
