/**
 * Content codings: the Accept-Encoding negotiation and the Content-Encoding check as pure
 * functions, the streaming body reader against in-memory streams (limits, corrupt data, a
 * client gone mid-body), and the response hook in a fastify app (`inject`): what it compresses
 * and what it leaves alone.
 */

import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { deflateRawSync, deflateSync, gunzipSync, gzipSync } from 'node:zlib';
import Fastify from 'fastify';
import {
  isCompressibleType,
  negotiateCoding,
  readBody,
  requestCoding,
  varyWithAcceptEncoding,
} from '../../src/api/body-encoding.ts';
import { installResponseCompression, isCompressedRoute } from '../../src/api/response-compression.ts';
import { configSchema } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';

test('body encoding - Accept-Encoding negotiation honours q-values, *, identity and x-gzip', () => {
  const cases: [string | undefined, string][] = [
    [undefined, 'identity'],
    ['', 'identity'],
    ['gzip', 'gzip'],
    ['GZIP', 'gzip'],
    ['x-gzip', 'gzip'],
    ['deflate', 'deflate'],
    ['gzip, deflate, br', 'gzip'],
    ['deflate, gzip', 'gzip'],
    ['deflate;q=1, gzip;q=0.5', 'deflate'],
    ['gzip;q=0, deflate', 'deflate'],
    ['gzip;q=0.001', 'gzip'],
    ['br, zstd', 'identity'],
    ['identity', 'identity'],
    ['gzip;q=0.4, identity;q=0.5', 'identity'],
    ['gzip;q=0.5, identity;q=0.5', 'gzip'],
    ['*', 'gzip'],
    ['*;q=0.3, deflate;q=0.6', 'deflate'],
    ['*;q=0', 'identity'],
    ['gzip;q=0, deflate;q=0', 'identity'],
    ['gzip ; q = 0.7 , deflate;q=0.6', 'gzip'],
    ['gzip;q=abc', 'identity'],
    ['gzip;q=1.5, deflate;q=0.1', 'deflate'],
    [' , ,gzip', 'gzip'],
  ];
  for (const [header, expected] of cases) assert.equal(negotiateCoding(header), expected, String(header));
  // a header sent twice is one list
  assert.equal(negotiateCoding(['identity;q=0.1', 'deflate']), 'deflate');
});

test('body encoding - Content-Encoding: identity, gzip, deflate; anything else or stacked codings are a 415', () => {
  assert.equal(requestCoding(undefined), 'identity');
  assert.equal(requestCoding(''), 'identity');
  assert.equal(requestCoding('identity'), 'identity');
  assert.equal(requestCoding('GZip'), 'gzip');
  assert.equal(requestCoding('x-gzip'), 'gzip');
  assert.equal(requestCoding('deflate'), 'deflate');
  assert.equal(requestCoding('identity, gzip'), 'gzip');
  for (const bad of ['br', 'zstd', 'compress', 'gzip, deflate', 'gzip, gzip']) {
    assert.throws(
      () => requestCoding(bad),
      (err: unknown) =>
        err instanceof InfergridError &&
        err.code === 'UNSUPPORTED_MEDIA_TYPE' &&
        /gzip/.test(err.message) &&
        /deflate/.test(err.message),
      bad,
    );
  }
});

test('body encoding - compressible types: text and JSON, not binary or event streams', () => {
  for (const t of [
    'application/json',
    'application/json; charset=utf-8',
    'text/plain; version=0.0.4',
    'text/html',
    'application/problem+json',
    'image/svg+xml',
  ])
    assert.ok(isCompressibleType(t), t);
  for (const t of [
    'application/octet-stream',
    'text/event-stream; charset=utf-8',
    'image/png',
    undefined,
    42,
  ])
    assert.ok(!isCompressibleType(t), String(t));
  assert.equal(varyWithAcceptEncoding(undefined), 'Accept-Encoding');
  assert.equal(varyWithAcceptEncoding('Origin'), 'Origin, Accept-Encoding');
  assert.equal(varyWithAcceptEncoding('origin, accept-encoding'), 'origin, accept-encoding');
  assert.equal(varyWithAcceptEncoding('*'), '*');
});

/** A request body as a stream: `chunks` written one by one, then the end (unless `cut`). */
function stream(chunks: Buffer[], cut = false): PassThrough & { complete?: boolean } {
  const s = new PassThrough() as PassThrough & { complete?: boolean };
  setImmediate(() => {
    for (const c of chunks) s.write(c);
    if (cut) s.destroy();
    else {
      s.complete = true;
      s.end();
    }
  });
  return s;
}

const LIMITS = { wireLimitBytes: 1000, decodedLimitBytes: 5000 };

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof InfergridError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

test('body encoding - readBody decodes gzip, zlib and raw deflate, in pieces of any size', async () => {
  const text = Buffer.from('{"inputs":[]}'.padEnd(3000, ' '));
  const split = (b: Buffer, size: number) =>
    Array.from({ length: Math.ceil(b.byteLength / size) }, (_, i) => b.subarray(i * size, (i + 1) * size));
  for (const [coding, body] of [
    ['gzip', gzipSync(text)],
    ['deflate', deflateSync(text)],
    ['deflate', deflateRawSync(text)],
  ] as const) {
    for (const size of [1, 7, 1000]) {
      const out = await readBody(stream(split(body, size)), undefined, { coding, ...LIMITS });
      assert.ok(out.equals(text), `${coding} in ${size}-byte pieces`);
    }
  }
  assert.equal((await readBody(stream([]), '0', { coding: 'gzip', ...LIMITS })).byteLength, 0);
  const plain = await readBody(stream([Buffer.from('ab'), Buffer.from('c')]), '3', {
    coding: 'identity',
    ...LIMITS,
  });
  assert.equal(plain.toString(), 'abc');
});

test('body encoding - readBody refuses past either limit, corrupt data, and a body cut short', async () => {
  const refusals: boolean[] = [];
  const refused = (r: { drained: boolean }) => refusals.push(r.drained);
  // announced over the wire limit: refused before a byte is read, the rest not drained
  await rejectsWith(
    readBody(stream([]), '1001', { coding: 'identity', ...LIMITS }, refused),
    'PAYLOAD_TOO_LARGE',
    /coordinator\.bodyLimitBytes/,
  );
  // more on the wire than the limit, chunked
  await rejectsWith(
    readBody(
      stream([Buffer.alloc(600), Buffer.alloc(600)]),
      undefined,
      { coding: 'identity', ...LIMITS },
      refused,
    ),
    'PAYLOAD_TOO_LARGE',
    /1000 bytes/,
  );
  // decodes past the cap: small on the wire, refused at the cap, the rest drained
  const bomb = gzipSync(Buffer.alloc(10 * 1024 * 1024));
  assert.ok(bomb.byteLength < 20_000);
  await rejectsWith(
    readBody(
      stream([bomb]),
      String(bomb.byteLength),
      { ...LIMITS, coding: 'gzip', wireLimitBytes: 20_000 },
      refused,
    ),
    'PAYLOAD_TOO_LARGE',
    /decodes to more than 5000 bytes \(coordinator\.compression\.maxDecompressedBytes\)/,
  );
  await rejectsWith(
    readBody(stream([Buffer.from('plain text')]), '10', { coding: 'gzip', ...LIMITS }, refused),
    'MALFORMED_REQUEST',
    /not valid gzip data/,
  );
  await rejectsWith(
    readBody(stream([Buffer.from([0x78, 0x9c, 1, 2, 3, 4])]), '6', { coding: 'deflate', ...LIMITS }, refused),
    'MALFORMED_REQUEST',
    /not valid deflate \(zlib\) data/,
  );
  // a gzip body cut off before its end
  const truncated = gzipSync(Buffer.from('x'.repeat(100))).subarray(0, 15);
  await rejectsWith(
    readBody(stream([truncated]), '15', { coding: 'gzip', ...LIMITS }, refused),
    'MALFORMED_REQUEST',
    /not valid gzip data/,
  );
  await rejectsWith(
    readBody(stream([Buffer.from('{"in')], true), '100', { coding: 'identity', ...LIMITS }, refused),
    'CANCELLED',
    /before the end of the request body/,
  );
  assert.deepEqual(refusals, [false, false, true, true, true, true, true]);
});

test('body encoding - the response hook compresses successful text answers of inference routes, /metrics and the dashboard, over the threshold only', async (t) => {
  const app = Fastify();
  t.after(() => app.close());
  installResponseCompression(app, { responseMinBytes: 100, level: 1 });
  const big = { values: Array.from({ length: 200 }, (_, i) => i) };
  app.get('/v2/models/:model/infer', async () => big);
  app.get('/v1/models', async () => ({ ok: true }));
  app.get('/v2/models/:model/versions/:version/infer', async (_req, reply) =>
    reply.type('application/octet-stream').send(Buffer.alloc(4096)),
  );
  app.get('/v1/embeddings', async (_req, reply) => reply.code(400).send({ error: 'x'.repeat(4096) }));
  app.get('/v2/models/:model/stats', async () => big);
  app.get('/metrics', async (_req, reply) => reply.type('text/plain').send('metric 1\n'.repeat(100)));
  const get = (url: string, accept?: string) =>
    app.inject({ method: 'GET', url, headers: accept === undefined ? {} : { 'accept-encoding': accept } });

  const gz = await get('/v2/models/m/infer', 'gzip');
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.equal(gz.headers.vary, 'Accept-Encoding');
  assert.equal(Number(gz.headers['content-length']), gz.rawPayload.byteLength);
  assert.deepEqual(JSON.parse(gunzipSync(gz.rawPayload).toString()), big);
  const none = await get('/v2/models/m/infer');
  assert.equal(none.headers['content-encoding'], undefined);
  assert.equal(none.headers.vary, 'Accept-Encoding');
  assert.deepEqual(none.json(), big);

  const small = await get('/v1/models', 'gzip');
  assert.equal(small.headers['content-encoding'], undefined);
  assert.equal(small.headers.vary, 'Accept-Encoding');
  const binary = await get('/v2/models/m/versions/1/infer', 'gzip');
  assert.equal(binary.headers['content-encoding'], undefined);
  assert.equal(binary.headers.vary, undefined);
  assert.equal(binary.rawPayload.byteLength, 4096);
  const error = await get('/v1/embeddings', 'gzip');
  assert.equal(error.statusCode, 400);
  assert.equal(error.headers['content-encoding'], undefined);
  assert.equal(error.json().error.length, 4096);
  const text = await get('/metrics', 'deflate');
  assert.equal(text.headers['content-encoding'], 'deflate');
  // the rest of the KServe API is never compressed (Triton's asyncio client reads it undecoded)
  const stats = await get('/v2/models/m/stats', 'gzip, deflate');
  assert.equal(stats.headers['content-encoding'], undefined);
  assert.equal(stats.headers.vary, undefined);
  assert.deepEqual(stats.json(), big);
});

test('body encoding - compression settings: defaults, and a level or threshold out of range is refused with its path', () => {
  const defaults = configSchema.parse({}).coordinator.compression;
  assert.deepEqual(defaults, { responses: true, responseMinBytes: 1024, level: 1 });
  for (const bad of [
    { level: 0 },
    { level: 10 },
    { responseMinBytes: -1 },
    { maxDecompressedBytes: 0 },
    { gzip: true },
  ]) {
    const parsed = configSchema.safeParse({ coordinator: { compression: bad } });
    assert.ok(!parsed.success, JSON.stringify(bad));
    assert.deepEqual(
      parsed.error.issues[0]!.path.slice(0, 2),
      ['coordinator', 'compression'],
      JSON.stringify(bad),
    );
  }
  const set = configSchema.parse({ coordinator: { compression: { maxDecompressedBytes: 4096 } } });
  assert.equal(set.coordinator.compression.maxDecompressedBytes, 4096);
});

test('body encoding - compressed routes: inference, /metrics, the dashboard; not metadata, statistics, repository, config, health', () => {
  for (const r of [
    '/v2/models/:model/infer',
    '/v2/models/:model/versions/:version/infer',
    '/v2/models/:model/generate',
    '/v1/chat/completions',
    '/v1/models',
    '/metrics',
    '/admin/overview',
    '/dashboard/app.js',
  ])
    assert.ok(isCompressedRoute(r), r);
  for (const r of [
    '/v2',
    '/v2/models/:model',
    '/v2/models/:model/stats',
    '/v2/models/stats',
    '/v2/models/:model/config',
    '/v2/repository/index',
    '/v2/health/ready',
    '/v2/requests/:id',
    '/admin/workers',
    undefined,
  ])
    assert.ok(!isCompressedRoute(r), String(r));
});
