import assert from 'node:assert/strict';
import { test } from 'node:test';
import { textTensor } from '../../src/tensor/index.ts';
import {
  generateResponse,
  generateSseEncoder,
  parseGenerateRequest,
} from '../../src/api/triton-generate-mapping.ts';
import { InfergridError } from '../../src/errors.ts';
import type { InferResult } from '../../src/coordinator/index.ts';
import { decodeBytesElements } from '../../src/tensor/index.ts';
import { isCode } from '../fixtures/assert.ts';

const text = (t: { data: Uint8Array }) => new TextDecoder().decode(decodeBytesElements(t.data, 'x')[0]);

test('triton generate mapping - top-level fields, parameters and aliases become the LLM parameters', () => {
  const r = parseGenerateRequest(
    {
      text_input: ['hello'],
      max_tokens: [8],
      stop_words: ['END', ''],
      parameters: { temperature: 0, random_seed: 3, min_length: 2, timeout: 5_000_000 },
    },
    true,
  );
  assert.equal(text(r.inputs[0]!), 'hello');
  assert.deepEqual(r.parameters, {
    max_tokens: 8,
    min_tokens: 2,
    temperature: 0,
    seed: 3,
    stop: '["END"]',
    stream: true,
  });
  assert.deepEqual(r.timeoutParameters, { timeout: 5_000_000 });
  assert.equal(r.partials, true);
  assert.equal(r.lead, '');
  const once = parseGenerateRequest({ text_input: 'x', stream: false, exclude_input_in_output: false }, true);
  assert.deepEqual([once.partials, once.parameters.stream, once.lead], [false, undefined, 'x']);
});

test('triton generate mapping - unknown, repeated and unsupported fields are refused by name', () => {
  const refused = (body: unknown, streaming: boolean, match: RegExp) =>
    assert.throws(() => parseGenerateRequest(body, streaming), isCode('INVALID_ARGUMENT', match));
  refused({ text_input: 'x', toString: 2 }, false, /unknown field "toString"/);
  refused(JSON.parse('{"text_input": "x", "__proto__": {"max_tokens": 1}}'), false, /"__proto__"/);
  refused({ text_input: 'x', parameters: { toString: 1 } }, false, /unknown field "toString"/);
  refused({ text_input: 'x', seed: 1, random_seed: 2 }, false, /"random_seed" and "seed" are one field/);
  refused({ text_input: 'x', top_p: 0.5, parameters: { top_p: 0.5 } }, false, /"top_p" is given both/);
  refused({ text_input: 'x', parameters: 'temperature=0' }, false, /"parameters" must be an object/);
  refused({ text_input: ['a', 'b'] }, false, /one prompt per request/);
  refused({ text_input: 'x', max_tokens: [1, 2] }, false, /"max_tokens" must be an integer/);
  refused({ text_input: 'x', beam_width: 4 }, false, /beam search/);
  refused({ text_input: 'x', stream: true }, false, /generate_stream/);
  refused('text', true, /JSON object/);
});

test('triton generate mapping - responses carry the model, the text and, when final, the accounting', () => {
  const meta = {
    model: 'm',
    version: '2',
    outputs: [],
    parameters: { finish_reason: 'length', prompt_tokens: 1, completion_tokens: 2, other: 'x' },
  };
  assert.deepEqual(generateResponse(meta, 'ab', false), {
    model_name: 'm',
    model_version: '2',
    text_output: 'ab',
  });
  assert.deepEqual(generateResponse(meta, 'ab', true), {
    model_name: 'm',
    model_version: '2',
    text_output: 'ab',
    finish_reason: 'length',
    prompt_tokens: 1,
    completion_tokens: 2,
  });
  const chunk = (t: string, final: boolean) => ({
    final,
    result: { meta, outputs: [textTensor('text_output', t)], workerId: 'w' } as InferResult,
  });
  const texts = (lead: string, chunks: ReturnType<typeof chunk>[]) => {
    const encoder = generateSseEncoder(lead);
    return chunks.flatMap((c) => encoder.events(c)).map((e) => (e as { text_output: string }).text_output);
  };
  // the final answer repeats the whole text: only sent when no partial answer came
  assert.deepEqual(texts('', [chunk('a', false), chunk('', false), chunk('b', false), chunk('ab', true)]), [
    'a',
    'b',
    '',
  ]);
  assert.deepEqual(texts('p:', [chunk('ab', true)]), ['p:ab']);
  assert.deepEqual(texts('p:', [chunk('a', false), chunk('a', true)]), ['p:a', '']);
  const error = generateSseEncoder('').error(new InfergridError('CONNECTION_LOST', 'gone'));
  assert.deepEqual(error, { error: 'gone', code: 'CONNECTION_LOST' });
});
