import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import type { ServerResponse } from 'node:http';
import { outputText, usageOf } from '../../src/api/llm-fields.ts';
import {
  completionChunk,
  completionResponse,
  openAiErrorBody,
  parseOpenAiRequest,
  responseHead,
  usageChunk,
} from '../../src/api/openai-mapping.ts';
import { SSE_DONE, sseEvent, writeSse } from '../../src/api/sse.ts';
import { InfergridError } from '../../src/errors.ts';
import { decodeBytesElements, textTensor } from '../../src/tensor/index.ts';
import { isCode } from '../fixtures/assert.ts';

const text = (t: { data: Uint8Array }) => new TextDecoder().decode(decodeBytesElements(t.data, 'x')[0]);

test('openai mapping - a completion maps prompt and sampling fields to the LLM contract', () => {
  const r = parseOpenAiRequest('completion', {
    model: 'm',
    prompt: ['hello'],
    max_tokens: 5,
    temperature: 0.5,
    top_p: 0.9,
    seed: 7,
    stop: 'END',
    ignore_eos: true,
    min_tokens: 2,
    user: 'ignored',
    n: 1,
  });
  assert.equal(r.kind, 'completion');
  assert.equal(r.stream, false);
  assert.equal(r.inputs[0]?.name, 'text_input');
  assert.equal(text(r.inputs[0]!), 'hello');
  assert.deepEqual(r.parameters, {
    max_tokens: 5,
    min_tokens: 2,
    ignore_eos: true,
    temperature: 0.5,
    top_p: 0.9,
    seed: 7,
    stop: '["END"]',
  });
});

test('openai mapping - a chat sends its messages as JSON with chat: true; max_completion_tokens wins', () => {
  const r = parseOpenAiRequest('chat', {
    model: 'm',
    messages: [
      { role: 'system', content: 'be brief' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'hi ' },
          { type: 'text', text: 'there' },
        ],
      },
    ],
    max_tokens: 9,
    max_completion_tokens: 3,
    stream: true,
    stream_options: { include_usage: true },
  });
  assert.deepEqual(JSON.parse(text(r.inputs[0]!)), [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'hi there' },
  ]);
  assert.equal(r.parameters.chat, true);
  assert.equal(r.parameters.stream, true);
  assert.equal(r.parameters.max_tokens, 3);
  assert.equal(r.includeUsage, true);
});

test('openai mapping - what is refused names its field', () => {
  const cases: [unknown, string][] = [
    [{ model: 'm', prompt: 'x', n: 2 }, 'n'],
    [{ prompt: 'x' }, 'model'],
    [{ model: 'm', prompt: ['a', 'b'] }, 'prompt'],
    [{ model: 'm', prompt: [1, 2] }, 'prompt'],
    [{ model: 'm', prompt: 'x', temperature: 3 }, 'temperature'],
    [{ model: 'm', prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    [{ model: 'm', prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ model: 'm', prompt: 'x', stream_options: { include_usage: true } }, 'stream_options'],
    [{ model: 'm', prompt: 'x', logprobs: 2 }, 'logprobs'],
  ];
  for (const [body, param] of cases) {
    assert.throws(
      () => parseOpenAiRequest('completion', body),
      (err: unknown) => isCode('INVALID_ARGUMENT')(err) && (err as InfergridError).details?.param === param,
      param,
    );
  }
  assert.throws(() => parseOpenAiRequest('chat', { model: 'm', messages: [] }), isCode('INVALID_ARGUMENT'));
  assert.throws(
    () =>
      parseOpenAiRequest('chat', {
        model: 'm',
        messages: [{ role: 'user', content: [{ type: 'image_url' }] }],
      }),
    isCode('INVALID_ARGUMENT', /only text parts/),
  );
  // the field is named for the client, in the message and as details.param
  assert.throws(
    () => parseOpenAiRequest('chat', { model: 'm', messages: [{ role: 'user', content: 7 }] }),
    (e: unknown) => {
      assert.deepEqual((e as InfergridError).details, { param: 'messages[0].content' });
      assert.match(
        (e as Error).message,
        /^messages\[0\]\.content: expected a string or an array of text parts/,
      );
      return true;
    },
  );
});

test('openai mapping - responses and chunks in OpenAI shapes', () => {
  const head = responseHead('chat', 'm', 1_700_000_000_500);
  assert.match(head.id, /^chatcmpl-[0-9a-f]{32}$/);
  assert.equal(head.created, 1_700_000_000);
  const parameters = { finish_reason: 'length', prompt_tokens: 3, completion_tokens: 2 };
  assert.deepEqual(completionResponse('chat', head, 'hi', parameters), {
    id: head.id,
    object: 'chat.completion',
    created: head.created,
    model: 'm',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: 'hi', refusal: null },
        logprobs: null,
        finish_reason: 'length',
      },
    ],
    usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
  });
  const cmpl = responseHead('completion', 'm');
  assert.deepEqual(
    (completionResponse('completion', cmpl, 'hi', undefined) as { choices: unknown[] }).choices,
    [{ index: 0, text: 'hi', logprobs: null, finish_reason: 'stop' }],
  );
  assert.deepEqual(
    (completionChunk('chat', head, { role: true, text: '' }, false) as { choices: unknown[] }).choices,
    [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
  );
  const last = completionChunk('chat', head, { finishReason: 'stop' }, true) as Record<string, unknown>;
  assert.deepEqual(last.choices, [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }]);
  assert.equal(last.usage, null, 'with include_usage every chunk says usage: null');
  assert.deepEqual(usageChunk('completion', cmpl, parameters), {
    id: cmpl.id,
    object: 'text_completion',
    created: cmpl.created,
    model: 'm',
    choices: [],
    usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
  });
  assert.equal(outputText([textTensor('text_output', 'héllo')]), 'héllo');
  assert.equal(outputText([]), '');
});

test('openai mapping - errors in OpenAI shape, with type by status and param when known', () => {
  assert.deepEqual(
    openAiErrorBody(new InfergridError('INVALID_ARGUMENT', 'bad n', { details: { param: 'n' } })),
    { error: { message: 'bad n', type: 'invalid_request_error', param: 'n', code: 'invalid_argument' } },
  );
  assert.equal(
    openAiErrorBody(new InfergridError('UNAUTHENTICATED', 'x')).error.type,
    'authentication_error',
  );
  assert.equal(openAiErrorBody(new InfergridError('OVERLOADED', 'x')).error.type, 'rate_limit_error');
  assert.equal(openAiErrorBody(new InfergridError('MODEL_NOT_FOUND', 'x')).error.param, null);
});

test('sse - events are one data line and a blank line; [DONE] ends the stream', () => {
  assert.equal(sseEvent({ a: 'x\ny' }), 'data: {"a":"x\\ny"}\n\n');
  assert.equal(SSE_DONE, 'data: [DONE]\n\n');
});

test('sse - a write past the buffer waits for drain, and a closed response answers false', async () => {
  const sink = new PassThrough({ highWaterMark: 4 });
  const res = sink as unknown as ServerResponse;
  let drained = false;
  const pending = writeSse(res, 'data: 123456789\n\n').then((ok) => {
    drained = ok;
  });
  await Promise.resolve();
  assert.equal(drained, false, 'the buffer is over its mark: the writer waits');
  sink.read();
  await pending;
  assert.equal(drained, true);
  const closing = writeSse(res, 'data: 123456789\n\n');
  sink.destroy();
  assert.equal(await closing, false);
  assert.equal(await writeSse(res, 'x'), false);
});

test('openai mapping - usage carries the cached prompt tokens when the backend reports them', () => {
  assert.deepEqual(usageOf({ prompt_tokens: 40, completion_tokens: 4, cached_tokens: 32 }), {
    prompt_tokens: 40,
    completion_tokens: 4,
    total_tokens: 44,
    prompt_tokens_details: { cached_tokens: 32 },
  });
  assert.deepEqual(usageOf({ prompt_tokens: 3, completion_tokens: 2 }), {
    prompt_tokens: 3,
    completion_tokens: 2,
    total_tokens: 5,
  });
});
