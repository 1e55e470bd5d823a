/**
 * The HTTP front door against callers without the right credentials and against browsers:
 * API keys and scopes (401/403), per-key rate limits (429 + Retry-After), async requests owned
 * by their key, Host and Origin checks, content types from browsers, the dashboard's headers,
 * CORS when configured, the admin listener, dial targets, and the refusal to run an open API
 * beyond loopback. Real coordinator and worker processes on loopback.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { request as httpRequest } from 'node:http';
import { dirname, join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { hashApiKey } from '../../src/api/index.ts';
import { InferenceClient } from '../../src/client/index.ts';
import {
  BIN,
  spawnProcess,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { makeTestPki } from '../fixtures/tls.ts';

const KEYS = {
  client: 'ig_client-key-for-tests-0000000000000000000000',
  other: 'ig_other-client-key-for-tests-000000000000000000',
  ops: 'ig_ops-key-for-tests-00000000000000000000000000',
  admin: 'ig_admin-key-for-tests-000000000000000000000000',
  limited: 'ig_limited-key-for-tests-0000000000000000000000',
};

const MODEL = `
  - name: m
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`;

const KEYED = `
auth:
  apiKeys:
    - { name: client, scopes: [infer], sha256: ${hashApiKey(KEYS.client)} }
    - { name: other, scopes: [infer], sha256: ${hashApiKey(KEYS.other)} }
    - { name: ops, scopes: [metrics], sha256: ${hashApiKey(KEYS.ops)} }
    - { name: admin, scopes: [admin], sha256: ${hashApiKey(KEYS.admin)} }
    - name: limited
      scopes: [infer]
      sha256: ${hashApiKey(KEYS.limited)}
      rateLimit: { requestsPerSecond: 0.001, burst: 2 }
models:${MODEL}`;

const INFER_BODY = JSON.stringify({
  inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 2], data: [1, 2] }],
});

interface Answer {
  status: number;
  headers: Headers;
  json: { error?: string; code?: string } & Record<string, unknown>;
}

async function call(
  url: string,
  init: { method?: string; key?: string; body?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...(init.headers ?? {}) };
  if (init.key) headers.authorization = `Bearer ${init.key}`;
  if (init.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type'))
    headers['content-type'] = 'application/json';
  const res = await fetch(url, {
    method: init.method ?? (init.body ? 'POST' : 'GET'),
    headers,
    body: init.body,
  });
  const text = await res.text();
  let json = {};
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, json };
}

/** node:http, which sends the Host header it is given (fetch always sends the URL's). */
function rawPost(url: string, body: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: new Headers(), json: JSON.parse(text || '{}') }),
      );
    });
    req.once('error', reject);
    req.end(body);
  });
}

function rawGet(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
}

function expectError(a: Answer, status: number, code: string, message?: RegExp): void {
  assert.equal(a.status, status, JSON.stringify(a.json));
  assert.equal(a.json.code, code);
  assert.equal(typeof a.json.error, 'string', 'the engine error shape: { error, code }');
  if (message) assert.match(a.json.error!, message);
}

async function keyedFleet(t: TestContext, extra = '') {
  const config = writeConfig(t, `${extra}${KEYED}`);
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
  await waitFor(
    'model m ready',
    async () => (await call(`${coordinator.url}/v2/models/m/ready`, { key: KEYS.client })).status === 200,
  );
  return { config, coordinator, url: coordinator.url };
}

test('http security - API keys and scopes: 401 without or with a wrong key, 403 without the scope', {
  timeout: 60_000,
}, async (t) => {
  const { url } = await keyedFleet(t);
  const infer = `${url}/v2/models/m/infer`;

  const none = await call(infer, { body: INFER_BODY });
  expectError(none, 401, 'UNAUTHENTICATED', /Authorization: Bearer/);
  assert.match(none.headers.get('www-authenticate') ?? '', /^Bearer/);
  expectError(await call(infer, { body: INFER_BODY, key: 'ig_not-a-key' }), 401, 'UNAUTHENTICATED');
  expectError(
    await call(infer, { body: INFER_BODY, headers: { authorization: `Basic ${KEYS.client}` } }),
    401,
    'UNAUTHENTICATED',
  );
  // health stays open by default (auth.anonymous: [health]); metrics and admin need their scope
  assert.equal((await call(`${url}/v2/health/live`)).status, 200);
  assert.equal((await call(`${url}/v2/health/ready`)).status, 200);
  expectError(await call(`${url}/metrics`), 401, 'UNAUTHENTICATED');
  expectError(await call(`${url}/v2/models/m`), 401, 'UNAUTHENTICATED');
  // an unknown route without credentials is a 401 too: no key, no map of the API
  expectError(await call(`${url}/v2/nowhere`), 401, 'UNAUTHENTICATED');

  const ok = await call(infer, { body: INFER_BODY, key: KEYS.client });
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  assert.equal((await call(`${url}/v2/models/m/stats`, { key: KEYS.client })).status, 200);

  // the infer scope runs models but changes nothing
  for (const [method, path, body] of [
    ['POST', '/v2/repository/index', '{}'],
    ['POST', '/v2/repository/models/m/unload', '{}'],
    ['DELETE', '/admin/cache', undefined],
    ['POST', '/admin/workers', '{"address":"127.0.0.1:1"}'],
    ['GET', '/admin/workers', undefined],
    ['GET', '/metrics', undefined],
  ] as const) {
    expectError(
      await call(`${url}${path}`, { method, key: KEYS.client, ...(body ? { body } : {}) }),
      403,
      'PERMISSION_DENIED',
      /API key "client" lacks the "(admin|metrics)" scope/,
    );
  }
  // %-escaped paths reach the same routes (the router decodes them): the scope is the route's
  for (const path of ['/%61dmin/workers', '/v2/%72epository/index']) {
    const sneaky = await rawPost(`${url}${path}`, '{"address":"127.0.0.1:1"}', {
      'content-type': 'application/json',
      authorization: `Bearer ${KEYS.client}`,
    });
    assert.equal(sneaky.status, 403, `${path}: ${JSON.stringify(sneaky.json)}`);
    assert.equal(sneaky.json.code, 'PERMISSION_DENIED');
  }
  // metrics: read-only operations, never a change
  assert.equal((await call(`${url}/metrics`, { key: KEYS.ops })).status, 200);
  assert.equal((await call(`${url}/admin/workers`, { key: KEYS.ops })).status, 200);
  assert.equal((await call(`${url}/admin/overview`, { key: KEYS.ops })).status, 200);
  expectError(
    await call(`${url}/admin/cache`, { method: 'DELETE', key: KEYS.ops }),
    403,
    'PERMISSION_DENIED',
  );
  expectError(await call(infer, { body: INFER_BODY, key: KEYS.ops }), 403, 'PERMISSION_DENIED');
  // admin: everything
  assert.equal((await call(`${url}/v2/repository/index`, { body: '{}', key: KEYS.admin })).status, 200);
  assert.equal((await call(infer, { body: INFER_BODY, key: KEYS.admin })).status, 200);
  // the model is still there: nothing a refused request asked for happened
  assert.equal((await call(`${url}/v2/models/m/ready`, { key: KEYS.client })).status, 200);
});

test('http security - the client library, infergrid top and infergrid bench take an API key', {
  timeout: 60_000,
}, async (t) => {
  const { url } = await keyedFleet(t);
  const input = { name: 'INPUT0', datatype: 'FP32' as const, shape: [1, 2], data: [1, 2] };
  await assert.rejects(new InferenceClient(url).infer('m', [input]), /UNAUTHENTICATED|needs an API key/);
  const answer = await new InferenceClient(url, { apiKey: KEYS.client }).infer('m', [input]);
  assert.equal(answer.outputs[0]?.name, 'OUTPUT0');
  const top = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, 'top', '--once', '--url', url, ...args],
        { env: { ...process.env, ...env } },
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      );
    });
  const refused = await top([]);
  assert.equal(refused.code, 1);
  assert.match(refused.out, /needs an API key with the metrics scope; pass it with --api-key/);
  const shown = await top(['--api-key', KEYS.ops]);
  assert.equal(shown.code, 0, shown.out);
  assert.match(shown.out, /\bm\b/);
  assert.equal((await top([], { INFERGRID_API_KEY: KEYS.ops })).code, 0);
  const bench = (args: string[]) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, 'bench', '--url', url, '-m', 'm', '-n', '5', '--json', '-q', ...args],
        (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      );
    });
  const noKey = await bench([]);
  assert.equal(noKey.code, 1);
  assert.match(noKey.out, /pass an API key with the infer scope \(--api-key or INFERGRID_API_KEY\)/);
  const keyed = await bench(['--api-key', KEYS.client]);
  assert.equal(keyed.code, 0, keyed.out);
  const report = JSON.parse(keyed.out) as { completed: number; errors: number };
  assert.equal(report.completed, 5, keyed.out);
  assert.equal(report.errors, 0, keyed.out);
});

test('http security - a key over its rate limit gets 429 with Retry-After; other keys are not slowed', {
  timeout: 60_000,
}, async (t) => {
  const { url } = await keyedFleet(t);
  const infer = `${url}/v2/models/m/infer`;
  // burst 2 at one request per 1000 s: the third in a row is over, however slow this machine is
  assert.equal((await call(infer, { body: INFER_BODY, key: KEYS.limited })).status, 200);
  assert.equal((await call(infer, { body: INFER_BODY, key: KEYS.limited })).status, 200);
  const over = await call(infer, { body: INFER_BODY, key: KEYS.limited });
  expectError(over, 429, 'RATE_LIMITED', /API key "limited" is over its rate limit/);
  assert.ok(Number(over.headers.get('retry-after')) >= 1, `Retry-After: ${over.headers.get('retry-after')}`);
  assert.equal((await call(infer, { body: INFER_BODY, key: KEYS.client })).status, 200);
});

test('http security - an async request belongs to the key that submitted it; another key gets 404', {
  timeout: 60_000,
}, async (t) => {
  const { url } = await keyedFleet(t);
  const submitted = await call(`${url}/v2/models/m/infer`, {
    body: INFER_BODY,
    key: KEYS.client,
    headers: { 'content-type': 'application/json', prefer: 'respond-async' },
  });
  assert.equal(submitted.status, 202, JSON.stringify(submitted.json));
  const where = `${url}${submitted.headers.get('location')}`;
  const mine = await waitFor('the async request to finish', async () => {
    const a = await call(where, { key: KEYS.client });
    return a.json.status === 'done' ? a : undefined;
  });
  assert.equal(mine.status, 200);

  const theirs = await call(where, { key: KEYS.other });
  expectError(theirs, 404, 'NOT_FOUND', /unknown or expired/);
  expectError(await call(where, { method: 'DELETE', key: KEYS.other }), 404, 'NOT_FOUND');
  // the other key's DELETE forgot nothing
  assert.equal((await call(where, { key: KEYS.client })).json.status, 'done');
  assert.equal((await call(where, { method: 'DELETE', key: KEYS.client })).status, 200);
  assert.equal((await call(where, { key: KEYS.client })).status, 404);
});

test('http security - browsers: a foreign Origin, a rebound Host name and a text/plain body are refused, and nothing loads', {
  timeout: 60_000,
}, async (t) => {
  // the zero-setup default (no keys, loopback), with runtime js models allowed and a worker
  // that would import the module: only the browser checks stand between the page and the code
  const config = writeConfig(t, `repository: { allowRuntimeJs: true }\nmodels:${MODEL}`);
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m']);
  const { url } = coordinator;
  const marker = join(dirname(config), 'module-ran');
  const module = join(dirname(config), 'evil.mjs');
  writeFileSync(
    module,
    `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(marker)}, 'ran');\n`,
  );
  const load = JSON.stringify({
    parameters: { config: JSON.stringify({ name: 'evil', backend: 'js', path: module }) },
  });

  // what a page on another site sends: a simple (preflight-free) text/plain POST
  const page = await call(`${url}/v2/repository/models/evil/load`, {
    body: load,
    headers: { 'content-type': 'text/plain', origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' },
  });
  expectError(
    page,
    403,
    'PERMISSION_DENIED',
    /cross-origin requests from http:\/\/evil\.example are refused/,
  );
  // DNS rebinding: the page's own name now points at 127.0.0.1, so it is "same-origin"
  const rebound = await rawPost(`${url}/v2/repository/models/evil/load`, load, {
    'content-type': 'text/plain',
    host: 'evil.example',
    origin: 'http://evil.example',
  });
  expectError(rebound, 400, 'INVALID_ARGUMENT', /Host "evil\.example" is not a name this server answers to/);
  const probe = await rawGet(`${url}/v2/health/live`, { host: '10.0.0.9:8000' });
  assert.equal(probe, 200, 'a health probe is answered whatever Host it names');
  // a same-origin browser request is still held to a JSON content type
  const host = new URL(url).host;
  const sameOrigin = await call(`${url}/v2/repository/index`, {
    body: '{}',
    headers: { 'content-type': 'text/plain', origin: `http://${host}`, 'sec-fetch-site': 'same-origin' },
  });
  expectError(sameOrigin, 415, 'UNSUPPORTED_MEDIA_TYPE', /send Content-Type: application\/json/);
  assert.equal(existsSync(marker), false, 'the module never ran');
  // clients that are not browsers keep working as before: curl -d sends a form content type
  const curl = await call(`${url}/v2/repository/index`, {
    body: '{}',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(curl.status, 200, JSON.stringify(curl.json));
  const byName = await rawPost(`${url}/v2/repository/index`, '{}', {
    host: `localhost:${new URL(url).port}`,
  });
  assert.equal(byName.status, 200, 'localhost is a loopback name');

  // the dashboard's security headers
  const page2 = await fetch(`${url}/dashboard/`);
  assert.equal(page2.status, 200);
  const csp = page2.headers.get('content-security-policy') ?? '';
  assert.match(csp, /frame-ancestors 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.equal(page2.headers.get('x-content-type-options'), 'nosniff');
});

test('http security - CORS when configured: the listed origin gets a preflight and CORS headers, others are refused', {
  timeout: 60_000,
}, async (t) => {
  const { url } = await keyedFleet(t, 'coordinator: { corsOrigins: ["https://app.example"] }\n');
  const infer = `${url}/v2/models/m/infer`;
  const preflight = await fetch(infer, {
    method: 'OPTIONS',
    headers: {
      origin: 'https://app.example',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization, content-type',
    },
  });
  assert.ok(preflight.status === 204 || preflight.status === 200, `preflight ${preflight.status}`);
  assert.equal(preflight.headers.get('access-control-allow-origin'), 'https://app.example');
  assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /authorization/i);
  const allowed = await fetch(infer, {
    method: 'POST',
    headers: {
      origin: 'https://app.example',
      authorization: `Bearer ${KEYS.client}`,
      'content-type': 'application/json',
    },
    body: INFER_BODY,
  });
  assert.equal(allowed.status, 200);
  assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://app.example');
  const other = await call(infer, {
    body: INFER_BODY,
    key: KEYS.client,
    headers: { 'content-type': 'application/json', origin: 'https://other.example' },
  });
  expectError(other, 403, 'PERMISSION_DENIED');
});

test('http security - with an admin listener, admin routes are served there only', {
  timeout: 60_000,
}, async (t) => {
  const { coordinator, url } = await keyedFleet(t, 'coordinator: { admin: { host: 127.0.0.1, port: 0 } }\n');
  const adminPort = coordinator.ready.adminPort;
  assert.ok(adminPort, 'the ready message names the admin port');
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  expectError(
    await call(`${url}/v2/repository/index`, { body: '{}', key: KEYS.admin }),
    404,
    'NOT_FOUND',
    /served on the admin listener only/,
  );
  const escaped = await rawPost(`${url}/v2/%72epository/index`, '{}', {
    'content-type': 'application/json',
    authorization: `Bearer ${KEYS.admin}`,
  });
  assert.equal(escaped.status, 404, 'an escaped admin path is not served on the main listener either');
  assert.equal((await call(`${adminUrl}/v2/repository/index`, { body: '{}', key: KEYS.admin })).status, 200);
  // the admin listener takes the same keys
  expectError(
    await call(`${adminUrl}/v2/repository/index`, { body: '{}', key: KEYS.client }),
    403,
    'PERMISSION_DENIED',
  );
  // the data plane stays on the main listener
  assert.equal((await call(`${url}/v2/models/m/infer`, { body: INFER_BODY, key: KEYS.client })).status, 200);
});

test('http security - POST /admin/workers dials only allowed addresses, up to the cap, and a target is removable before it ever connected', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, 'coordinator: { dial: { maxTargets: 1 } }\nmodels: []\n');
  const { url } = await startCoordinator(t, config);
  const add = (address: string) => call(`${url}/admin/workers`, { body: JSON.stringify({ address }) });
  expectError(await add('10.1.2.3:7000'), 403, 'PERMISSION_DENIED', /coordinator\.dial\.allow/);
  expectError(await add('example.com:7000'), 403, 'PERMISSION_DENIED');
  // nothing listens on port 1: the target is dialed and redialed, never connecting
  assert.equal((await add('127.0.0.1:1')).status, 202);
  expectError(await add('127.0.0.2:1'), 400, 'INVALID_ARGUMENT', /coordinator\.dial\.maxTargets/);
  // the dialed address again, however it is written, is a repeat, not one over the cap
  const again = await add(' 127.0.0.1:1');
  assert.equal(again.status, 200, JSON.stringify(again.json));
  assert.equal(again.json.alreadyKnown, true);
  const removed = await call(`${url}/admin/workers/127.0.0.1:1`, { method: 'DELETE' });
  assert.equal(removed.status, 200, JSON.stringify(removed.json));
  const after = await call(`${url}/admin/workers`);
  assert.deepEqual((after.json.routing as { staticWorkers: string[] }).staticWorkers, []);
  assert.equal((await add('127.0.0.2:1')).status, 202, 'the freed place can be used again');
});

test('http security - an open API beyond loopback refuses to start, unless --insecure, which says so', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, 'models: []\n');
  const args = ['coordinator', '--config', config, '--host', '0.0.0.0', '--port', '0', '--rpc-port', '0'];
  const refused = spawnProcess(args, { cleanup: (stop) => t.after(stop) });
  await assert.rejects(refused, (err: Error) => {
    assert.match(err.message, /with no API keys/);
    assert.match(err.message, /--insecure/);
    return true;
  });
  const insecure = await spawnProcess([...args, '--insecure', '--log-level', 'warn'], {
    cleanup: (stop) => t.after(stop),
  });
  await waitFor('the insecure warning', () => /INSECURE/.test(insecure.output()));
});

/** A GET over HTTPS trusting `ca`; resolves with the status, rejects on a TLS failure. */
function httpsGet(url: string, ca: Buffer, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
}

test('http security - HTTPS from certificate files: keys over TLS work, plain HTTP and an untrusted CA do not', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(
    t,
    `coordinator: { headersTimeoutMs: 400, tls: { certFile: test-cert.pem, keyFile: test-key.pem } }\n${KEYED}`,
  );
  const dir = dirname(config);
  const pki = makeTestPki(dir, { names: ['127.0.0.1', 'localhost'] });
  const other = makeTestPki(dir, { prefix: 'other' });
  const coordinator = await startCoordinator(t, config);
  const url = `https://127.0.0.1:${coordinator.ready.httpPort}`;
  const ca = readFileSync(pki.caFile);
  assert.equal(await httpsGet(`${url}/v2/health/live`, ca), 200);
  assert.equal(await httpsGet(`${url}/v2/models/m`, ca), 401, 'TLS carries the same credentials rules');
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
  await waitFor(
    'm ready over HTTPS',
    async () =>
      (await httpsGet(`${url}/v2/models/m/ready`, ca, { authorization: `Bearer ${KEYS.client}` })) === 200,
  );
  await assert.rejects(
    httpsGet(`${url}/v2/health/live`, readFileSync(other.caFile)),
    /self[- ]signed|unable to verify|certificate/i,
  );
  await assert.rejects(fetch(`http://127.0.0.1:${coordinator.ready.httpPort}/v2/health/live`));
  // the header timeout holds over TLS too: a client that trickles its headers is closed
  const slow = tlsConnect({ host: '127.0.0.1', port: coordinator.ready.httpPort!, ca });
  t.after(() => slow.destroy());
  slow.on('error', () => {});
  const closed = new Promise<void>((resolve) => slow.once('close', () => resolve()));
  let received = '';
  slow.on('data', (d: Buffer) => {
    received += d.toString('latin1');
  });
  slow.once('secureConnect', () => slow.write('GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n'));
  await closed;
  assert.match(received, /^HTTP\/1\.1 408/, 'closed by the header timeout, with a 408');
});
