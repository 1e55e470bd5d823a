/**
 * A real GGUF model (the tiny random-weight llama made at test time) served end to end:
 * coordinator and two worker processes, the llama backend's step loop, streaming over RPC, the
 * OpenAI API through the official client, prefix-aware routing, cancellation counted in
 * generated tokens, and a worker killed mid-stream.
 */

import assert from 'node:assert/strict';
import { dirname } from 'node:path';
import { type TestContext, test } from 'node:test';
import OpenAI from 'openai';
import { hashApiKey } from '../../src/api/index.ts';
import type { StreamStats } from '../../src/protocol/index.ts';
import {
  type Spawned,
  startCoordinator,
  startWorker,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { tinyGguf } from '../fixtures/tiny-gguf.ts';

const KEY = 'ig-test-llm-client-key-0123456789abcdef';

function config(modelPath: string): string {
  return `
auth:
  apiKeys: [{ name: client, scopes: [infer], sha256: ${hashApiKey(KEY)} }]
  anonymous: [health, metrics]
rpc: { heartbeatIntervalMs: 100, peerTimeoutMs: 3000 }
repository: { roots: [${JSON.stringify(dirname(modelPath))}] }
models:
  - name: tiny
    backend: llama
    path: ${JSON.stringify(modelPath)}
    llama: { sequences: 4, contextSize: 256, stepTokens: 128 }
    routing: { strategy: prefix-aware, maxAttempts: 2 }
`;
}

interface Cluster {
  url: string;
  workers: Record<string, Spawned>;
  openai: OpenAI;
}

async function startCluster(t: TestContext): Promise<Cluster> {
  const model = tinyGguf();
  const file = writeConfig(t, config(model.path));
  const coordinator = await startCoordinator(t, file);
  const [w1, w2] = await Promise.all(
    ['w1', 'w2'].map((id) => startWorker(t, file, id, { coordinator: coordinator.rpcAddress })),
  );
  await waitForWorkers(coordinator.url, 2, ['tiny']);
  return {
    url: coordinator.url,
    workers: { w1: w1!, w2: w2! },
    openai: new OpenAI({ apiKey: KEY, baseURL: `${coordinator.url}/v1`, maxRetries: 0 }),
  };
}

async function streamCounts(url: string): Promise<Record<string, StreamStats>> {
  const res = await fetch(`${url}/v2/models/tiny/stats`);
  const body = (await res.json()) as {
    model_stats: { infergrid: { workers: { id: string; streams?: StreamStats }[] } }[];
  };
  const out: Record<string, StreamStats> = {};
  for (const w of body.model_stats[0]?.infergrid.workers ?? []) if (w.streams) out[w.id] = w.streams;
  return out;
}

test("llm - a real GGUF through the OpenAI API and Triton's generate: chat, completions, streaming with usage, listed models", {
  timeout: 120_000,
}, async (t) => {
  const { url, openai } = await startCluster(t);
  const models = await openai.models.list();
  assert.deepEqual(
    models.data.map((m) => m.id),
    ['tiny'],
  );

  const ask = {
    model: 'tiny',
    messages: [
      { role: 'system' as const, content: 'You are terse.' },
      { role: 'user' as const, content: 'Say something.' },
    ],
    max_tokens: 8,
    temperature: 0,
  };
  const chat = await openai.chat.completions.create(ask);
  const choice = chat.choices[0]!;
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(['stop', 'length'].includes(choice.finish_reason), choice.finish_reason);
  assert.ok(chat.usage!.prompt_tokens > 5, `prompt tokens ${chat.usage!.prompt_tokens}`);
  assert.ok(chat.usage!.completion_tokens >= 1 && chat.usage!.completion_tokens <= 8);
  assert.equal(chat.usage!.total_tokens, chat.usage!.prompt_tokens + chat.usage!.completion_tokens);

  // greedy decoding is deterministic: the stream's deltas add up to the same text
  const stream = await openai.chat.completions.create({
    ...ask,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage: OpenAI.CompletionUsage | undefined;
  let finish: string | null = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, choice.message.content);
  assert.equal(finish, choice.finish_reason);
  assert.equal(usage?.completion_tokens, chat.usage!.completion_tokens);

  const completion = await openai.completions.create({
    model: 'tiny',
    prompt: 'Once upon a time',
    max_tokens: 5,
    temperature: 0,
  });
  assert.equal(completion.choices[0]!.finish_reason, 'length');
  assert.equal(completion.usage!.completion_tokens, 5);

  // Triton's generate extension runs the same generation: greedy, the same text
  const res = await fetch(`${url}/v2/models/tiny/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ text_input: 'Once upon a time', max_tokens: 5, parameters: { temperature: 0 } }),
  });
  const generated = (await res.json()) as Record<string, unknown>;
  assert.equal(res.status, 200, JSON.stringify(generated));
  assert.equal(generated.model_name, 'tiny');
  assert.equal(generated.text_output, completion.choices[0]!.text);
  assert.deepEqual([generated.finish_reason, generated.completion_tokens], ['length', 5]);
});

test('llm - concurrent streams share the workers, a shared prompt prefix sticks to one worker, and a client that leaves stops generation', {
  timeout: 120_000,
}, async (t) => {
  const { url, openai } = await startCluster(t);
  const system = `You are a helpful assistant. ${'Follow the house rules carefully. '.repeat(20)}`;
  // 8 requests with one long shared system prompt: prefix-aware routing sends them to one worker
  await Promise.all(
    Array.from({ length: 8 }, (_, i) =>
      openai.chat.completions.create({
        model: 'tiny',
        messages: [
          { role: 'system', content: system },
          { role: 'user', content: `question ${i}` },
        ],
        max_tokens: 4,
      }),
    ),
  );
  const counts = await streamCounts(url);
  const started = Object.values(counts).map((c) => c.started);
  assert.equal(
    started.reduce((a, b) => a + b, 0),
    8,
  );
  assert.ok(
    started.includes(8),
    `one worker took every request with the shared prefix: ${JSON.stringify(counts)}`,
  );

  // a client that goes away mid-stream: the worker stops generating at the next step
  const controller = new AbortController();
  const long = await openai.completions.create(
    {
      model: 'tiny',
      prompt: 'Tell me a very long story',
      max_tokens: 200,
      ignore_eos: true,
      stream: true,
    } as never,
    { signal: controller.signal },
  );
  let received = 0;
  try {
    for await (const _chunk of long as unknown as AsyncIterable<unknown>) {
      if (++received === 3) controller.abort();
    }
  } catch {
    // the client's iterator may end or throw on abort; either way it stopped reading
  }
  assert.ok(received < 200, `stopped early: ${received} chunks`);
  const after = await waitForCancelled(url);
  const total = Object.values(after).reduce((n, c) => n + c.cancelled, 0);
  assert.equal(total, 1, JSON.stringify(after));
  assert.ok(
    Object.values(after).every((c) => c.running === 0),
    'no stream left running',
  );
});

async function waitForCancelled(url: string): Promise<Record<string, StreamStats>> {
  for (;;) {
    const counts = await streamCounts(url);
    if (
      Object.values(counts).some((c) => c.cancelled > 0) &&
      Object.values(counts).every((c) => c.running === 0)
    )
      return counts;
    await new Promise((r) => setTimeout(r, 25));
  }
}

type CompletionChunk = { choices: { finish_reason: string | null }[] };

test('llm - a worker killed mid-stream: its streams end with an error event, the others finish, nothing hangs', {
  timeout: 120_000,
}, async (t) => {
  const { url, workers, openai } = await startCluster(t);
  const streams = await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      openai.completions.create({
        model: 'tiny',
        prompt: `Request number ${i} asks for a story about ${'dragons '.repeat(i * 4)}`,
        max_tokens: 40,
        ignore_eos: true,
        stream: true,
      } as never),
    ),
  );
  let killed = false;
  const outcomes = await Promise.all(
    streams.map(async (s) => {
      let tokens = 0;
      let finish: string | null | undefined;
      try {
        for await (const chunk of s as unknown as AsyncIterable<CompletionChunk>) {
          tokens++;
          finish = chunk.choices[0]?.finish_reason ?? finish;
          if (!killed && tokens === 2) {
            killed = true;
            // the worker with more streams running goes
            const counts = await streamCounts(url);
            const victim = (counts.w1?.running ?? 0) >= (counts.w2?.running ?? 0) ? 'w1' : 'w2';
            workers[victim]!.child.kill('SIGKILL');
          }
        }
        return `done: ${finish}`;
      } catch (err) {
        return `error: ${(err as Error).message}`;
      }
    }),
  );
  assert.ok(killed);
  // a stream either ran to max_tokens or ended with an error event: never cut off silently
  for (const o of outcomes) assert.match(o, /^done: length$|^error: connection lost: /, `${outcomes}`);
  assert.ok(
    outcomes.some((o) => o.startsWith('error')),
    JSON.stringify(outcomes),
  );
  assert.ok(
    outcomes.some((o) => o.startsWith('done')),
    JSON.stringify(outcomes),
  );
});
