/**
 * The abort signal a backend gets (InferContext.signal) is the request's cancellation: a `js`
 * model that waits on its signal sees it abort when the client cancels (RPC CANCEL) or the
 * request's deadline passes, and for a batch only once every request in it has left. The model
 * (tests/fixtures/models/wait-for-abort.ts) never answers on its own and tells the test what
 * it saw on a diagnostics channel.
 */

import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { fileURLToPath } from 'node:url';
import { type TestContext, test } from 'node:test';
import { createBackends } from '../../src/backends/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { MESSAGE_KIND } from '../../src/protocol/index.ts';
import { dial, dialHandshake } from '../../src/rpc/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import type { Tensor } from '../../src/tensor/index.ts';
import { ModelHost, Worker } from '../../src/worker/index.ts';
import { assertCode, isCode } from '../fixtures/assert.ts';
import type { WaitForAbortEvent } from '../fixtures/models/wait-for-abort.ts';

const MODEL_PATH = fileURLToPath(new URL('../fixtures/models/wait-for-abort.ts', import.meta.url));
const TIMEOUT = { timeout: 20_000 };

/** What the model published, and a way to wait for the next event of a kind. */
function watch(t: TestContext, name: string) {
  const seen: WaitForAbortEvent[] = [];
  const waiters: { kind: WaitForAbortEvent['event']; resolve: (e: WaitForAbortEvent) => void }[] = [];
  const onMessage = (message: unknown): void => {
    const e = message as WaitForAbortEvent;
    seen.push(e);
    const at = waiters.findIndex((w) => w.kind === e.event);
    if (at >= 0) waiters.splice(at, 1)[0]!.resolve(e);
  };
  subscribe(name, onMessage);
  t.after(() => unsubscribe(name, onMessage));
  return {
    seen,
    aborts: () => seen.filter((e) => e.event === 'aborted'),
    /** The next event of this kind from now on. */
    next: <K extends WaitForAbortEvent['event']>(kind: K) =>
      new Promise<Extract<WaitForAbortEvent, { event: K }>>((resolve) =>
        waiters.push({ kind, resolve: resolve as (e: WaitForAbortEvent) => void }),
      ),
  };
}

async function hostWith(channel: string) {
  const config = configSchema.parse({
    models: [
      {
        name: 'wait',
        backend: 'js',
        path: MODEL_PATH,
        options: { channel },
        maxBatchSize: 4,
        batching: { enabled: true, maxQueueDelayMs: 0 },
      },
    ],
  });
  const host = new ModelHost(createBackends(), silentLogger());
  const hosted = await host.load(config.models[0]!);
  assert.equal(hosted.state, 'ready', hosted.error);
  return { host, config };
}

const x = (rows: number): Tensor => ({
  name: 'x',
  datatype: 'FP32',
  shape: [rows],
  data: new Uint8Array(rows * 4),
});

test(
  'backend abort - a batch signal aborts only when every request in the batch is cancelled',
  TIMEOUT,
  async (t) => {
    const events = watch(t, 'test:wait-for-abort:batch');
    const { host } = await hostWith('test:wait-for-abort:batch');
    const model = host.get('wait', undefined);
    const run = (signal: AbortSignal) => host.run(model, { inputs: [x(1)], signal });

    // a runs alone; b and c queue behind it and leave together when it ends
    const a = new AbortController();
    const aStarted = events.next('started');
    const aRun = run(a.signal);
    assert.equal((await aStarted).rows, 1);
    const b = new AbortController();
    const c = new AbortController();
    const bRun = run(b.signal);
    const cRun = run(c.signal);
    assert.equal(model.batcher.queued, 2);

    const aAborted = events.next('aborted');
    const bcStarted = events.next('started');
    a.abort(new Error('a went away'));
    await assert.rejects(aRun, isCode('CANCELLED'));
    assert.equal((await aAborted).rows, 1, 'a lone request cancelled: its run is aborted');
    assert.equal((await bcStarted).rows, 2, 'b and c run as one batch');

    b.abort(new Error('b went away'));
    await assert.rejects(bRun, isCode('CANCELLED'), 'b is answered at once');
    assert.equal(events.aborts().length, 1, 'c still waits for the batch: it is not aborted');

    const bcAborted = events.next('aborted');
    c.abort(new Error('c went away'));
    await assert.rejects(cRun, isCode('CANCELLED'));
    const seen = await bcAborted;
    assert.equal(seen.rows, 2, 'the last one gone, the batch is aborted');
    assertCode(seen.reason, 'CANCELLED');
    assert.equal((seen.reason.cause as Error).message, 'c went away', "the reason is the last request's");
    assert.equal(events.aborts().length, 2);
  },
);

test(
  'backend abort - an RPC CANCEL and a deadline reach the model running the request',
  TIMEOUT,
  async (t) => {
    const events = watch(t, 'test:wait-for-abort:rpc');
    const { host, config } = await hostWith('test:wait-for-abort:rpc');
    const worker = new Worker({
      id: 'w',
      host,
      listen: { host: '127.0.0.1', port: 0 },
      rpc: config.rpc,
      logger: silentLogger(),
    });
    await worker.start();
    t.after(() => worker.close());
    const conn = await dial(
      { host: '127.0.0.1', port: worker.port! },
      { maxFrameBytes: config.rpc.maxFrameBytes, heartbeatIntervalMs: 0, peerTimeoutMs: 0 },
      3000,
    );
    t.after(() => conn.close());
    await dialHandshake(conn, { role: 'coordinator', id: 'c' }, 3000);
    await conn.receive(3000, 'REGISTER');
    const meta = { model: 'wait', version: '1', inputs: [{ name: 'x', datatype: 'FP32', shape: [1] }] };
    const body = [new Uint8Array(4)];

    // the client cancels: the worker gets CANCEL, the model's signal aborts
    const client = new AbortController();
    const started = events.next('started');
    const cancelled = conn.request(MESSAGE_KIND.INFER_REQUEST, meta, body, { signal: client.signal });
    await started;
    const aborted = events.next('aborted');
    client.abort();
    await assert.rejects(cancelled, isCode('CANCELLED'));
    const byCancel = await aborted;
    assertCode(byCancel.reason, 'CANCELLED', /cancelled by the coordinator/);

    // the request's deadline passes while the model runs it; the worker answers DEADLINE_EXCEEDED
    const expired = events.next('aborted');
    await assert.rejects(
      conn.request(MESSAGE_KIND.INFER_REQUEST, { ...meta, timeoutMs: 100 }, body),
      isCode('DEADLINE_EXCEEDED', /while it ran/),
    );
    assertCode((await expired).reason, 'DEADLINE_EXCEEDED');
    assert.equal(events.aborts().length, 2);
  },
);
