/**
 * RPC security with real processes on loopback (issue 14, item 4): who may join, what never
 * crosses the wire, which models a worker is routed, protocol versions, and TLS. Each test is
 * one finding against the old token-in-HELLO handshake; intruders are this process speaking
 * the protocol through src/rpc (or raw bytes), the rest are real `infergrid` processes.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { type AddressInfo, type Socket, connect, createServer } from 'node:net';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import {
  type Frame,
  FrameDecoder,
  MESSAGE_KIND,
  NONCE_BYTES,
  PROTOCOL_MAGIC,
  createPackr,
  encodeFrameToBuffer,
} from '../../src/protocol/index.ts';
import {
  type HandshakeIdentity,
  type RpcConnection,
  type RpcTls,
  clusterCredentials,
  deriveWorkerKey,
  dial,
  dialHandshake,
  loadRpcTls,
  workerCredentials,
} from '../../src/rpc/index.ts';
import { parseHostPort } from '../../src/util/address.ts';
import { assertCode } from '../fixtures/assert.ts';
import {
  BIN,
  TEST_CLUSTER_SECRET,
  adminWorkers,
  spawnInfergrid,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { MAX_FRAME_BYTES, QUIET } from '../fixtures/rpc.ts';
import { makeTestPki } from '../fixtures/tls.ts';

const TIMEOUT = { timeout: 90_000 };
const HANDSHAKE_MS = 5000;

const MODELS = `
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 2000, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 }
models:
  - name: echo
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`;

const x = [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 2], data: [5, 6] }];

/** echo as a worker reports it in REGISTER. */
const ECHO_STATUS = {
  name: 'echo',
  version: '1',
  state: 'ready',
  platform: 'sim',
  inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [-1, 2] }],
  outputs: [{ name: 'OUTPUT0', datatype: 'FP32', shape: [-1, 2] }],
  batchable: false,
  maxBatchSize: 0,
};

/** Settles to the rejection reason, or undefined when it resolved. */
function outcome(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (err: unknown) => err,
  );
}

/**
 * This process dialing `address` as `self`; counts the requests it is sent (and fails each, so
 * nothing waits on it). A worker sends REGISTER right behind HELLO, hosting echo: were the
 * handshake to let it through, the coordinator would list it and route echo to it. Closed
 * after the test.
 */
async function intruder(
  t: TestContext,
  address: string,
  self: HandshakeIdentity,
  tls?: RpcTls,
): Promise<{ conn: RpcConnection; handshake: unknown; requests: () => number }> {
  const conn = await dial(parseHostPort(address, 'test'), QUIET, HANDSHAKE_MS, tls);
  t.after(() => conn.close());
  let requests = 0;
  conn.setRequestHandler((req) => {
    requests++;
    req.fail(new InfergridError('INTERNAL', 'the intruder answers nothing'));
  });
  const handshake = outcome(dialHandshake(conn, self, HANDSHAKE_MS));
  if (self.role === 'worker')
    conn.send(MESSAGE_KIND.REGISTER, {
      workerId: self.id,
      pid: process.pid,
      models: [ECHO_STATUS],
      draining: false,
    });
  return { conn, handshake: await handshake, requests: () => requests };
}

const asWorker = (id: string, key: Buffer | undefined): HandshakeIdentity => ({
  role: 'worker',
  id,
  credentials: key ? workerCredentials(id, key) : undefined,
});

test(
  'rpc security - a worker with no or a wrong key cannot register, and is sent no tensors',
  TIMEOUT,
  async (t) => {
    const coordinator = await startCoordinator(t, writeConfig(t, MODELS));
    const cases: [string, Buffer | undefined, RegExp][] = [
      ['no-key', undefined, /presented no credentials/],
      ['wrong-key', deriveWorkerKey('not-the-cluster-secret', 'wrong-key'), /proved a different key/],
    ];
    const rogues = [];
    for (const [id, key, message] of cases) {
      const rogue = await intruder(t, coordinator.rpcAddress, asWorker(id, key));
      rogues.push(rogue);
      assertCode(rogue.handshake, 'AUTH_FAILED', message);
      // whatever it sends next goes nowhere: the connection is closed
      assert.equal(rogue.conn.closed, true);
    }
    // the REGISTERs sent behind HELLO were dropped with the connections
    assert.deepEqual(await adminWorkers(coordinator.url), []);
    await assert.rejects(coordinator.client.infer('echo', x), /UNAVAILABLE|no worker|not ready/i);
    assert.deepEqual(
      rogues.map((r) => r.requests()),
      [0, 0],
    );
  },
);

test("rpc security - a worker's key cannot register another worker's id", TIMEOUT, async (t) => {
  const config = writeConfig(t, MODELS);
  const coordinator = await startCoordinator(t, config);
  // a real worker process holding worker a's key, claiming to be b
  const keyOfA = deriveWorkerKey(TEST_CLUSTER_SECRET, 'a').toString('hex');
  const posing = await startWorker(t, config, 'b', {
    coordinator: coordinator.rpcAddress,
    env: { INFERGRID_TOKEN: '', INFERGRID_WORKER_KEY: keyOfA },
  });
  await waitFor('the refusal in the worker log', () =>
    posing.output().includes('proved a different key for worker \\"b\\"'),
  );
  assert.deepEqual(await adminWorkers(coordinator.url), []);
  // and through the library, with the handshake's own answer
  const rogue = await intruder(t, coordinator.rpcAddress, asWorker('b', Buffer.from(keyOfA, 'hex')));
  assertCode(rogue.handshake, 'AUTH_FAILED');
  // the same key as its own id is fine
  const honest = await startWorker(t, config, 'a', {
    coordinator: coordinator.rpcAddress,
    env: { INFERGRID_TOKEN: '', INFERGRID_WORKER_KEY: keyOfA },
  });
  const [joined] = await waitForWorkers(coordinator.url, 1, ['echo']);
  assert.equal(joined!.id, 'a');
  assert.equal(joined!.pid, honest.child.pid);
});

test(
  "rpc security - a worker's listening port refuses a coordinator without the key and loads nothing",
  TIMEOUT,
  async (t) => {
    const config = writeConfig(t, MODELS);
    const worker = await startWorker(t, config, 'w1', { port: 0 });
    const loaded: string[] = [];
    worker.child.on('message', (m: { type?: string; models?: { name: string }[] }) => {
      if (m.type === 'models') for (const model of m.models ?? []) loaded.push(model.name);
    });
    const address = `127.0.0.1:${worker.ready.port}`;
    for (const credentials of [undefined, clusterCredentials('not-the-cluster-secret')]) {
      const conn = await dial(parseHostPort(address, 'test'), QUIET, HANDSHAKE_MS);
      t.after(() => conn.close());
      const handshake = outcome(
        dialHandshake(conn, { role: 'coordinator', id: 'rogue', credentials }, HANDSHAKE_MS),
      );
      // pipelined behind HELLO: a load that only an accepted coordinator may make
      const load = outcome(
        conn.request(MESSAGE_KIND.MODEL_CONTROL_REQUEST, {
          action: 'load',
          models: [{ ...ECHO_STATUS, name: 'evil', backend: 'sim' }],
        }),
      );
      assertCode(await handshake, 'AUTH_FAILED');
      assertCode(await load, 'CONNECTION_LOST');
    }
    // a real coordinator with the secret gets in, and the worker never loaded "evil"
    const coordinator = await startCoordinator(t, config, ['--worker', address]);
    await waitForWorkers(coordinator.url, 1, ['echo']);
    assert.deepEqual((await coordinator.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
    assert.equal(loaded.includes('evil'), false, `the worker loaded ${loaded.join(', ')}`);
    assert.ok(!worker.output().includes('"evil"'));
  },
);

test(
  'rpc security - a listener the coordinator is told to dial never receives the secret or a key',
  TIMEOUT,
  async (t) => {
    const coordinator = await startCoordinator(t, writeConfig(t, MODELS));
    // a listener that plays a worker as far as it can without the key, recording every byte
    const received: Buffer[] = [];
    const sockets = new Set<Socket>();
    let connections = 0;
    let challengesSent = 0;
    const packr = createPackr();
    const fake = createServer((socket) => {
      connections++;
      sockets.add(socket);
      const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES, packr });
      socket.on('error', () => {});
      socket.on('data', (chunk: Buffer) => {
        received.push(chunk);
        for (const frame of decoder.push(chunk)) {
          if (frame.kind !== MESSAGE_KIND.HELLO) continue;
          const challenge = {
            protocolVersion: (frame.meta as { protocolVersion: number }).protocolVersion,
            role: 'worker',
            id: 'w1',
            nonce: Buffer.alloc(NONCE_BYTES, 7),
            // every other connection claims a proof, to hear what a coordinator says to a wrong one
            ...(challengesSent % 2 ? { proof: Buffer.alloc(32, 1) } : {}),
          };
          challengesSent++;
          socket.write(
            encodeFrameToBuffer(
              packr,
              { kind: MESSAGE_KIND.CHALLENGE, flags: 0, requestId: 0, meta: challenge, attachments: [] },
              MAX_FRAME_BYTES,
            ),
          );
        }
      });
    });
    t.after(() => {
      for (const s of sockets) s.destroy();
      fake.close();
    });
    fake.listen(0, '127.0.0.1');
    await once(fake, 'listening');
    const { port } = fake.address() as AddressInfo;

    const res = await fetch(`${coordinator.url}/admin/workers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address: `127.0.0.1:${port}` }),
    });
    assert.ok(res.ok, `POST /admin/workers: ${res.status}`);
    // the coordinator redials after each refusal: hear it out a few times, both ways of failing
    await waitFor('four handshakes with the fake worker', () => challengesSent >= 4 && connections >= 4);
    const wire = Buffer.concat(received);
    assert.ok(wire.includes(Buffer.from(PROTOCOL_MAGIC)), 'the fake heard HELLOs');
    const keys = ['w1', 'coordinator', 'fake'].map((id) => deriveWorkerKey(TEST_CLUSTER_SECRET, id));
    for (const needle of [
      Buffer.from(TEST_CLUSTER_SECRET),
      ...keys,
      ...keys.map((k) => Buffer.from(k.toString('hex'))),
      ...keys.map((k) => Buffer.from(k.toString('base64'))),
    ])
      assert.equal(wire.indexOf(needle), -1, 'a secret reached the listener');
    assert.deepEqual(await adminWorkers(coordinator.url), []);
  },
);

test(
  'rpc security - a second registration with a live worker id is refused and the first keeps serving',
  TIMEOUT,
  async (t) => {
    const config = writeConfig(t, MODELS);
    const coordinator = await startCoordinator(t, config);
    const first = await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
    await waitForWorkers(coordinator.url, 1, ['echo']);
    const second = await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
    await waitFor(
      'the refusal in the second worker log',
      () => second.output().includes('WORKER_ID_IN_USE') || second.output().includes('is in use'),
    );
    for (let i = 0; i < 5; i++)
      assert.deepEqual((await coordinator.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
    const [only] = await adminWorkers(coordinator.url);
    assert.equal((await adminWorkers(coordinator.url)).length, 1);
    assert.equal(only!.pid, first.child.pid, 'the first worker was replaced');
    assert.equal(only!.requests, 5);

    // the id is free again once the first is gone: the second (still redialing) gets in
    assert.equal(await first.stop(), 0);
    await waitFor('the second worker to take the id', async () => {
      const workers = await adminWorkers(coordinator.url);
      return (
        workers.length === 1 &&
        workers[0]!.pid === second.child.pid &&
        workers[0]!.models.some((m) => m.state === 'ready')
      );
    });
    assert.deepEqual((await coordinator.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
  },
);

test('rpc security - a worker is routed only the models the coordinator places on it', TIMEOUT, async (t) => {
  // the coordinator places echo on w1 only; w2 hosts it anyway (--models) and advertises
  // "extra", which the coordinator's config does not have
  const coordinatorConfig = writeConfig(t, `${MODELS}    workers: [w1]\nworkers: [{ id: w1 }, { id: w2 }]\n`);
  const workerConfig = writeConfig(
    t,
    `${MODELS}  - name: extra
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`,
  );
  const coordinator = await startCoordinator(t, coordinatorConfig);
  await startWorker(t, workerConfig, 'w1', {
    coordinator: coordinator.rpcAddress,
    extraArgs: ['--models', 'echo'],
  });
  await startWorker(t, workerConfig, 'w2', {
    coordinator: coordinator.rpcAddress,
    extraArgs: ['--models', 'echo,extra'],
  });
  await waitFor('the ignored models in the coordinator log', () =>
    coordinator.output().includes('does not place on it'),
  );
  const workers = await waitFor('both workers', async () => {
    const list = await adminWorkers(coordinator.url);
    return list.length === 2 && list.find((w) => w.id === 'w1')?.models.some((m) => m.state === 'ready')
      ? list
      : undefined;
  });
  assert.deepEqual(workers.find((w) => w.id === 'w2')!.models, []);
  for (let i = 0; i < 6; i++) await coordinator.client.infer('echo', x);
  const after = await adminWorkers(coordinator.url);
  assert.equal(after.find((w) => w.id === 'w1')!.requests, 6);
  assert.equal(after.find((w) => w.id === 'w2')!.requests, 0);
  await assert.rejects(coordinator.client.infer('extra', x), /model "extra" is not served here/);
});

for (const role of ['coordinator', 'worker'] as const) {
  test(
    `rpc security - ${role} refuses to start without credentials unless --insecure`,
    TIMEOUT,
    async (t) => {
      const config = writeConfig(t, MODELS);
      const args =
        role === 'coordinator'
          ? ['coordinator', '--config', config, '--port', '0', '--rpc-port', '0']
          : ['worker', '--config', config, '--id', 'w1', '--port', '0'];
      const noCredentials = { INFERGRID_TOKEN: '', INFERGRID_WORKER_KEY: '' };
      await assert.rejects(spawnInfergrid(t, args, { env: noCredentials }), (err: Error) => {
        assert.match(err.message, /exited with 1 before it was ready/);
        assert.match(err.message, new RegExp(`infergrid ${role}: no RPC credentials`));
        assert.match(err.message, /--insecure/);
        return true;
      });
      const insecure = await spawnInfergrid(t, [...args, '--insecure'], { env: noCredentials });
      assert.match(insecure.output(), /RPC RUNS WITHOUT AUTHENTICATION \(--insecure\)/);
    },
  );
}

test(
  "rpc security - `infergrid credential` prints a worker's key from the cluster secret, and says what it needs",
  TIMEOUT,
  () => {
    const run = (args: string[], env: NodeJS.ProcessEnv) =>
      spawnSync(process.execPath, [BIN, 'credential', ...args], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
      });
    const printed = run(['--worker', 'gpu-1'], { INFERGRID_TOKEN: 's3cret' });
    assert.equal(printed.status, 0, printed.stderr);
    assert.equal(printed.stdout.trim(), deriveWorkerKey('s3cret', 'gpu-1').toString('hex'));
    const noSecret = run(['--worker', 'gpu-1'], { INFERGRID_TOKEN: '' });
    assert.equal(noSecret.status, 1);
    assert.match(noSecret.stderr, /no cluster secret to derive the key from/);
    assert.match(run(['--help'], {}).stdout, /Usage: infergrid credential --worker <id>/);
  },
);

test('rpc security - a worker key without --id is refused at start-up', TIMEOUT, async (t) => {
  const config = writeConfig(t, MODELS);
  const key = deriveWorkerKey(TEST_CLUSTER_SECRET, 'w1').toString('hex');
  await assert.rejects(
    spawnInfergrid(t, ['worker', '--config', config, '--port', '0'], { env: { INFERGRID_WORKER_KEY: key } }),
    /belongs to one worker id: give it with --id/,
  );
});

test('rpc security - a peer of the old protocol version is told VERSION_MISMATCH', TIMEOUT, async (t) => {
  const coordinator = await startCoordinator(t, writeConfig(t, MODELS));
  const { port } = parseHostPort(coordinator.rpcAddress, 'test');
  const socket = connect(port, '127.0.0.1');
  t.after(() => socket.destroy());
  const packr = createPackr();
  const decoder = new FrameDecoder({ maxFrameBytes: MAX_FRAME_BYTES, packr });
  const frames: Frame[] = [];
  socket.on('data', (chunk: Buffer) => frames.push(...decoder.push(chunk)));
  const closed = once(socket, 'close');
  // exactly what a version-1 worker sent
  const v1Hello = {
    magic: PROTOCOL_MAGIC,
    protocolVersion: 1,
    role: 'worker',
    id: 'old',
    token: TEST_CLUSTER_SECRET,
  };
  socket.write(
    encodeFrameToBuffer(
      packr,
      { kind: MESSAGE_KIND.HELLO, flags: 0, requestId: 0, meta: v1Hello, attachments: [] },
      MAX_FRAME_BYTES,
    ),
  );
  await closed;
  assert.equal(frames.length, 1);
  assert.equal(frames[0]!.kind, MESSAGE_KIND.ERROR);
  const error = frames[0]!.meta as { code: string; message: string };
  assert.equal(error.code, 'VERSION_MISMATCH');
  assert.match(
    error.message,
    /peer speaks protocol version 1, this coordinator speaks 2; upgrade the worker/,
  );
});

test(
  'rpc security - RPC over TLS with a throwaway CA: infers end to end, refuses plain TCP and a wrong CA',
  TIMEOUT,
  async (t) => {
    const dir = dirname(writeConfig(t, ''));
    makeTestPki(dir, { names: ['127.0.0.1', 'localhost'] });
    const other = makeTestPki(dir, { prefix: 'other' });
    // relative paths: resolved against the config file's folder
    const withTls = (caFile: string): string => {
      const file = join(dir, `tls-${caFile}.yaml`);
      writeFileSync(
        file,
        MODELS.replace(
          'rpc: {',
          `rpc: { tls: { certFile: test-cert.pem, keyFile: test-key.pem, caFile: ${caFile} },`,
        ),
      );
      return file;
    };
    const config = withTls('test-ca.pem');

    const coordinator = await startCoordinator(t, config);
    // one worker dials the coordinator over TLS, the other listens for it over TLS
    await startWorker(t, config, 'dialing', { coordinator: coordinator.rpcAddress });
    const listening = await startWorker(t, config, 'listening', { port: 0 });
    const res = await fetch(`${coordinator.url}/admin/workers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address: `127.0.0.1:${listening.ready.port}` }),
    });
    assert.ok(res.ok);
    await waitForWorkers(coordinator.url, 2, ['echo']);
    for (let i = 0; i < 6; i++)
      assert.deepEqual((await coordinator.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
    assert.deepEqual(
      (await adminWorkers(coordinator.url)).map((w) => w.requests),
      [3, 3],
    );

    // plain TCP to the TLS port: the handshake fails, nothing crashes
    const plain = await intruder(
      t,
      coordinator.rpcAddress,
      asWorker('plain', deriveWorkerKey(TEST_CLUSTER_SECRET, 'plain')),
    );
    assertCode(plain.handshake, 'CONNECTION_LOST');
    // a dialer trusting another CA refuses the coordinator's certificate before any RPC byte
    await assert.rejects(
      dial(
        parseHostPort(coordinator.rpcAddress, 'test'),
        QUIET,
        HANDSHAKE_MS,
        loadRpcTls({ caFile: other.caFile }),
      ),
      (err: unknown) => {
        assertCode(err, 'CONNECTION_LOST', /certificate/);
        return true;
      },
    );
    // and a worker process given the wrong CA says why and never joins
    const misled = await startWorker(t, withTls('other-ca.pem'), 'misled', {
      coordinator: coordinator.rpcAddress,
    });
    await waitFor('the certificate refusal in the worker log', () =>
      misled.output().includes('rpc.tls.caFile must hold the CA'),
    );
    assert.equal((await adminWorkers(coordinator.url)).length, 2);
    assert.deepEqual((await coordinator.client.infer('echo', x)).outputs[0]!.data, [5, 6]);
  },
);
