/**
 * The OpenAI-compatible API end to end on real processes, with the sim backend's streaming
 * model (the engine's plumbing, not an LLM): the official `openai` client, SSE framing byte by
 * byte, backpressure and cancellation asserted by the worker's counts of generated tokens, a
 * worker killed mid-stream, and limits.
 */

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type TestContext, test } from 'node:test';
import OpenAI from 'openai';
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
import { openStream as openStreamWithKey, readAll, sseEvents, streamCounts } from '../fixtures/sse.ts';

const KEY = 'ig-test-openai-client-key-0123456789';
const execFileAsync = promisify(execFile);
const WINDOW = 8;
const BIG_TOKEN_BYTES = 1024 * 1024;

const CONFIG = `
auth:
  apiKeys:
    - { name: client, scopes: [infer], sha256: ${hashApiKey(KEY)} }
  anonymous: [health, metrics]
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 3000, streamWindow: ${WINDOW} }
workers: [{ id: w1 }, { id: w2 }]
models:
  - name: chat
    backend: sim
    sim: { generate: { tokens: 12 } }
    workers: [w1]
  - name: flood
    backend: sim
    sim: { generate: { tokens: 1000000, tokenBytes: ${BIG_TOKEN_BYTES} } }
    workers: [w1]
  - name: endless
    backend: sim
    sim: { generate: { tokens: 1000000, tokenMs: 2 } }
    workers: [w1]
  - name: single
    backend: sim
    sim: { generate: { tokens: 1000000, tokenMs: 2, sequences: 1 } }
    workers: [w1]
  - name: both
    backend: sim
    sim: { generate: { tokens: 1000000, tokenMs: 2 } }
    workers: [w1, w2]
  - name: tensors
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 2] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 2] }]
    workers: [w1]
`;

const MODELS = ['chat', 'flood', 'endless', 'single', 'both'];

interface Cluster {
  coordinator: RunningCoordinator;
  workers: Record<'w1' | 'w2', Spawned>;
  openai: OpenAI;
}

async function startCluster(t: TestContext): Promise<Cluster> {
  const file = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, file);
  const [w1, w2] = await Promise.all(
    (['w1', 'w2'] as const).map((id) => startWorker(t, file, id, { coordinator: coordinator.rpcAddress })),
  );
  await waitForWorkers(coordinator.url, 2, ['both']);
  await waitForWorkers(coordinator.url, 1, MODELS);
  const openai = new OpenAI({ apiKey: KEY, baseURL: `${coordinator.url}/v1`, maxRetries: 0 });
  return { coordinator, workers: { w1: w1!, w2: w2! }, openai };
}

/** A raw streaming request with the client's key. */
function openStream(url: string, path: string, body: object) {
  return openStreamWithKey(url, path, body, KEY);
}

test('openai - the official client lists models, completes, chats and streams', async (t) => {
  const { openai } = await startCluster(t);

  const models = await openai.models.list();
  const ids = models.data.map((m) => m.id).sort();
  assert.deepEqual(ids, ['both', 'chat', 'endless', 'flood', 'single'], 'generative models only');
  assert.equal(models.data[0]?.object, 'model');

  const completion = await openai.completions.create({
    model: 'chat',
    prompt: 'one two three',
    max_tokens: 5,
  });
  assert.equal(completion.object, 'text_completion');
  assert.equal(completion.choices[0]?.text, 'tok1 tok2 tok3 tok4 tok5');
  assert.equal(completion.choices[0]?.finish_reason, 'length');
  assert.deepEqual(completion.usage, {
    prompt_tokens: 3,
    completion_tokens: 5,
    total_tokens: 8,
    prompt_tokens_details: { cached_tokens: 0 },
  });

  const full = await openai.completions.create({ model: 'chat', prompt: 'hi' });
  assert.equal(full.choices[0]?.finish_reason, 'stop', 'the model ended it');
  assert.equal(full.usage?.completion_tokens, 12);
  const longer = await openai.completions.create({ model: 'chat', prompt: 'hi', min_tokens: 14 } as never);
  assert.equal(
    (longer as OpenAI.Completion).usage?.completion_tokens,
    14,
    'min_tokens (vLLM) ignores EOS before it',
  );
  const stopped = await openai.completions.create({ model: 'chat', prompt: 'hi', stop: [' tok4'] });
  assert.equal(stopped.choices[0]?.text, 'tok1 tok2 tok3');
  assert.equal(stopped.choices[0]?.finish_reason, 'stop');

  const chat = await openai.chat.completions.create({
    model: 'chat',
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hello there' },
    ],
    max_completion_tokens: 3,
  });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices[0]?.message.role, 'assistant');
  assert.equal(chat.choices[0]?.message.content, 'hello there hello');
  assert.equal(chat.usage?.prompt_tokens, 4);
  assert.match(chat.id, /^chatcmpl-/);

  const stream = await openai.chat.completions.create({
    model: 'chat',
    messages: [{ role: 'user', content: 'a b c' }],
    max_tokens: 7,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  const finishes: (string | null)[] = [];
  let usage: OpenAI.CompletionUsage | null | undefined;
  let roles = 0;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta.role === 'assistant') roles++;
    text += choice.delta.content ?? '';
    finishes.push(choice.finish_reason);
  }
  assert.equal(text, 'a b c a b c a');
  assert.equal(roles, 1, 'the role comes once, in the first chunk');
  assert.equal(finishes.at(-1), 'length');
  assert.deepEqual(usage, {
    prompt_tokens: 3,
    completion_tokens: 7,
    total_tokens: 10,
    prompt_tokens_details: { cached_tokens: 0 },
  });

  const completionStream = await openai.completions.create({ model: 'chat', prompt: 'x', stream: true });
  let streamed = '';
  for await (const chunk of completionStream) streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, Array.from({ length: 12 }, (_, i) => `tok${i + 1}`).join(' '));
});

test("openai - errors come in OpenAI's shape and the client's own error classes", async (t) => {
  const { coordinator, openai } = await startCluster(t);
  const stranger = new OpenAI({ apiKey: 'wrong-key', baseURL: `${coordinator.url}/v1`, maxRetries: 0 });
  await assert.rejects(stranger.models.list(), OpenAI.AuthenticationError);
  await assert.rejects(
    openai.chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'x' }], n: 2 }),
    (err: unknown) =>
      err instanceof OpenAI.BadRequestError && (err.error as { param?: string }).param === 'n',
  );
  await assert.rejects(
    openai.completions.create({ model: 'no-such-model', prompt: 'x' }),
    OpenAI.NotFoundError,
  );
  await assert.rejects(
    openai.completions.create({ model: 'tensors', prompt: 'x' }),
    OpenAI.BadRequestError,
    'a model that does not generate',
  );
  // the shape itself, for a path with no route and for a missing key
  const missing = await fetch(`${coordinator.url}/v1/nothing`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(missing.status, 404);
  const body = (await missing.json()) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  const anonymous = await fetch(`${coordinator.url}/v1/models`);
  assert.equal(anonymous.status, 401);
  assert.equal(((await anonymous.json()) as { error: { type: string } }).error.type, 'authentication_error');
  // the engine's own shape is kept elsewhere
  const kserve = await fetch(`${coordinator.url}/v2/models/no-such-model`, {
    headers: { authorization: `Bearer ${KEY}` },
  });
  assert.equal(typeof ((await kserve.json()) as { error: unknown }).error, 'string');
});

test('openai - SSE framing: data lines, a role chunk first, [DONE] last', async (t) => {
  const { coordinator } = await startCluster(t);
  const { response } = openStream(coordinator.url, '/v1/chat/completions', {
    model: 'chat',
    messages: [{ role: 'user', content: 'ping' }],
    max_tokens: 3,
    stream: true,
  });
  const res = await response;
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
  const raw = (await readAll(res)).toString('utf8');
  assert.ok(raw.startsWith('data: {'), 'the first bytes are an event');
  assert.ok(raw.endsWith('data: [DONE]\n\n'), 'the last bytes are [DONE]');
  const events = sseEvents(raw);
  assert.equal(events.at(-1), '[DONE]');
  const chunks = events.slice(0, -1).map(
    (e) =>
      JSON.parse(e) as {
        object: string;
        choices: { delta: Record<string, unknown>; finish_reason: string | null }[];
      },
  );
  assert.deepEqual(chunks[0]?.choices[0]?.delta, { role: 'assistant', content: '' });
  assert.deepEqual(
    chunks.slice(1, -1).map((c) => c.choices[0]?.delta.content),
    ['ping', ' ping', ' ping'],
  );
  assert.deepEqual(chunks.at(-1)?.choices[0], {
    index: 0,
    delta: {},
    logprobs: null,
    finish_reason: 'length',
  });
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));

  // the same stream as curl reads it (-N: no buffering), byte for byte in its framing
  const curl = await execFileAsync('curl', ['--version']).then(
    () => true,
    () => false,
  );
  if (!curl) {
    t.diagnostic('curl is not installed: its part of this test was skipped');
    return;
  }
  const body = JSON.stringify({
    model: 'chat',
    messages: [{ role: 'user', content: 'ping' }],
    max_tokens: 3,
    stream: true,
  });
  const { stdout } = await execFileAsync('curl', [
    '-sN',
    '--fail-with-body',
    '-H',
    `Authorization: Bearer ${KEY}`,
    '-H',
    'Content-Type: application/json',
    '-d',
    body,
    `${coordinator.url}/v1/chat/completions`,
  ]);
  assert.ok(stdout.startsWith('data: {') && stdout.endsWith('data: [DONE]\n\n'), stdout);
  const curlEvents = sseEvents(stdout);
  assert.equal(curlEvents.length, events.length, 'curl sees the same events');
  assert.deepEqual(
    curlEvents.slice(1, -2).map((e) => (JSON.parse(e) as (typeof chunks)[number]).choices[0]?.delta.content),
    ['ping', ' ping', ' ping'],
  );
});

test('openai - a client that stops reading stalls generation at the stream window', async (t) => {
  const { coordinator } = await startCluster(t);
  const { req, response } = openStream(coordinator.url, '/v1/completions', {
    model: 'flood',
    prompt: 'go',
    stream: true,
  });
  const res = await response;
  assert.equal(res.statusCode, 200);
  // read one chunk, then nothing: TCP fills, the coordinator stops taking, credit stops
  await new Promise<void>((resolve) => res.once('data', () => resolve()));
  res.pause();
  // stalled: an emit waits for credit, and the count holds between two looks
  let last = -1;
  const stalled = await waitFor('the stream to stall', async () => {
    const c = await streamCounts(coordinator.url, 'flood');
    const steady = c.waiting === 1 && c.partials === last;
    last = c.partials;
    return steady ? c : undefined;
  });
  // the window, the chunk the coordinator holds, and what socket buffers take (1 MiB tokens:
  // a few dozen at most); without backpressure this would run to 1,000,000
  t.diagnostic(`stalled after ${stalled.partials} tokens (window ${WINDOW}, ${BIG_TOKEN_BYTES} bytes each)`);
  assert.ok(stalled.partials <= WINDOW + 64, `generated ${stalled.partials} tokens while stalled`);
  assert.ok(stalled.partials - stalled.sent <= 1, 'at most the waiting token is unsent');
  req.destroy();
  const ended = await waitFor('the stream to be cancelled', async () => {
    const c = await streamCounts(coordinator.url, 'flood');
    return c.running === 0 ? c : undefined;
  });
  assert.equal(ended.cancelled, 1);
  assert.ok(ended.partials <= stalled.partials + 1);
});

test('openai - a client that disconnects mid-stream stops generation on the worker', async (t) => {
  const { coordinator } = await startCluster(t);
  const { req, response } = openStream(coordinator.url, '/v1/completions', {
    model: 'endless',
    prompt: 'go',
    stream: true,
  });
  const res = await response;
  let events = 0;
  await new Promise<void>((resolve) =>
    res.on('data', (c: Buffer) => {
      events += c.toString().split('\n\n').length - 1;
      if (events >= 5) resolve();
    }),
  );
  req.destroy();
  const ended = await waitFor('generation to stop', async () => {
    const c = await streamCounts(coordinator.url, 'endless');
    return c.running === 0 ? c : undefined;
  });
  assert.equal(ended.cancelled, 1);
  const again = await streamCounts(coordinator.url, 'endless');
  assert.equal(again.partials, ended.partials, 'no token after the cancel');
  assert.ok(ended.partials < 1_000_000);
  // the coordinator's load guard released the stream
  const workers = (await (await fetch(`${coordinator.url}/admin/workers`)).json()) as {
    workers: { id: string; inFlight: number }[];
  };
  assert.equal(workers.workers.find((w) => w.id === 'w1')?.inFlight, 0);
});

test('openai - beyond the model sequences a request gets 429 in OpenAI shape', async (t) => {
  const { coordinator, openai } = await startCluster(t);
  const { req, response } = openStream(coordinator.url, '/v1/completions', {
    model: 'single',
    prompt: 'go',
    stream: true,
  });
  const res = await response;
  await new Promise<void>((resolve) => res.once('data', () => resolve()));
  await assert.rejects(openai.completions.create({ model: 'single', prompt: 'x' }), OpenAI.RateLimitError);
  const raw = await fetch(`${coordinator.url}/v1/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'single', prompt: 'x', stream: true }),
  });
  assert.equal(raw.status, 429);
  assert.ok(raw.headers.get('retry-after'));
  const body = (await raw.json()) as { error: { type: string; code: string } };
  assert.deepEqual([body.error.type, body.error.code], ['rate_limit_error', 'overloaded']);
  req.destroy();
});

test('openai - a worker killed mid-stream ends its streams with an error event; none hangs', async (t) => {
  const { coordinator, workers } = await startCluster(t);
  const N = 4;
  const streams = await Promise.all(
    Array.from({ length: N }, async () => {
      const { req, response } = openStream(coordinator.url, '/v1/completions', {
        model: 'both',
        prompt: 'go',
        stream: true,
      });
      const res = await response;
      let raw = '';
      const firstToken = new Promise<void>((resolve) =>
        res.on('data', (c: Buffer) => {
          raw += c.toString();
          if (raw.includes('tok1')) resolve();
        }),
      );
      const ended = new Promise<void>((resolve) => res.on('end', () => resolve()));
      await firstToken;
      return { req, ended, text: () => raw };
    }),
  );
  const onW2 = await streamCounts(coordinator.url, 'both', 'w2');
  const onW1 = await streamCounts(coordinator.url, 'both', 'w1');
  assert.equal(onW1.running + onW2.running, N);
  workers.w1.child.kill('SIGKILL');
  // the streams w1 ran end with an error event (no [DONE]); w2's go on until we leave
  const killed = onW1.running;
  let errored = 0;
  await Promise.all(
    streams.map(async (s) => {
      const outcome = await Promise.race([
        s.ended.then(() => 'ended'),
        waitFor('w2 streams to go on', async () => {
          const c = await streamCounts(coordinator.url, 'both', 'w2');
          return c.partials > onW2.partials + 50 ? 'going' : undefined;
        }),
      ]);
      if (outcome === 'ended') {
        const events = sseEvents(s.text());
        const last = JSON.parse(events.at(-1)!) as { error?: { code: string } };
        assert.equal(last.error?.code, 'connection_lost');
        errored++;
      }
    }),
  );
  assert.ok(errored >= killed, `${errored} streams ended with an error, ${killed} ran on the killed worker`);
  for (const s of streams) s.req.destroy();
  await waitFor(
    'w2 streams cancelled',
    async () => (await streamCounts(coordinator.url, 'both', 'w2')).running === 0,
  );
});
