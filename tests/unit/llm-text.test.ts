/**
 * The text side of generation (stop strings, whole UTF-8 characters, the per-request emit
 * queue), request options, and the llama config key.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';
import {
  StopStringMatcher,
  StreamDetokenizer,
  TextStream,
  type Token,
  parseChatMessages,
  parseGenerationOptions,
} from '../../src/llm/index.ts';

test('llm text - stop strings: split across chunks, held back, cut before the match', () => {
  const m = new StopStringMatcher(['</answer>', 'STOP']);
  const out = ['The ans', 'wer is 4', '2</ans', 'wer> trailing'].map((c) => m.push(c));
  assert.deepEqual(
    out.map((o) => o.text),
    ['The ans', 'wer is 4', '2', ''],
  );
  assert.deepEqual(
    out.map((o) => o.stopped),
    [false, false, false, true],
  );
  const partial = new StopStringMatcher(['STOP']);
  assert.equal(partial.push('ends with ST').text, 'ends with ');
  assert.equal(partial.flush(), 'ST', 'a partial match that never completes is released at the end');
});

test('llm text - streaming detokenization keeps multi-byte characters whole', () => {
  // tokens are the UTF-8 bytes of the text, one byte each (like SPM byte fallback)
  const bytes = [...Buffer.from('a🦙é')];
  const detokenize = (tokens: readonly Token[]): string => Buffer.from(tokens as number[]).toString('utf8');
  const d = new StreamDetokenizer(detokenize);
  const pieces = bytes.map((b) => d.push(b));
  assert.deepEqual(pieces, ['a', '', '', '', '🦙', '', 'é']);
  assert.equal(d.flush(), '');
});

test('llm text - a text stream keeps one emit in flight and blocks once its queue is full', async () => {
  const sent: string[] = [];
  let release: (() => void) | undefined;
  let ready = 0;
  const stream = new TextStream({
    detokenize: (tokens) => tokens.map((t) => String.fromCharCode(t)).join(''),
    previous: [],
    stop: [],
    emit: (delta) => {
      sent.push(delta);
      return new Promise<void>((resolve) => {
        release = resolve;
      });
    },
    onReady: () => ready++,
    onError: () => {},
    maxQueuedTokens: 2,
  });
  stream.push(97); // 'a' goes out; its emit is pending
  assert.deepEqual(sent, ['a']);
  stream.push(98);
  assert.equal(stream.blocked(), false);
  stream.push(99);
  assert.equal(stream.blocked(), true, 'two tokens queued behind a pending emit');
  release!();
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(sent, ['a', 'bc'], 'the queue goes out as one delta');
  assert.equal(stream.blocked(), false);
  const ended = stream.end(false);
  release!();
  assert.equal(await ended, 'abc');
  assert.ok(ready >= 1);
});

test('llm options - parameters are read and checked, each problem named', () => {
  const seed = () => 5;
  const o = parseGenerationOptions(
    {
      max_tokens: 10,
      temperature: 0.5,
      top_p: 0.9,
      top_k: 40,
      stop: '["a","b"]',
      min_tokens: 2,
      ignore_eos: true,
    },
    { maxTokens: 100 },
    seed,
  );
  assert.deepEqual(
    [o.maxTokens, o.minTokens, o.ignoreEos, o.stop, o.sampling.seed, o.sampling.topK],
    [10, 2, true, ['a', 'b'], 5, 40],
  );
  assert.deepEqual(parseGenerationOptions({ stop: 'END' }, { maxTokens: 100 }, seed).stop, ['END']);
  assert.equal(parseGenerationOptions({}, { maxTokens: 100 }, seed).maxTokens, 100);
  for (const [parameters, pattern] of [
    [{ max_tokens: 101 }, /max_tokens.*limit of 100/],
    [{ max_tokens: 0 }, /max_tokens/],
    [{ temperature: 'hot' }, /temperature/],
    [{ top_p: 0 }, /top_p/],
    [{ min_tokens: 50, max_tokens: 10 }, /min_tokens/],
    [{ stop: '[1]' }, /stop/],
    [{ ignore_eos: 'yes' }, /ignore_eos/],
  ] as const) {
    assert.throws(
      () => parseGenerationOptions(parameters, { maxTokens: 100 }, seed),
      (e: unknown) => e instanceof InfergridError && e.code === 'INVALID_ARGUMENT' && pattern.test(e.message),
    );
  }
});

test('llm options - chat messages: strings or text parts, anything else refused clearly', () => {
  assert.deepEqual(parseChatMessages('[{"role":"user","content":[{"type":"text","text":"hi"}]}]'), [
    { role: 'user', content: 'hi' },
  ]);
  for (const bad of [
    'not json',
    '[]',
    '[{"content":"x"}]',
    '[{"role":"user","content":[{"type":"image_url"}]}]',
  ]) {
    assert.throws(
      () => parseChatMessages(bad),
      (e: unknown) => e instanceof InfergridError && e.code === 'INVALID_ARGUMENT',
    );
  }
});

test('config - llama models need a path; the llama key is checked against itself', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-llama-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'm.gguf'), 'GGUF');
  const file = join(dir, 'config.yaml');
  writeFileSync(
    file,
    `models:
  - name: a
    backend: llama
  - name: b
    backend: llama
    path: m.gguf
    llama: { sequences: 8, stepTokens: 4, prefillChunk: 16, contextSize: 64, maxTokens: 64 }
`,
  );
  assert.throws(
    () => loadConfig({ file }),
    (e: unknown) => {
      const issues = ((e as InfergridError).details as { issues: string[] }).issues;
      assert.deepEqual(issues, [
        'models[0].path: required for backend "llama"',
        'models[1].llama.stepTokens: 4 is below sequences 8 (every decoding sequence puts one token in each step)',
        'models[1].llama.prefillChunk: 16 is above stepTokens 4',
        'models[1].llama.maxTokens: 64 leaves no room for a prompt in contextSize 64',
      ]);
      return true;
    },
  );
  writeFileSync(file, 'models:\n  - name: b\n    backend: llama\n    path: m.gguf\n');
  const m = loadConfig({ file }).config.models[0]!;
  assert.deepEqual(m.llama, { threads: 1, sequences: 4, stepTokens: 512, maxQueued: 64, prefixReuse: true });
});
