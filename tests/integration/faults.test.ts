/**
 * Bad input and faults, each against real processes: every one gets a typed error with the
 * right HTTP status, and none of them hangs a request or takes the coordinator down.
 */

import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { InferenceClientError } from '../../src/client/index.ts';
import {
  adminWorkers,
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));

const SIM_IO = `
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 4] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 4] }]`;

const CONFIG = `
coordinator:
  bodyLimitBytes: 65536
  limits: { maxBytesElements: 100, maxBytesElementBytes: 1024 }
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 3000 }
workers: [{ id: w1 }, { id: crasher }, { id: victim }, { id: drainer }, { id: ghost }]
models:
  - name: echo
    backend: sim
    maxBatchSize: 8
    workers: [w1]${SIM_IO}
  - name: slow
    backend: sim
    sim: { latencyMs: 60000 }
    workers: [w1]${SIM_IO}
  - name: doomed
    backend: sim
    sim: { latencyMs: 60000 }
    workers: [victim]${SIM_IO}
  - name: medium
    backend: sim
    sim: { latencyMs: 1500 }
    workers: [drainer]${SIM_IO}
  - name: orphan
    backend: sim
    workers: [ghost]${SIM_IO}
  - name: crash
    backend: js
    path: ${fixture('crash-on-infer.ts')}
    workers: [crasher]
  - name: garbled
    backend: js
    path: ${fixture('bad-output.ts')}
    workers: [w1]
  - name: broken
    backend: js
    path: ${fixture('bad-init.ts')}
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
    workers: [w1]
`;

const ECHO_BODY = JSON.stringify({
  inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }],
});
const x1 = [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }];

async function expectError(
  promise: Promise<unknown>,
  status: number,
  code: string,
  message?: RegExp,
): Promise<InferenceClientError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof InferenceClientError, `expected an HTTP error, got ${err}`);
    assert.equal(err.status, status, `status for ${code}: ${err.message}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${status} ${code}, got success`);
}

test('faults - bad input and dead workers get typed errors, never hangs or crashes', {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const { client, url } = coordinator;
  const rpc = coordinator.rpcAddress;
  const [w1] = await Promise.all([
    startWorker(t, config, 'w1', { coordinator: rpc }),
    startWorker(t, config, 'crasher', { coordinator: rpc }),
    startWorker(t, config, 'victim', { coordinator: rpc }),
    startWorker(t, config, 'drainer', { coordinator: rpc }),
  ]);
  await waitForWorkers(url, 1, ['echo']);
  await waitFor('every model but orphan and broken ready', async () => {
    const ready = await Promise.all(
      ['echo', 'slow', 'doomed', 'medium', 'crash', 'garbled'].map((m) => client.modelReady(m)),
    );
    return ready.every(Boolean);
  });

  await t.test('a valid request works (the baseline every fault is compared with)', async () => {
    const res = await client.infer('echo', x1);
    assert.deepEqual(res.outputs[0], {
      name: 'OUTPUT0',
      datatype: 'FP32',
      shape: [1, 4],
      data: [1, 2, 3, 4],
    });
  });

  await t.test('malformed JSON -> 400 naming the problem', async () => {
    const res = await post(`${url}/v2/models/echo/infer`, '{"inputs": [');
    assert.equal(res.status, 400);
    assert.equal(res.json.code, 'MALFORMED_REQUEST');
    assert.match(res.json.error!, /not valid JSON/);
    const empty = await post(`${url}/v2/models/echo/infer`, '');
    assert.equal(empty.status, 400);
    const noInputs = await post(`${url}/v2/models/echo/infer`, '{"outputs": []}');
    assert.equal(noInputs.status, 400);
    assert.match(noInputs.json.error!, /"inputs" must be a non-empty array/);
  });

  await t.test(
    'data nested 10,000 deep or a 65-dimension shape -> 400, and the coordinator answers on',
    async () => {
      const deep = `{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":${'['.repeat(10_000)}1${']'.repeat(10_000)}}]}`;
      const res = await post(`${url}/v2/models/echo/infer`, deep);
      assert.equal(res.status, 400, JSON.stringify(res.json));
      assert.equal(res.json.code, 'INVALID_ARGUMENT');
      assert.match(res.json.error!, /nested more than 64 levels deep/);
      const base64 = `{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1],"parameters":{"content_type":"base64"},"data":${'['.repeat(10_000)}"AA=="${']'.repeat(10_000)}}]}`;
      const res64 = await post(`${url}/v2/models/echo/infer`, base64);
      assert.equal(res64.status, 400, JSON.stringify(res64.json));
      assert.match(res64.json.error!, /nested more than 64 levels deep/);
      const wide = JSON.stringify({
        inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: Array(65).fill(1), data: [1] }],
      });
      const resWide = await post(`${url}/v2/models/echo/infer`, wide);
      assert.equal(resWide.status, 400);
      assert.match(resWide.json.error!, /shape has 65 dimensions; at most 64/);
      assert.equal((await client.infer('echo', x1)).outputs[0]!.data.length, 4);
    },
  );

  await t.test(
    'requests over coordinator.limits -> 400 naming the limit, before any data is decoded',
    async () => {
      const infer = (body: unknown) => post(`${url}/v2/models/echo/infer`, JSON.stringify(body));
      const input = (i: number) => ({ name: `in${i}`, datatype: 'FP32', shape: [1], data: [1] });
      const many = await infer({ inputs: Array.from({ length: 65 }, (_, i) => input(i)) });
      assert.equal(many.status, 400);
      assert.match(many.json.error!, /65 inputs; at most 64 \(coordinator\.limits\.maxInputs\)/);
      const longId = await infer({ id: 'x'.repeat(300), inputs: x1 });
      assert.equal(longId.status, 400);
      assert.match(longId.json.error!, /"id" is 300 characters; at most 256/);
      const strings = await infer({
        inputs: [{ name: 'INPUT0', datatype: 'BYTES', shape: [200], data: Array(200).fill('a') }],
      });
      assert.equal(strings.status, 400);
      assert.match(strings.json.error!, /BYTES tensors hold 200 elements; at most 100/);
      const big = await infer({
        inputs: [{ name: 'INPUT0', datatype: 'BYTES', shape: [1], data: ['a'.repeat(2000)] }],
      });
      assert.equal(big.status, 400);
      assert.match(big.json.error!, /BYTES element 0 is 2000 bytes; at most 1024/);
      // 8,000 zero-length BYTES elements behind a shape of [1]: refused without making 8,000 views
      const header = Buffer.from(
        JSON.stringify({
          inputs: [
            { name: 'INPUT0', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: 32_000 } },
          ],
        }),
      );
      const zeros = await post(`${url}/v2/models/echo/infer`, Buffer.concat([header, Buffer.alloc(32_000)]), {
        'content-type': 'application/octet-stream',
        'inference-header-content-length': String(header.length),
      });
      assert.equal(zeros.status, 400, zeros.text);
      assert.match(zeros.json.error!, /BYTES \[1\] needs 1 elements, the binary data holds more/);
      assert.equal((await client.infer('echo', x1)).outputs[0]!.data.length, 4);
    },
  );

  await t.test('a body without a JSON content type is still read as JSON (curl -d)', async () => {
    const res = await post(`${url}/v2/models/echo/infer`, ECHO_BODY, {
      'content-type': 'application/x-www-form-urlencoded',
    });
    assert.equal(res.status, 200);
  });

  await t.test('unknown model or version -> 404', async () => {
    await expectError(client.infer('nope', x1), 404, 'MODEL_NOT_FOUND', /model "nope" is not served here/);
    await expectError(
      client.infer('echo', x1, { version: '7' }),
      404,
      'MODEL_NOT_FOUND',
      /no version "7" \(versions: 1\)/,
    );
    const meta = await fetch(`${url}/v2/models/nope`);
    assert.equal(meta.status, 404);
    const route = await fetch(`${url}/v3/nothing`);
    assert.equal(route.status, 404);
  });

  await t.test(
    'wrong input name, dtype, shape or element count -> 400 saying what was expected and what came',
    async () => {
      await expectError(
        client.infer('echo', [{ ...x1[0]!, name: 'IN' }]),
        400,
        'INVALID_ARGUMENT',
        /unknown input "IN"; the model takes "INPUT0" FP32 \[-1,4\]/,
      );
      await expectError(
        client.infer('echo', [{ ...x1[0]!, datatype: 'INT64' }]),
        400,
        'INVALID_ARGUMENT',
        /input "INPUT0": expected FP32 \[-1,4\], got INT64 \[1,4\]/,
      );
      await expectError(
        client.infer('echo', [{ ...x1[0]!, shape: [4] }]),
        400,
        'INVALID_ARGUMENT',
        /expected FP32 \[-1,4\], got FP32 \[4\]/,
      );
      await expectError(
        client.infer('echo', [{ ...x1[0]!, shape: [2, 4] }]),
        400,
        'INVALID_ARGUMENT',
        /needs 8 elements, got 4/,
      );
      await expectError(
        client.infer('echo', [{ ...x1[0]!, data: [1, 2, 'x', 4] as never }]),
        400,
        'INVALID_ARGUMENT',
        /element 2 is "x"/,
      );
      await expectError(
        client.infer('echo', [{ ...x1[0]!, shape: [9, 4], data: new Array(36).fill(0) }]),
        400,
        'INVALID_ARGUMENT',
        /maxBatchSize 8/,
      );
      await expectError(
        client.infer('echo', x1, { outputs: ['nope'] }),
        400,
        'INVALID_ARGUMENT',
        /unknown output "nope"/,
      );
      await expectError(
        client.infer('echo', [{ ...x1[0]!, datatype: 'FP8' }]),
        400,
        'INVALID_ARGUMENT',
        /unknown datatype "FP8"/,
      );
    },
  );

  await t.test('a body over the configured limit -> 413', async () => {
    const big = JSON.stringify({
      inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }],
      pad: 'x'.repeat(70_000),
    });
    const res = await post(`${url}/v2/models/echo/infer`, big);
    assert.equal(res.status, 413);
    assert.equal(res.json.code, 'PAYLOAD_TOO_LARGE');
    assert.match(res.json.error!, /limit of 65536 bytes/);
  });

  await t.test('no worker has the model ready -> 503 with Retry-After', async () => {
    const err = await expectError(
      client.infer('orphan', x1),
      503,
      'UNAVAILABLE',
      /no worker has model "orphan"/,
    );
    assert.equal(err.retryAfter, '1');
    const broken = await expectError(
      client.infer('broken', [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }]),
      503,
      'UNAVAILABLE',
      /w1: unavailable \(model "broken": load\(\) threw: weights file is corrupt/,
    );
    assert.equal(broken.retryAfter, '1');
    const ready = await fetch(`${url}/v2/models/orphan/ready`);
    assert.equal(ready.status, 503);
    const health = await fetch(`${url}/v2/health/ready`);
    assert.equal(health.status, 503, 'server is not ready while a model has no ready replica');
  });

  await t.test('deadline passed -> 504', async () => {
    await expectError(
      client.infer('slow', x1, { timeoutMs: 200 }),
      504,
      'DEADLINE_EXCEEDED',
      /deadline of 200 ms/,
    );
    await expectError(
      client.infer('slow', x1, { parameters: { timeout: 150_000 } }),
      504,
      'DEADLINE_EXCEEDED',
      /150 ms/,
    );
    await expectError(
      client.infer('slow', x1, { parameters: { timeout_ms: -1 } }),
      400,
      'INVALID_ARGUMENT',
      /timeout_ms must be a positive number/,
    );
  });

  await t.test('a client that disconnects cancels its request on the worker', async () => {
    const controller = new AbortController();
    const pending = client.infer('slow', x1, { signal: controller.signal }).catch((err: Error) => err);
    await waitFor('the slow request to be running on a worker', async () =>
      (await adminWorkers(url)).some((w) => w.inFlight === 1),
    );
    controller.abort();
    assert.equal(((await pending) as Error).name, 'AbortError');
    // the worker's own count (from its heartbeats) drops only if the cancel reached it
    await waitFor(
      'the worker to report nothing in flight',
      async () => {
        const workers = await adminWorkers(url);
        return workers.every(
          (w) => w.inFlight === 0 && (w as unknown as { reportedInFlight: number }).reportedInFlight === 0,
        );
      },
      10_000,
    );
  });

  await t.test("a model's malformed output -> 500 BACKEND_ERROR, never a client error", async () => {
    await expectError(
      client.infer('garbled', [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }]),
      500,
      'BACKEND_ERROR',
      /malformed output: .*"text"/,
    );
  });

  await t.test(
    "only worker faults count against a worker: not bad input, deadlines, cancels or the model's own errors",
    async () => {
      const w1Stats = (await adminWorkers(url)).find((w) => w.id === 'w1')!;
      assert.ok(w1Stats.requests >= 5, 'w1 saw deadlines, a cancel and a backend error');
      assert.equal(
        w1Stats.failures,
        0,
        "a malformed output is the model's failure on that request (BACKEND_ERROR), not the worker's",
      );
    },
  );

  await t.test('a worker that dies mid-request -> 503 for that request, coordinator unharmed', async () => {
    await expectError(
      client.infer('crash', [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }]),
      503,
      'CONNECTION_LOST',
    );
    const res = await client.infer('echo', x1);
    assert.equal(res.outputs[0]!.data.length, 4);
  });

  await t.test(
    'SIGKILL of a worker with a request in flight -> 503 for that request, never a hang',
    async () => {
      const victim = (await adminWorkers(url)).find((w) => w.id === 'victim');
      assert.ok(victim);
      const pending = client.infer('doomed', x1, { timeoutMs: 60_000 }).catch((err: unknown) => err);
      await waitFor(
        'the request to be running on the victim',
        async () => (await adminWorkers(url)).find((w) => w.id === 'victim')?.inFlight === 1,
      );
      process.kill(victim.pid, 'SIGKILL');
      const err = await pending;
      assert.ok(err instanceof InferenceClientError);
      assert.equal(err.status, 503);
      assert.equal(err.code, 'CONNECTION_LOST');
      assert.equal((await fetch(`${url}/v2/health/live`)).status, 200);
    },
  );

  await t.test('garbage bytes on the RPC port close that connection only', async () => {
    const [host, port] = rpc.split(':');
    const closed = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: host!, port: Number(port) });
      let received = '';
      socket.on('data', (d) => {
        received += d.toString('latin1');
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(received));
      socket.on('connect', () => socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')));
    });
    assert.match(
      closed,
      /FRAME_TOO_LARGE|PROTOCOL_ERROR|UNKNOWN_MESSAGE/,
      'the peer is told why before the close',
    );
    const res = await client.infer('echo', x1);
    assert.equal(res.outputs[0]!.data.length, 4);
    assert.ok(
      (await adminWorkers(url)).some((w) => w.id === 'w1'),
      'w1 is still connected',
    );
  });

  await t.test('SIGTERM drains a worker: its in-flight request completes, then it exits 0', async () => {
    const drainer = (await adminWorkers(url)).find((w) => w.id === 'drainer')!;
    const pending = client.infer('medium', x1);
    await waitFor(
      'the medium request to be in flight',
      async () => (await adminWorkers(url)).find((w) => w.id === 'drainer')?.inFlight === 1,
    );
    process.kill(drainer.pid, 'SIGTERM');
    const res = await pending;
    assert.deepEqual(res.outputs[0]!.data, [1, 2, 3, 4]);
    await waitFor(
      'the drained worker to leave',
      async () => !(await adminWorkers(url)).some((w) => w.id === 'drainer'),
    );
  });

  // w1 is referenced to keep its handle alive for the whole test
  assert.ok(w1.child.pid);
});
