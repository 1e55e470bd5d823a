/**
 * The router: which worker gets a request for a model. It keeps, per model, a balancer and a
 * window of recent latencies, and per (model, worker) a circuit breaker, a decaying latency
 * average and pick counts. It knows workers only through the narrow RoutableWorker view, so
 * it can be tested with plain objects.
 *
 * Eligible: connected, not draining, healthy (active checks) and circuit letting requests
 * through, and not already tried for this request. A request with a shard key goes to the
 * first eligible worker in the key's rendezvous order; others go to the model's strategy.
 * When nothing is eligible but some replica is still connected and not draining, those are
 * used as a last resort (panic routing, as Envoy does) rather than failing every request.
 */

import type { ModelRoutingConfig, RoutingConfig } from '../config/index.ts';
import { Balancer } from './balancer.ts';
import { CircuitBreaker, type CircuitState } from './circuit-breaker.ts';
import type { WorkerHealth } from './health.ts';
import { LatencyEwma, LatencyWindow } from './latency.ts';
import { PrefixIndex } from './prefix-index.ts';
import { hashString, rendezvousScore } from './rendezvous.ts';
import type { Random, StrategyName, WorkerLoad } from './strategies.ts';

/** What the router needs to know about a worker. */
export interface RoutableWorker {
  readonly id: string;
  /**
   * This incarnation of the worker (a restarted worker keeps its id but gets a new key), so
   * late outcomes from a dead connection never land on its successor. Defaults to the id.
   */
  readonly key?: string;
  /** Requests this coordinator has in flight on it. */
  readonly inFlight: number;
  readonly weight: number;
  readonly draining: boolean;
  readonly connected: boolean;
  readonly health: WorkerHealth;
}

/** How one request may be routed. */
export interface RouteRequest {
  /** 32-bit hash of the shard key, when the request has one. */
  shardKeyHash?: number | undefined;
  /** Workers already tried for this request. */
  exclude?: ReadonlySet<string> | undefined;
  /** The prompt's bytes, for the prefix-aware strategy (routed by the longest prefix a worker holds). */
  prefix?: Uint8Array | undefined;
  /**
   * Whether to fall back on ineligible workers when none is eligible (default true). Retries
   * and hedges pass false: after the healthy workers have failed, sending the request to one
   * known to be sick only turns a quick error into a slow one.
   */
  allowPanic?: boolean | undefined;
}

export type AttemptOutcome = 'success' | 'failure' | 'neutral';

/** Per (model, worker) facts, for /admin/workers. */
export interface ReplicaRouteStats {
  circuit: CircuitState;
  consecutiveFailures: number;
  circuitOpens: number;
  latencyMs: number | undefined;
  picks: number;
  lastPickedAt: number | undefined;
}

interface ReplicaState {
  readonly breaker: CircuitBreaker;
  readonly latency: LatencyEwma;
  picks: number;
  lastPickedAt: number | undefined;
}

interface ModelState {
  readonly balancer: Balancer;
  readonly window: LatencyWindow;
  readonly replicas: Map<string, ReplicaState>;
}

export interface RouterOptions {
  routing: RoutingConfig;
  /** The prefix-aware strategy's index; one is made from routing.prefix when absent. */
  prefixes?: PrefixIndex;
  now?: () => number;
  random?: Random;
}

export class Router {
  readonly #routing: RoutingConfig;
  readonly #now: () => number;
  readonly #random: Random;
  readonly #models = new Map<string, ModelState>();
  readonly #workerHashes = new Map<string, number>();
  /** Which worker holds which prompt prefix (prefix-aware). */
  readonly prefixes: PrefixIndex;
  /** Picks made in panic (nothing eligible). */
  panicPicks = 0;

  constructor(options: RouterOptions) {
    this.#routing = options.routing;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.prefixes = options.prefixes ?? new PrefixIndex(options.routing.prefix);
  }

  #model(modelKey: string, strategy: StrategyName): ModelState {
    let m = this.#models.get(modelKey);
    if (!m || m.balancer.strategy !== strategy) {
      m = {
        balancer: new Balancer(strategy, this.#random),
        window: new LatencyWindow(),
        replicas: m?.replicas ?? new Map(),
      };
      this.#models.set(modelKey, m);
    }
    return m;
  }

  #replica(model: ModelState, workerId: string): ReplicaState {
    let r = model.replicas.get(workerId);
    if (!r) {
      const { failureThreshold, openMs, maxOpenMs } = this.#routing.circuitBreaker;
      r = {
        breaker: new CircuitBreaker({ failureThreshold, openMs, maxOpenMs, now: this.#now }),
        latency: new LatencyEwma({ halfLifeMs: this.#routing.latencyHalfLifeMs }),
        picks: 0,
        lastPickedAt: undefined,
      };
      model.replicas.set(workerId, r);
    }
    return r;
  }

  strategyFor(config: ModelRoutingConfig): StrategyName {
    return config.strategy ?? this.#routing.strategy;
  }

  /** Picks a worker among `workers` (the replicas that have the model ready), or none. */
  pick<W extends RoutableWorker>(
    modelKey: string,
    config: ModelRoutingConfig,
    workers: readonly W[],
    request: RouteRequest = {},
  ): W | undefined {
    const strategy = this.strategyFor(config);
    const model = this.#model(modelKey, strategy);
    const exclude = request.exclude;
    let eligible: W[] = [];
    let anyUsable = false;
    for (const w of workers) {
      if (!w.connected || w.draining || exclude?.has(w.id)) continue;
      anyUsable = true;
      if (w.health === 'healthy' && this.#replica(model, w.key ?? w.id).breaker.allowsRequest)
        eligible.push(w);
    }
    if (eligible.length === 0 && anyUsable && request.allowPanic !== false) {
      this.panicPicks++;
      eligible = workers.filter((w) => w.connected && !w.draining && !exclude?.has(w.id));
    }
    let chosen: W | undefined;
    if (request.shardKeyHash !== undefined) {
      chosen = this.#byRendezvous(request.shardKeyHash, eligible);
      if (chosen) model.balancer.recordPick(chosen.id);
    } else if (strategy === 'prefix-aware' && request.prefix !== undefined) {
      const names = this.prefixes.names(modelKey, request.prefix);
      const holder = this.#byPrefix(names, eligible);
      if (holder) model.balancer.recordPick(holder.id);
      // nobody holds a prefix, or loads are far apart: the balancer's least loaded (turns on ties)
      chosen = holder ?? (model.balancer.pick(eligible, workers) as W | undefined);
      if (chosen) this.prefixes.record(names, chosen.id);
    } else if (strategy === 'least-latency') {
      // only this strategy reads latency; decaying it for every candidate costs ~35 ns each
      const now = this.#now();
      const loads: WorkerLoad[] = eligible.map((w) => ({
        id: w.id,
        inFlight: w.inFlight,
        weight: w.weight,
        latencyMs: this.#replica(model, w.key ?? w.id).latency.valueAt(now),
      }));
      const picked = model.balancer.pick(loads, workers);
      chosen = picked && eligible[loads.indexOf(picked)];
    } else {
      // a worker is its own load snapshot: no copy per pick
      chosen = model.balancer.pick(eligible, workers) as W | undefined;
    }
    if (chosen) {
      const r = this.#replica(model, chosen.key ?? chosen.id);
      r.picks++;
      r.lastPickedAt = this.#now();
    }
    return chosen;
  }

  /**
   * Prefix-aware: balance first, then reuse (SGLang's rule). When the eligible replicas' loads
   * are far apart (by routing.prefix.balanceAbsThreshold streams and balanceRatio times), or
   * none holds a prefix of the prompt, none: the caller's balancer picks the least loaded.
   * Otherwise the one holding the longest prefix.
   */
  #byPrefix<W extends RoutableWorker>(names: readonly number[], eligible: readonly W[]): W | undefined {
    if (eligible.length < 2) return undefined;
    let least = eligible[0]!.inFlight;
    let most = least;
    for (const w of eligible) {
      least = Math.min(least, w.inFlight);
      most = Math.max(most, w.inFlight);
    }
    const { balanceAbsThreshold, balanceRatio } = this.#routing.prefix;
    if (most - least > balanceAbsThreshold && most > balanceRatio * least) return undefined;
    return this.prefixes.match(names, eligible)?.worker;
  }

  #byRendezvous<W extends RoutableWorker>(keyHash: number, workers: readonly W[]): W | undefined {
    let best: W | undefined;
    let bestScore = -1;
    for (const w of workers) {
      let h = this.#workerHashes.get(w.id);
      if (h === undefined) {
        h = hashString(w.id);
        this.#workerHashes.set(w.id, h);
      }
      const score = rendezvousScore(keyHash, h);
      if (score > bestScore || (score === bestScore && best && w.id < best.id)) {
        best = w;
        bestScore = score;
      }
    }
    return best;
  }

  /**
   * A request is being sent to the worker incarnation `key`. Returns true when it is its
   * circuit's half-open probe; pass that to onResult.
   */
  onSend(modelKey: string, key: string): boolean {
    return this.#models.get(modelKey)?.replicas.get(key)?.breaker.onSend() ?? false;
  }

  /**
   * The outcome of an attempt: feeds the circuit breaker and, on success, the latencies.
   * Outcomes for an incarnation the router has forgotten (its connection closed) are dropped.
   */
  onResult(modelKey: string, key: string, outcome: AttemptOutcome, latencyMs: number, probe = false): void {
    const model = this.#models.get(modelKey);
    const r = model?.replicas.get(key);
    if (!model || !r) return;
    if (outcome === 'success') {
      r.breaker.onSuccess(probe);
      r.latency.observe(latencyMs, this.#now());
      model.window.observe(latencyMs);
    } else if (outcome === 'failure') {
      r.breaker.onFailure(probe);
    } else {
      r.breaker.onNeutral(probe);
    }
  }

  /** The p-th percentile of the model's recent successful latencies, once there are any. */
  latencyPercentile(modelKey: string, p: number): number | undefined {
    return this.#models.get(modelKey)?.window.percentile(p);
  }

  /** How long to wait before hedging a request for this model, or undefined for no hedge. */
  hedgeDelayMs(modelKey: string, config: ModelRoutingConfig): number | undefined {
    const hedge = config.hedge;
    if (!hedge) return undefined;
    if (hedge.afterMs !== undefined) return hedge.afterMs;
    const window = this.#models.get(modelKey)?.window;
    if (!window || window.count < hedge.minSamples) return undefined;
    return window.percentile(hedge.percentile);
  }

  stats(modelKey: string, key: string): ReplicaRouteStats | undefined {
    const r = this.#models.get(modelKey)?.replicas.get(key);
    if (!r) return undefined;
    return {
      circuit: r.breaker.state,
      consecutiveFailures: r.breaker.consecutiveFailures,
      circuitOpens: r.breaker.opens,
      latencyMs: r.latency.valueAt(this.#now()),
      picks: r.picks,
      lastPickedAt: r.lastPickedAt,
    };
  }

  /** Forgets everything about a worker incarnation that left (a restarted one starts afresh). */
  forgetWorker(workerId: string, key = workerId): void {
    for (const model of this.#models.values()) {
      model.replicas.delete(key);
      model.balancer.forget(workerId);
    }
    this.#workerHashes.delete(workerId);
    this.prefixes.forgetWorker(workerId);
  }
}
