/**
 * The llama backend on a real (tiny, random-weight) GGUF built at test time, loaded in
 * process: streaming, cancellation, prefix reuse, chat templates, stop strings, limits.
 * Greedy sampling (temperature 0) and ignore_eos keep the runs deterministic and their
 * lengths fixed; no test depends on timing.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { NodeLlamaDecodeContext, createLlamaBackend } from '../../src/backends/index.ts';
import type { LoadedModel, StreamContext } from '../../src/backends/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';
import { ChatTemplate, StepLoop } from '../../src/llm/index.ts';
import type { Parameters } from '../../src/protocol/index.ts';
import { type Tensor, decodeBytesElements, encodeBytesElements } from '../../src/tensor/index.ts';
import { tinyGguf } from '../fixtures/tiny-gguf.ts';

const backend = createLlamaBackend();
let model: LoadedModel;
let single: LoadedModel;
const warnings: string[] = [];

async function load(llama: Record<string, unknown>): Promise<LoadedModel> {
  const config = configSchema.parse({
    models: [{ name: 'tiny', backend: 'llama', path: tinyGguf().path, llama }],
  }).models[0]!;
  return backend.load(config, { warn: (m) => warnings.push(m) });
}

before(async () => {
  model = await load({ contextSize: 256, sequences: 4, maxQueued: 16, stepTokens: 64 });
  single = await load({ contextSize: 128, sequences: 1, maxQueued: 0 });
});
after(async () => {
  await model?.dispose();
  await single?.dispose();
});

const loopOf = (m: LoadedModel): StepLoop => (m as unknown as { loop: StepLoop }).loop;

function prompt(text: string): Tensor[] {
  return [
    { name: 'text_input', datatype: 'BYTES', shape: [1], data: encodeBytesElements([Buffer.from(text)]) },
  ];
}

function textOf(outputs: readonly Tensor[]): string {
  return Buffer.from(decodeBytesElements(outputs[0]!.data)[0]!).toString('utf8');
}

const GREEDY = { temperature: 0, ignore_eos: true } as const;

async function generate(
  m: LoadedModel,
  text: string,
  parameters: Parameters,
  options: { signal?: AbortSignal; onDelta?: (delta: string) => void } = {},
) {
  const deltas: string[] = [];
  const ctx: StreamContext = {
    signal: options.signal ?? new AbortController().signal,
    parameters,
    emit: async (outputs) => {
      const delta = textOf(outputs);
      deltas.push(delta);
      options.onDelta?.(delta);
    },
  };
  const result = await m.stream!(prompt(text), ctx);
  return { text: textOf(result.outputs), parameters: result.parameters!, deltas };
}

test('llama backend - model metadata fills ModelInfo.llm and the KServe schema', () => {
  assert.equal(model.info.platform, 'infergrid_llama');
  assert.deepEqual(model.info.inputs, [{ name: 'text_input', datatype: 'BYTES', shape: [1] }]);
  assert.deepEqual(model.info.outputs, [
    { name: 'text_output', datatype: 'BYTES', shape: [1] },
    { name: 'embedding', datatype: 'FP32', shape: [-1] },
  ]);
  const llm = model.info.llm!;
  assert.deepEqual(
    [llm.contextSize, llm.trainContextSize, llm.vocabularySize, llm.embeddingSize, llm.sequences],
    [256, 2048, 32000, 64, 4],
  );
  assert.equal(llm.chatTemplate, tinyGguf().chatTemplate);
});

test('llama backend - streams text: the deltas add up to the final text', async () => {
  const r = await generate(model, 'Once upon a time', { ...GREEDY, max_tokens: 8 });
  assert.ok(r.deltas.length >= 2, `streamed in ${r.deltas.length} deltas`);
  assert.equal(r.deltas.join(''), r.text);
  assert.ok(r.text.length > 0);
  assert.equal(r.parameters.finish_reason, 'length');
  assert.equal(r.parameters.completion_tokens, 8);
  assert.ok(!r.text.includes('\uFFFD'), 'no broken UTF-8');
});

test('llama backend - infer runs the same path and returns the final text', async () => {
  const streamed = await generate(model, 'The weather today', { ...GREEDY, max_tokens: 5 });
  const outputs = await model.infer(prompt('The weather today'), {
    signal: new AbortController().signal,
    parameters: { ...GREEDY, max_tokens: 5 },
  });
  assert.equal(textOf(outputs), streamed.text);
});

test('llama backend - a request cancelled mid-stream generates no token after the cancel, and its sequence serves the next request', async () => {
  const loop = loopOf(single);
  const abort = new AbortController();
  let sampledAtCancel = -1;
  let deltasAfterCancel = 0;
  let deltas = 0;
  const cancelled = generate(
    single,
    'Tell me a long story',
    { ...GREEDY, max_tokens: 100 },
    {
      signal: abort.signal,
      onDelta: () => {
        if (abort.signal.aborted) deltasAfterCancel++;
        else if (++deltas === 3) {
          sampledAtCancel = loop.stats.tokensSampled;
          abort.abort(new InfergridError('CANCELLED', 'client went away'));
        }
      },
    },
  );
  await assert.rejects(cancelled, (e: unknown) => (e as InfergridError).code === 'CANCELLED');
  assert.equal(loop.stats.tokensSampled, sampledAtCancel, 'no token sampled after the cancel');
  assert.equal(deltasAfterCancel, 0);
  const next = await generate(single, 'Tell me a short story', { ...GREEDY, max_tokens: 3 });
  assert.equal(next.parameters.completion_tokens, 3);
});

test('llama backend - a prompt that extends an earlier one reuses its prefix: only the suffix is evaluated', async () => {
  const loop = loopOf(model);
  const base = 'You are a helpful assistant. Answer briefly and politely. The question is:';
  const first = await generate(model, base, { ...GREEDY, max_tokens: 2 });
  const evaluatedBefore = loop.stats.promptTokensEvaluated;
  const second = await generate(model, `${base} what is the capital of France?`, {
    ...GREEDY,
    max_tokens: 2,
  });
  const promptTokens = second.parameters.prompt_tokens as number;
  const cached = second.parameters.cached_tokens as number;
  assert.ok(cached >= (first.parameters.prompt_tokens as number) - 2, `cached ${cached} of ${promptTokens}`);
  assert.equal(loop.stats.promptTokensEvaluated - evaluatedBefore, promptTokens - cached);
});

test('llama backend - llama.prefixReuse false: a prompt that extends an earlier one is evaluated whole', async (t) => {
  const noReuse = await load({ contextSize: 128, sequences: 1, maxQueued: 0, prefixReuse: false });
  t.after(() => noReuse.dispose());
  const loop = loopOf(noReuse);
  const base = 'You are a helpful assistant. Answer briefly and politely. The question is:';
  await generate(noReuse, base, { ...GREEDY, max_tokens: 2 });
  const evaluatedBefore = loop.stats.promptTokensEvaluated;
  const second = await generate(noReuse, `${base} what is the capital of France?`, {
    ...GREEDY,
    max_tokens: 2,
  });
  assert.equal(second.parameters.cached_tokens, 0);
  assert.equal(loop.stats.promptTokensEvaluated - evaluatedBefore, second.parameters.prompt_tokens);
});

test('llama backend - chat messages are rendered with the model template', async () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello there' },
  ];
  const chat = await generate(model, JSON.stringify(messages), { ...GREEDY, chat: true, max_tokens: 4 });
  const rendered = new ChatTemplate(model.info.llm!.chatTemplate!, {
    bosToken: '<s>',
    eosToken: '</s>',
  }).render(messages);
  assert.match(rendered, /^<s>\[INST\] <<SYS>>\nBe brief\.\n<<\/SYS>>\n\nHello there \[\/INST\]$/);
  const plain = await generate(model, rendered, { ...GREEDY, max_tokens: 4 });
  assert.equal(chat.parameters.prompt_tokens, plain.parameters.prompt_tokens);
  assert.equal(chat.text, plain.text);
  await assert.rejects(
    generate(model, '[{"role": 1}]', { chat: true }),
    (e: unknown) => (e as InfergridError).code === 'INVALID_ARGUMENT',
  );
});

test('llama backend - max_tokens, stop strings and finish_reason', async () => {
  const full = await generate(model, 'A list of fruits:', { ...GREEDY, max_tokens: 10 });
  assert.equal(full.parameters.finish_reason, 'length');
  // a stop string from the middle of the greedy text: the same run stops just before it
  const at = Math.floor(full.text.length / 2);
  const stop = full.text.slice(at, at + 3);
  const stopped = await generate(model, 'A list of fruits:', {
    ...GREEDY,
    max_tokens: 10,
    stop: JSON.stringify([stop]),
  });
  assert.equal(stopped.parameters.finish_reason, 'stop');
  assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(stop)));
  assert.equal(stopped.deltas.join(''), stopped.text);
  await assert.rejects(
    generate(model, 'x', { max_tokens: 100_000 }),
    (e: unknown) =>
      (e as InfergridError).code === 'INVALID_ARGUMENT' && /max_tokens/.test((e as Error).message),
  );
});

test('llama backend - a request fills its context at most, then ends with finish_reason length', async () => {
  const r = await generate(single, 'Count:', { ...GREEDY });
  assert.equal(r.parameters.finish_reason, 'length');
  assert.equal((r.parameters.prompt_tokens as number) + (r.parameters.completion_tokens as number), 128);
});

test('llama backend - 16 concurrent requests complete on 4 sequences', async () => {
  const results = await Promise.all(
    Array.from({ length: 16 }, (_, i) =>
      generate(model, `Request number ${i} says`, { ...GREEDY, max_tokens: 4 }),
    ),
  );
  for (const r of results) {
    assert.equal(r.parameters.completion_tokens, 4);
    assert.equal(r.deltas.join(''), r.text);
  }
});

test('llama backend - beyond its sequences and queue a model answers OVERLOADED', async () => {
  const running = generate(single, 'First', { ...GREEDY, max_tokens: 4 });
  await assert.rejects(
    generate(single, 'Second', { ...GREEDY, max_tokens: 4 }),
    (e: unknown) => (e as InfergridError).code === 'OVERLOADED',
  );
  await running;
});

test('llama backend - a ChatML (qwen2 vocabulary) model: template special tokens are single tokens', async (t) => {
  const qwen = tinyGguf({ vocab: 'qwen2', weights: 'f16' });
  const config = configSchema.parse({
    models: [{ name: 'qwen', backend: 'llama', path: qwen.path, llama: { contextSize: 128, sequences: 1 } }],
  }).models[0]!;
  const m = await backend.load(config, { warn: () => {} });
  t.after(() => m.dispose());
  assert.match(m.info.llm!.chatTemplate!, /<\|im_start\|>/);
  assert.equal(m.info.llm!.vocabularySize, 151936);
  const messages = [{ role: 'user', content: 'hi' }];
  const r = await generate(m, JSON.stringify(messages), { ...GREEDY, chat: true, max_tokens: 3 });
  assert.equal(r.parameters.finish_reason, 'length');
  assert.equal(r.parameters.completion_tokens, 3);
  // the prompt is the ChatML rendering: the same tokens, so the same greedy text
  const chatml = new ChatTemplate(m.info.llm!.chatTemplate!, { bosToken: '', eosToken: '' });
  const rendered = chatml.render(messages);
  assert.match(rendered, /<\|im_start\|>user\nhi<\|im_end\|>\n<\|im_start\|>assistant\n$/);
  const plain = await generate(m, rendered, { ...GREEDY, max_tokens: 3 });
  assert.equal(r.parameters.prompt_tokens, plain.parameters.prompt_tokens);
  assert.equal(r.text, plain.text);
  // special tokens in prompt text are parsed (as llama-server does): one token, not six
  const special = await generate(m, '<|im_start|>', { ...GREEDY, max_tokens: 1 });
  assert.equal(special.parameters.prompt_tokens, 1);
});

test('llama backend - an embedding input at the context edge: the last that fits, and one more is INVALID_ARGUMENT', async () => {
  // "a a a …": one token a word, and the model adds BOS, so n words evaluate as n + 1 tokens
  const { contextSize, embeddingSize } = model.info.llm!;
  const words = (n: number) => prompt(Array.from({ length: n }, () => 'a').join(' '));
  const embed = (n: number) =>
    model.infer(words(n), { signal: new AbortController().signal, parameters: {}, outputs: ['embedding'] });
  const [vector] = await embed(contextSize - 2);
  assert.equal(vector!.name, 'embedding');
  assert.deepEqual(vector!.shape, [embeddingSize]);
  await assert.rejects(embed(contextSize - 1), (e: unknown) => {
    assert.equal((e as InfergridError).code, 'INVALID_ARGUMENT', String(e));
    assert.match(
      (e as Error).message,
      new RegExp(`the input is ${contextSize} tokens .*embeds at most ${contextSize - 1}`),
    );
    return true;
  });
});

test('llama backend - one step is one llama_decode, with every sequence in it', async (t) => {
  // node-llama-cpp internals (pinned 3.21.1): count the native decode calls and their batches
  const { getLlama } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never' });
  const llamaModel = await llama.loadModel({ modelPath: tinyGguf().path });
  const context = await llamaModel.createContext({
    contextSize: 128,
    sequences: 4,
    threads: 1,
    batchSize: 64,
  });
  t.after(async () => {
    await context.dispose();
    await llamaModel.dispose();
  });
  const native = (context as unknown as { _ctx: Record<string, (...args: unknown[]) => unknown> })._ctx;
  let decodes = 0;
  const decodeBatch = native['decodeBatch']!.bind(native);
  Object.defineProperty(native, 'decodeBatch', {
    value: (...args: unknown[]) => {
      decodes++;
      return decodeBatch(...args);
    },
  });
  const decode = new NodeLlamaDecodeContext(
    llamaModel,
    context,
    { contextSize: 128, vocabularySize: 32000 },
    (await import('node-llama-cpp')).TokenBias,
  );
  const loop = new StepLoop(decode, { stepTokens: 64, maxQueued: 4 });
  const prompt = llamaModel.tokenize('Four streams decode together') as number[];
  const jobs = [0, 1, 2, 3].map((i) =>
    loop.submit({
      prompt: [...prompt, 100 + i],
      maxTokens: 6 + i,
      minTokens: 0,
      ignoreEos: true,
      sampling: { temperature: 0, topP: 1, topK: 0, seed: 1, repeatPenalty: 1 },
      signal: new AbortController().signal,
      onToken: () => false,
      blocked: () => false,
    }),
  );
  await Promise.all(jobs);
  assert.equal(loop.stats.steps, 9, 'the longest request: its prompt step and 8 more');
  assert.equal(decodes, loop.stats.steps);
});

test('llama backend - kept samplers sample what controlledEvaluate samples, and the pinned node-llama-cpp takes them', async (t) => {
  const nlc = await import('node-llama-cpp');
  const llama = await nlc.getLlama({ gpu: false, build: 'never' });
  const llamaModel = await llama.loadModel({ modelPath: tinyGguf().path });
  const contexts = [
    await llamaModel.createContext({ contextSize: 128, sequences: 2, threads: 1, batchSize: 64 }),
    await llamaModel.createContext({ contextSize: 128, sequences: 2, threads: 1, batchSize: 64 }),
  ];
  const decodes = contexts.map(
    (context, i) =>
      new NodeLlamaDecodeContext(
        llamaModel,
        context,
        { contextSize: 128, vocabularySize: 32000 },
        nlc.TokenBias,
        {
          keepSamplers: i === 0,
        },
      ),
  );
  t.after(async () => {
    for (const d of decodes) d.dispose();
    for (const c of contexts) await c.dispose();
    await llamaModel.dispose();
  });
  assert.equal(
    decodes[0]!.keepsSamplers,
    true,
    'node-llama-cpp 3.21.1 has every member the kept samplers use',
  );
  assert.equal(decodes[1]!.keepsSamplers, false);

  // seeded sampling at temperature > 0 with top-k, top-p, a repeat penalty and EOS banned: every
  // option goes through the sampler, so a config not applied (or a sampler's state carried over
  // wrongly) changes the tokens
  const run = async (decode: NodeLlamaDecodeContext) => {
    const loop = new StepLoop(decode, { stepTokens: 64, maxQueued: 4 });
    const made: number[][] = [[], []];
    const base = llamaModel.tokenize('Kept samplers and fresh ones agree') as number[];
    await Promise.all(
      [0, 1].map((i) =>
        loop.submit({
          prompt: [...base, 200 + i],
          maxTokens: 16,
          minTokens: 0,
          ignoreEos: true,
          sampling: { temperature: 0.9, topP: 0.95, topK: 50, seed: 7 + i, repeatPenalty: 1.2 },
          signal: new AbortController().signal,
          onToken: (token) => {
            made[i]!.push(token);
            return false;
          },
          blocked: () => false,
        }),
      ),
    );
    return made;
  };
  const [kept, fresh] = [await run(decodes[0]!), await run(decodes[1]!)];
  assert.equal(kept[0]!.length, 16);
  assert.deepEqual(kept, fresh);
  assert.notDeepEqual(kept[0], kept[1], 'the two requests sampled differently (their seeds differ)');
});
