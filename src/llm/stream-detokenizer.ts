/**
 * Streaming detokenization that never splits a UTF-8 character. Token pieces are bytes (SPM
 * byte-fallback tokens, byte-level BPE), so a character can span up to 4 tokens; while the
 * decoded text ends in U+FFFD the tokens are held back. Earlier tokens are passed as context
 * because an SPM piece's leading space depends on what came before (with no previous token,
 * "▁word" decodes to "word"); seed it with the prompt's tail.
 */

import type { Token } from './step-loop.ts';

/** Decodes `tokens` as text, given the tokens just before them (`previous`). */
export type Detokenize = (tokens: readonly Token[], previous: readonly Token[]) => string;

/** Longest UTF-8 sequence, in tokens that may each carry one byte. */
const MAX_HELD_TOKENS = 4;
/** Previous tokens passed as context. */
const CONTEXT_TOKENS = 8;

export class StreamDetokenizer {
  readonly #detokenize: Detokenize;
  #pending: Token[] = [];
  #previous: Token[];

  constructor(detokenize: Detokenize, previous: readonly Token[] = []) {
    this.#detokenize = detokenize;
    this.#previous = previous.slice(-CONTEXT_TOKENS);
  }

  /** The text this token completes ('' while a character is still incomplete). */
  push(token: Token): string {
    this.#pending.push(token);
    const text = this.#detokenize(this.#pending, this.#previous);
    if (text.endsWith('\uFFFD') && this.#pending.length < MAX_HELD_TOKENS) return '';
    this.#commit();
    return text;
  }

  /** At the end: whatever is held, even if it is not a whole character. */
  flush(): string {
    if (this.#pending.length === 0) return '';
    const text = this.#detokenize(this.#pending, this.#previous);
    this.#commit();
    return text;
  }

  #commit(): void {
    this.#previous = [...this.#previous, ...this.#pending].slice(-CONTEXT_TOKENS);
    this.#pending = [];
  }
}
