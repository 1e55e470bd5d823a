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

  /**
   * Picks among `candidates`. `members` is every worker of the model, eligible or not (default:
   * the candidates): weighted round-robin starts over only when they change, not when a retry
   * or a sick worker narrows the candidates for a while.
   */
  pick(
    candidates: readonly WorkerLoad[],
    members: readonly { id: string }[] = candidates,
  ): WorkerLoad | undefined {
    if (this.strategy === 'weighted' && this.#membersChanged(members)) this.#currentWeight.clear();
    const pick = pickByStrategy(this.strategy, candidates, this.state, this.#random);
    if (!pick) return undefined;
    if (this.strategy === 'weighted') advanceWeights(this.#currentWeight, candidates, pick);
    this.recordPick(pick.id);
    return pick;
  }

  #members = new Set<string>();

  #membersChanged(members: readonly { id: string }[]): boolean {
    let same = members.length === this.#members.size;
    if (same) for (const m of members) if (!this.#members.has(m.id)) same = false;
    if (same) return false;
    this.#members = new Set(members.map((m) => m.id));
    return true;
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
