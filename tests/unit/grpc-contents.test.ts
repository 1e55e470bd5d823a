import assert from 'node:assert/strict';
import { test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { checkHttpExposure } from '../../src/cli/start-coordinator.ts';
import { configSchema } from '../../src/config/index.ts';
import type { InferResult } from '../../src/coordinator/index.ts';
import { ERROR_CODES, type ErrorCode, InfergridError } from '../../src/errors.ts';
import {
  checkedName,
  inferResponseOf,
  parametersFromProto,
  parametersToProto,
  parseInferRequest,
  tensorFromContents,
} from '../../src/grpc/contents.ts';
import { generationOf } from '../../src/grpc/generation.ts';
import { modelConfigMessage, repositoryConfigParameter } from '../../src/grpc/messages.ts';
import { ERROR_CODE_METADATA, GRPC_STATUS, grpcErrorOf } from '../../src/grpc/status.ts';
import { createLogger } from '../../src/telemetry/index.ts';
import {
  decodeBytesElements,
  encodeBytesElements,
  type Tensor,
  tensorFromJson,
  textTensor,
} from '../../src/tensor/index.ts';

const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

function throwsCode(fn: () => unknown, code: ErrorCode, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InfergridError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

test('grpc status - every code has a status; a client fault is never INTERNAL and a retryable code is UNAVAILABLE', () => {
  for (const code of CODES) {
    const s = GRPC_STATUS[code];
    assert.ok(typeof s === 'number' && s > 0 && s <= 16, `${code}: ${s}`);
    if (ERROR_CODES[code].fault === 'client') assert.notEqual(s, status.INTERNAL, code);
    if (ERROR_CODES[code].retryable) assert.equal(s, status.UNAVAILABLE, code);
  }
  assert.equal(GRPC_STATUS.INVALID_ARGUMENT, status.INVALID_ARGUMENT);
  assert.equal(GRPC_STATUS.MODEL_NOT_FOUND, status.NOT_FOUND);
  assert.equal(GRPC_STATUS.PAYLOAD_TOO_LARGE, status.RESOURCE_EXHAUSTED);
  assert.equal(GRPC_STATUS.RATE_LIMITED, status.RESOURCE_EXHAUSTED);
  assert.equal(GRPC_STATUS.DEADLINE_EXCEEDED, status.DEADLINE_EXCEEDED);
  assert.equal(GRPC_STATUS.CANCELLED, status.CANCELLED);
  assert.equal(GRPC_STATUS.UNAUTHENTICATED, status.UNAUTHENTICATED);
  assert.equal(GRPC_STATUS.PERMISSION_DENIED, status.PERMISSION_DENIED);
  assert.equal(GRPC_STATUS.FORBIDDEN, status.PERMISSION_DENIED);
  assert.equal(GRPC_STATUS.BACKEND_ERROR, status.INTERNAL);
});

test('grpc status - grpcErrorOf keeps the message, puts the code and retry-after in the metadata; anything else is INTERNAL', () => {
  const limited = grpcErrorOf(
    new InfergridError('RATE_LIMITED', 'API key "a" is over its rate limit; retry after 3 s', {
      details: { retryAfterSeconds: 3 },
    }),
  );
  assert.equal(limited.code, status.RESOURCE_EXHAUSTED);
  assert.equal(limited.details, 'API key "a" is over its rate limit; retry after 3 s');
  assert.deepEqual(limited.metadata.get(ERROR_CODE_METADATA), ['RATE_LIMITED']);
  assert.deepEqual(limited.metadata.get('retry-after'), ['3']);
  const plain = grpcErrorOf(new TypeError('boom'));
  assert.equal(plain.code, status.INTERNAL);
  assert.equal(plain.details, 'boom');
  assert.deepEqual(plain.metadata.get(ERROR_CODE_METADATA), ['INTERNAL']);
});

test('grpc contents - every typed contents field gives the bytes the JSON path gives', () => {
  const cases: [string, string, unknown[], unknown[]][] = [
    ['BOOL', 'bool_contents', [true, false, true], [true, false, true]],
    ['INT8', 'int_contents', [-128, 0, 127], [-128, 0, 127]],
    ['INT16', 'int_contents', [-32768, 1, 32767], [-32768, 1, 32767]],
    ['INT32', 'int_contents', [-2147483648, 2, 2147483647], [-2147483648, 2, 2147483647]],
    ['UINT8', 'uint_contents', [0, 1, 255], [0, 1, 255]],
    ['UINT16', 'uint_contents', [0, 1, 65535], [0, 1, 65535]],
    ['UINT32', 'uint_contents', [0, 1, 4294967295], [0, 1, 4294967295]],
    ['FP32', 'fp32_contents', [0.5, -1.25, 3], [0.5, -1.25, 3]],
    ['FP64', 'fp64_contents', [0.1, -1e300, 3], [0.1, -1e300, 3]],
    ['INT64', 'int64_contents', ['-5', '0', '9007199254740991'], [-5, 0, 9007199254740991]],
    ['UINT64', 'uint64_contents', ['0', '7', '9007199254740991'], [0, 7, 9007199254740991]],
  ];
  for (const [datatype, field, values, json] of cases) {
    const t = tensorFromContents('x', datatype, [3], { [field]: values });
    const expected = tensorFromJson('x', datatype as never, [3], json);
    assert.deepEqual(Buffer.from(t.data), Buffer.from(expected.data), datatype);
    assert.deepEqual(t.shape, [3]);
  }
  // 64-bit integers beyond 2^53 stay exact (proto-loader hands them over as strings)
  const big = tensorFromContents('x', 'INT64', [2], {
    int64_contents: ['-9223372036854775808', '9223372036854775807'],
  });
  assert.deepEqual(
    [...new BigInt64Array(big.data.buffer, big.data.byteOffset, 2)],
    [-(2n ** 63n), 2n ** 63n - 1n],
  );
  const bytes = tensorFromContents('s', 'BYTES', [2], {
    bytes_contents: [Buffer.from('héllo'), Buffer.alloc(0)],
  });
  assert.deepEqual(
    decodeBytesElements(bytes.data, 's').map((e) => Buffer.from(e).toString()),
    ['héllo', ''],
  );
});

test('grpc contents - a wrong field, a wrong count, an out-of-range element, FP16 and an unknown datatype are refused by name', () => {
  throwsCode(
    () => tensorFromContents('x', 'FP32', [2], { int_contents: [1, 2] }),
    'INVALID_ARGUMENT',
    /go in contents.fp32_contents, got contents.int_contents/,
  );
  throwsCode(
    () => tensorFromContents('x', 'FP32', [2, 2], { fp32_contents: [1, 2] }),
    'INVALID_ARGUMENT',
    /needs 4 elements, contents.fp32_contents has 2/,
  );
  throwsCode(() => tensorFromContents('x', 'FP32', [1], null), 'INVALID_ARGUMENT', /needs 1 elements/);
  throwsCode(
    () => tensorFromContents('x', 'UINT8', [1], { uint_contents: [256] }),
    'INVALID_ARGUMENT',
    /element 0 is 256/,
  );
  throwsCode(
    () => tensorFromContents('x', 'INT64', [1], { int64_contents: ['9223372036854775808'] }),
    'INVALID_ARGUMENT',
    /out of range for INT64/,
  );
  throwsCode(
    () => tensorFromContents('x', 'UINT64', [1], { uint64_contents: ['-1'] }),
    'INVALID_ARGUMENT',
    /out of range for UINT64/,
  );
  throwsCode(() => tensorFromContents('x', 'FP16', [1], {}), 'INVALID_ARGUMENT', /raw_input_contents/);
  throwsCode(
    () => tensorFromContents('x', 'COMPLEX', [1], {}),
    'INVALID_ARGUMENT',
    /unknown datatype "COMPLEX"/,
  );
});

test('grpc contents - parseInferRequest: raw contents for every input or none, shapes checked, decode after the limits', () => {
  const raw = Buffer.from(new Float32Array([1, 2]).buffer);
  const parsed = parseInferRequest({
    model_name: 'm',
    model_version: '',
    id: '',
    inputs: [{ name: 'a', datatype: 'FP32', shape: ['1', '2'] }],
    raw_input_contents: [raw],
    outputs: [],
  });
  assert.equal(parsed.version, undefined);
  assert.equal(parsed.id, undefined);
  assert.equal(parsed.outputs, undefined);
  assert.deepEqual(parsed.inputs, [{ name: 'a', datatype: 'FP32', shape: [1, 2] }]);
  assert.deepEqual(Buffer.from(parsed.decode()[0]!.data), raw);

  throwsCode(() => parseInferRequest({ inputs: [] }), 'INVALID_ARGUMENT', /model_name is required/);
  throwsCode(
    () => parseInferRequest({ model_name: 'm', inputs: [] }),
    'INVALID_ARGUMENT',
    /at least one input/,
  );
  throwsCode(
    () =>
      parseInferRequest({
        model_name: 'm',
        inputs: [
          { name: 'a', datatype: 'FP32', shape: ['2'] },
          { name: 'b', datatype: 'FP32', shape: ['2'] },
        ],
        raw_input_contents: [raw],
      }),
    'INVALID_ARGUMENT',
    /1 entries for 2 inputs/,
  );
  throwsCode(
    () =>
      parseInferRequest({
        model_name: 'm',
        inputs: [{ name: 'a', datatype: 'FP32', shape: ['2'], contents: { fp32_contents: [1, 2] } }],
        raw_input_contents: [raw],
      }),
    'INVALID_ARGUMENT',
    /not both/,
  );
  throwsCode(
    () => parseInferRequest({ model_name: 'm', inputs: [{ name: 'a', datatype: 'FP32', shape: ['-1'] }] }),
    'INVALID_ARGUMENT',
    /non-negative integers/,
  );
  // a raw input whose size does not fit its shape is refused when decoded, as binary HTTP's is
  const short = parseInferRequest({
    model_name: 'm',
    inputs: [{ name: 'a', datatype: 'FP32', shape: ['3'] }],
    raw_input_contents: [raw],
  });
  throwsCode(() => short.decode(), 'INVALID_ARGUMENT', /needs 12 bytes/);
});

test('grpc contents - parameters both ways: each kind in its field, 64-bit integers exact or refused', () => {
  assert.deepEqual(
    parametersFromProto(
      {
        a: { parameter_choice: 'bool_param', bool_param: true },
        b: { parameter_choice: 'int64_param', int64_param: '42' },
        c: { parameter_choice: 'string_param', string_param: 'x' },
        d: { parameter_choice: 'double_param', double_param: 0.5 },
        e: { parameter_choice: 'uint64_param', uint64_param: '7' },
      },
      'parameter',
    ),
    { a: true, b: 42, c: 'x', d: 0.5, e: 7 },
  );
  throwsCode(
    () =>
      parametersFromProto(
        { b: { parameter_choice: 'int64_param', int64_param: '9007199254740993' } },
        'parameter',
      ),
    'INVALID_ARGUMENT',
    /parameter "b" is 9007199254740993/,
  );
  throwsCode(() => parametersFromProto({ z: {} }, 'parameter'), 'INVALID_ARGUMENT', /"z" has no value/);
  assert.deepEqual(parametersToProto({ a: true, b: 42, c: 'x', d: 0.5 }), {
    a: { bool_param: true },
    b: { int64_param: 42 },
    c: { string_param: 'x' },
    d: { double_param: 0.5 },
  });
});

test('grpc contents - inferResponseOf sends the worker bytes as they are; a malformed output is the worker BACKEND_ERROR', () => {
  const data = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
  const result: InferResult = {
    meta: { model: 'm', version: '2', outputs: [], parameters: { finish_reason: 'stop' } },
    outputs: [{ name: 'y', datatype: 'FP32' as const, shape: [2, 2], data }],
    workerId: 'w1',
    cache: 'miss' as const,
  };
  const response = inferResponseOf(result, 'id-1', { triton_final_response: true });
  assert.equal(response.model_version, '2');
  assert.equal(response.id, 'id-1');
  assert.deepEqual(response.outputs, [{ name: 'y', datatype: 'FP32', shape: [2, 2], parameters: {} }]);
  assert.deepEqual(response.raw_output_contents[0], Buffer.from(data));
  assert.deepEqual(response.parameters, {
    finish_reason: { string_param: 'stop' },
    infergrid_cache: { string_param: 'miss' },
    triton_final_response: { bool_param: true },
  });
  const bad: InferResult = { ...result, outputs: [{ ...result.outputs[0]!, shape: [3, 2] }] };
  throwsCode(
    () => inferResponseOf(bad, undefined),
    'BACKEND_ERROR',
    /worker w1 returned a malformed output: output "y"/,
  );
  const text = {
    ...result,
    outputs: [
      { name: 's', datatype: 'BYTES' as const, shape: [1], data: encodeBytesElements([Buffer.from('hi')]) },
    ],
  };
  assert.deepEqual(
    inferResponseOf(text, undefined).raw_output_contents[0],
    Buffer.from([2, 0, 0, 0, 104, 105]),
  );
});

test('grpc messages - ModelConfig in Triton names; repository parameters: config as text or bytes, anything else refused', () => {
  const triton = {
    name: 'm',
    platform: 'onnxruntime_onnx',
    backend: 'onnxruntime',
    version_policy: { specific: { versions: [1, 'canary', 3] } },
    max_batch_size: 8,
    input: [{ name: 'x', data_type: 'TYPE_FP32', format: 'FORMAT_NONE', dims: [3] }],
  };
  const message = modelConfigMessage(triton, { name: 'm', backend: 'onnx' });
  // Triton's shape as it is, but a version the message's int64 cannot carry
  assert.deepEqual(message.input, triton.input);
  assert.equal(message.max_batch_size, 8);
  assert.deepEqual(message.version_policy, { specific: { versions: [1, 3] } });
  assert.deepEqual(JSON.parse(message.parameters.infergrid_config!.string_value), {
    name: 'm',
    backend: 'onnx',
  });
  assert.deepEqual(modelConfigMessage({ ...triton, version_policy: { all: {} } }, {}).version_policy, {
    all: {},
  });

  assert.equal(repositoryConfigParameter(undefined, 'load'), undefined);
  assert.equal(
    repositoryConfigParameter({ config: { parameter_choice: 'string_param', string_param: '{}' } }, 'load'),
    '{}',
  );
  assert.equal(
    repositoryConfigParameter(
      { config: { parameter_choice: 'bytes_param', bytes_param: Buffer.from('{"a":1}') } },
      'load',
    ),
    '{"a":1}',
  );
  throwsCode(
    () => repositoryConfigParameter({ config: { parameter_choice: 'bool_param', bool_param: true } }, 'load'),
    'INVALID_ARGUMENT',
    /as JSON/,
  );
  throwsCode(
    () => repositoryConfigParameter({ 'file:1/model.onnx': {} }, 'load'),
    'INVALID_ARGUMENT',
    /takes "config" as parameters, got "file:1\/model.onnx"/,
  );
  assert.equal(
    repositoryConfigParameter(
      { unload_dependents: { parameter_choice: 'bool_param', bool_param: true } },
      'unload',
    ),
    undefined,
  );
});

test('grpc exposure - no API keys and gRPC alone beyond loopback is refused at start-up; gRPC off allows it', () => {
  const logger = createLogger({ level: 'silent', format: 'json', name: 'test' });
  const open = configSchema.parse({ coordinator: { grpc: { host: '0.0.0.0' } } });
  throwsCode(
    () => checkHttpExposure(open, logger),
    'CONFIG_INVALID',
    /HTTP or gRPC API would listen on 0\.0\.0\.0/,
  );
  const off = configSchema.parse({ coordinator: { grpc: { host: '0.0.0.0', enabled: false } } });
  assert.doesNotThrow(() => checkHttpExposure(off, logger));
  assert.doesNotThrow(() => checkHttpExposure(configSchema.parse({}), logger));
});

test('grpc generation - vLLM and TensorRT-LLM style tensors fold into the generate fields; engine parameters pass; bad ones are refused by name', () => {
  const base = {
    model: 'chat',
    timeoutMs: 1000,
    cacheMode: 'normal' as const,
    caller: { kind: 'client' as const },
  };
  const one = (name: string, datatype: 'BOOL' | 'INT32' | 'FP32', value: unknown): Tensor =>
    tensorFromJson(name, datatype, [1], [value]);
  const g = generationOf({
    ...base,
    inputs: [
      textTensor('text_input', 'hi there'),
      one('stream', 'BOOL', false),
      one('max_tokens', 'INT32', 7),
      textTensor('sampling_parameters', '{"temperature": 0.5, "top_k": 3}'),
      one('exclude_input_in_output', 'BOOL', false),
    ],
    parameters: { priority: 1, shard_key: 'k', seed: 4 },
  });
  assert.equal(g.partials, false);
  assert.equal(g.lead, 'hi there');
  assert.equal(g.request.cacheMode, 'bypass');
  assert.deepEqual(
    g.request.inputs.map((t) => t.name),
    ['text_input'],
  );
  assert.deepEqual(g.request.parameters, {
    priority: 1,
    shard_key: 'k',
    max_tokens: 7,
    temperature: 0.5,
    top_k: 3,
    seed: 4,
  });
  assert.equal(
    generationOf({ ...base, inputs: [textTensor('text_input', 'x')] }).request.parameters?.stream,
    true,
  );

  throwsCode(
    () =>
      generationOf({
        ...base,
        inputs: [textTensor('text_input', 'x'), one('max_tokens', 'INT32', 5)],
        parameters: { max_tokens: 5 },
      }),
    'INVALID_ARGUMENT',
    /"max_tokens" is given twice/,
  );
  throwsCode(
    () =>
      generationOf({
        ...base,
        inputs: [textTensor('text_input', 'x'), textTensor('sampling_parameters', '[1]')],
      }),
    'INVALID_ARGUMENT',
    /must be a JSON object/,
  );
  throwsCode(
    () =>
      generationOf({
        ...base,
        inputs: [textTensor('text_input', 'x'), tensorFromJson('max_tokens', 'INT32', [2], [1, 2])],
      }),
    'INVALID_ARGUMENT',
    /input "max_tokens" must hold one element, it holds 2/,
  );
  throwsCode(
    () =>
      generationOf({ ...base, inputs: [textTensor('text_input', 'x')], parameters: { presence_penalty: 1 } }),
    'INVALID_ARGUMENT',
    /unknown field "presence_penalty"/,
  );
});

test("grpc names - a model name or version over the path parameters' limit is refused, as HTTP refuses it", () => {
  assert.equal(checkedName('m', 'name', true), 'm');
  assert.equal(checkedName('', 'version', false), undefined);
  throwsCode(() => checkedName('', 'model_name', true), 'INVALID_ARGUMENT', /model_name is required/);
  throwsCode(
    () => checkedName('x'.repeat(101), 'name', true),
    'INVALID_ARGUMENT',
    /name is 101 characters; at most 100/,
  );
  throwsCode(
    () => parseInferRequest({ model_name: 'm', model_version: '9'.repeat(200), inputs: [] }),
    'INVALID_ARGUMENT',
    /model_version is 200 characters/,
  );
});
