import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  INFERENCE_HEADER_CONTENT_LENGTH,
  binaryOutputPredicate,
  encodeInferResponse,
  parseInferRequestBody,
  tensorFromInput,
} from '../../src/api/binary-tensors.ts';
import { type InferResponseBody, buildInferResponse, parseInferBody } from '../../src/api/infer-body.ts';
import {
  InferenceClient,
  InferenceClientError,
  decodeInferResponse,
  encodeInferRequest,
} from '../../src/client/http-client.ts';
import type { InferResponseMeta } from '../../src/protocol/index.ts';
import {
  DATATYPES,
  type Datatype,
  ELEMENT_BYTES,
  type Tensor,
  bytesOf,
  decodeBytesElements,
  elementCount,
  encodeBytesElements,
  fromHalfBits,
  tensorFromJson,
  tensorToJsonData,
  typedView,
} from '../../src/tensor/index.ts';
import { assertCode, caught } from '../fixtures/assert.ts';

/** A body as the extension lays it out: the JSON, then each section in order. */
function binaryBody(json: unknown, ...sections: Uint8Array[]): { body: Buffer; headerLength: number } {
  const head = Buffer.from(JSON.stringify(json), 'utf8');
  return { body: Buffer.concat([head, ...sections]), headerLength: head.byteLength };
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Parses a request and turns every input into a tensor, as the coordinator does. */
function tensorsOf(body: Uint8Array, headerLength: number | string | undefined): Tensor[] {
  return parseInferRequestBody(body, headerLength).inputs.map((i) => tensorFromInput(i));
}

function metaOf(outputs: readonly Tensor[]): InferResponseMeta {
  return {
    model: 'm',
    version: '1',
    outputs: outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
  };
}

/** A fake PNG: the real signature, then random bytes (zero bytes and 0xff included by chance). */
function imageLike(bytes: number): Buffer {
  return Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), randomBytes(bytes)]);
}

// ---------------------------------------------------------------- requests

test('binary tensors - FP32 input round trips from the client as a view of the body', () => {
  const values = Float32Array.from([1.5, -0.25, Math.PI, Number.NaN, -0, 3.4e38]);
  const { body, headers } = encodeInferRequest(
    [{ name: 'x', datatype: 'FP32', shape: [2, 3], data: values }],
    { binary: true },
  );
  assert.ok(Buffer.isBuffer(body));
  const header = headers[INFERENCE_HEADER_CONTENT_LENGTH];
  assert.ok(header !== undefined);
  const [tensor] = tensorsOf(body, header);
  assert.equal(hex(tensor!.data), hex(bytesOf(values)));
  assert.deepEqual(tensor!.shape, [2, 3]);
  // no copy: the tensor's bytes are the tail of the request body
  assert.equal(tensor!.data.buffer, body.buffer);
  assert.equal(tensor!.data.byteOffset, body.byteOffset + Number(header));
});

test('binary tensors - INT64 input keeps values past 2^53 exactly', () => {
  const values = BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, 0n]);
  const { body, headers } = encodeInferRequest(
    [{ name: 'ids', datatype: 'INT64', shape: [4], data: values }],
    { binary: true },
  );
  const [tensor] = tensorsOf(body as Buffer, headers[INFERENCE_HEADER_CONTENT_LENGTH]);
  assert.deepEqual(Array.from(typedView('INT64', tensor!.data) as BigInt64Array), Array.from(values));
});

test('binary tensors - BYTES input of raw images travels as binary even without the binary option', () => {
  const images = [imageLike(3000), imageLike(0), imageLike(17)];
  const { body, headers } = encodeInferRequest([
    { name: 'images', datatype: 'BYTES', shape: [3], data: images },
    { name: 'scale', datatype: 'FP32', shape: [1], data: [0.5] },
  ]);
  assert.equal(headers['content-type'], 'application/octet-stream');
  const parsed = parseInferRequestBody(body as Buffer, headers[INFERENCE_HEADER_CONTENT_LENGTH]);
  // only the raw input is binary; the other stays JSON
  assert.deepEqual(parsed.inputs[1]!.data, [0.5]);
  const [bytes, scale] = parsed.inputs.map((i) => tensorFromInput(i));
  const elements = decodeBytesElements(bytes!.data);
  assert.equal(elements.length, 3);
  for (const [i, e] of elements.entries()) assert.ok(Buffer.from(e).equals(images[i]!), `image ${i}`);
  assert.equal(hex(scale!.data), hex(bytesOf(Float32Array.from([0.5]))));
});

test('binary tensors - client converts plain values: FP16, BOOL, BYTES strings, integers', () => {
  const inputs = [
    { name: 'h', datatype: 'FP16', shape: [3], data: [1, -2, 0.5] },
    { name: 'b', datatype: 'BOOL', shape: [3], data: [true, false, true] },
    { name: 's', datatype: 'BYTES', shape: [2], data: ['a', 'é✓'] },
    { name: 'i', datatype: 'INT8', shape: [2], data: [-128, 127] },
    { name: 'u', datatype: 'UINT64', shape: [2], data: [1, Number.MAX_SAFE_INTEGER] },
  ];
  const { body, headers } = encodeInferRequest(inputs, { binary: true });
  const tensors = tensorsOf(body as Buffer, headers[INFERENCE_HEADER_CONTENT_LENGTH]);
  // the binary bytes are exactly what the JSON path would have produced
  for (const [i, t] of tensors.entries()) {
    const input = inputs[i]!;
    const viaJson = tensorFromJson(input.name, input.datatype as Datatype, input.shape, input.data);
    assert.equal(hex(t.data), hex(viaJson.data), input.name);
  }
});

test('binary tensors - JSON and binary inputs mix; sections attach in input order', () => {
  const a = bytesOf(Float32Array.from([1, 2]));
  const c = encodeBytesElements([Buffer.from('hello')]);
  const { body, headerLength } = binaryBody(
    {
      inputs: [
        { name: 'a', datatype: 'FP32', shape: [2], parameters: { binary_data_size: a.byteLength } },
        { name: 'b', datatype: 'INT32', shape: [2], data: [[7], [8]] },
        { name: 'c', datatype: 'BYTES', shape: [1], parameters: { binary_data_size: c.byteLength } },
        { name: 'd', datatype: 'UINT8', shape: [0], parameters: { binary_data_size: 0 } },
      ],
    },
    a,
    c,
  );
  const tensors = tensorsOf(body, String(headerLength));
  assert.deepEqual(
    tensors.map((t) => [t.name, hex(t.data)]),
    [
      ['a', hex(a)],
      ['b', hex(bytesOf(Int32Array.from([7, 8])))],
      ['c', hex(c)],
      ['d', ''],
    ],
  );
});

test('binary tensors - without the header the whole body is JSON, as before', () => {
  const json = { inputs: [{ name: 'x', datatype: 'FP32', shape: [2], data: [1, 2] }] };
  const parsed = parseInferRequestBody(Buffer.from(JSON.stringify(json)), undefined);
  assert.deepEqual(parsed, parseInferBody(json));
  assert.deepEqual(parsed.inputs[0]!.data, [1, 2]);
  assert.equal(parsed.binaryDataOutput, false);
  // a header that covers the whole body means the same
  const same = parseInferRequestBody(Buffer.from(JSON.stringify(json)), JSON.stringify(json).length);
  assert.deepEqual(same, parsed);
});

test('binary tensors - extension parameters are read and never passed on to the model', () => {
  const parsed = parseInferBody({
    parameters: { binary_data_output: true, temperature: 0.5 },
    inputs: [{ name: 'x', datatype: 'UINT8', shape: [1], parameters: { binary_data_size: 1, keep: 'me' } }],
    outputs: [{ name: 'y', parameters: { binary_data: false } }, { name: 'z' }],
  });
  assert.deepEqual(parsed.parameters, { temperature: 0.5 });
  assert.deepEqual(parsed.inputs[0]!.parameters, { keep: 'me' });
  assert.equal(parsed.inputs[0]!.binaryDataSize, 1);
  assert.equal(parsed.binaryDataOutput, true);
  assert.deepEqual(parsed.outputs, ['y', 'z']);
  // an output's own binary_data overrides binary_data_output
  assert.deepEqual([...parsed.binaryOutputs!], ['z']);
  const binary = binaryOutputPredicate(parsed);
  assert.equal(binary('y'), false);
  assert.equal(binary('z'), true);
});

test('binary tensors - which outputs are binary: per output, by default, or none', () => {
  const inputs = [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }];
  const perOutput = parseInferBody({
    inputs,
    outputs: [{ name: 'y', parameters: { binary_data: true } }, { name: 'z' }],
  });
  assert.equal(perOutput.binaryDataOutput, false);
  assert.deepEqual([...perOutput.binaryOutputs!], ['y']);
  const all = binaryOutputPredicate(parseInferBody({ inputs, parameters: { binary_data_output: true } }));
  assert.equal(all('anything'), true);
  const none = binaryOutputPredicate(parseInferBody({ inputs }));
  assert.equal(none('anything'), false);
});

// ---------------------------------------------------------------- request errors

const ONE_FP32 = { name: 'x', datatype: 'FP32', shape: [1], parameters: { binary_data_size: 4 } };
const FOUR_BYTES = new Uint8Array(4);

test('binary tensors - a bad Inference-Header-Content-Length is MALFORMED_REQUEST', () => {
  const { body, headerLength } = binaryBody({ inputs: [ONE_FP32] }, FOUR_BYTES);
  for (const value of ['abc', '-1', '1.5', '', -1, 1.5, Number.NaN]) {
    assertCode(
      caught(() => parseInferRequestBody(body, value)),
      'MALFORMED_REQUEST',
      /Inference-Header-Content-Length must be a non-negative integer .*got/,
    );
  }
  assertCode(
    caught(() => parseInferRequestBody(body, body.byteLength + 1)),
    'MALFORMED_REQUEST',
    new RegExp(`is ${body.byteLength + 1} but the whole body is only ${body.byteLength} bytes`),
  );
  // one byte short: the JSON is cut
  assertCode(
    caught(() => parseInferRequestBody(body, headerLength - 1)),
    'MALFORMED_REQUEST',
    new RegExp(`request's JSON \\(its first ${headerLength - 1} bytes.*is not valid JSON`),
  );
});

test('binary tensors - invalid JSON is MALFORMED_REQUEST, worded as the plain JSON parser does', () => {
  assertCode(
    caught(() => parseInferRequestBody(Buffer.from('{"inputs": ['), undefined)),
    'MALFORMED_REQUEST',
    /^request body is not valid JSON: /,
  );
  assertCode(
    caught(() => parseInferRequestBody(Buffer.alloc(0), undefined)),
    'MALFORMED_REQUEST',
    /^request body is empty; expected a JSON object/,
  );
  assertCode(
    caught(() => parseInferRequestBody(Buffer.from('[1]'), 0)),
    'MALFORMED_REQUEST',
    /first 0 bytes.*is empty/,
  );
});

test('binary tensors - binary_data_size must be a non-negative integer', () => {
  for (const size of ['4', -4, 1.5, true]) {
    const { body, headerLength } = binaryBody(
      { inputs: [{ ...ONE_FP32, parameters: { binary_data_size: size } }] },
      FOUR_BYTES,
    );
    assertCode(
      caught(() => parseInferRequestBody(body, headerLength)),
      'INVALID_ARGUMENT',
      /inputs\[0\] \("x"\): parameters\.binary_data_size must be a non-negative integer .*got/,
    );
  }
});

test('binary tensors - sizes that do not add up to the bytes after the JSON say expected and got', () => {
  const two = [ONE_FP32, { ...ONE_FP32, name: 'y', parameters: { binary_data_size: 8 } }];
  const short = binaryBody({ inputs: two }, new Uint8Array(10));
  assertCode(
    caught(() => parseInferRequestBody(short.body, short.headerLength)),
    'INVALID_ARGUMENT',
    /add up to 12 bytes \("x" 4, "y" 8\), but 10 bytes follow the JSON$/,
  );
  const extra = binaryBody(
    { inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }] },
    new Uint8Array(3),
  );
  assertCode(
    caught(() => parseInferRequestBody(extra.body, extra.headerLength)),
    'INVALID_ARGUMENT',
    /add up to 0 bytes \(no input has parameters\.binary_data_size\), but 3 bytes follow/,
  );
  // binary sizes but no header: the message says to send it
  const json = Buffer.from(JSON.stringify({ inputs: [ONE_FP32] }));
  assertCode(
    caught(() => parseInferRequestBody(json, undefined)),
    'INVALID_ARGUMENT',
    /add up to 4 bytes .*but 0 bytes follow the JSON; without an Inference-Header-Content-Length header/,
  );
});

test('binary tensors - an input needs exactly one of data and binary_data_size', () => {
  const both = binaryBody({ inputs: [{ ...ONE_FP32, data: [1] }] }, FOUR_BYTES);
  assertCode(
    caught(() => parseInferRequestBody(both.body, both.headerLength)),
    'INVALID_ARGUMENT',
    /inputs\[0\] \("x"\): has both "data" and parameters\.binary_data_size/,
  );
  const neither = binaryBody({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1] }] });
  assertCode(
    caught(() => parseInferRequestBody(neither.body, neither.headerLength)),
    'INVALID_ARGUMENT',
    /inputs\[0\] \("x"\): data is missing; give "data", or parameters\.binary_data_size/,
  );
});

test('binary tensors - binary_data and binary_data_output must be booleans', () => {
  const inputs = [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }];
  assertCode(
    caught(() => parseInferBody({ inputs, parameters: { binary_data_output: 'yes' } })),
    'INVALID_ARGUMENT',
    /parameters\.binary_data_output must be true or false, got "yes"/,
  );
  assertCode(
    caught(() => parseInferBody({ inputs, outputs: [{ name: 'y', parameters: { binary_data: 1 } }] })),
    'INVALID_ARGUMENT',
    /outputs\[0\] \("y"\)\.parameters\.binary_data must be true or false, got 1/,
  );
});

test('binary tensors - raw bytes must fit the datatype and shape', () => {
  const raw = (datatype: string, shape: number[], data: Uint8Array) => ({ name: 'x', datatype, shape, data });
  assertCode(
    caught(() => tensorFromInput(raw('FP32', [2, 3], new Uint8Array(20)))),
    'INVALID_ARGUMENT',
    /^input "x": FP32 \[2,3\] needs 24 bytes \(6 elements of 4\), got 20$/,
  );
  assertCode(
    caught(() => tensorFromInput(raw('INT64', [1], new Uint8Array(4)))),
    'INVALID_ARGUMENT',
    /INT64 \[1\] needs 8 bytes/,
  );
  assertCode(
    caught(() => tensorFromInput(raw('BOOL', [3], Uint8Array.from([1, 0, 2])))),
    'INVALID_ARGUMENT',
    /input "x": BOOL element 2 is byte 2; binary BOOL elements are 0 \(false\) or 1 \(true\)/,
  );
  // a length prefix that runs past the end
  const broken = Buffer.from('0a00000061', 'hex');
  assertCode(
    caught(() => tensorFromInput(raw('BYTES', [1], broken))),
    'INVALID_ARGUMENT',
    /input "x": BYTES element 0 says 10 bytes but only 1 remain.*4-byte little-endian length/,
  );
  assertCode(
    caught(() => tensorFromInput(raw('BYTES', [1], Buffer.from('0100', 'hex')))),
    'INVALID_ARGUMENT',
    /input "x": BYTES data ends inside an element's length prefix/,
  );
  const three = encodeBytesElements([Buffer.from('a'), Buffer.from('b'), Buffer.from('c')]);
  assertCode(
    caught(() => tensorFromInput(raw('BYTES', [2], three))),
    'INVALID_ARGUMENT',
    /^input "x": BYTES \[2\] needs 2 elements, the binary data holds more$/,
  );
  // parsed without the body's bytes (parseInferBody alone)
  const [unattached] = parseInferBody({ inputs: [ONE_FP32] }).inputs;
  assertCode(
    caught(() => tensorFromInput(unattached!)),
    'INVALID_ARGUMENT',
    /input "x": has parameters\.binary_data_size but no bytes were attached/,
  );
  // JSON data still goes through tensorFromJson and its checks
  assertCode(
    caught(() => tensorFromInput({ name: 'x', datatype: 'FP32', shape: [2], data: [1] })),
    'INVALID_ARGUMENT',
    /shape \[2\] needs 2 elements, got 1/,
  );
});

// ---------------------------------------------------------------- responses

test('binary tensors - response: binary outputs follow the JSON and the client decodes them', () => {
  const fp32 = tensorFromJson('probs', 'FP32', [2, 2], [0.5, -1, 2.25, 1e-3]);
  const int64 = {
    name: 'ids',
    datatype: 'INT64' as const,
    shape: [2],
    data: bytesOf(BigInt64Array.from([2n ** 60n, -3n])),
  };
  const bytes = {
    name: 'png',
    datatype: 'BYTES' as const,
    shape: [2],
    data: encodeBytesElements([imageLike(100), Buffer.from('ok')]),
  };
  const fp16 = tensorFromJson('half', 'FP16', [3], [1, -2, 0.5]);
  const bool = tensorFromJson('mask', 'BOOL', [2], [true, false]);
  const json = tensorFromJson('count', 'INT32', [1], [7]);
  const outputs = [fp32, int64, json, bytes, fp16, bool];
  const encoded = encodeInferResponse(
    { meta: metaOf(outputs), outputs, id: 'r1', parameters: { infergrid_cache: 'miss' } },
    (name) => name !== 'count',
  );
  assert.ok(Buffer.isBuffer(encoded.payload));
  const payload = encoded.payload;
  const head = JSON.parse(payload.toString('utf8', 0, encoded.headerLength)) as InferResponseBody;
  assert.equal(head.id, 'r1');
  assert.deepEqual(head.parameters, { infergrid_cache: 'miss' });
  assert.deepEqual(head.outputs[0], {
    name: 'probs',
    datatype: 'FP32',
    shape: [2, 2],
    parameters: { binary_data_size: 16 },
  });
  assert.deepEqual(head.outputs[2], { name: 'count', datatype: 'INT32', shape: [1], data: [7] });
  assert.equal(
    payload.byteLength,
    encoded.headerLength! + 16 + 16 + bytes.data.byteLength + 6 + 2,
    'one section per binary output, nothing else',
  );

  const decoded = decodeInferResponse(payload, String(encoded.headerLength));
  const [probs, ids, count, png, half, mask] = decoded.outputs.map((o) => o.data);
  assert.ok(probs instanceof Float32Array);
  assert.deepEqual(Array.from(probs), [0.5, -1, 2.25, Math.fround(1e-3)]);
  assert.ok(ids instanceof BigInt64Array);
  assert.deepEqual(Array.from(ids), [2n ** 60n, -3n]);
  assert.deepEqual(count, [7]);
  assert.ok(Array.isArray(png) && Buffer.isBuffer(png[0]));
  assert.ok((png[0] as Buffer).equals(decodeBytesElements(bytes.data)[0]!));
  assert.equal((png[1] as Buffer).toString(), 'ok');
  assert.ok(half instanceof Float32Array);
  assert.deepEqual(Array.from(half), [1, -2, 0.5]);
  assert.deepEqual(mask, [true, false]);
});

test('binary tensors - response with no binary output is the plain JSON object', () => {
  const outputs = [tensorFromJson('y', 'FP32', [2], [1, 2])];
  const meta = metaOf(outputs);
  const encoded = encodeInferResponse({ meta, outputs }, () => false);
  assert.equal(encoded.headerLength, undefined);
  assert.deepEqual(encoded.payload, buildInferResponse(meta, outputs, undefined));
  const decoded = decodeInferResponse(Buffer.from(JSON.stringify(encoded.payload)), null);
  assert.deepEqual(decoded.outputs[0]!.data, [1, 2]);
});

test("binary tensors - a malformed binary output is the worker's fault (BACKEND_ERROR)", () => {
  const short = { name: 'y', datatype: 'FP32' as const, shape: [3], data: new Uint8Array(8) };
  assertCode(
    caught(() => encodeInferResponse({ meta: metaOf([short]), outputs: [short] }, () => true)),
    'BACKEND_ERROR',
    /output "y": FP32 \[3\] needs 12 bytes \(3 elements of 4\), got 8/,
  );
  const bytes = { name: 's', datatype: 'BYTES' as const, shape: [1], data: Buffer.from('05000000', 'hex') };
  assertCode(
    caught(() => encodeInferResponse({ meta: metaOf([bytes]), outputs: [bytes] }, () => true)),
    'BACKEND_ERROR',
    /output "s": BYTES element 0 says 5 bytes but only 0 remain/,
  );
});

test('binary tensors - client rejects a response body that does not add up', () => {
  const outputs = [tensorFromJson('y', 'FP32', [2], [1, 2])];
  const { payload, headerLength } = encodeInferResponse({ meta: metaOf(outputs), outputs }, () => true);
  const body = payload as Buffer;
  const cases: [Uint8Array, string | null, RegExp][] = [
    [
      body.subarray(0, body.byteLength - 1),
      String(headerLength),
      /output "y" has binary_data_size 8 but 7 bytes remain/,
    ],
    [Buffer.concat([body, Buffer.alloc(2)]), String(headerLength), /2 bytes after the last binary output/],
    [body, 'x', /Inference-Header-Content-Length "x" does not fit/],
    [body, String(body.byteLength + 1), /does not fit/],
    [body, null, /not valid JSON/],
  ];
  for (const [bytes, header, message] of cases) {
    assert.throws(
      () => decodeInferResponse(bytes, header),
      (err: unknown) =>
        err instanceof InferenceClientError && err.code === 'PROTOCOL_ERROR' && message.test(err.message),
    );
  }
});

test('binary tensors - client names the input and element it cannot encode', () => {
  const cases: [string, unknown[], RegExp][] = [
    ['FP32', [1, 'x'], /input "t": element 1 is x, expected a number for FP32/],
    ['INT8', [300], /element 0 is 300, expected an integer in \[-128, 127\] for INT8/],
    ['INT64', [1.5], /element 0 is 1.5, expected an integer \(number or bigint\) for INT64/],
    ['BOOL', ['yes'], /expected true or false for BOOL/],
    ['BYTES', [5], /expected a string or a Uint8Array for BYTES/],
    ['FP8', [1], /input "t": unknown datatype "FP8"/],
  ];
  for (const [datatype, data, message] of cases) {
    assert.throws(
      () =>
        encodeInferRequest([{ name: 't', datatype, shape: [data.length], data: data as number[] }], {
          binary: true,
        }),
      (err: unknown) => err instanceof TypeError && message.test(err.message),
    );
  }
});

test('binary tensors - the JSON path is unchanged when binary is not asked', () => {
  const { body, headers } = encodeInferRequest(
    [{ name: 'x', datatype: 'FP32', shape: [2], data: Float32Array.from([1, 2]) }],
    { id: 'a', outputs: ['y'] },
  );
  assert.deepEqual(headers, { 'content-type': 'application/json' });
  assert.equal(
    body,
    JSON.stringify({
      id: 'a',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [2], data: [1, 2] }],
      outputs: [{ name: 'y' }],
    }),
  );
});

test('binary tensors - client infers over HTTP with binary tensors both ways', async (t) => {
  // an echo server that speaks the extension through the functions under test
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = parseInferRequestBody(
        Buffer.concat(chunks),
        req.headers[INFERENCE_HEADER_CONTENT_LENGTH] as string | undefined,
      );
      const outputs = body.inputs.map((i) => ({
        ...tensorFromInput(i),
        name: `${i.name}_out`,
      }));
      const { payload, headerLength } = encodeInferResponse(
        { meta: metaOf(outputs), outputs, ...(body.id !== undefined ? { id: body.id } : {}) },
        binaryOutputPredicate(body),
      );
      if (Buffer.isBuffer(payload)) {
        res.writeHead(200, {
          'content-type': 'application/octet-stream',
          [INFERENCE_HEADER_CONTENT_LENGTH]: String(headerLength),
        });
        res.end(payload);
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const client = new InferenceClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const image = imageLike(5000);
  const inputs = [
    { name: 'x', datatype: 'FP32', shape: [3], data: [1.5, 2, -3] },
    { name: 'img', datatype: 'BYTES', shape: [1], data: [image] },
  ];
  const binary = await client.infer('echo', inputs, { binary: true, id: 'req-1' });
  assert.equal(binary.id, 'req-1');
  assert.ok(binary.outputs[0]!.data instanceof Float32Array);
  assert.deepEqual(Array.from(binary.outputs[0]!.data), [1.5, 2, -3]);
  assert.ok((binary.outputs[1]!.data[0] as Buffer).equals(image));
  // without binary: FP32 goes as JSON, the raw image still as binary, outputs come back as JSON
  const json = await client.infer('echo', [
    inputs[0]!,
    { name: 's', datatype: 'BYTES', shape: [1], data: ['hi'] },
  ]);
  assert.deepEqual(
    json.outputs.map((o) => o.data),
    [[1.5, 2, -3], ['hi']],
  );
});

// ---------------------------------------------------------------- properties

/** A random raw tensor: any bytes of the right length (BOOL 0/1; BYTES random elements). */
const tensorArb = (name: string): fc.Arbitrary<Tensor> =>
  fc
    .record({
      datatype: fc.constantFrom(...DATATYPES),
      shape: fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 0, maxLength: 3 }),
    })
    .chain(({ datatype, shape }) => {
      const count = elementCount(shape);
      const data: fc.Arbitrary<Uint8Array> =
        datatype === 'BYTES'
          ? fc
              .array(fc.uint8Array({ maxLength: 12 }), { minLength: count, maxLength: count })
              .map(encodeBytesElements)
          : datatype === 'BOOL'
            ? fc
                .array(fc.integer({ min: 0, max: 1 }), { minLength: count, maxLength: count })
                .map((a) => Uint8Array.from(a))
            : fc.uint8Array({
                minLength: count * ELEMENT_BYTES[datatype],
                maxLength: count * ELEMENT_BYTES[datatype],
              });
      return data.map((bytes): Tensor => ({ name, datatype, shape, data: bytes }));
    });

const tensorsArb = fc
  .integer({ min: 1, max: 5 })
  .chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => tensorArb(`t${i}`))))
  .chain((tensors) =>
    fc.tuple(
      fc.constant(tensors),
      fc.array(fc.boolean(), { minLength: tensors.length, maxLength: tensors.length }),
    ),
  );

/** The nearest tensor whose JSON form reads back to the same bytes (finite floats, safe integers, UTF-8). */
function jsonSafe(t: Tensor): Tensor {
  const { datatype } = t;
  if (datatype === 'BYTES') {
    const text = decodeBytesElements(t.data).map((e) => Buffer.from(Buffer.from(e).toString('utf8'), 'utf8'));
    return { ...t, data: encodeBytesElements(text) };
  }
  if (datatype === 'FP32' || datatype === 'FP64') {
    const values = Array.from(typedView(datatype, t.data) as Float64Array, (v) =>
      Number.isFinite(v) ? v + 0 : 0,
    );
    return tensorFromJson(t.name, datatype, t.shape, values);
  }
  if (datatype === 'FP16') {
    const values = Array.from(typedView(datatype, t.data) as Uint16Array, (bits) => fromHalfBits(bits));
    return tensorFromJson(
      t.name,
      datatype,
      t.shape,
      values.map((v) => (Number.isFinite(v) ? v + 0 : 0)),
    );
  }
  if (datatype === 'INT64' || datatype === 'UINT64') {
    const values = Array.from(typedView(datatype, t.data) as BigInt64Array, (v) =>
      Number(datatype === 'INT64' ? BigInt.asIntN(53, v) : BigInt.asUintN(53, v)),
    );
    return tensorFromJson(t.name, datatype, t.shape, values);
  }
  return t;
}

test('binary tensors - property: any tensors, any JSON/binary split, round trip through a request', () => {
  fc.assert(
    fc.property(tensorsArb, ([raw, asBinary]) => {
      // inputs sent as JSON must be JSON-exact; binary ones are any bytes at all
      const tensors = raw.map((t, i) => (asBinary[i] ? t : jsonSafe(t)));
      const sections: Uint8Array[] = [];
      const inputs = tensors.map((t, i) => {
        const head = { name: t.name, datatype: t.datatype, shape: t.shape };
        if (!asBinary[i]) return { ...head, data: tensorToJsonData(t) };
        sections.push(t.data);
        return { ...head, parameters: { binary_data_size: t.data.byteLength } };
      });
      const { body, headerLength } = binaryBody({ inputs }, ...sections);
      const parsed = tensorsOf(body, headerLength);
      assert.equal(parsed.length, tensors.length);
      for (const [i, t] of tensors.entries()) {
        assert.equal(
          hex(parsed[i]!.data),
          hex(t.data),
          `${t.name} ${t.datatype} ${asBinary[i] ? 'binary' : 'JSON'}`,
        );
        assert.deepEqual(parsed[i]!.shape, t.shape);
      }
    }),
  );
});

test('binary tensors - property: any tensors, any binary split, round trip through a response', () => {
  fc.assert(
    fc.property(tensorsArb, ([tensors, asBinary]) => {
      const binary = new Set(tensors.filter((_, i) => asBinary[i]).map((t) => t.name));
      const { payload, headerLength } = encodeInferResponse(
        { meta: metaOf(tensors), outputs: tensors },
        (name) => binary.has(name),
      );
      const body = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
      const decoded = decodeInferResponse(body, headerLength ?? null);
      for (const [i, t] of tensors.entries()) {
        const data = decoded.outputs[i]!.data;
        if (!binary.has(t.name)) {
          assert.deepStrictEqual(data, JSON.parse(JSON.stringify(tensorToJsonData(t))));
        } else if (t.datatype === 'BYTES') {
          assert.deepEqual((data as Buffer[]).map(hex), decodeBytesElements(t.data).map(hex));
        } else if (t.datatype === 'BOOL') {
          assert.deepStrictEqual(
            data,
            Array.from(t.data, (b) => b === 1),
          );
        } else if (t.datatype === 'FP16') {
          assert.deepStrictEqual(
            Array.from(data as Float32Array),
            Array.from(typedView('FP16', t.data) as Uint16Array, fromHalfBits),
          );
        } else {
          assert.equal(hex(bytesOf(data as Float32Array)), hex(t.data), `${t.name} ${t.datatype}`);
        }
      }
    }),
  );
});
