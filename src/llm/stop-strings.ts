/**
 * Stop strings over streamed text. Text is released only once it cannot be the beginning of a
 * stop string; a possible partial match is held back. When a stop string completes, the text
 * before it is released and generation stops (the stop string itself is never sent, as in
 * OpenAI's API).
 */

export interface StopPush {
  /** Text safe to send now. */
  text: string;
  /** A stop string completed: `text` ends just before it. */
  stopped: boolean;
}

export class StopStringMatcher {
  readonly #stops: readonly string[];
  #held = '';

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  push(chunk: string): StopPush {
    if (this.#stops.length === 0) return { text: chunk, stopped: false };
    const buf = this.#held + chunk;
    let first = -1;
    for (const s of this.#stops) {
      const i = buf.indexOf(s);
      if (i !== -1 && (first === -1 || i < first)) first = i;
    }
    if (first !== -1) {
      this.#held = '';
      return { text: buf.slice(0, first), stopped: true };
    }
    // the longest suffix of buf that is a proper prefix of a stop string waits for more text
    let keep = 0;
    for (const s of this.#stops) {
      for (let k = Math.min(s.length - 1, buf.length); k > keep; k--) {
        if (buf.endsWith(s.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    this.#held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** At the end of generation (length, EOS): the text held back, which turned out not to stop. */
  flush(): string {
    const held = this.#held;
    this.#held = '';
    return held;
  }
}
