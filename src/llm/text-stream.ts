/**
 * One request's generated tokens turned into streamed text: whole UTF-8 characters, stop
 * strings cut, deltas handed to the reader (`emit`) one at a time.
 *
 * Trade-off (backpressure without stalling the loop): at most one emit is in flight; text made
 * meanwhile waits in a small per-request queue and goes out with the next emit. Once that queue
 * holds `maxQueuedTokens` tokens the request reports `blocked()`, and the decode loop leaves its
 * sequence out of steps until the reader catches up (`onReady`), so a slow reader slows only
 * its own request and the buffer stays bounded.
 */

import { StopStringMatcher } from './stop-strings.ts';
import type { Token } from './step-loop.ts';
import { type Detokenize, StreamDetokenizer } from './stream-detokenizer.ts';

/** Tokens a request may make while its reader still has an emit pending. */
const DEFAULT_EMIT_QUEUE_TOKENS = 8;

export interface TextStreamOptions {
  detokenize: Detokenize;
  /** Tokens before the first generated one (the prompt's tail), for detokenization context. */
  previous: readonly Token[];
  stop: readonly string[];
  /** Sends a delta; resolves when the reader has room. */
  emit(delta: string): Promise<void>;
  /** The reader caught up (the request may run again). */
  onReady(): void;
  /** An emit failed (the reader is gone): the request should stop. */
  onError(err: unknown): void;
  maxQueuedTokens?: number | undefined;
}

export class TextStream {
  /** The whole text so far (sent or queued). */
  text = '';
  readonly #options: TextStreamOptions;
  readonly #detokenizer: StreamDetokenizer;
  readonly #stops: StopStringMatcher;
  readonly #maxQueuedTokens: number;
  #unsent = '';
  #unsentTokens = 0;
  #inFlight: Promise<void> | undefined;
  #failed: { err: unknown } | undefined;

  constructor(options: TextStreamOptions) {
    this.#options = options;
    this.#detokenizer = new StreamDetokenizer(options.detokenize, options.previous);
    this.#stops = new StopStringMatcher(options.stop);
    this.#maxQueuedTokens = options.maxQueuedTokens ?? DEFAULT_EMIT_QUEUE_TOKENS;
  }

  /** Takes a generated token; true when a stop string completed (the text ends before it). */
  push(token: Token): boolean {
    const { text, stopped } = this.#stops.push(this.#detokenizer.push(token));
    this.#append(text, 1);
    return stopped;
  }

  /** True while the reader has an emit pending and the queue is full. */
  blocked(): boolean {
    return this.#inFlight !== undefined && this.#unsentTokens >= this.#maxQueuedTokens;
  }

  /**
   * Ends the text: what is held back goes out (unless a stop string ended it), and resolves
   * with the whole text once the reader has taken every delta. Rejects if an emit failed.
   */
  async end(stopped: boolean): Promise<string> {
    if (!stopped) {
      const { text, stopped: late } = this.#stops.push(this.#detokenizer.flush());
      this.#append(late ? text : text + this.#stops.flush(), 0);
    }
    while (this.#inFlight !== undefined) await this.#inFlight;
    if (this.#failed) throw this.#failed.err;
    return this.text;
  }

  #append(text: string, tokens: number): void {
    this.text += text;
    this.#unsent += text;
    this.#unsentTokens += tokens;
    this.#pump();
  }

  #pump(): void {
    if (this.#inFlight !== undefined || this.#failed) return;
    if (this.#unsent === '') {
      this.#unsentTokens = 0;
      return;
    }
    const delta = this.#unsent;
    this.#unsent = '';
    this.#unsentTokens = 0;
    this.#inFlight = this.#options.emit(delta).then(
      () => {
        this.#inFlight = undefined;
        this.#pump();
        if (this.#inFlight === undefined) this.#options.onReady();
      },
      (err: unknown) => {
        this.#inFlight = undefined;
        this.#failed = { err };
        this.#options.onError(err);
      },
    );
  }
}
