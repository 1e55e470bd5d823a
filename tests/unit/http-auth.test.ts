import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiKeyAuth, hashApiKey, hostAllowed, isLoopbackHost, scopeOf } from '../../src/api/index.ts';
import { DialAllowList } from '../../src/api/dial-allow.ts';
import { apiKeysFromEnv } from '../../src/config/index.ts';
import { TokenBucket } from '../../src/util/token-bucket.ts';

test('http auth - every route has the scope it should', () => {
  const cases: [string, string, string][] = [
    ['GET', '/v2', 'health'],
    ['GET', '/v2/health/live', 'health'],
    ['GET', '/dashboard/app.js', 'health'],
    ['GET', '/metrics', 'metrics'],
    ['GET', '/admin/workers', 'metrics'],
    ['GET', '/admin/overview', 'metrics'],
    ['POST', '/admin/workers', 'admin'],
    ['DELETE', '/admin/cache', 'admin'],
    ['PUT', '/admin/models/m/traffic', 'admin'],
    ['POST', '/v2/repository/index', 'admin'],
    ['POST', '/v2/repository/models/m/load', 'admin'],
    ['POST', '/v2/models/m/infer', 'infer'],
    ['GET', '/v2/models/m', 'infer'],
    ['GET', '/v2/requests/abc', 'infer'],
    ['GET', '/v2/models/m/stats', 'stats'],
    ['GET', '/v2/models/stats', 'stats'],
    ['GET', '/no/such/route', 'infer'],
  ];
  for (const [method, path, scope] of cases) assert.equal(scopeOf(method, path), scope, `${method} ${path}`);
});

test('http auth - keys: wrong or malformed 401, missing scope 403, admin covers all, statistics take infer or metrics', () => {
  const auth = new ApiKeyAuth(
    [
      { name: 'a', sha256: hashApiKey('key-a'), scopes: ['infer'] },
      { name: 'm', sha256: hashApiKey('key-m'), scopes: ['metrics'] },
      { name: 'root', sha256: hashApiKey('key-root'), scopes: ['admin'] },
    ],
    ['health'],
  );
  assert.equal(auth.open, false);
  assert.equal(auth.check(undefined, 'health').error, undefined);
  assert.equal(auth.check(undefined, 'infer').error?.code, 'UNAUTHENTICATED');
  assert.equal(auth.check('Bearer key-b', 'infer').error?.code, 'UNAUTHENTICATED');
  assert.equal(auth.check('key-a', 'infer').error?.code, 'UNAUTHENTICATED', 'the Bearer scheme is required');
  assert.equal(auth.check(`Bearer ${'x'.repeat(5000)}`, 'infer').error?.code, 'UNAUTHENTICATED');
  const ok = auth.check('bearer  key-a ', 'infer');
  assert.equal(ok.error, undefined);
  assert.equal(ok.principal.name, 'a');
  assert.deepEqual(ok.principal.caller, { kind: 'client', id: 'a' });
  assert.equal(auth.check('Bearer key-a', 'admin').error?.code, 'PERMISSION_DENIED');
  assert.equal(auth.check('Bearer key-a', 'metrics').error?.code, 'PERMISSION_DENIED');
  assert.equal(auth.check('Bearer key-a', 'stats').error, undefined);
  assert.equal(auth.check('Bearer key-m', 'stats').error, undefined);
  assert.equal(auth.check('Bearer key-m', 'infer').error?.code, 'PERMISSION_DENIED');
  for (const need of ['health', 'infer', 'metrics', 'admin', 'stats'] as const)
    assert.equal(auth.check('Bearer key-root', need).error, undefined, need);
});

test('http auth - with no keys everything is open; anonymous scopes widen what needs no key', () => {
  const open = new ApiKeyAuth([], ['health']);
  assert.equal(open.open, true);
  assert.equal(open.check(undefined, 'admin').error, undefined);
  assert.equal(open.check('Bearer whatever', 'admin').error, undefined);
  const metricsOpen = new ApiKeyAuth(
    [{ name: 'a', sha256: hashApiKey('k'), scopes: ['admin'] }],
    ['health', 'metrics'],
  );
  assert.equal(metricsOpen.check(undefined, 'metrics').error, undefined);
  assert.equal(metricsOpen.check(undefined, 'infer').error?.code, 'UNAUTHENTICATED');
});

test('http auth - a rate-limited key: burst, then 429 with the wait, refilled by time', () => {
  let now = 0;
  const auth = new ApiKeyAuth(
    [
      {
        name: 'r',
        sha256: hashApiKey('k'),
        scopes: ['infer'],
        rateLimit: { requestsPerSecond: 2, burst: 3 },
      },
    ],
    [],
    () => now,
  );
  for (let i = 0; i < 3; i++) assert.equal(auth.check('Bearer k', 'infer').error, undefined);
  const over = auth.check('Bearer k', 'infer').error;
  assert.equal(over?.code, 'RATE_LIMITED');
  assert.equal(over?.details?.retryAfterSeconds, 1);
  now += 500;
  assert.equal(auth.check('Bearer k', 'infer').error, undefined, 'one token after 500 ms at 2/s');
  assert.equal(auth.check('Bearer k', 'infer').error?.code, 'RATE_LIMITED');
});

test('http auth - token bucket answers the wait until the next token', () => {
  let now = 0;
  const bucket = new TokenBucket(10, 1, () => now);
  assert.equal(bucket.take(), 0);
  assert.equal(bucket.take(), 100);
  now += 40;
  assert.ok(Math.abs(bucket.take() - 60) < 1e-9);
});

test('http auth - Host names: loopback defaults, configured names, ports and wildcards', () => {
  assert.equal(isLoopbackHost('127.0.0.1'), true);
  assert.equal(isLoopbackHost('127.3.2.1'), true);
  assert.equal(isLoopbackHost('[::1]'), true);
  assert.equal(isLoopbackHost('0.0.0.0'), false);
  assert.equal(hostAllowed('127.0.0.1:8000', [], '127.0.0.1'), true);
  assert.equal(hostAllowed('localhost:8000', [], '127.0.0.1'), true);
  assert.equal(hostAllowed('[::1]:8000', [], '127.0.0.1'), true);
  assert.equal(hostAllowed('evil.example', [], '127.0.0.1'), false);
  assert.equal(hostAllowed(undefined, [], '127.0.0.1'), false);
  assert.equal(hostAllowed('anything', [], '0.0.0.0'), true, 'no names configured off loopback: any');
  const names = ['api.example.com', 'internal:8443', '*.svc.cluster.local'];
  assert.equal(hostAllowed('API.example.com:8000', names, '0.0.0.0'), true);
  assert.equal(hostAllowed('internal:8443', names, '0.0.0.0'), true);
  assert.equal(hostAllowed('internal:9000', names, '0.0.0.0'), false);
  assert.equal(hostAllowed('infer.ns.svc.cluster.local', names, '0.0.0.0'), true);
  assert.equal(hostAllowed('svc.cluster.local.evil', names, '0.0.0.0'), false);
});

test('http auth - dial allow-list: CIDR blocks for addresses, names as written', () => {
  const allow = new DialAllowList([
    '127.0.0.0/8',
    '10.1.0.0/16',
    'fd00::/8',
    'gpu-1.internal',
    'gpu-2.internal:7001',
  ]);
  assert.equal(allow.allows({ host: '127.0.0.1', port: 1 }), true);
  assert.equal(allow.allows({ host: '10.1.200.3', port: 1 }), true);
  assert.equal(allow.allows({ host: '10.2.0.1', port: 1 }), false);
  assert.equal(allow.allows({ host: 'fd12::1', port: 1 }), true);
  assert.equal(allow.allows({ host: '::1', port: 1 }), false);
  assert.equal(allow.allows({ host: 'gpu-1.internal', port: 9 }), true);
  assert.equal(allow.allows({ host: 'gpu-2.internal', port: 7001 }), true);
  assert.equal(allow.allows({ host: 'gpu-2.internal', port: 7002 }), false);
  assert.equal(allow.allows({ host: 'localhost', port: 1 }), false, 'names are never resolved');
});

test('http auth - INFERGRID_API_KEYS entries', () => {
  const issues: string[] = [];
  const keys = apiKeysFromEnv(
    `ci:infer:${'a'.repeat(64)}, ops:metrics+admin:${'b'.repeat(64)} broken`,
    issues,
  );
  assert.deepEqual(keys, [
    { name: 'ci', scopes: ['infer'], sha256: 'a'.repeat(64) },
    { name: 'ops', scopes: ['metrics', 'admin'], sha256: 'b'.repeat(64) },
  ]);
  assert.equal(issues.length, 1);
  assert.match(issues[0]!, /"broken" is not name:scope/);
});
