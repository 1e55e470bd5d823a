/**
 * Triton's generate extension end to end on real processes, with the sim backend's streaming
 * model: the JSON answer, SSE framing byte by byte (events that add up to the JSON answer),
 * the fields TensorRT-LLM and vLLM-backend clients send, errors in KServe's shape, and a client
 * that leaves (or a worker that dies) mid-stream, asserted by the worker's counts.
 */

import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { hashApiKey } from '../../src/api/index.ts';
import {
  type RunningCoordinator,
  type Spawned,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { openStream, readAll, sseEvents, streamCounts } from '../fixtures/sse.ts';

const KEY = 'ig-test-triton-generate-key-0123456789';

const CONFIG = `
auth:
  apiKeys:
    - { name: client, scopes: [infer], sha256: ${hashApiKey(KEY)} }
  anonymous: [health, metrics]
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 3000 }
workers: [{ id: w1 }]
models:
  - name: chat
    backend: sim
    sim: { generate: { tokens: 12 } }
  - name: endless
    backend: sim
    sim: { generate: { tokens: 1000000, tokenMs: 2 } }
  - name: tensors
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
`;

interface Cluster {
  coordinator: RunningCoordinator;
  worker: Spawned;
}

async function startCluster(t: TestContext): Promise<Cluster> {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const worker = await startWorker(t, file, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['chat', 'endless', 'tensors']);
  return { coordinator, worker };
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function generate(url: string, path: string, body: unknown, key: string | null = KEY): Promise<Answer> {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A generate_stream answer: its status, content type and parsed events. */
async function generateStream(url: string, path: string, body: object) {
  const res = await openStream(url, path, body, KEY).response;
  const raw = (await readAll(res)).toString('utf8');
  assert.equal(res.statusCode, 200, raw);
  assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
  assert.ok(raw.startsWith('data: {'), 'the first bytes are an event');
  return sseEvents(raw).map((e) => JSON.parse(e) as Record<string, unknown>);
}

const TOKENS = (n: number) => Array.from({ length: n }, (_, i) => `tok${i + 1}`).join(' ');

test('triton generate - generate answers the text with model name, version and finish reason; generate_stream events add up to it', async (t) => {
  const { url } = (await startCluster(t)).coordinator;
  const ask = { text_input: 'one two three', max_tokens: 5, parameters: { temperature: 0, seed: 7 } };
  const whole = await generate(url, '/v2/models/chat/generate', ask);
  assert.equal(whole.status, 200, JSON.stringify(whole.body));
  assert.deepEqual(whole.body, {
    model_name: 'chat',
    model_version: '1',
    text_output: TOKENS(5),
    finish_reason: 'length',
    prompt_tokens: 3,
    completion_tokens: 5,
    cached_tokens: 0,
  });

  const events = await generateStream(url, '/v2/models/chat/generate_stream', ask);
  assert.ok(events.length > 2, `one event per token and a last one: ${events.length}`);
  assert.ok(events.every((e) => e.model_name === 'chat' && e.model_version === '1'));
  assert.equal(events.map((e) => e.text_output).join(''), whole.body.text_output);
  assert.deepEqual(events.at(-1), { ...whole.body, text_output: '' }, 'the last event carries the finish');
  assert.ok(
    events.slice(0, -1).every((e) => e.finish_reason === undefined && e.text_output !== ''),
    'the others carry text only',
  );

  // the versioned route, and "stream": false on generate_stream: one event with the whole text
  const once = await generateStream(url, '/v2/models/chat/versions/1/generate_stream', {
    ...ask,
    stream: false,
  });
  assert.deepEqual(once, [whole.body]);
  const server = (await (await fetch(`${url}/v2`)).json()) as { extensions: string[] };
  assert.ok(server.extensions.includes('generate'));
});

test("triton generate - TensorRT-LLM's and the vLLM backend's fields map onto the LLM contract", async (t) => {
  const { url } = (await startCluster(t)).coordinator;
  const post = async (body: object) => {
    const r = await generate(url, '/v2/models/chat/generate', body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  // TensorRT-LLM's example request: fields at the top level, empty bad and stop words
  const trt = await post({ text_input: 'hi', max_tokens: 3, bad_words: '', stop_words: '', beam_width: 1 });
  assert.equal(trt.text_output, TOKENS(3));
  const stopped = await post({ text_input: 'hi', stop_words: [' tok4'], random_seed: 1 });
  assert.deepEqual([stopped.text_output, stopped.finish_reason], [TOKENS(3), 'stop']);
  const longer = await post({ text_input: 'hi', min_length: [14] });
  assert.equal(
    longer.completion_tokens,
    14,
    'min_length (TensorRT-LLM) is min_tokens; a 1-element array its value',
  );
  // the vLLM backend's shape: sampling in "parameters"
  const vllm = await post({
    text_input: 'hi',
    parameters: { max_tokens: 2, ignore_eos: true, stream: false },
  });
  assert.equal(vllm.text_output, TOKENS(2));
  const echoed = await post({ text_input: 'say ', max_tokens: 2, exclude_input_in_output: false });
  assert.equal(echoed.text_output, `say ${TOKENS(2)}`, 'the input leads the output when not excluded');
  const streamed = await generateStream(url, '/v2/models/chat/generate_stream', {
    text_input: 'say ',
    max_tokens: 2,
    exclude_input_in_output: false,
  });
  assert.equal(streamed.map((e) => e.text_output).join(''), echoed.text_output);
});

test("triton generate - errors come in KServe's shape: unknown fields, bad values, non-LLM and unknown models, no key", async (t) => {
  const { url } = (await startCluster(t)).coordinator;
  const refused = async (path: string, body: unknown, status: number, match: RegExp, key?: string | null) => {
    const r = await generate(url, path, body, key);
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(typeof r.body.error, 'string', JSON.stringify(r.body));
    assert.match(r.body.error as string, match);
    return r.body;
  };
  const unknown = await refused(
    '/v2/models/chat/generate',
    { text_input: 'x', frequency_penalty: 0.5, parameters: { foo: 1 } },
    400,
    /unknown fields "frequency_penalty", "foo"/,
  );
  assert.equal(unknown.code, 'INVALID_ARGUMENT');
  await refused(
    '/v2/models/chat/generate',
    { text_input: 'x', temperature: 3 },
    400,
    /"temperature" must be/,
  );
  await refused('/v2/models/chat/generate', { max_tokens: 3 }, 400, /"text_input" is required/);
  await refused(
    '/v2/models/chat/generate',
    { text_input: 'x', max_tokens: 3, parameters: { max_tokens: 4 } },
    400,
    /"max_tokens" is given both/,
  );
  await refused('/v2/models/chat/generate', { text_input: 'x', stream: true }, 400, /generate_stream/);
  await refused('/v2/models/chat/generate', { text_input: 'x', bad_words: ['no'] }, 400, /"bad_words"/);
  await refused('/v2/models/tensors/generate', { text_input: 'x' }, 400, /not a generative model/);
  await refused('/v2/models/nope/generate_stream', { text_input: 'x' }, 404, /nope/);
  await refused('/v2/models/chat/versions/9/generate', { text_input: 'x' }, 404, /9/);
  await refused('/v2/models/chat/generate', { text_input: 'x' }, 401, /./, null);
  const timeout = await fetch(`${url}/v2/models/chat/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'infergrid-timeout-ms': 'soon' },
    body: JSON.stringify({ text_input: 'x' }),
  });
  assert.equal(timeout.status, 400, 'the timeout header is read');
  assert.match(((await timeout.json()) as { error: string }).error, /infergrid-timeout-ms/);
});

test('triton generate - a client that leaves mid-stream stops generation; a worker lost mid-stream ends it with an error event', async (t) => {
  const { coordinator, worker } = await startCluster(t);
  const { url } = coordinator;
  const left = openStream(url, '/v2/models/endless/generate_stream', { text_input: 'go' }, KEY);
  const res = await left.response;
  let events = 0;
  await new Promise<void>((resolve) =>
    res.on('data', (c: Buffer) => {
      events += c.toString().split('\n\n').length - 1;
      if (events >= 5) resolve();
    }),
  );
  left.req.destroy();
  const ended = await waitFor('generation to stop', async () => {
    const c = await streamCounts(url, 'endless');
    return c.running === 0 ? c : undefined;
  });
  assert.equal(ended.cancelled, 1);
  assert.equal((await streamCounts(url, 'endless')).partials, ended.partials, 'no token after the cancel');

  const lost = await openStream(url, '/v2/models/endless/generate_stream', { text_input: 'go' }, KEY)
    .response;
  let raw = '';
  const ends = new Promise<void>((resolve) => lost.on('end', () => resolve()));
  await new Promise<void>((resolve) =>
    lost.on('data', (c: Buffer) => {
      raw += c.toString();
      if (raw.includes('tok1')) resolve();
    }),
  );
  worker.child.kill('SIGKILL');
  await ends;
  const last = JSON.parse(sseEvents(raw).at(-1)!) as { error?: unknown; code?: string };
  assert.equal(typeof last.error, 'string', 'the last event is an error');
  assert.equal(last.code, 'CONNECTION_LOST');
});
