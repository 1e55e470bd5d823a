/**
 * The sim backend's generative model: an LLM with no compute, for engine tests and benchmarks
 * of the streaming path (never what an LLM feature is judged on). Tokens are words, made on a
 * timer or on the next turn of the event loop: "tok1 tok2 …", or with `chat: true` the last
 * message's words in turn. Prompt tokens are the prompt's words. Its "end of sequence" comes
 * after `generate.tokens` tokens; max_tokens, min_tokens, ignore_eos and stop work as they do
 * on a real model. It counts the tokens it made, so tests can tell when generation stopped.
 */

import type { SimOptions } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { ParameterValue, Parameters } from '../protocol/index.ts';
import { LLM_INPUT, LLM_OUTPUT, LLM_PARAMETERS, LLM_RESULT_PARAMETERS } from '../llm/schema.ts';
import { type Tensor, decodeBytesElements, textTensor } from '../tensor/index.ts';
import { delay } from '../util/deadline.ts';
import type { LoadedModel, ModelInfo, StreamContext, StreamResult } from './types.ts';

export type GenerateOptions = NonNullable<SimOptions['generate']>;

const UTF8_DECODER = new TextDecoder();

function numberParameter(parameters: Parameters, name: string): number | undefined {
  const v = parameters[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0)
    throw new InfergridError('INVALID_ARGUMENT', `parameter "${name}" must be a non-negative integer`);
  return v;
}

/** The `stop` parameter: a JSON array of strings, or one string. */
export function stopStrings(value: ParameterValue | undefined): string[] {
  if (value === undefined || value === '') return [];
  if (typeof value !== 'string')
    throw new InfergridError(
      'INVALID_ARGUMENT',
      'parameter "stop" must be a string or a JSON array of strings',
    );
  if (!value.startsWith('[')) return [value];
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return [value];
  }
  if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === 'string'))
    throw new InfergridError('INVALID_ARGUMENT', 'parameter "stop" must be a JSON array of strings');
  return parsed.filter((s) => s.length > 0);
}

/** The words of a prompt, or of the messages of a chat (its last message's words make the reply). */
function promptOf(text: string, chat: boolean): { promptWords: string[]; replyWords: string[] } {
  const words = (s: string) => s.split(/\s+/).filter((w) => w.length > 0);
  if (!chat) return { promptWords: words(text), replyWords: [] };
  let messages: unknown;
  try {
    messages = JSON.parse(text);
  } catch {
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `"${LLM_INPUT}" with chat: true must be a JSON array of messages`,
    );
  }
  if (!Array.isArray(messages) || messages.length === 0)
    throw new InfergridError('INVALID_ARGUMENT', 'chat messages must be a non-empty array');
  const contents = messages.map((m) =>
    typeof (m as { content?: unknown })?.content === 'string' ? (m as { content: string }).content : '',
  );
  return { promptWords: contents.flatMap(words), replyWords: words(contents.at(-1) ?? '') };
}

export class SimGenerativeModel implements LoadedModel {
  readonly info: ModelInfo;
  readonly #options: GenerateOptions;
  #running = 0;
  /** Tokens made by every request so far. */
  generated = 0;

  constructor(options: GenerateOptions) {
    this.#options = options;
    this.info = {
      platform: 'infergrid_sim',
      inputs: [{ name: LLM_INPUT, datatype: 'BYTES', shape: [1] }],
      outputs: [{ name: LLM_OUTPUT, datatype: 'BYTES', shape: [1] }],
      llm: {
        contextSize: options.contextSize,
        vocabularySize: 0,
        embeddingSize: 0,
        sequences: options.sequences,
      },
    };
  }

  /** Without streaming: the same generation, the partial answers dropped. */
  async infer(inputs: Tensor[], ctx: Omit<StreamContext, 'emit'>): Promise<Tensor[]> {
    const result = await this.stream(inputs, { ...ctx, emit: async () => {} });
    return result.outputs;
  }

  async stream(inputs: Tensor[], ctx: StreamContext): Promise<StreamResult> {
    if (this.#running >= this.#options.sequences) {
      throw new InfergridError(
        'OVERLOADED',
        `all ${this.#options.sequences} sequences are generating (sim.generate.sequences); retry later`,
      );
    }
    this.#running++;
    try {
      return await this.#generate(inputs, ctx);
    } finally {
      this.#running--;
    }
  }

  async #generate(inputs: Tensor[], ctx: StreamContext): Promise<StreamResult> {
    const input = inputs.find((t) => t.name === LLM_INPUT) ?? inputs[0];
    const [prompt] = input ? decodeBytesElements(input.data, `"${LLM_INPUT}"`) : [];
    const p = ctx.parameters;
    const chat = p[LLM_PARAMETERS.chat] === true;
    const { promptWords, replyWords } = promptOf(UTF8_DECODER.decode(prompt ?? new Uint8Array()), chat);
    const { tokens, tokenMs, tokenBytes, contextSize } = this.#options;
    const promptTokens = promptWords.length;
    if (promptTokens >= contextSize) {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `the prompt has ${promptTokens} tokens; this model's context holds ${contextSize}`,
      );
    }
    const maxTokens = Math.min(
      numberParameter(p, LLM_PARAMETERS.maxTokens) ?? Infinity,
      contextSize - promptTokens,
    );
    const minTokens = numberParameter(p, LLM_PARAMETERS.minTokens) ?? 0;
    const eosAt = p[LLM_PARAMETERS.ignoreEos] === true ? Infinity : Math.max(tokens, minTokens);
    const stops = stopStrings(p[LLM_PARAMETERS.stop]);
    // text that could be the start of a stop string is held back until it is known not to be
    const holdBack = stops.reduce((n, s) => Math.max(n, s.length - 1), 0);
    let text = '';
    let sent = 0;
    let made = 0;
    let finish: 'stop' | 'length' = 'length';
    while (made < maxTokens) {
      if (made >= eosAt) {
        finish = 'stop';
        break;
      }
      if (tokenMs > 0) await delay(tokenMs, ctx.signal);
      else await new Promise<void>((resolve) => setImmediate(resolve));
      if (ctx.signal.aborted) throw ctx.signal.reason;
      made++;
      this.generated++;
      const word = replyWords.length > 0 ? replyWords[(made - 1) % replyWords.length]! : `tok${made}`;
      text += (made === 1 ? '' : ' ') + (tokenBytes > word.length ? word.padEnd(tokenBytes, '.') : word);
      const at =
        stops.length > 0
          ? Math.min(...stops.map((s) => text.indexOf(s, Math.max(0, sent - holdBack))).filter((i) => i >= 0))
          : Infinity;
      if (Number.isFinite(at)) {
        text = text.slice(0, at);
        finish = 'stop';
        break;
      }
      const ready = text.length - holdBack;
      if (ready > sent) {
        const delta = text.slice(sent, ready);
        sent = ready;
        await ctx.emit([textTensor(LLM_OUTPUT, delta)]);
      }
    }
    if (text.length > sent) await ctx.emit([textTensor(LLM_OUTPUT, text.slice(sent))]);
    return {
      outputs: [textTensor(LLM_OUTPUT, text)],
      parameters: {
        [LLM_RESULT_PARAMETERS.finishReason]: finish,
        [LLM_RESULT_PARAMETERS.promptTokens]: promptTokens,
        [LLM_RESULT_PARAMETERS.completionTokens]: made,
        [LLM_RESULT_PARAMETERS.cachedTokens]: 0,
      },
    };
  }

  async dispose(): Promise<void> {}
}
