/**
 * `npm start`'s config, examples/demo-config.yaml, as shipped: the OCR pipeline and the demo
 * language model `chat` (examples/models/kjv-demo.gguf, docs/demo-llm.md) come up together,
 * and `chat` answers both OpenAI routes. Only shapes and counts are checked, never the text.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { spawnInfergrid, waitForWorkers } from '../fixtures/processes.ts';

const DEMO_CONFIG = fileURLToPath(new URL('../../examples/demo-config.yaml', import.meta.url));

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

async function postJson<T>(url: string, body: unknown): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as T;
}

test('demo config - serves the OCR pipeline and the chat model side by side', {
  timeout: 120_000,
}, async (t) => {
  const serve = await spawnInfergrid(
    t,
    ['serve', '--config', DEMO_CONFIG, '--port', '0', '--rpc-port', '0'],
    {
      readyTimeoutMs: 60_000,
    },
  );
  const url = `http://127.0.0.1:${serve.ready.httpPort}`;
  await waitForWorkers(url, 2, ['chat', 'ocr-rec', 'ocr-cls']);

  const listed = (await (await fetch(`${url}/v1/models`)).json()) as { data: Array<{ id: string }> };
  assert.ok(
    listed.data.some((m) => m.id === 'chat'),
    'chat is listed as an OpenAI model',
  );

  const chat = await postJson<{
    choices: Array<{ message: { role: string; content: string }; finish_reason: string }>;
    usage: Usage;
  }>(`${url}/v1/chat/completions`, {
    model: 'chat',
    messages: [{ role: 'user', content: 'Who made the heaven and the earth?' }],
    max_tokens: 16,
    seed: 1,
  });
  assert.equal(chat.choices.length, 1);
  assert.equal(chat.choices[0]!.message.role, 'assistant');
  assert.equal(typeof chat.choices[0]!.message.content, 'string');
  assert.ok(chat.usage.prompt_tokens > 0);
  assert.ok(chat.usage.completion_tokens >= 1 && chat.usage.completion_tokens <= 16);

  const completion = await postJson<{ choices: Array<{ text: string }>; usage: Usage }>(
    `${url}/v1/completions`,
    {
      model: 'chat',
      prompt: 'In the beginning',
      max_tokens: 16,
      seed: 1,
    },
  );
  assert.equal(completion.choices.length, 1);
  assert.equal(typeof completion.choices[0]!.text, 'string');
  assert.ok(completion.usage.completion_tokens >= 1 && completion.usage.completion_tokens <= 16);

  assert.equal(await serve.stop(), 0, 'serve exits 0 on SIGTERM');
});
