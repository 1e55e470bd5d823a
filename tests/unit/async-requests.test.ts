/**
 * Asynchronous requests through a real fastify app (`inject`): the async routes plus a small
 * fake infer route that submits runs the test settles itself (deferreds, never sleeps).
 * Expiry moves an injected clock. Persistence runs against a real SQLite file and, when one is
 * reachable, the shared Redis at 127.0.0.1:6379 (each test in its own namespace).
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { type TestContext, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  prefersRespondAsync,
  registerAsyncRoutes,
  replyAccepted,
  stripAsyncParameter,
  wantsAsync,
} from '../../src/api/async-routes.ts';
import { sendError } from '../../src/api/errors.ts';
import {
  AsyncRequests,
  type AsyncRequestsOptions,
  asyncStore,
  persistentTier,
} from '../../src/async/index.ts';
import { clusterSchema } from '../../src/config/schema.ts';
import { type CacheStore, MemoryStore, RedisStore, SqliteStore, TieredStore } from '../../src/cache/index.ts';
import { InfergridError, toInfergridError } from '../../src/errors.ts';
import type { Parameters } from '../../src/protocol/index.ts';
import { createLogger } from '../../src/telemetry/index.ts';
import { type Deferred, deferred } from '../../src/util/deferred.ts';
import { caught } from '../fixtures/assert.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const CLOCK_START_MS = 1_700_000_000_000;
const TTL_MS = 60_000;
/** How many event-loop turns a poll loop waits for a run to settle before failing. */
const MAX_TURNS = 1000;

interface StartedRun {
  model: string;
  parameters: Record<string, unknown>;
  signal: AbortSignal;
  /** Resolve with the response, or reject with the error, the run ends with. */
  gate: Deferred<object>;
}

interface Harness {
  app: FastifyInstance;
  requests: AsyncRequests;
  /** Every run submitted so far, in order. */
  started: StartedRun[];
}

/** A fastify app with the async routes and a fake infer route whose runs wait on `started[i].gate`. */
async function harness(t: TestContext, options: AsyncRequestsOptions = {}): Promise<Harness> {
  const requests = new AsyncRequests(options);
  const app = Fastify();
  t.after(async () => {
    await app.close();
    await requests.close();
  });
  const started: StartedRun[] = [];
  app.setErrorHandler((err, _req, reply) =>
    sendError(reply, err instanceof InfergridError ? err : toInfergridError(err)),
  );
  registerAsyncRoutes(app, requests);
  app.post<{ Params: { model: string }; Body: { parameters?: Record<string, unknown> } }>(
    '/v2/models/:model/infer',
    async (req, reply) => {
      const parameters = req.body.parameters ?? {};
      const model = req.params.model;
      if (!wantsAsync(req.headers, parameters)) return { model_name: model, outputs: [] };
      const { id } = requests.submit((signal) => {
        const gate = deferred<object>();
        started.push({ model, parameters: stripAsyncParameter(parameters as Parameters), signal, gate });
        return gate.promise;
      });
      return replyAccepted(reply, id, prefersRespondAsync(req.headers));
    },
  );
  await app.ready();
  return { app, requests, started };
}

function response(model: string, value: number): object {
  return {
    model_name: model,
    model_version: '1',
    outputs: [{ name: 'y', datatype: 'FP32', shape: [1], data: [value] }],
  };
}

async function submitAsync(app: FastifyInstance, model = 'm'): Promise<string> {
  const res = await app.inject({
    method: 'POST',
    url: `/v2/models/${model}/infer`,
    payload: { parameters: { async: true, temperature: 1 }, inputs: [] },
  });
  assert.equal(res.statusCode, 202, res.body);
  const body = res.json() as { id: string; status: string };
  assert.equal(body.status, 'pending');
  assert.equal(res.headers.location, `/v2/requests/${body.id}`);
  return body.id;
}

/** GET /v2/requests/{id}'s body: a record (200), or `{ error: message, code }` (404). */
interface PollBody {
  id: string;
  status: 'pending' | 'done' | 'failed';
  submitted_at: string;
  finished_at?: string;
  response?: object;
  error: { code: string; message: string; details?: object };
  http_status?: number;
  code?: string;
}

async function poll(app: FastifyInstance, id: string): Promise<{ statusCode: number; body: PollBody }> {
  const res = await app.inject({ method: 'GET', url: `/v2/requests/${id}` });
  return { statusCode: res.statusCode, body: res.json() };
}

/** GET of a request that should be gone: its 404 body. */
async function pollMissing(app: FastifyInstance, id: string): Promise<{ error: string; code: string }> {
  const res = await app.inject({ method: 'GET', url: `/v2/requests/${id}` });
  assert.equal(res.statusCode, 404, res.body);
  return res.json();
}

/** Polls until the request is no longer pending (the run settles a few microtasks after its gate). */
async function pollUntilFinished(app: FastifyInstance, id: string): Promise<PollBody> {
  for (let turn = 0; turn < MAX_TURNS; turn++) {
    const { statusCode, body } = await poll(app, id);
    assert.equal(statusCode, 200, JSON.stringify(body));
    if (body.status !== 'pending') return body;
    await nextTurn();
  }
  assert.fail(`request ${id} still pending after ${MAX_TURNS} event-loop turns`);
}

function tempFile(t: TestContext, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-async-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, name);
}

function sqliteStore(t: TestContext, path: string, now?: () => number): SqliteStore {
  const store = new SqliteStore({
    path,
    maxBytes: 64 << 20,
    maxRows: 10_000,
    sweepIntervalMs: 60_000,
    ...(now ? { now } : {}),
  });
  t.after(() => store.close());
  return store;
}

// ---------------------------------------------------------------------------------------------

test('async requests - a request answers 202 at once, polls pending, then done with the response', async (t) => {
  const { app, started } = await harness(t);
  const id = await submitAsync(app);
  assert.equal(started.length, 1, 'the run starts at once');
  assert.deepEqual(started[0]!.parameters, { temperature: 1 }, 'the async parameter never reaches the run');

  const pending = await poll(app, id);
  assert.equal(pending.statusCode, 200);
  assert.equal(pending.body.status, 'pending');
  assert.equal(pending.body.id, id);
  assert.ok(!Number.isNaN(Date.parse(pending.body.submitted_at)), pending.body.submitted_at);
  assert.equal(pending.body.response, undefined);

  started[0]!.gate.resolve(response('m', 42));
  const done = await pollUntilFinished(app, id);
  assert.equal(done.status, 'done');
  assert.deepEqual(done.response, response('m', 42));
  assert.ok(!Number.isNaN(Date.parse(done.finished_at!)));
});

test('async requests - Prefer: respond-async is honoured and answered with Preference-Applied', async (t) => {
  const { app, started } = await harness(t);
  const res = await app.inject({
    method: 'POST',
    url: '/v2/models/m/infer',
    headers: { prefer: 'wait=5, Respond-Async' },
    payload: { inputs: [] },
  });
  assert.equal(res.statusCode, 202);
  assert.equal(res.headers['preference-applied'], 'respond-async');
  const { id } = res.json() as { id: string };
  assert.equal(res.headers.location, `/v2/requests/${id}`);
  assert.equal(started.length, 1);

  const viaParameter = await app.inject({
    method: 'POST',
    url: '/v2/models/m/infer',
    payload: { parameters: { async: 'true' }, inputs: [] },
  });
  assert.equal(viaParameter.statusCode, 202);
  assert.equal(
    viaParameter.headers['preference-applied'],
    undefined,
    'only the header gets Preference-Applied',
  );

  const sync = await app.inject({ method: 'POST', url: '/v2/models/m/infer', payload: { inputs: [] } });
  assert.equal(sync.statusCode, 200, 'without either, the request is answered synchronously');

  const bad = await app.inject({
    method: 'POST',
    url: '/v2/models/m/infer',
    payload: { parameters: { async: 'yes' }, inputs: [] },
  });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().code, 'INVALID_ARGUMENT');
  assert.match(bad.json().error, /parameter "async" must be true or false, got "yes"/);
});

test('async requests - wantsAsync, prefersRespondAsync and stripAsyncParameter', () => {
  assert.equal(prefersRespondAsync({}), false);
  assert.equal(prefersRespondAsync({ prefer: 'respond-async' }), true);
  assert.equal(prefersRespondAsync({ prefer: 'RESPOND-ASYNC; foo=bar' }), true);
  assert.equal(prefersRespondAsync({ prefer: ['return=minimal', 'wait=10,respond-async'] }), true);
  assert.equal(prefersRespondAsync({ prefer: 'return=minimal, wait=10' }), false);
  assert.equal(prefersRespondAsync({ prefer: 'handling=respond-async' }), false, 'a value is not the token');
  assert.equal(wantsAsync({}, undefined), false);
  assert.equal(wantsAsync({}, { async: true }), true);
  assert.equal(wantsAsync({}, { async: 'true' }), true);
  assert.equal(wantsAsync({}, { async: false }), false);
  assert.equal(wantsAsync({}, { async: 'false' }), false);
  assert.equal(wantsAsync({ prefer: 'respond-async' }, {}), true);
  assert.equal(caught(() => wantsAsync({}, { async: 1 })).code, 'INVALID_ARGUMENT');
  const parameters = { async: true, cache: 'bypass', n: 3 };
  assert.deepEqual(stripAsyncParameter(parameters), { cache: 'bypass', n: 3 });
  assert.equal(parameters.async, true, 'the original is left alone');
});

test('async requests - a failed run is recorded with its code, message and HTTP status', async (t) => {
  const { app, started } = await harness(t);
  const typed = await submitAsync(app);
  const untyped = await submitAsync(app);
  started[0]!.gate.reject(
    new InfergridError('INVALID_ARGUMENT', 'input "x": expected FP32 [N,3], got INT64 [3]', {
      details: { input: 'x' },
    }),
  );
  started[1]!.gate.reject(new TypeError('boom'));

  const failed = await pollUntilFinished(app, typed);
  assert.equal(failed.status, 'failed');
  assert.deepEqual(failed.error, {
    code: 'INVALID_ARGUMENT',
    message: 'input "x": expected FP32 [N,3], got INT64 [3]',
    details: { input: 'x' },
  });
  assert.equal(failed.http_status, 400);
  assert.equal(failed.response, undefined);

  const internal = await pollUntilFinished(app, untyped);
  assert.deepEqual(internal.error, { code: 'INTERNAL', message: 'boom' });
  assert.equal(internal.http_status, 500);
});

test('async requests - a run that throws synchronously is recorded as failed', async (t) => {
  const requests = new AsyncRequests();
  t.after(() => requests.close());
  const { id } = requests.submit(() => {
    throw new InfergridError('MODEL_NOT_READY', 'model m is loading');
  });
  for (let turn = 0; turn < MAX_TURNS && (await requests.get(id))?.status === 'pending'; turn++)
    await nextTurn();
  const record = await requests.get(id);
  assert.equal(record?.status, 'failed');
  assert.equal(record.status === 'failed' && record.error.code, 'MODEL_NOT_READY');
  assert.equal(requests.stats().pending, 0);
});

test('async requests - an unknown id is 404 NOT_FOUND saying it is unknown or expired', async (t) => {
  const { app } = await harness(t, { resultTtlMs: TTL_MS });
  for (const id of [randomUUID(), 'not-a-uuid']) {
    const missing = await pollMissing(app, id);
    assert.equal(missing.code, 'NOT_FOUND');
    assert.match(missing.error, /is unknown or expired/);
    assert.match(missing.error, new RegExp(`kept for ${TTL_MS} ms`));
    const del = await app.inject({ method: 'DELETE', url: `/v2/requests/${id}` });
    assert.equal(del.statusCode, 404);
  }
});

test('async requests - an outcome expires resultTtlMs after it finished (injected clock)', async (t) => {
  let now = CLOCK_START_MS;
  const { app, requests, started } = await harness(t, { resultTtlMs: TTL_MS, now: () => now });
  const id = await submitAsync(app);
  now += 5 * TTL_MS; // a long run: its outcome's retention starts when it finishes
  assert.equal((await poll(app, id)).body.status, 'pending', 'a pending request never expires');
  started[0]!.gate.resolve(response('m', 1));
  assert.equal((await pollUntilFinished(app, id)).status, 'done');
  now += TTL_MS - 1;
  assert.equal((await poll(app, id)).statusCode, 200, '1 ms before the end of the retention');
  now += 1;
  assert.equal((await pollMissing(app, id)).code, 'NOT_FOUND', 'at the end of the retention');
  assert.equal(requests.stats().results, 0, 'the expired outcome is dropped from memory');
});

test('async requests - over maxPending is 429 OVERLOADED with Retry-After; a finished run makes room', async (t) => {
  const { app, started, requests } = await harness(t, { maxPending: 2 });
  await submitAsync(app);
  await submitAsync(app);
  const refused = await app.inject({
    method: 'POST',
    url: '/v2/models/m/infer',
    payload: { parameters: { async: true }, inputs: [] },
  });
  assert.equal(refused.statusCode, 429);
  assert.equal(refused.json().code, 'OVERLOADED');
  assert.match(refused.json().error, /2 asynchronous requests are already running.*async\.maxPending/);
  assert.equal(refused.headers['retry-after'], '1');
  assert.equal(started.length, 2, 'the refused run never started');

  started[0]!.gate.resolve(response('m', 1));
  for (let turn = 0; turn < MAX_TURNS && requests.stats().pending === 2; turn++) await nextTurn();
  assert.equal(requests.stats().pending, 1);
  await submitAsync(app);
  assert.equal(started.length, 3);
});

test('async requests - DELETE cancels a pending run (its signal aborts) and then forgets it', async (t) => {
  const { app, started } = await harness(t);
  const id = await submitAsync(app);
  const { signal } = started[0]!;
  const aborted = deferred<unknown>();
  signal.addEventListener('abort', () => aborted.resolve(signal.reason));

  const del = await app.inject({ method: 'DELETE', url: `/v2/requests/${id}` });
  assert.equal(del.statusCode, 200);
  assert.deepEqual(del.json(), { id, action: 'cancelled' });
  const reason = await aborted.promise;
  assert.ok(reason instanceof InfergridError && reason.code === 'CANCELLED', String(reason));

  const cancelled = await poll(app, id);
  assert.equal(cancelled.body.status, 'failed');
  assert.equal(cancelled.body.error.code, 'CANCELLED');
  assert.equal(cancelled.body.http_status, 499);

  // the run answering anyway changes nothing: the request settled once, as cancelled
  started[0]!.gate.resolve(response('m', 1));
  await started[0]!.gate.promise;
  await nextTurn();
  assert.equal((await poll(app, id)).body.error.code, 'CANCELLED');

  const forget = await app.inject({ method: 'DELETE', url: `/v2/requests/${id}` });
  assert.deepEqual(forget.json(), { id, action: 'forgotten' });
  assert.equal((await poll(app, id)).statusCode, 404);
  assert.equal((await app.inject({ method: 'DELETE', url: `/v2/requests/${id}` })).statusCode, 404);
});

test('async requests - close() cancels pending runs and refuses new ones', async (t) => {
  const { app, requests, started } = await harness(t);
  const id = await submitAsync(app);
  await requests.close();
  assert.equal(started[0]!.signal.aborted, true);
  assert.equal((started[0]!.signal.reason as InfergridError).code, 'CANCELLED');
  const record = await poll(app, id);
  assert.equal(record.body.status, 'failed');
  assert.match(record.body.error.message, /shut down/);
  const refused = await app.inject({
    method: 'POST',
    url: '/v2/models/m/infer',
    payload: { parameters: { async: true }, inputs: [] },
  });
  assert.equal(refused.statusCode, 503);
  assert.equal(refused.json().code, 'UNAVAILABLE');
});

test('async requests - memory keeps at most maxResults outcomes, dropping the oldest', async (t) => {
  const { app, started } = await harness(t, { maxResults: 2 });
  const ids = [await submitAsync(app), await submitAsync(app), await submitAsync(app)];
  for (const [i, run] of started.entries()) {
    run.gate.resolve(response('m', i));
    await pollUntilFinished(app, ids[i]!);
  }
  assert.equal((await poll(app, ids[0]!)).statusCode, 404, 'the oldest was dropped (no store behind)');
  assert.equal((await poll(app, ids[1]!)).body.status, 'done');
  assert.equal((await poll(app, ids[2]!)).body.status, 'done');
});

test('async requests - a response larger than maxResultBytes (no store) is recorded as failed, saying why', async (t) => {
  const { app, started } = await harness(t, { maxResultBytes: 300 });
  const id = await submitAsync(app);
  started[0]!.gate.resolve({ outputs: [{ name: 'y', data: new Array(500).fill(1) }] });
  const failed = await pollUntilFinished(app, id);
  assert.equal(failed.status, 'failed');
  assert.equal(failed.error.code, 'PAYLOAD_TOO_LARGE');
  assert.match(failed.error.message, /more than the 300 bytes kept for asynchronous results/);
});

test('async requests - a store that fails is logged and counted, and never fails the request', async (t) => {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const fail = async (): Promise<never> => {
    throw new Error('disk on fire');
  };
  const broken: CacheStore = {
    name: 'broken',
    get: fail,
    set: fail,
    delete: fail,
    has: fail,
    clear: fail,
    stats: () => ({ entries: 0, bytes: 0, evictions: 0, errors: 0 }),
    close: async () => {},
  };
  const logger = createLogger({ level: 'warn', name: 'test', destination });
  const { app, requests, started } = await harness(t, { store: broken, logger });
  const id = await submitAsync(app);
  started[0]!.gate.resolve(response('m', 1));
  assert.equal((await pollUntilFinished(app, id)).status, 'done', 'answered from memory');
  await requests.flush();
  assert.equal((await pollMissing(app, randomUUID())).code, 'NOT_FOUND', 'an unreadable store is a miss');
  // the lease, the pending record, the outcome, the read
  assert.ok(requests.stats().storeErrors >= 4, `storeErrors ${requests.stats().storeErrors}`);
  assert.ok(
    lines.some((line) => line.includes('disk on fire') && line.includes('could not record the outcome')),
    lines.join(''),
  );
});

test('async requests - persistentTier leaves the memory tier out', () => {
  const memory = new MemoryStore({ maxBytes: 1 << 20, maxEntries: 10 });
  const fakeSqlite = { name: 'sqlite' } as CacheStore;
  const fakeRedis = { name: 'redis' } as CacheStore;
  assert.equal(persistentTier(undefined), undefined);
  assert.equal(persistentTier(memory), undefined);
  assert.equal(persistentTier(new TieredStore([memory])), undefined);
  assert.equal(persistentTier(new TieredStore([memory, fakeSqlite])), fakeSqlite);
  assert.equal(persistentTier(new TieredStore([memory, fakeSqlite, fakeRedis]))?.name, 'sqlite+redis');
  assert.equal(persistentTier(fakeRedis), fakeRedis);
});

test("async requests - asyncStore reads the shared Redis alone, and opens the cluster's when the cache has none", async () => {
  const memory = new MemoryStore({ maxBytes: 1 << 20, maxEntries: 10 });
  const fakeSqlite = { name: 'sqlite' } as CacheStore;
  const fakeRedis = { name: 'redis' } as CacheStore;
  const cluster = clusterSchema.parse({
    redis: { url: 'redis://127.0.0.1:6379', namespace: 'test-async-store:' },
  });
  assert.deepEqual(asyncStore(new TieredStore([memory, fakeSqlite]), undefined), {
    store: fakeSqlite,
    owned: undefined,
  });
  // a local tier above Redis would keep stale copies ("pending" after the result was written)
  assert.deepEqual(asyncStore(new TieredStore([memory, fakeSqlite, fakeRedis]), cluster), {
    store: fakeRedis,
    owned: undefined,
  });
  const { store, owned } = asyncStore(new TieredStore([memory, fakeSqlite]), cluster);
  assert.ok(owned);
  assert.equal(store, owned);
  assert.equal(owned.name, 'redis');
  await owned.close();
});

test('async requests - a restarted coordinator on the same SQLite file answers polls', async (t) => {
  let now = CLOCK_START_MS;
  const clock = () => now;
  const path = tempFile(t, 'cache.sqlite');
  const first = await harness(t, {
    store: sqliteStore(t, path, clock),
    resultTtlMs: TTL_MS,
    now: clock,
    instanceLeaseMs: 30_000,
  });
  const done = await submitAsync(first.app);
  const failed = await submitAsync(first.app);
  const running = await submitAsync(first.app);
  first.started[0]!.gate.resolve(response('m', 7));
  first.started[1]!.gate.reject(new InfergridError('BACKEND_ERROR', 'model crashed'));
  await pollUntilFinished(first.app, done);
  await pollUntilFinished(first.app, failed);
  await first.requests.flush();

  // the "restarted" coordinator: a new instance with its own connection to the file, nothing in memory
  const second = await harness(t, { store: sqliteStore(t, path, clock), resultTtlMs: TTL_MS, now: clock });
  assert.notEqual(second.requests.instanceId, first.requests.instanceId);
  const fromStore = await poll(second.app, done);
  assert.equal(fromStore.body.status, 'done');
  assert.deepEqual(fromStore.body.response, response('m', 7));
  const failedFromStore = await poll(second.app, failed);
  assert.deepEqual(failedFromStore.body.error, { code: 'BACKEND_ERROR', message: 'model crashed' });
  assert.equal(failedFromStore.body.http_status, 500);

  // the first still holds its lease: its pending request is pending
  assert.equal((await poll(second.app, running)).body.status, 'pending');
  const elsewhere = await second.app.inject({ method: 'DELETE', url: `/v2/requests/${running}` });
  assert.equal(elsewhere.statusCode, 202, 'no pub/sub on SQLite: recorded for the owner, not yet confirmed');
  assert.deepEqual(elsewhere.json(), { id: running, action: 'cancelling' });
  // the first dies without a word (no close): once its lease lapses, the poll says so
  now += 30_001;
  const orphan = await poll(second.app, running);
  assert.equal(orphan.body.status, 'failed');
  assert.equal(orphan.body.error.code, 'UNAVAILABLE');
  assert.match(orphan.body.error.message, /stopped or restarted before it finished/);
  assert.equal(orphan.body.http_status, 503);

  // the stored outcomes expire with their retention, by their own expiry
  now += TTL_MS;
  assert.equal((await poll(second.app, done)).statusCode, 404);
});

test('async requests - outcomes are shared through Redis; a pending one is pending until its owner closes', async (t) => {
  const namespace = `test:async:${randomUUID()}:`;
  const open = async (): Promise<RedisStore> => {
    const store = await RedisStore.connect({
      url: REDIS_URL,
      namespace,
      connectTimeoutMs: 2000,
      commandTimeoutMs: 1000,
    });
    t.after(() => store.close());
    return store;
  };
  let storeA: RedisStore;
  try {
    storeA = await open();
  } catch (err) {
    return t.skip(
      `Redis is not reachable at ${REDIS_URL} (${(err as Error).message}); start redis-server to run this check`,
    );
  }
  const storeB = await open();
  t.after(() => storeA.clear());
  const a = await harness(t, { store: storeA, resultTtlMs: TTL_MS });
  const b = await harness(t, { store: storeB, resultTtlMs: TTL_MS });

  const done = await submitAsync(a.app);
  const running = await submitAsync(a.app);
  a.started[0]!.gate.resolve(response('m', 3));
  await pollUntilFinished(a.app, done);
  await a.requests.flush();
  const shared = await poll(b.app, done);
  assert.equal(shared.body.status, 'done');
  assert.deepEqual(shared.body.response, response('m', 3));

  assert.equal((await poll(b.app, running)).body.status, 'pending', 'its owner is alive');
  await a.requests.close();
  const cancelled = await poll(b.app, running);
  assert.equal(cancelled.body.status, 'failed');
  assert.equal(cancelled.body.error.code, 'CANCELLED', 'the closing owner recorded why');

  const forget = await b.app.inject({ method: 'DELETE', url: `/v2/requests/${done}` });
  assert.deepEqual(forget.json(), { id: done, action: 'forgotten' });
  assert.equal((await poll(a.app, done)).body.status, 'done', "the owner's memory still has it");
  assert.equal(await storeA.get(`async:${done}`), undefined, 'gone from the shared store');
});

/** Resolves once `signal` has aborted (at once if it already has). */
function abortedSignal(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/** Two Redis stores in one fresh namespace (skips the test when Redis is not reachable). */
async function redisPair(t: TestContext): Promise<[RedisStore, RedisStore] | undefined> {
  const namespace = `test:async:${randomUUID()}:`;
  const open = async (): Promise<RedisStore> => {
    const store = await RedisStore.connect({
      url: REDIS_URL,
      namespace,
      connectTimeoutMs: 2000,
      commandTimeoutMs: 1000,
    });
    t.after(() => store.close());
    return store;
  };
  let first: RedisStore;
  try {
    first = await open();
  } catch (err) {
    t.skip(
      `Redis is not reachable at ${REDIS_URL} (${(err as Error).message}); start redis-server to run this check`,
    );
    return undefined;
  }
  const second = await open();
  t.after(() => first.clear());
  return [first, second];
}

test('async requests - a DELETE on another coordinator cancels the run through Redis and answers once confirmed', async (t) => {
  const stores = await redisPair(t);
  if (!stores) return;
  const a = await harness(t, { store: stores[0], resultTtlMs: TTL_MS });
  const b = await harness(t, { store: stores[1], resultTtlMs: TTL_MS, cancelWaitMs: 30_000 });
  await Promise.all([a.requests.ready(), b.requests.ready()]);
  const id = await submitAsync(a.app);
  await a.requests.flush();
  const { signal } = a.started[0]!;
  const aborted = deferred<unknown>();
  signal.addEventListener('abort', () => aborted.resolve(signal.reason));

  const del = await b.app.inject({ method: 'DELETE', url: `/v2/requests/${id}` });
  assert.equal(del.statusCode, 200, del.body);
  assert.deepEqual(del.json(), { id, action: 'cancelled' }, 'the owner confirmed');
  const reason = await aborted.promise;
  assert.ok(reason instanceof InfergridError && reason.code === 'CANCELLED', String(reason));
  assert.match(reason.message, /through coordinator instance/);
  assert.equal(a.requests.stats().remoteCancels, 1);
  // the ack is sent after the record was written: both coordinators answer the same
  for (const app of [a.app, b.app]) {
    const { body } = await poll(app, id);
    assert.equal(body.status, 'failed');
    assert.equal(body.error.code, 'CANCELLED');
  }
  assert.equal(await stores[0].get(`async:cancel:${id}`), undefined, 'the applied cancel is cleared');
  // the run answering anyway changes nothing
  a.started[0]!.gate.resolve(response('m', 1));
  await a.requests.flush();
  assert.equal((await poll(b.app, id)).body.error.code, 'CANCELLED');
});

test('async requests - another API key cannot cancel a request through another coordinator', async (t) => {
  const stores = await redisPair(t);
  if (!stores) return;
  const a = new AsyncRequests({ store: stores[0], resultTtlMs: TTL_MS });
  const b = new AsyncRequests({ store: stores[1], resultTtlMs: TTL_MS });
  t.after(() => Promise.all([a.close(), b.close()]));
  await Promise.all([a.ready(), b.ready()]);
  const gate = deferred<object>();
  let runSignal: AbortSignal | undefined;
  const { id } = a.submit(
    (signal) => {
      runSignal = signal;
      return gate.promise;
    },
    { owner: 'alice' },
  );
  await a.flush();
  assert.equal(await b.delete(id, 'mallory'), undefined, 'answered like an unknown request');
  assert.equal(await b.delete(id, undefined), undefined, 'no key is not alice either');
  assert.equal(await stores[1].get(`async:cancel:${id}`), undefined, 'nothing was recorded');
  // a forged cancel published straight on the owner's channel, and garbage, are refused and counted
  const channel = `async:events:${a.instanceId}`;
  await stores[1].pubSub.publish(
    channel,
    Buffer.from(JSON.stringify({ v: 1, kind: 'cancel', id, owner: 'mallory', from: b.instanceId })),
  );
  await stores[1].pubSub.publish(channel, Buffer.from('{"v":1,"kind":"cancel","id":"../../x"}'));
  await stores[1].pubSub.publish(channel, Buffer.alloc(5000, 0x7b));
  // a condition wait: the three messages arrive in order on one connection
  for (let turn = 0; a.stats().refusedMessages < 3; turn++) {
    assert.ok(turn < 100_000, 'the refusals were not counted');
    await nextTurn();
  }
  assert.equal(runSignal?.aborted, false, 'the run goes on');
  assert.equal((await a.get(id, 'alice'))?.status, 'pending');
  // alice herself can, from either coordinator
  assert.equal(await b.delete(id, 'alice'), 'cancelled');
  assert.equal(runSignal?.aborted, true);
  gate.resolve({});
});

test('async requests - without pub/sub the owner applies a cancel from another coordinator at its next tick', async (t) => {
  const path = tempFile(t, 'cache.sqlite');
  // real time, short ticks: the owner reads its cancel marker every few ms
  const owner = await harness(t, { store: sqliteStore(t, path), resultTtlMs: TTL_MS, sweepIntervalMs: 5 });
  const other = await harness(t, { store: sqliteStore(t, path), resultTtlMs: TTL_MS });
  const id = await submitAsync(owner.app);
  const untouched = await submitAsync(owner.app);
  await owner.requests.flush();
  const del = await other.app.inject({ method: 'DELETE', url: `/v2/requests/${id}` });
  assert.equal(del.statusCode, 202);
  assert.deepEqual(del.json(), { id, action: 'cancelling' });
  // the owner's tick timer is unref'd: a ref'd guard keeps the loop alive while waiting (and bounds the wait)
  let guard: NodeJS.Timeout | undefined;
  await Promise.race([
    abortedSignal(owner.started[0]!.signal),
    new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error('the owner never applied the cancel')), 30_000);
    }),
  ]).finally(() => clearTimeout(guard));
  await owner.requests.flush();
  const fromOther = await poll(other.app, id);
  assert.equal(fromOther.body.status, 'failed');
  assert.equal(fromOther.body.error.code, 'CANCELLED');
  assert.equal(owner.requests.stats().remoteCancels, 1);
  assert.equal(owner.started[1]!.signal.aborted, false, 'only the request asked for');
  assert.equal((await poll(other.app, untouched)).body.status, 'pending');
  owner.started[1]!.gate.resolve(response('m', 2));
  assert.equal((await pollUntilFinished(owner.app, untouched)).status, 'done');
});

test('async requests - a cancel whose message is lost (the owner does not listen) answers 202 and the owner applies it at its tick', async (t) => {
  const stores = await redisPair(t);
  if (!stores) return;
  const [ownerStore, otherStore] = stores;
  // the owner reaches the same Redis without pub/sub: whatever is published to it is lost
  const deaf: CacheStore = {
    name: 'redis',
    get: (key) => ownerStore.get(key),
    set: (key, value, ttlMs) => ownerStore.set(key, value, ttlMs),
    delete: (key) => ownerStore.delete(key),
    has: (key) => ownerStore.has(key),
    clear: (prefix) => ownerStore.clear(prefix),
    stats: () => ownerStore.stats(),
    close: async () => {},
  };
  const owner = await harness(t, { store: deaf, resultTtlMs: TTL_MS, sweepIntervalMs: 5 });
  const other = await harness(t, { store: otherStore, resultTtlMs: TTL_MS, cancelWaitMs: 50 });
  await other.requests.ready();
  const id = await submitAsync(owner.app);
  await owner.requests.flush();
  const del = await other.app.inject({ method: 'DELETE', url: `/v2/requests/${id}` });
  assert.equal(del.statusCode, 202, 'no ack within cancelWaitMs');
  assert.deepEqual(del.json(), { id, action: 'cancelling' });
  let guard: NodeJS.Timeout | undefined;
  await Promise.race([
    abortedSignal(owner.started[0]!.signal),
    new Promise<never>((_, reject) => {
      guard = setTimeout(() => reject(new Error('the owner never applied the cancel')), 30_000);
    }),
  ]).finally(() => clearTimeout(guard));
  await owner.requests.flush();
  const { body } = await poll(other.app, id);
  assert.equal(body.status, 'failed');
  assert.equal(body.error.code, 'CANCELLED');
  assert.equal(owner.requests.stats().remoteCancels, 1);
});
