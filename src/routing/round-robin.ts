/**
 * Round-robin as a pure function: the pick depends only on the candidates and a counter the
 * caller keeps per model. The next issue brings the other strategies next to it.
 */
export function pickRoundRobin<T>(candidates: readonly T[], counter: number): T | undefined {
  if (candidates.length === 0) return undefined;
  return candidates[counter % candidates.length];
}

/** Keeps one counter per key (model) so each model's traffic is spread on its own. */
export class RoundRobinRouter {
  readonly #counters = new Map<string, number>();

  pick<T>(key: string, candidates: readonly T[]): T | undefined {
    const n = this.#counters.get(key) ?? 0;
    this.#counters.set(key, (n + 1) % 0x7fffffff);
    return pickRoundRobin(candidates, n);
  }
}
