/**
 * A balancer: one strategy plus the state it keeps, for one model. `pick` asks the pure
 * strategy function, then records the pick.
 */

import {
  type PickState,
  type Random,
  type StrategyName,
  type WorkerLoad,
  advanceWeights,
  pickByStrategy,
  resetWeightsIfChanged,
} from './strategies.ts';

export class Balancer {
  readonly strategy: StrategyName;
  readonly #random: Random;
  readonly #lastPicked = new Map<string, number>();
  readonly #currentWeight = new Map<string, number>();
  #seq = 0;

  constructor(strategy: StrategyName, random: Random = Math.random) {
    this.strategy = strategy;
    this.#random = random;
  }

  get state(): PickState {
    return { lastPicked: this.#lastPicked, currentWeight: this.#currentWeight };
  }

  pick(candidates: readonly WorkerLoad[]): WorkerLoad | undefined {
    if (this.strategy === 'weighted') resetWeightsIfChanged(this.#currentWeight, candidates);
    const pick = pickByStrategy(this.strategy, candidates, this.state, this.#random);
    if (!pick) return undefined;
    if (this.strategy === 'weighted') advanceWeights(this.#currentWeight, candidates, pick);
    this.recordPick(pick.id);
    return pick;
  }

  /** Records a pick made elsewhere (shard affinity), so turn-taking stays fair. */
  recordPick(id: string): void {
    this.#lastPicked.set(id, ++this.#seq);
  }

  /** Forgets a worker that left. */
  forget(id: string): void {
    this.#lastPicked.delete(id);
    this.#currentWeight.delete(id);
  }
}
