/**
 * HTTP bodies against a real coordinator and sim worker: requests compressed with gzip or
 * deflate (JSON and binary tensor bodies), the refusals (an unknown coding, corrupt data, a
 * zip bomb, a body over the decoded-size cap) and the keep-alive connection going on after
 * them, compressed answers by Accept-Encoding (JSON yes, binary tensors and errors no, Vary),
 * and empty bodies under any content type. Raw node:http, so the bytes on the wire are seen
 * as they are (fetch would decode them).
 */

import assert from 'node:assert/strict';
import { Agent, type OutgoingHttpHeaders, request } from 'node:http';
import { test } from 'node:test';
import { deflateRawSync, deflateSync, gunzipSync, gzipSync, inflateSync } from 'node:zlib';
import { coordinatorRssBytes } from '../fixtures/http-raw.ts';
import {
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

/** Cap on what a compressed body may decode to in this config: 1 MiB. */
const MAX_DECOMPRESSED = 1024 * 1024;
/** Smallest compressed answer in this config. */
const MIN_BYTES = 256;

const CONFIG = `
workers: [{ id: w1 }]
coordinator:
  compression: { maxDecompressedBytes: ${MAX_DECOMPRESSED}, responseMinBytes: ${MIN_BYTES} }
models:
  - name: echo
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;

interface Exchange {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The body as it came over the wire (still compressed, if it is). */
  body: Buffer;
  /** The client-side port of the connection it came over: the same port, the same connection. */
  localPort: number;
  reusedSocket: boolean;
}

/** One request on `agent` (keep-alive, one socket), the answer read whole, nothing decoded. */
function exchange(
  url: string,
  agent: Agent,
  method: string,
  path: string,
  headers: OutgoingHttpHeaders,
  body?: Buffer | string,
): Promise<Exchange> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: hostname,
        port: Number(port),
        method,
        path,
        agent,
        headers: body === undefined ? headers : { 'content-length': Buffer.byteLength(body), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            localPort: res.socket?.localPort ?? req.socket?.localPort ?? -1,
            reusedSocket: req.reusedSocket,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const json = (x: Exchange): Record<string, unknown> => JSON.parse(x.body.toString('utf8'));
const fp32Bytes = (values: number[]): Buffer => Buffer.from(Float32Array.from(values).buffer);
const inferBody = (values: number[]) =>
  JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [values.length], data: values }] });

test('http bodies - compressed requests and answers, their refusals, and empty bodies', {
  timeout: 120_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const { url } = coordinator;
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['echo']);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const send = (method: string, path: string, headers: OutgoingHttpHeaders, body?: Buffer | string) =>
    exchange(url, agent, method, path, headers, body);
  const INFER = '/v2/models/echo/infer';
  const values = [1.5, -2, 3.25, 0];

  await t.test('a gzip JSON body is decoded before it is parsed', async () => {
    const a = await send(
      'POST',
      INFER,
      { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      gzipSync(inferBody(values)),
    );
    assert.equal(a.status, 200, a.body.toString());
    assert.deepEqual((json(a).outputs as { data: number[] }[])[0]!.data, values);
  });

  await t.test('deflate is zlib (as Triton sends it); a raw deflate stream is read too', async () => {
    for (const body of [deflateSync(inferBody(values)), deflateRawSync(inferBody(values))]) {
      const a = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'content-encoding': 'deflate' },
        body,
      );
      assert.equal(a.status, 200, a.body.toString());
      assert.deepEqual((json(a).outputs as { data: number[] }[])[0]!.data, values);
    }
  });

  await t.test(
    'a gzip binary tensor body: Inference-Header-Content-Length counts the decoded JSON',
    async () => {
      const header = Buffer.from(
        JSON.stringify({
          inputs: [{ name: 'x', datatype: 'FP32', shape: [4], parameters: { binary_data_size: 16 } }],
          outputs: [{ name: 'y', parameters: { binary_data: true } }],
        }),
      );
      const a = await send(
        'POST',
        INFER,
        {
          'content-type': 'application/octet-stream',
          'content-encoding': 'gzip',
          'inference-header-content-length': String(header.byteLength),
        },
        gzipSync(Buffer.concat([header, fp32Bytes(values)])),
      );
      assert.equal(a.status, 200, a.body.toString());
      const jsonBytes = Number(a.headers['inference-header-content-length']);
      const rest = a.body.subarray(jsonBytes);
      assert.equal(rest.byteLength, 16);
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => rest.readFloatLE(4 * i)),
        values,
      );
    },
  );

  await t.test('a coding we do not read is a 415 naming the ones we do', async () => {
    for (const coding of ['br', 'zstd', 'gzip, gzip']) {
      const a = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'content-encoding': coding },
        inferBody(values),
      );
      assert.equal(a.status, 415, a.body.toString());
      assert.equal(json(a).code, 'UNSUPPORTED_MEDIA_TYPE');
      assert.match(String(json(a).error), /gzip/);
      assert.match(String(json(a).error), /deflate/);
      assert.equal(a.headers['accept-encoding'], 'gzip, deflate, identity');
      // the unread body is dropped and the connection goes on
      const next = await send('GET', '/v2/health/live', {});
      assert.equal(next.status, 200);
      assert.ok(next.reusedSocket, 'the next request went over the same connection');
      assert.equal(next.localPort, a.localPort);
    }
  });

  await t.test('corrupt gzip is a 400 saying so; the connection goes on', async () => {
    const good = gzipSync(inferBody(values));
    const corrupt = Buffer.from(good);
    corrupt.fill(0x55, 12, 40);
    for (const body of [corrupt, Buffer.from('not gzip at all, just text')]) {
      const a = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body,
      );
      assert.equal(a.status, 400, a.body.toString());
      assert.equal(json(a).code, 'MALFORMED_REQUEST');
      assert.match(String(json(a).error), /not valid gzip data/);
      const next = await send('GET', '/v2/health/live', {});
      assert.equal(next.status, 200);
      assert.ok(next.reusedSocket, 'the next request went over the same connection');
      assert.equal(next.localPort, a.localPort);
    }
  });

  await t.test(
    'a zip bomb is a 413 without its output in memory, and the same connection answers the next request',
    async () => {
      // 64 gzip members of 16 MiB of zeros each: 1 GiB decoded, about 1 MiB on the wire
      const member = gzipSync(Buffer.alloc(16 * 1024 * 1024));
      const bomb = Buffer.concat(Array.from({ length: 64 }, () => member));
      assert.ok(bomb.byteLength < 2 * 1024 * 1024, `bomb is ${bomb.byteLength} bytes`);
      const rssBefore = await coordinatorRssBytes(url);
      const a = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        bomb,
      );
      assert.equal(a.status, 413, a.body.toString());
      assert.equal(json(a).code, 'PAYLOAD_TOO_LARGE');
      assert.deepEqual(json(a).details, { maxDecompressedBytes: MAX_DECOMPRESSED });
      assert.match(String(json(a).error), /coordinator\.compression\.maxDecompressedBytes/);
      const next = await send('POST', INFER, { 'content-type': 'application/json' }, inferBody(values));
      assert.equal(next.status, 200, next.body.toString());
      assert.ok(next.reusedSocket, 'the next request went over the same connection');
      assert.equal(next.localPort, a.localPort);
      const rssAfter = await coordinatorRssBytes(url);
      // the whole output would be 1 GiB; a read stopped at the cap holds about 1 MiB
      assert.ok(
        rssAfter - rssBefore < 256 * 1024 * 1024,
        `coordinator RSS grew by ${Math.round((rssAfter - rssBefore) / 2 ** 20)} MiB`,
      );
    },
  );

  await t.test(
    'the decoded-size cap: a body that decodes to just over it is refused, just under it served',
    async () => {
      const body = inferBody(values);
      // JSON may hold any whitespace: pad the body to an exact decoded size
      const padded = (size: number) => gzipSync(body + ' '.repeat(size - Buffer.byteLength(body)));
      const overBody = padded(MAX_DECOMPRESSED + 1);
      assert.ok(overBody.byteLength < MAX_DECOMPRESSED / 100, 'on the wire it is far below the cap');
      const over = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        overBody,
      );
      assert.equal(over.status, 413, over.body.toString());
      assert.deepEqual(json(over).details, { maxDecompressedBytes: MAX_DECOMPRESSED });
      const at = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        padded(MAX_DECOMPRESSED),
      );
      assert.equal(at.status, 200, at.body.toString());
    },
  );

  // a JSON answer over MIN_BYTES: 400 FP32 values
  const big = Array.from({ length: 400 }, (_, i) => i / 8);
  const plain = await send('POST', INFER, { 'content-type': 'application/json' }, inferBody(big));
  assert.equal(plain.status, 200);
  assert.ok(plain.body.byteLength >= MIN_BYTES, `answer is ${plain.body.byteLength} bytes`);

  await t.test('Accept-Encoding: gzip gets the same JSON gzip-compressed, with Vary', async () => {
    const a = await send(
      'POST',
      INFER,
      { 'content-type': 'application/json', 'accept-encoding': 'gzip' },
      inferBody(big),
    );
    assert.equal(a.status, 200);
    assert.equal(a.headers['content-encoding'], 'gzip');
    assert.equal(a.headers.vary, 'Accept-Encoding');
    assert.ok(
      a.body.byteLength < plain.body.byteLength / 2,
      `${a.body.byteLength} of ${plain.body.byteLength}`,
    );
    assert.deepEqual(JSON.parse(gunzipSync(a.body).toString()), json(plain));
    assert.equal(plain.headers['content-encoding'], undefined, 'without Accept-Encoding: not compressed');
    assert.equal(plain.headers.vary, 'Accept-Encoding');
  });

  await t.test('q-values choose the coding; identity or q=0 leaves the answer as it is', async () => {
    const cases: [string, string | undefined][] = [
      ['gzip;q=0, deflate', 'deflate'],
      ['deflate;q=0.5, gzip;q=0.9', 'gzip'],
      ['br', undefined],
      ['identity', undefined],
      ['gzip;q=0.2, identity;q=0.5', undefined],
      ['*', 'gzip'],
      ['*;q=0, identity', undefined],
    ];
    for (const [accept, expected] of cases) {
      const a = await send(
        'POST',
        INFER,
        { 'content-type': 'application/json', 'accept-encoding': accept },
        inferBody(big),
      );
      assert.equal(a.status, 200);
      assert.equal(a.headers['content-encoding'], expected, accept);
      const text =
        expected === 'deflate' ? inflateSync(a.body) : expected === 'gzip' ? gunzipSync(a.body) : a.body;
      assert.deepEqual(JSON.parse(text.toString()), json(plain), accept);
    }
  });

  await t.test('a binary tensor answer and a small answer are not compressed', async () => {
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'x', datatype: 'FP32', shape: [400], parameters: { binary_data_size: 1600 } }],
        outputs: [{ name: 'y', parameters: { binary_data: true } }],
      }),
    );
    const binary = await send(
      'POST',
      INFER,
      {
        'content-type': 'application/octet-stream',
        'inference-header-content-length': String(header.byteLength),
        'accept-encoding': 'gzip',
      },
      Buffer.concat([header, fp32Bytes(big)]),
    );
    assert.equal(binary.status, 200, binary.body.toString());
    assert.equal(binary.headers['content-type'], 'application/octet-stream');
    assert.equal(binary.headers['content-encoding'], undefined);
    const jsonBytes = Number(binary.headers['inference-header-content-length']);
    assert.equal(binary.body.byteLength, jsonBytes + 1600);

    const small = await send(
      'POST',
      INFER,
      { 'content-type': 'application/json', 'accept-encoding': 'gzip' },
      inferBody(values),
    );
    assert.equal(small.status, 200);
    assert.ok(small.body.byteLength < MIN_BYTES);
    assert.equal(small.headers['content-encoding'], undefined);
    assert.equal(small.headers.vary, 'Accept-Encoding');
  });

  await t.test(
    "statistics and metadata are never compressed: Triton's asyncio client reads them undecoded",
    async () => {
      for (const path of ['/v2/models/echo/stats', '/v2/models/echo', '/v2/models/echo/config']) {
        const a = await send('GET', path, { 'accept-encoding': 'gzip, deflate' });
        assert.equal(a.status, 200, a.body.toString());
        assert.equal(a.headers['content-encoding'], undefined, path);
        assert.ok(
          a.body.byteLength >= MIN_BYTES || path !== '/v2/models/echo/stats',
          `${path}: ${a.body.byteLength} bytes`,
        );
        assert.equal(typeof json(a), 'object');
      }
    },
  );

  await t.test('Prometheus text is compressed for a scraper that asks', async () => {
    const a = await send('GET', '/metrics', { 'accept-encoding': 'gzip' });
    assert.equal(a.status, 200);
    assert.equal(a.headers['content-encoding'], 'gzip');
    assert.match(gunzipSync(a.body).toString(), /^# HELP /m);
  });

  await t.test('an empty body is no body, whatever its content type', async () => {
    const index = await send('POST', '/v2/repository/index', {}, undefined);
    assert.equal(index.status, 200, index.body.toString());
    for (const headers of [
      { 'content-type': 'text/plain' },
      { 'content-type': 'text/plain; charset=utf-8', 'sec-fetch-site': 'same-origin' },
      { 'content-type': 'application/json' },
      { 'content-type': 'application/x-www-form-urlencoded' },
      { 'content-type': 'text/plain', 'content-encoding': 'gzip' },
    ]) {
      const a = await send('POST', '/v2/repository/index', headers, '');
      assert.equal(a.status, 200, `${JSON.stringify(headers)}: ${a.body.toString()}`);
      assert.deepEqual(json(a), json(index));
    }
    // a non-empty text/plain body from a browser is still not read as JSON
    const browser = await send(
      'POST',
      '/v2/repository/index',
      { 'content-type': 'text/plain', 'sec-fetch-site': 'same-origin' },
      '{"ready":true}',
    );
    assert.equal(browser.status, 415, browser.body.toString());
    // an empty infer body says what is missing, not that it is empty
    const infer = await send('POST', INFER, { 'content-type': 'text/plain' }, '');
    assert.equal(infer.status, 400);
    assert.match(String(json(infer).error), /"inputs"/);
    // load with an empty text/plain body: the same as no body (a reload of the model as configured)
    const load = await send('POST', '/v2/repository/models/echo/load', { 'content-type': 'text/plain' }, '');
    assert.equal(load.status, 200, load.body.toString());
    await waitFor('echo ready after the reload', async () => {
      const r = await send('GET', '/v2/models/echo/ready', {});
      return r.status === 200;
    });
    const after = await send('POST', INFER, { 'content-type': 'application/json' }, inferBody(values));
    assert.equal(after.status, 200, after.body.toString());
  });
});
