/**
 * The HTTP API's extensions against a real coordinator and worker, with bodies built and read
 * by hand (raw fetch, no client): Triton's binary tensor data (binary inputs and outputs, mixed
 * with JSON, malformed bodies), base64 BYTES inputs in JSON, and asynchronous requests (202,
 * polling, failures before and after the 202).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/models/${name}`, import.meta.url));

/** The 1.5 s `slow` model is seen pending by a poll right after its 202: a gap far above a loopback round trip. */
const SLOW_MS = 1500;

const CONFIG = `
workers: [{ id: w1 }]
models:
  - name: echo
    backend: sim
    maxBatchSize: 8
    inputs:
      - { name: INPUT0, datatype: FP32, shape: [-1, 4] }
      - { name: INPUT1, datatype: INT32, shape: [-1, 2] }
      - { name: INPUT2, datatype: BYTES, shape: [-1] }
    outputs:
      - { name: OUTPUT0, datatype: FP32, shape: [-1, 4] }
      - { name: OUTPUT1, datatype: INT32, shape: [-1, 2] }
      - { name: OUTPUT2, datatype: BYTES, shape: [-1] }
  - name: double
    backend: js
    path: ${fixture('double.ts')}
  - name: picky
    backend: js
    path: ${fixture('toggle-failure.ts')}
  - name: failing
    backend: sim
    sim: { failureRate: 1 }
    routing: { maxAttempts: 1 }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: slow
    backend: sim
    sim: { latencyMs: ${SLOW_MS} }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`;

const HEADER_LENGTH = 'inference-header-content-length';

interface Answer {
  status: number;
  headers: Headers;
  /** The JSON part (the whole body when there is no Inference-Header-Content-Length). */
  json: Record<string, unknown> & { error?: string; code?: string };
  /** The bytes after the JSON. */
  rest: Buffer;
}

/** A binary-extension body: the JSON, then each section's bytes. */
function binaryBody(
  json: unknown,
  ...sections: Uint8Array[]
): { body: Buffer; headers: Record<string, string> } {
  const header = Buffer.from(JSON.stringify(json), 'utf8');
  return {
    body: Buffer.concat([header, ...sections]),
    headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: String(header.byteLength) },
  };
}

async function send(
  url: string,
  body: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
  method = 'POST',
): Promise<Answer> {
  const res = await fetch(url, { method, body, headers });
  const bytes = Buffer.from(await res.arrayBuffer());
  const length = res.headers.get(HEADER_LENGTH);
  const jsonBytes = length === null ? bytes.byteLength : Number(length);
  assert.ok(Number.isSafeInteger(jsonBytes) && jsonBytes <= bytes.byteLength, `header ${length}`);
  const text = bytes.toString('utf8', 0, jsonBytes);
  return {
    status: res.status,
    headers: res.headers,
    json: text ? JSON.parse(text) : {},
    rest: bytes.subarray(jsonBytes),
  };
}

async function get(url: string): Promise<Answer> {
  const res = await fetch(url);
  return {
    status: res.status,
    headers: res.headers,
    json: (await res.json()) as Answer['json'],
    rest: Buffer.alloc(0),
  };
}

const le32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
/** BYTES elements as the binary extension lays them out: a 4-byte LE length, then the bytes. */
const bytesElements = (...elements: Buffer[]): Buffer =>
  Buffer.concat(elements.flatMap((e) => [le32(e.byteLength), e]));
const fp32Bytes = (values: number[]): Buffer => Buffer.from(Float32Array.from(values).buffer);

/** Reads FP32 values out of a response section by hand (little-endian). */
function readFp32(bytes: Buffer): number[] {
  assert.equal(bytes.byteLength % 4, 0);
  return Array.from({ length: bytes.byteLength / 4 }, (_, i) => bytes.readFloatLE(4 * i));
}

/** Reads BYTES elements out of a response section by hand. */
function readBytesElements(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0; offset < bytes.byteLength; ) {
    const n = bytes.readUInt32LE(offset);
    out.push(bytes.subarray(offset + 4, offset + 4 + n));
    offset += 4 + n;
  }
  return out;
}

interface JsonOutput {
  name: string;
  datatype: string;
  shape: number[];
  data?: unknown[];
  parameters?: { binary_data_size?: number };
}
/** GET /v2/requests/{id} once the request has finished (docs/async.md). */
interface AsyncOutcome {
  id: string;
  status: 'done' | 'failed';
  submitted_at: string;
  finished_at: string;
  response?: { outputs: JsonOutput[] } & Record<string, unknown>;
  error?: { code: string; message: string };
  http_status?: number;
}

const outputsOf = (a: Answer): JsonOutput[] => a.json.outputs as JsonOutput[];

function expect400(a: Answer, code: 'INVALID_ARGUMENT' | 'MALFORMED_REQUEST', message: RegExp): void {
  assert.equal(a.status, 400, JSON.stringify(a.json));
  assert.equal(a.json.code, code, a.json.error);
  assert.match(a.json.error!, message);
}

test('http extensions - binary tensor data, base64 BYTES and asynchronous requests over raw HTTP', {
  timeout: 60_000,
}, async (t) => {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const { url, client } = coordinator;
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(url, 1, ['echo', 'double', 'picky', 'failing', 'slow']);
  await waitFor('every model ready', async () => {
    const ready = await Promise.all(
      ['echo', 'double', 'picky', 'failing', 'slow'].map((m) => client.modelReady(m)),
    );
    return ready.every(Boolean);
  });
  const infer = (model: string) => `${url}/v2/models/${model}/infer`;

  // NaN and the infinities have no JSON form: only binary data carries them
  const X = [1.5, -2.25, 0, 1e-3, Number.NaN, Number.POSITIVE_INFINITY];
  const DOUBLED = Array.from(Float32Array.from(X), (v) => Math.fround(v * 2));

  await t.test('FP32 in as binary, y out as binary: the bytes after the JSON are x * 2', async () => {
    const { body, headers } = binaryBody(
      {
        inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 3], parameters: { binary_data_size: 24 } }],
        outputs: [{ name: 'y', parameters: { binary_data: true } }],
      },
      fp32Bytes(X),
    );
    const a = await send(infer('double'), body, headers);
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.equal(a.headers.get('content-type'), 'application/octet-stream');
    assert.deepEqual(outputsOf(a), [
      { name: 'y', datatype: 'FP32', shape: [2, 3], parameters: { binary_data_size: 24 } },
    ]);
    assert.equal(a.rest.byteLength, 24);
    assert.deepEqual(readFp32(a.rest), DOUBLED);
  });

  await t.test(
    'binary_data_output asks every output as binary; without it a binary input gets JSON back',
    async () => {
      const json = {
        inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2], parameters: { binary_data_size: 8 } }],
      };
      const all = binaryBody({ ...json, parameters: { binary_data_output: true } }, fp32Bytes([3, -4]));
      const a = await send(infer('double'), all.body, all.headers);
      assert.equal(a.status, 200, JSON.stringify(a.json));
      assert.equal(outputsOf(a)[0]!.parameters?.binary_data_size, 8);
      assert.deepEqual(readFp32(a.rest), [6, -8]);

      // an output's own binary_data wins over binary_data_output (Triton's rule)
      const overridden = binaryBody(
        {
          ...json,
          parameters: { binary_data_output: true },
          outputs: [{ name: 'y', parameters: { binary_data: false } }],
        },
        fp32Bytes([3, -4]),
      );
      const c = await send(infer('double'), overridden.body, overridden.headers);
      assert.equal(c.status, 200, JSON.stringify(c.json));
      assert.deepEqual(outputsOf(c), [{ name: 'y', datatype: 'FP32', shape: [1, 2], data: [6, -8] }]);

      const plain = binaryBody(json, fp32Bytes([3, -4]));
      const b = await send(infer('double'), plain.body, plain.headers);
      assert.equal(b.status, 200, JSON.stringify(b.json));
      assert.equal(b.headers.get(HEADER_LENGTH), null, 'no binary output: plain JSON');
      assert.match(b.headers.get('content-type') ?? '', /^application\/json/);
      assert.deepEqual(outputsOf(b), [{ name: 'y', datatype: 'FP32', shape: [1, 2], data: [6, -8] }]);
      assert.equal(b.rest.byteLength, 0);
    },
  );

  await t.test('JSON and binary inputs mixed; outputs mixed the same way, in output order', async () => {
    const ints = Buffer.from(Int32Array.from([7, -8, 2 ** 31 - 1, -(2 ** 31)]).buffer);
    const strings = bytesElements(Buffer.from('héllo'), Buffer.from([0, 255, 1]));
    const { body, headers } = binaryBody(
      {
        inputs: [
          { name: 'INPUT0', datatype: 'FP32', shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] },
          {
            name: 'INPUT1',
            datatype: 'INT32',
            shape: [2, 2],
            parameters: { binary_data_size: ints.byteLength },
          },
          {
            name: 'INPUT2',
            datatype: 'BYTES',
            shape: [2],
            parameters: { binary_data_size: strings.byteLength },
          },
        ],
        outputs: [
          { name: 'OUTPUT0', parameters: { binary_data: true } },
          { name: 'OUTPUT1' },
          { name: 'OUTPUT2', parameters: { binary_data: true } },
        ],
      },
      ints,
      strings,
    );
    const a = await send(infer('echo'), body, headers);
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.deepEqual(outputsOf(a), [
      { name: 'OUTPUT0', datatype: 'FP32', shape: [2, 4], parameters: { binary_data_size: 32 } },
      { name: 'OUTPUT1', datatype: 'INT32', shape: [2, 2], data: [7, -8, 2 ** 31 - 1, -(2 ** 31)] },
      {
        name: 'OUTPUT2',
        datatype: 'BYTES',
        shape: [2],
        parameters: { binary_data_size: strings.byteLength },
      },
    ]);
    assert.equal(a.rest.byteLength, 32 + strings.byteLength);
    assert.deepEqual(readFp32(a.rest.subarray(0, 32)), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(readBytesElements(a.rest.subarray(32)), [
      Buffer.from('héllo'),
      Buffer.from([0, 255, 1]),
    ]);
  });

  await t.test('malformed binary bodies are 400 naming the problem', async () => {
    const x = { name: 'x', datatype: 'FP32', shape: [2, 3], parameters: { binary_data_size: 24 } };
    const good = binaryBody({ inputs: [x] }, fp32Bytes(X));
    const withHeader = (value: string) => ({ ...good.headers, [HEADER_LENGTH]: value });

    const beyond = await send(infer('double'), good.body, withHeader(String(good.body.byteLength + 1)));
    expect400(
      beyond,
      'MALFORMED_REQUEST',
      new RegExp(
        `Inference-Header-Content-Length is ${good.body.byteLength + 1} but the whole body is only ${good.body.byteLength} bytes`,
      ),
    );
    expect400(
      await send(infer('double'), good.body, withHeader('12abc')),
      'MALFORMED_REQUEST',
      /Inference-Header-Content-Length must be a non-negative integer.*got "12abc"/,
    );
    expect400(
      await send(infer('double'), good.body, withHeader('10')),
      'MALFORMED_REQUEST',
      /the request's JSON \(its first 10 bytes, per Inference-Header-Content-Length\) is not valid JSON/,
    );

    const short = binaryBody({ inputs: [x] }, fp32Bytes(X).subarray(0, 20));
    expect400(
      await send(infer('double'), short.body, short.headers),
      'INVALID_ARGUMENT',
      /binary_data_size add up to 24 bytes \("x" 24\), but 20 bytes follow the JSON/,
    );
    const long = binaryBody({ inputs: [x] }, fp32Bytes([...X, 1]));
    expect400(
      await send(infer('double'), long.body, long.headers),
      'INVALID_ARGUMENT',
      /add up to 24 bytes \("x" 24\), but 28 bytes follow the JSON/,
    );
    const wrongSize = binaryBody(
      { inputs: [{ ...x, parameters: { binary_data_size: 16 } }] },
      fp32Bytes(X.slice(0, 4)),
    );
    expect400(
      await send(infer('double'), wrongSize.body, wrongSize.headers),
      'INVALID_ARGUMENT',
      /input "x": FP32 \[2,3\] needs 24 bytes \(6 elements of 4\), got 16/,
    );
    const both = binaryBody({ inputs: [{ ...x, data: X.slice(0, 4) }] }, fp32Bytes(X));
    expect400(
      await send(infer('double'), both.body, both.headers),
      'INVALID_ARGUMENT',
      /"x"\): has both "data" and parameters.binary_data_size/,
    );
    // INPUT0 and INPUT1 as JSON, INPUT2 (BYTES [2]) as these binary bytes
    const echoBody = (bytes: Buffer) =>
      binaryBody(
        {
          inputs: [
            { name: 'INPUT0', datatype: 'FP32', shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] },
            { name: 'INPUT1', datatype: 'INT32', shape: [2, 2], data: [1, 2, 3, 4] },
            {
              name: 'INPUT2',
              datatype: 'BYTES',
              shape: [2],
              parameters: { binary_data_size: bytes.byteLength },
            },
          ],
        },
        bytes,
      );
    const oneElement = bytesElements(Buffer.from('ok'));
    const overrun = echoBody(Buffer.concat([oneElement, le32(9), Buffer.from('x')])); // claims 9 bytes, 1 left
    expect400(
      await send(infer('echo'), overrun.body, overrun.headers),
      'INVALID_ARGUMENT',
      /input "INPUT2": BYTES element 1 says 9 bytes but only 1 remain/,
    );
    const fewer = echoBody(oneElement);
    expect400(
      await send(infer('echo'), fewer.body, fewer.headers),
      'INVALID_ARGUMENT',
      /input "INPUT2": BYTES \[2\] needs 2 elements, the binary data holds 1/,
    );
    // binary bytes without the header: the whole body is taken as JSON
    expect400(
      await send(infer('double'), good.body, { 'content-type': 'application/octet-stream' }),
      'MALFORMED_REQUEST',
      /request body is not valid JSON/,
    );

    const after = await send(infer('double'), good.body, good.headers);
    assert.equal(after.status, 200, 'the same body with a right header still works');
  });

  await t.test('a BYTES input in JSON with content_type base64 reaches the model as raw bytes', async () => {
    const raw = [Buffer.from('hello'), Buffer.from([0, 1, 254, 255, 10])];
    const json = {
      inputs: [
        { name: 'INPUT0', datatype: 'FP32', shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8] },
        { name: 'INPUT1', datatype: 'INT32', shape: [2, 2], data: [1, 2, 3, 4] },
        {
          name: 'INPUT2',
          datatype: 'BYTES',
          shape: [2],
          parameters: { content_type: 'base64' },
          data: raw.map((b) => b.toString('base64')),
        },
      ],
      outputs: [{ name: 'OUTPUT2', parameters: { binary_data: true } }],
    };
    const a = await send(infer('echo'), JSON.stringify(json));
    assert.equal(a.status, 200, JSON.stringify(a.json));
    assert.deepEqual(outputsOf(a), [
      { name: 'OUTPUT2', datatype: 'BYTES', shape: [2], parameters: { binary_data_size: 4 * 2 + 5 + 5 } },
    ]);
    assert.deepEqual(readBytesElements(a.rest), raw);

    const bad = structuredClone(json);
    bad.inputs[2]!.data = ['aGVsbG8=', 'not base64!'];
    expect400(
      await send(infer('echo'), JSON.stringify(bad)),
      'INVALID_ARGUMENT',
      /input "INPUT2": element 1 is not base64 \(parameters.content_type is "base64"\)/,
    );
  });

  const DOUBLE_JSON = { inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 2], data: [1, 2.5, -3, 4] }] };
  const poll = async (location: string): Promise<AsyncOutcome> =>
    waitFor(`${location} finished`, async () => {
      const a = await get(`${url}${location}`);
      assert.equal(a.status, 200, JSON.stringify(a.json));
      return a.json.status === 'pending' ? undefined : (a.json as unknown as AsyncOutcome);
    });

  await t.test(
    'parameters.async: 202 with Location, then the same response as a synchronous call',
    async () => {
      const sync = await send(infer('double'), JSON.stringify(DOUBLE_JSON));
      assert.equal(sync.status, 200);
      const a = await send(infer('double'), JSON.stringify({ ...DOUBLE_JSON, parameters: { async: true } }));
      assert.equal(a.status, 202, JSON.stringify(a.json));
      const location = a.headers.get('location')!;
      assert.equal(location, `/v2/requests/${a.json.id}`);
      assert.deepEqual(a.json, { id: a.json.id, status: 'pending' });
      assert.equal(a.headers.get('preference-applied'), null, 'no Prefer header, none applied');
      const outcome = await poll(location);
      assert.equal(outcome.status, 'done', JSON.stringify(outcome));
      assert.deepEqual(outcome.response, sync.json);
      assert.ok(Date.parse(outcome.finished_at) >= Date.parse(outcome.submitted_at));
    },
  );

  await t.test(
    'Prefer: respond-async does the same and says so; a poll before the end says pending',
    async () => {
      const a = await send(
        infer('slow'),
        JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [2], data: [5, 6] }] }),
        {
          'content-type': 'application/json',
          prefer: 'respond-async',
        },
      );
      assert.equal(a.status, 202, JSON.stringify(a.json));
      assert.equal(a.headers.get('preference-applied'), 'respond-async');
      const location = a.headers.get('location')!;
      const early = await get(`${url}${location}`);
      assert.equal(early.json.status, 'pending', `polled well within the model's ${SLOW_MS} ms`);
      assert.deepEqual(Object.keys(early.json).sort(), ['id', 'status', 'submitted_at']);
      const outcome = await poll(location);
      assert.equal(outcome.status, 'done', JSON.stringify(outcome));
      assert.deepEqual(outcome.response?.outputs, [
        { name: 'y', datatype: 'FP32', shape: [2], data: [5, 6] },
      ]);

      // a binary request may be asynchronous too; its answer is JSON
      const binary = binaryBody(
        { inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 2], parameters: { binary_data_size: 8 } }] },
        fp32Bytes([0.5, 8]),
      );
      const b = await send(infer('double'), binary.body, { ...binary.headers, prefer: 'respond-async' });
      assert.equal(b.status, 202, JSON.stringify(b.json));
      const done = await poll(b.headers.get('location')!);
      assert.deepEqual(done.response?.outputs, [
        { name: 'y', datatype: 'FP32', shape: [1, 2], data: [1, 16] },
      ]);
    },
  );

  await t.test(
    'a bad input is a 400 before any 202; a model error after the 202 is a failed outcome',
    async () => {
      const wrongShape = await send(
        infer('double'),
        JSON.stringify({
          inputs: [{ name: 'x', datatype: 'FP32', shape: [3], data: [1, 2, 3] }],
          parameters: { async: true },
        }),
      );
      expect400(wrongShape, 'INVALID_ARGUMENT', /input "x": expected FP32 \[-1,-1\], got FP32 \[3\]/);
      assert.equal(wrongShape.headers.get('location'), null);

      // the model itself refuses a negative input: the client's fault, found only once it ran
      const refused = await send(
        infer('picky'),
        JSON.stringify({
          inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: [-1] }],
          parameters: { async: true },
        }),
      );
      assert.equal(refused.status, 202, JSON.stringify(refused.json));
      const outcome = await poll(refused.headers.get('location')!);
      assert.equal(outcome.status, 'failed');
      assert.deepEqual([outcome.error?.code, outcome.http_status], ['INVALID_ARGUMENT', 400]);
      assert.match(outcome.error?.message ?? '', /x must not be negative/);

      const broken = await send(
        infer('failing'),
        JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }] }),
        { 'content-type': 'application/json', prefer: 'respond-async' },
      );
      assert.equal(broken.status, 202, JSON.stringify(broken.json));
      const failed = await poll(broken.headers.get('location')!);
      assert.equal(failed.status, 'failed');
      assert.deepEqual([failed.error?.code, failed.http_status], ['WORKER_FAULT', 503]);
      assert.match(failed.error?.message ?? '', /injected failure/);
    },
  );

  await t.test('an unknown request id is 404 NOT_FOUND', async () => {
    const a = await get(`${url}/v2/requests/00000000-0000-4000-8000-000000000000`);
    assert.equal(a.status, 404);
    assert.equal(a.json.code, 'NOT_FOUND');
    assert.match(
      a.json.error!,
      /asynchronous request "00000000-0000-4000-8000-000000000000" is unknown or expired/,
    );
  });

  await t.test('async and binary outputs together are a 400: an async answer is JSON', async () => {
    const withAll = await send(
      infer('double'),
      JSON.stringify({ ...DOUBLE_JSON, parameters: { async: true, binary_data_output: true } }),
    );
    expect400(withAll, 'INVALID_ARGUMENT', /an asynchronous request cannot ask for binary outputs/);
    const withOne = await send(
      infer('double'),
      JSON.stringify({ ...DOUBLE_JSON, outputs: [{ name: 'y', parameters: { binary_data: true } }] }),
      { 'content-type': 'application/json', prefer: 'respond-async' },
    );
    expect400(withOne, 'INVALID_ARGUMENT', /an asynchronous request cannot ask for binary outputs/);
  });
});
