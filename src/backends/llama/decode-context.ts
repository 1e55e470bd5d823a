/**
 * node-llama-cpp behind the decode loop's DecodeContext. A step calls
 * `sequence.controlledEvaluate` for every item in the same tick (in the items' order, which
 * the loop makes ascending sequence id) and awaits them together: node-llama-cpp queues each
 * call and dispatches them as one llama_batch, so one step is one llama_decode as long as its
 * tokens fit the context's batchSize (set to the step budget).
 */

import type {
  ControlledEvaluateInputItem,
  LlamaContext,
  LlamaContextSequence,
  LlamaModel,
  Token as NlcToken,
  TokenBias,
} from 'node-llama-cpp';
import type { DecodeContext, StepItem, StepSampling, Token } from '../../llm/index.ts';
import { type KeptSamplers, keptSamplersFor } from './kept-samplers.ts';

type TokenBiasClass = typeof TokenBias;

export class NodeLlamaDecodeContext implements DecodeContext {
  readonly sequences: number;
  readonly contextSize: number;
  readonly #model: LlamaModel;
  readonly #sequences: LlamaContextSequence[];
  readonly #TokenBias: TokenBiasClass;
  readonly #vocabularySize: number;
  #banEog: TokenBias | undefined;
  /** A sampler per sequence, kept (kept-samplers.ts); undefined: controlledEvaluate per call. */
  readonly #kept: KeptSamplers | undefined;

  constructor(
    model: LlamaModel,
    context: LlamaContext,
    sizes: { contextSize: number; vocabularySize: number },
    tokenBias: TokenBiasClass,
    options: { keepSamplers?: boolean } = {},
  ) {
    this.#model = model;
    this.#vocabularySize = sizes.vocabularySize;
    this.contextSize = sizes.contextSize;
    this.sequences = context.totalSequences;
    this.#TokenBias = tokenBias;
    // a fresh context hands out sequence ids 0..N-1 in order: #sequences[i] is sequence id i
    this.#sequences = Array.from({ length: context.totalSequences }, () => context.getSequence());
    this.#kept =
      options.keepSamplers === false ? undefined : keptSamplersFor(model, context, this.#sequences);
  }

  /** True when steps sample with kept samplers rather than controlledEvaluate's per-call ones. */
  get keepsSamplers(): boolean {
    return this.#kept !== undefined;
  }

  async step(items: readonly StepItem[]): Promise<Array<Token | undefined>> {
    const kept = this.#kept;
    if (kept !== undefined)
      return Promise.all(
        items.map((item) =>
          kept.evaluate(
            item.sequence,
            item.tokens as number[],
            item.sample === undefined ? undefined : this.#options(item.sample),
          ),
        ),
      );
    const calls = items.map((item) => {
      const seq = this.#sequences[item.sequence]!;
      const input: ControlledEvaluateInputItem[] = item.tokens.slice() as NlcToken[];
      if (item.sample !== undefined) {
        const last = input.length - 1;
        input[last] = [
          item.tokens[last] as NlcToken,
          { generateNext: { token: true, options: this.#options(item.sample) } },
        ];
      }
      return seq.controlledEvaluate(input);
    });
    const results = await Promise.all(calls);
    return results.map((r, i) =>
      items[i]!.sample === undefined ? undefined : (r.at(-1)?.next.token ?? undefined),
    );
  }

  async erase(sequence: number, start: number): Promise<void> {
    const seq = this.#sequences[sequence]!;
    if (start === 0) await seq.clearHistory();
    else if (start < seq.nextTokenIndex)
      await seq.eraseContextTokenRanges([{ start, end: seq.nextTokenIndex }]);
  }

  /** Frees the kept samplers (before the context is disposed). */
  dispose(): void {
    this.#kept?.dispose();
  }

  isEndOfGeneration(token: Token): boolean {
    return this.#model.isEogToken(token as NlcToken);
  }

  #options(s: StepSampling) {
    return {
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      seed: s.seed,
      ...(s.repeatPenalty !== 1 && s.penaltyTokens.length > 0
        ? { repeatPenalty: { punishTokens: s.penaltyTokens.slice() as NlcToken[], penalty: s.repeatPenalty } }
        : {}),
      ...(s.banEndOfGeneration ? { tokenBias: this.#banEndOfGeneration() } : {}),
    };
  }

  /** A bias that never samples an end-of-generation token (built once: it scans the vocabulary). */
  #banEndOfGeneration(): TokenBias {
    if (this.#banEog === undefined) {
      const bias = new this.#TokenBias(this.#model.tokenizer);
      for (let t = 0; t < this.#vocabularySize; t++) {
        if (this.#model.isEogToken(t as NlcToken)) bias.set(t as NlcToken, 'never');
      }
      this.#banEog = bias;
    }
    return this.#banEog;
  }
}
