/**
 * Load-balancing strategies as pure functions: each picks from a snapshot of the eligible
 * workers' load, given the state the strategy keeps (when it keeps any) and a source of
 * randomness. They never see an ineligible worker (unhealthy, draining, circuit open, gone):
 * the router filters those out first, so "never pick an unhealthy worker while a healthy one
 * exists" holds by construction for all of them.
 *
 * Ties are broken by "least recently picked", so equal workers take turns instead of the
 * first one in the list taking everything.
 */

import { STRATEGIES, type StrategyName } from '../config/index.ts';
import { InfergridError } from '../errors.ts';

/** One eligible worker as a strategy sees it. */
export interface WorkerLoad {
  readonly id: string;
  /** Requests this coordinator has in flight on the worker (all models). */
  readonly inFlight: number;
  /** Relative capacity (config `workers[].weight`, default 1). */
  readonly weight: number;
  /** Observed latency for this model, decayed toward 0 while unobserved; absent before any (and for strategies that do not read it). */
  readonly latencyMs?: number | undefined;
}

// The names are declared by config (the layer below routing); routing re-exports them.
export { STRATEGIES, type StrategyName };

/** What a balancer remembers between picks. Owned by one balancer; strategies read it only. */
export interface PickState {
  /** Sequence number of the last pick, per worker id (absent: never picked). */
  readonly lastPicked: ReadonlyMap<string, number>;
  /** Smooth weighted round-robin's running weights, per worker id. */
  readonly currentWeight: ReadonlyMap<string, number>;
}

export type Random = () => number;

function lastPickedOf(state: PickState, id: string): number {
  return state.lastPicked.get(id) ?? -1;
}

/** The candidate minimising `score`, ties to the least recently picked. */
function minBy(
  candidates: readonly WorkerLoad[],
  state: PickState,
  score: (w: WorkerLoad) => number,
): WorkerLoad | undefined {
  let best: WorkerLoad | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  let bestSeq = Number.POSITIVE_INFINITY;
  for (const w of candidates) {
    const s = score(w);
    const seq = lastPickedOf(state, w.id);
    if (s < bestScore || (s === bestScore && seq < bestSeq)) {
      best = w;
      bestScore = s;
      bestSeq = seq;
    }
  }
  return best;
}

/**
 * Round-robin: the least recently picked worker. A worker that joins is picked next, then
 * takes its turn; with a fixed set, every window of N picks visits each worker once.
 */
export function pickRoundRobin(candidates: readonly WorkerLoad[], state: PickState): WorkerLoad | undefined {
  return minBy(candidates, state, () => 0);
}

/** Least connections: fewest requests in flight. */
export function pickLeastConnections(
  candidates: readonly WorkerLoad[],
  state: PickState,
): WorkerLoad | undefined {
  return minBy(candidates, state, (w) => w.inFlight);
}

/** Uniformly random. */
export function pickRandom(
  candidates: readonly WorkerLoad[],
  _state: PickState,
  random: Random,
): WorkerLoad | undefined {
  if (candidates.length === 0) return undefined;
  return candidates[Math.min(candidates.length - 1, Math.floor(random() * candidates.length))];
}

/**
 * Least latency: lowest decayed latency × (in-flight + 1). A worker not yet observed counts
 * as the candidates' mean latency (0 when none is observed), so a new or restarted worker is
 * tried at once but shares the load by its in-flight count instead of taking every request
 * until its first answer. A worker that was slow once decays toward 0 while it gets no
 * traffic, so it is tried again rather than shunned forever.
 */
export function pickLeastLatency(
  candidates: readonly WorkerLoad[],
  state: PickState,
): WorkerLoad | undefined {
  let sum = 0;
  let observed = 0;
  for (const w of candidates) {
    if (w.latencyMs !== undefined) {
      sum += w.latencyMs;
      observed++;
    }
  }
  const assumed = observed > 0 ? sum / observed : 0;
  return minBy(candidates, state, (w) => (w.latencyMs ?? assumed) * (w.inFlight + 1));
}

/** Power of two choices: two distinct random workers, the one with fewer in flight. */
export function pickPowerOfTwo(
  candidates: readonly WorkerLoad[],
  state: PickState,
  random: Random,
): WorkerLoad | undefined {
  const n = candidates.length;
  if (n <= 1) return candidates[0];
  const i = Math.min(n - 1, Math.floor(random() * n));
  let j = Math.min(n - 2, Math.floor(random() * (n - 1)));
  if (j >= i) j++;
  return minBy([candidates[i]!, candidates[j]!], state, (w) => w.inFlight);
}

/**
 * Smooth weighted round-robin (nginx's): every candidate's running weight grows by its
 * weight, the largest is picked and loses the total (see advanceWeights). Over any window of
 * Σweights picks with a fixed set, each worker gets exactly its weight's share, evenly
 * interleaved.
 */
export function pickWeighted(candidates: readonly WorkerLoad[], state: PickState): WorkerLoad | undefined {
  let best: WorkerLoad | undefined;
  let bestWeight = Number.NEGATIVE_INFINITY;
  for (const w of candidates) {
    const current = (state.currentWeight.get(w.id) ?? 0) + Math.max(0, w.weight);
    const tieGoesHere =
      current === bestWeight &&
      best !== undefined &&
      lastPickedOf(state, w.id) < lastPickedOf(state, best.id);
    if (current > bestWeight || tieGoesHere) {
      best = w;
      bestWeight = current;
    }
  }
  return best;
}

/** The running-weight update that goes with pickWeighted's pick. */
export function advanceWeights(
  currentWeight: Map<string, number>,
  candidates: readonly WorkerLoad[],
  pick: WorkerLoad,
): void {
  let total = 0;
  for (const w of candidates) {
    const weight = Math.max(0, w.weight);
    currentWeight.set(w.id, (currentWeight.get(w.id) ?? 0) + weight);
    total += weight;
  }
  currentWeight.set(pick.id, currentWeight.get(pick.id)! - total);
}

/** A strategy's pick, by name. */
export function pickByStrategy(
  name: StrategyName,
  candidates: readonly WorkerLoad[],
  state: PickState,
  random: Random,
): WorkerLoad | undefined {
  switch (name) {
    case 'round-robin':
      return pickRoundRobin(candidates, state);
    case 'least-connections':
    // prefix-aware without a known prefix (or out of balance): the least loaded (router.ts)
    case 'prefix-aware':
      return pickLeastConnections(candidates, state);
    case 'random':
      return pickRandom(candidates, state, random);
    case 'least-latency':
      return pickLeastLatency(candidates, state);
    case 'power-of-two':
      return pickPowerOfTwo(candidates, state, random);
    case 'weighted':
      return pickWeighted(candidates, state);
    default: {
      // The names live in config: one added there without a case here fails to compile.
      const missing: never = name;
      throw new InfergridError('INTERNAL', `no pick function for strategy "${String(missing)}"`);
    }
  }
}
