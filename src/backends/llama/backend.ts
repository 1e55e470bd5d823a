/**
 * The `llama` backend: GGUF models through node-llama-cpp 3.21.1 on the CPU. Each model
 * instance has one context with `llama.sequences` sequences and one decode loop (StepLoop),
 * which batches every running request into one decode per step. Requests arrive through
 * `stream` (the worker hands each straight here, bypassing its batcher); `infer` runs the same
 * path and returns the final text.
 *
 * node-llama-cpp is imported on first use and getLlama runs once per process (per backend
 * object), with `build: 'never'`: the prebuilt CPU binary or a clear error, never a compile.
 */

import { randomInt } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type {
  Llama,
  LlamaContext,
  LlamaEmbeddingContext,
  LlamaModel,
  Token as NlcToken,
} from 'node-llama-cpp';
import type { ModelConfig } from '../../config/index.ts';
import { InfergridError } from '../../errors.ts';
import {
  ChatTemplate,
  LLM_INPUT,
  LLM_EMBEDDING_OUTPUT,
  LLM_OUTPUT,
  LLM_RESULT_PARAMETERS,
  StepLoop,
  TextStream,
  type Token,
  parseChatMessages,
  parseGenerationOptions,
} from '../../llm/index.ts';
import type { Parameters } from '../../protocol/index.ts';
import { type Tensor, type TensorSpec, decodeBytesElements, textTensor } from '../../tensor/index.ts';
import { reconcileSpecs } from '../schema-check.ts';
import type {
  Backend,
  InferContext,
  LlmInfo,
  LlmLoopStats,
  LoadContext,
  LoadedModel,
  ModelInfo,
  StreamContext,
  StreamResult,
} from '../types.ts';
import { NodeLlamaDecodeContext } from './decode-context.ts';

/** Tokens per sequence when the config does not say (or the model's train context, if smaller). */
export const DEFAULT_LLAMA_CONTEXT_SIZE = 2048;
export const LLAMA_PLATFORM = 'infergrid_llama';
/** Largest prompt accepted, in bytes (a context of 128k tokens is well under it). */
const MAX_PROMPT_BYTES = 4 * 1024 * 1024;

const TEXT_INPUT: TensorSpec = { name: LLM_INPUT, datatype: 'BYTES', shape: [1] };
const TEXT_OUTPUT: TensorSpec = { name: LLM_OUTPUT, datatype: 'BYTES', shape: [1] };
const EMBEDDING_OUTPUT: TensorSpec = { name: LLM_EMBEDDING_OUTPUT, datatype: 'FP32', shape: [-1] };

/** Whether a request asks for the embedding alone (then it embeds its prompt instead of generating). */
function wantsEmbedding(outputs: readonly string[] | undefined): boolean {
  return outputs !== undefined && outputs.length > 0 && outputs.every((o) => o === LLM_EMBEDDING_OUTPUT);
}

type NodeLlamaCpp = typeof import('node-llama-cpp');

interface Runtime {
  nlc: NodeLlamaCpp;
  llama: Llama;
}

/** Threads of every llama instance loaded in this process, for the oversubscription warning. */
interface ThreadLedger {
  inUse: number;
}

function promptText(inputs: readonly Tensor[]): string {
  const input = inputs.find((t) => t.name === LLM_INPUT);
  if (!input) throw new InfergridError('INVALID_ARGUMENT', `input "${LLM_INPUT}" is missing`);
  const elements = decodeBytesElements(input.data, `input "${LLM_INPUT}"`, 2);
  if (elements.length !== 1)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `input "${LLM_INPUT}": expected BYTES [1], got ${elements.length} elements`,
    );
  const bytes = elements[0]!;
  if (bytes.byteLength > MAX_PROMPT_BYTES)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `input "${LLM_INPUT}": ${bytes.byteLength} bytes, more than the ${MAX_PROMPT_BYTES} accepted`,
    );
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
}

/** node-llama-cpp 3.21.1 exposes no vocabulary size: the token embedding's rows are it. */
export function vocabularySizeOf(model: LlamaModel): number {
  const embd = model.fileInfo.fullTensorInfo?.find((t) => t.name === 'token_embd.weight');
  const rows = embd?.dimensions[1];
  if (rows !== undefined) return Number(rows);
  const tokens = (model.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: unknown } } }).tokenizer?.ggml
    ?.tokens;
  return Array.isArray(tokens) ? tokens.length : 0;
}

class LlamaInstance implements LoadedModel {
  readonly info: ModelInfo;
  readonly loop: StepLoop;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #template: ChatTemplate | undefined;
  readonly #maxTokens: number;
  readonly #release: () => void;
  readonly #threads: number;
  /** Made on the first embedding request (a context of its own), then reused one request at a time. */
  #embedder: Promise<LlamaEmbeddingContext> | undefined;
  #embedQueue: Promise<unknown> = Promise.resolve();

  constructor(args: {
    info: ModelInfo;
    model: LlamaModel;
    context: LlamaContext;
    loop: StepLoop;
    template: ChatTemplate | undefined;
    maxTokens: number;
    release: () => void;
    threads: number;
  }) {
    this.info = args.info;
    this.#model = args.model;
    this.#context = args.context;
    this.loop = args.loop;
    this.#template = args.template;
    this.#maxTokens = args.maxTokens;
    this.#release = args.release;
    this.#threads = args.threads;
  }

  llmStats(): LlmLoopStats {
    const { loop } = this;
    const llm = this.info.llm!;
    return {
      running: loop.running,
      waiting: loop.waiting,
      kvTokens: loop.kvTokens,
      kvCapacityTokens: llm.contextSize * llm.sequences,
      steps: loop.stats.steps,
      promptTokens: loop.stats.promptTokensEvaluated + loop.stats.promptTokensCached,
      cachedPromptTokens: loop.stats.promptTokensCached,
    };
  }

  async infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]> {
    const result = await this.stream(inputs, { ...ctx, signal: ctx.signal, emit: async () => {} });
    return result.outputs;
  }

  async stream(inputs: Tensor[], ctx: StreamContext): Promise<StreamResult> {
    if (wantsEmbedding(ctx.outputs)) return this.#embed(promptText(inputs), ctx.signal);
    const options = parseGenerationOptions(ctx.parameters, { maxTokens: this.#maxTokens }, () =>
      randomInt(0, 2 ** 32 - 1),
    );
    const prompt = this.#tokenize(promptText(inputs), options.chat);
    // the request stops when its client does, or when its reader fails
    const stopped = new AbortController();
    const signal = AbortSignal.any([ctx.signal, stopped.signal]);
    const text = new TextStream({
      detokenize: (tokens, previous) =>
        this.#model.detokenize(tokens as NlcToken[], false, previous as NlcToken[]),
      previous: prompt.slice(-8),
      stop: options.stop,
      emit: (delta) => ctx.emit([textTensor(TEXT_OUTPUT.name, delta)]),
      onReady: () => this.loop.wake(),
      onError: (err) => stopped.abort(err),
    });
    const outcome = await this.loop.submit({
      prompt,
      maxTokens: options.maxTokens,
      minTokens: options.minTokens,
      ignoreEos: options.ignoreEos,
      sampling: options.sampling,
      signal,
      onToken: (token) => text.push(token),
      blocked: () => text.blocked(),
    });
    const whole = await text.end(outcome.finishReason === 'stop');
    const parameters: Parameters = {
      [LLM_RESULT_PARAMETERS.finishReason]: outcome.finishReason,
      [LLM_RESULT_PARAMETERS.promptTokens]: outcome.promptTokens,
      [LLM_RESULT_PARAMETERS.completionTokens]: outcome.completionTokens,
      [LLM_RESULT_PARAMETERS.cachedTokens]: outcome.cachedTokens,
    };
    return { outputs: [textTensor(TEXT_OUTPUT.name, whole)], parameters };
  }

  /** The embedding of `text` (OpenAI's /v1/embeddings), one request at a time on the embedding context. */
  async #embed(text: string, signal: AbortSignal): Promise<StreamResult> {
    const llm = this.info.llm!;
    this.#embedder ??= this.#model.createEmbeddingContext({
      contextSize: llm.contextSize,
      threads: this.#threads,
    });
    const embedder = await this.#embedder;
    // tokenized once, as node-llama-cpp tokenizes text; it adds the vocabulary's begin/end
    // tokens and refuses (with a plain Error) an input that fills the context
    const tokens = this.#model.tokenize(text);
    const inputTokens = embedder.calculateInputLength(tokens);
    if (inputTokens >= llm.contextSize)
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `the input is ${inputTokens} tokens with the ones the model adds; this model embeds at most ${llm.contextSize - 1}: shorten it`,
      );
    const run = this.#embedQueue.then(async () => {
      signal.throwIfAborted();
      return embedder.getEmbeddingFor(tokens);
    });
    this.#embedQueue = run.catch(() => {});
    const { vector } = await run;
    const values = Float32Array.from(vector);
    return {
      outputs: [
        {
          name: LLM_EMBEDDING_OUTPUT,
          datatype: 'FP32',
          shape: [values.length],
          data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
        },
      ],
      parameters: { [LLM_RESULT_PARAMETERS.promptTokens]: tokens.length },
    };
  }

  /** The prompt's tokens: special tokens parsed (as llama-server does), BOS added when the model wants one. */
  #tokenize(text: string, chat: boolean): Token[] {
    let source = text;
    if (chat) {
      if (!this.#template)
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `model has no chat template; send a plain prompt (chat: false)`,
        );
      source = this.#template.render(parseChatMessages(text));
    }
    const tokens: Token[] = this.#model.tokenize(source, true);
    const bos = this.#model.tokens.bos;
    if (this.#model.tokens.shouldPrependBosToken && bos !== null && tokens[0] !== bos) tokens.unshift(bos);
    return tokens;
  }

  async dispose(): Promise<void> {
    this.loop.close(new InfergridError('MODEL_NOT_READY', 'the model is unloading'));
    await this.loop.idle(); // the step in flight finishes before its context goes
    this.#release();
    await this.#embedQueue;
    if (this.#embedder) await (await this.#embedder).dispose();
    await this.#context.dispose();
    await this.#model.dispose();
  }
}

export function createLlamaBackend(): Backend {
  let runtime: Promise<Runtime> | undefined;
  const ledger: ThreadLedger = { inUse: 0 };

  const start = async (): Promise<Runtime> => {
    const nlc = await import('node-llama-cpp');
    const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.warn });
    return { nlc, llama };
  };

  return {
    name: 'llama',
    async load(config: ModelConfig, ctx: LoadContext): Promise<LoadedModel> {
      if (!config.path)
        throw new InfergridError('MODEL_LOAD_FAILED', `model "${config.name}": no path to a GGUF file`);
      runtime ??= start().catch((err: unknown) => {
        runtime = undefined;
        throw err;
      });
      let rt: Runtime;
      try {
        rt = await runtime;
      } catch (err) {
        throw new InfergridError(
          'MODEL_LOAD_FAILED',
          `model "${config.name}": node-llama-cpp has no usable CPU binary here: ${(err as Error).message}`,
          { cause: err },
        );
      }
      const opts = config.llama;
      let model: LlamaModel;
      try {
        model = await rt.llama.loadModel({ modelPath: config.path, gpuLayers: 0 });
      } catch (err) {
        throw new InfergridError(
          'MODEL_LOAD_FAILED',
          `model "${config.name}": node-llama-cpp could not load ${config.path}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      let context: LlamaContext | undefined;
      try {
        const trainContextSize = model.trainContextSize;
        const contextSize = opts.contextSize ?? Math.min(DEFAULT_LLAMA_CONTEXT_SIZE, trainContextSize);
        if (contextSize > trainContextSize)
          ctx.warn(
            `model "${config.name}": llama.contextSize ${contextSize} is above the ${trainContextSize} tokens it was trained with`,
          );
        const maxTokens = opts.maxTokens ?? contextSize;
        if (maxTokens >= contextSize && opts.maxTokens !== undefined)
          throw new InfergridError(
            'MODEL_LOAD_FAILED',
            `model "${config.name}": llama.maxTokens ${maxTokens} leaves no room for a prompt in contextSize ${contextSize}`,
          );
        const cores = availableParallelism();
        if (ledger.inUse + opts.threads > cores)
          ctx.warn(
            `model "${config.name}": ${ledger.inUse + opts.threads} llama threads in this process on ${cores} cores; ` +
              'they will fight (and every worker process on the machine adds its own): lower llama.threads',
          );
        context = await model.createContext({
          contextSize,
          sequences: opts.sequences,
          threads: opts.threads,
          batchSize: opts.stepTokens,
        });
        const vocabularySize = vocabularySizeOf(model);
        const decode = new NodeLlamaDecodeContext(
          model,
          context,
          { contextSize, vocabularySize },
          rt.nlc.TokenBias,
        );
        const loop = new StepLoop(decode, {
          stepTokens: opts.stepTokens,
          prefillChunk: opts.prefillChunk,
          maxQueued: opts.maxQueued,
          prefixReuse: opts.prefixReuse,
        });
        const templateSource = model.fileInfo.metadata?.tokenizer?.chat_template;
        const template =
          typeof templateSource === 'string'
            ? new ChatTemplate(templateSource, {
                bosToken: model.tokens.bosString ?? '',
                eosToken: model.tokens.eosString ?? '',
              })
            : undefined;
        const llm: LlmInfo = {
          contextSize,
          trainContextSize,
          vocabularySize,
          embeddingSize: model.embeddingVectorSize,
          chatTemplate: template?.source,
          sequences: opts.sequences,
        };
        const info: ModelInfo = {
          platform: LLAMA_PLATFORM,
          inputs: reconcileSpecs(config.name, 'input', [TEXT_INPUT], config.inputs),
          outputs: reconcileSpecs(config.name, 'output', [TEXT_OUTPUT, EMBEDDING_OUTPUT], config.outputs),
          llm,
        };
        ledger.inUse += opts.threads;
        return new LlamaInstance({
          info,
          model,
          context,
          loop,
          template,
          maxTokens,
          release: () => {
            ledger.inUse -= opts.threads;
            decode.dispose();
          },
          threads: opts.threads,
        });
      } catch (err) {
        await context?.dispose();
        await model.dispose();
        if (err instanceof InfergridError) throw err;
        throw new InfergridError('MODEL_LOAD_FAILED', `model "${config.name}": ${(err as Error).message}`, {
          cause: err,
        });
      }
    },
  };
}
