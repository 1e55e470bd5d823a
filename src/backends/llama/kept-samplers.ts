/**
 * One native sampler per sequence, kept for the life of the context, instead of the new one
 * node-llama-cpp's `controlledEvaluate` builds for every call.
 *
 * Why: node-llama-cpp 3.21.1 constructs an `AddonSampler` per `controlledEvaluate` call, on the
 * main thread, and its constructor sizes a candidates array to the whole vocabulary (32,000 ×
 * 12 bytes for a llama vocabulary), zeroed; the array is freed only when the wrapper is
 * garbage-collected. The decode loop calls it for every sequence on every step, so each token
 * paid for that allocation, its page faults and its later collection, serially before the step's
 * batch could go out (the largest item of the worker's main-thread profile at 16 streams).
 *
 * How: the same steps `controlledEvaluate` takes, on the sequence's internal members that it
 * uses itself (`_decodeTokens`, `_resolveSamplerConfig`, the context's `sampleToken`), with a
 * sampler made once per sequence; `applyConfig` changes only what differs from the last call.
 * The evaluation lock and the token predictor it also handles are not needed here: the loop
 * never evaluates a sequence twice at once and sets no predictor. These members are not public
 * API, so `keptSamplersFor` checks that every one is there (node-llama-cpp is pinned at 3.21.1)
 * and answers undefined otherwise, and the caller falls back to `controlledEvaluate`. A test
 * asserts both paths sample the same tokens, and that the pinned version takes this one.
 */

import type { LlamaContext, LlamaContextSequence, LlamaModel } from 'node-llama-cpp';

/** node-llama-cpp's default evaluation priority (LlamaContext.js). */
const EVALUATION_PRIORITY = 5;

interface NativeSampler {
  applyConfig(config: object): void;
  dispose(): void;
}

/** The members of a node-llama-cpp 3.21.1 sequence that evaluating with a kept sampler uses. */
interface SequenceInternals {
  _decodeTokens(
    tokens: number[],
    logits: boolean[],
    evaluationPriority: number,
    tokenMeter: unknown,
    contextShift: { size: unknown; strategy: unknown },
    logitDataMapper: (batchLogitIndex: number, tokenIndex: number) => Promise<number | null | undefined>,
    afterBatchAction: unknown,
  ): Promise<Array<number | null | undefined>>;
  _resolveSamplerConfig(options: object): object;
  _tokenMeter: unknown;
  _contextShift: { size: unknown; strategy: unknown };
  _takeIntervalCheckpointIfNeededAfterBatch: unknown;
}

interface ContextInternals {
  _ctx: { sampleToken(batchLogitIndex: number, sampler: NativeSampler): Promise<number> };
}

interface ModelInternals {
  _model: object;
  _llama: { _bindings: { AddonSampler: new (model: object) => NativeSampler } };
}

/** Made by keptSamplersFor, which checks the internals first. */
export class KeptSamplers {
  readonly #sequences: SequenceInternals[];
  readonly #samplers: NativeSampler[];
  readonly #sampleToken: ContextInternals['_ctx'];

  constructor(sequences: SequenceInternals[], samplers: NativeSampler[], ctx: ContextInternals['_ctx']) {
    this.#sequences = sequences;
    this.#samplers = samplers;
    this.#sampleToken = ctx;
  }

  /**
   * Appends `tokens` to sequence `index`'s KV; with `options` (node-llama-cpp's sampling options),
   * resolves with the token sampled after the last of them (undefined if none was).
   */
  async evaluate(index: number, tokens: number[], options: object | undefined): Promise<number | undefined> {
    const seq = this.#sequences[index]!;
    const sampler = this.#samplers[index]!;
    const logits = new Array<boolean>(tokens.length).fill(false);
    const config = options === undefined ? undefined : seq._resolveSamplerConfig(options);
    if (config !== undefined) logits[tokens.length - 1] = true;
    const results = await seq._decodeTokens(
      tokens,
      logits,
      EVALUATION_PRIORITY,
      seq._tokenMeter,
      { size: seq._contextShift.size, strategy: seq._contextShift.strategy },
      async (batchLogitIndex) => {
        if (config === undefined) return undefined;
        // the step's items take turns on the main thread: nothing runs between these two calls
        sampler.applyConfig(config);
        const token = await this.#sampleToken.sampleToken(batchLogitIndex, sampler);
        return token === -1 ? null : token;
      },
      seq._takeIntervalCheckpointIfNeededAfterBatch,
    );
    return results[tokens.length - 1] ?? undefined;
  }

  dispose(): void {
    for (const s of this.#samplers) s.dispose();
  }
}

/** Kept samplers for `sequences` of `context`, or undefined when this node-llama-cpp lacks a member they use. */
export function keptSamplersFor(
  model: LlamaModel,
  context: LlamaContext,
  sequences: readonly LlamaContextSequence[],
): KeptSamplers | undefined {
  const m = model as unknown as Partial<ModelInternals>;
  const ctx = (context as unknown as Partial<ContextInternals>)._ctx;
  const AddonSampler = m._llama?._bindings?.AddonSampler;
  const internals = sequences as unknown as Array<Partial<SequenceInternals>>;
  const usable =
    typeof AddonSampler === 'function' &&
    m._model !== undefined &&
    typeof ctx?.sampleToken === 'function' &&
    internals.every(
      (s) =>
        typeof s._decodeTokens === 'function' &&
        typeof s._resolveSamplerConfig === 'function' &&
        typeof s._takeIntervalCheckpointIfNeededAfterBatch === 'function' &&
        s._contextShift !== undefined &&
        s._tokenMeter !== undefined,
    );
  if (!usable) return undefined;
  const samplers = internals.map(() => new AddonSampler(m._model!));
  return new KeptSamplers(internals as SequenceInternals[], samplers, ctx!);
}
