/**
 * Sends a validated request to a worker and makes a worker's failure invisible when it can:
 * an attempt that fails with a retryable error (worker died or disconnected, broke the
 * protocol, reported a fault of its own, refused for overload or drain, attempt timed out) is
 * retried on a worker not yet tried, within the request's deadline, up to `maxAttempts`, and
 * only while the retry budget allows (so retries cannot multiply the load during an outage).
 * The model's own error on the request's input (BACKEND_ERROR) is answered as it is. With
 * hedging, a copy goes to a second worker when the first has not answered after `hedge.afterMs`
 * or the model's recent latency percentile; the first answer wins and the other attempt is
 * cancelled. The client sees one response. Workers are known only through a ReplicaSource,
 * and time through an injected clock, so tests drive every path with fakes.
 *
 * Contract: the returned promise settles exactly once; every attempt started is either
 * answered or cancelled, and its outcome reaches the router (circuit breaker, latency).
 */

import { LLM_INPUT } from '../llm/schema.ts';
import type { ModelRoutingConfig, RoutingConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import type { InferRequestMeta, Parameters } from '../protocol/index.ts';
import { tensorsToWire } from '../protocol/index.ts';
import { type ModelEntry, modelKey } from '../registry/index.ts';
import { type RetryBudget, type RoutableWorker, type Router, hashBytes } from '../routing/index.ts';
import type { RequestOptions } from '../rpc/index.ts';
import { type AttemptKind, type TraceContext, endStage, startStage } from '../telemetry/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { InferReply } from './worker-pool.ts';

/** A worker as the dispatcher sees it: what the router weighs, and a way to send it a request. */
export interface Replica extends RoutableWorker {
  readonly key: string;
  /** Sends one attempt; settles once, on the reply, an error, the timeout or the signal. */
  infer(meta: InferRequestMeta, attachments: Uint8Array[], options: RequestOptions): Promise<InferReply>;
}

/** Where the dispatcher finds a model's replicas (the coordinator's registry and pool). */
export interface ReplicaSource {
  /** The replicas that have this model version ready now. */
  replicas(entry: ModelEntry): Replica[];
  /** Why no replica can take the model now, one clause per replica (for the 503's message). */
  describeReplicas(entry: ModelEntry): string[];
}

/** The dispatcher's clock: wall time and the hedge timer, injected so tests control both. */
export interface DispatchClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const SYSTEM_CLOCK: DispatchClock = {
  now: Date.now,
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** A request the coordinator has resolved and validated: tensors as raw bytes, checked against the model. */
export interface DispatchRequest {
  entry: ModelEntry;
  /** 32-bit hash of the request's shard key (hashed once, by the coordinator), when it has one. */
  shardKeyHash?: number | undefined;
  inputs: Tensor[];
  outputs?: string[] | undefined;
  parameters?: Parameters | undefined;
  id?: string | undefined;
  /** Time allowed, ms. */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** The span this request's work is traced under (the HTTP request's, a pipeline step's). */
  traceContext?: TraceContext | undefined;
}

export interface DispatchResult extends InferReply {
  /** The worker whose answer this is. */
  workerId: string;
  /** Attempts started for this request (retries and hedges included). */
  attempts: number;
}

/** Seconds a client is told to wait (Retry-After) when no worker can take a request. */
export const RETRY_AFTER_SECONDS = 1;

/** An attempt this many times the model's p99 (and at least the floor) counts as a worker failure. */
const SLOW_ATTEMPT_FACTOR = 4;
const SLOW_ATTEMPT_FLOOR_MS = 100;

export interface DispatcherOptions {
  replicas: ReplicaSource;
  router: Router;
  budget: RetryBudget;
  /** Attempts per request and the per-attempt timeout (a model's own routing config may override the attempts). */
  retry: Pick<RoutingConfig['retry'], 'maxAttempts' | 'attemptTimeoutMs'>;
  /** Default: the system clock. */
  clock?: DispatchClock;
  /**
   * Who publishes this dispatcher's stage events (route, attempt) for tracing to subscribe to:
   * the coordinator. Default: the dispatcher itself.
   */
  source?: object;
}

export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly clock: DispatchClock;
  /** The publisher named in stage events. */
  readonly source: object;
  /** Retries and hedges started, for /admin. */
  retries = 0;
  hedges = 0;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.clock = options.clock ?? SYSTEM_CLOCK;
    this.source = options.source ?? this;
  }

  dispatch(request: DispatchRequest): Promise<DispatchResult> {
    const { entry } = request;
    const { router, budget, retry } = this.#options;
    const key = modelKey(entry.name, entry.version);
    const routeConfig = entry.config?.routing ?? {};
    const maxAttempts = routeConfig.maxAttempts ?? retry.maxAttempts;
    budget.onRequest();
    const run = new RequestRun(this, {
      request,
      key,
      routeConfig,
      maxAttempts,
      ...wirePlan(request, routeConfig, router.strategyFor(routeConfig) === 'prefix-aware'),
      deadline: this.clock.now() + request.timeoutMs,
      hedgeMs: maxAttempts > 1 ? router.hedgeDelayMs(key, routeConfig) : undefined,
      trace: request.traceContext,
    });
    return run.promise;
  }

  /** The next worker for a run, or none (deadline passed, nobody eligible and untried). */
  pickFor(run: PickTarget): Replica | undefined {
    if (run.deadline - this.clock.now() <= 0) return undefined;
    const { request, key, routeConfig, shardKeyHash, prefix, tried } = run;
    const stage = startStage(this.source, 'route', run.trace, request.entry.name, tried.size + 1);
    const worker = this.#options.router.pick(
      key,
      routeConfig,
      this.#options.replicas.replicas(request.entry),
      {
        shardKeyHash,
        prefix,
        exclude: tried,
        // last-resort routing to sick workers only for a first attempt, never for retries or hedges
        allowPanic: tried.size === 0,
      },
    );
    if (stage) {
      stage.workerId = worker?.id;
      endStage(stage);
    }
    return worker;
  }

  get router(): Router {
    return this.#options.router;
  }

  get budget(): RetryBudget {
    return this.#options.budget;
  }

  /** Attempts a request for a model with this routing config may make. */
  maxAttemptsFor(routeConfig: ModelRoutingConfig): number {
    return routeConfig.maxAttempts ?? this.#options.retry.maxAttempts;
  }

  get attemptTimeoutMs(): number | undefined {
    return this.#options.retry.attemptTimeoutMs;
  }

  /** The 503 for a model no worker can take now, naming each replica's state. */
  unavailable(entry: ModelEntry): InfergridError {
    const states = this.#options.replicas.describeReplicas(entry);
    return new InfergridError(
      'UNAVAILABLE',
      `no worker has model "${entry.name}" version "${entry.version}" ready${states.length ? ` (${states.join(', ')})` : ' (no worker hosts it)'}; retry later`,
      { details: { retryAfterSeconds: RETRY_AFTER_SECONDS } },
    );
  }
}

/**
 * What every attempt of a request sends (the tensors' bytes once, the meta without its
 * per-attempt deadline) and its shard key's hash (the request's, else its `shardKeyInput`'s).
 */
export function wirePlan(
  request: DispatchRequest,
  routeConfig: ModelRoutingConfig,
  prefixAware: boolean,
): {
  attachments: Uint8Array[];
  baseMeta: Omit<InferRequestMeta, 'timeoutMs'>;
  shardKeyHash: number | undefined;
  prefix: Uint8Array | undefined;
} {
  const { entry } = request;
  const { headers, attachments } = tensorsToWire(request.inputs);
  return {
    attachments,
    baseMeta: {
      model: entry.name,
      version: entry.version,
      inputs: headers,
      ...(request.id !== undefined ? { id: request.id } : {}),
      ...(request.outputs ? { outputs: request.outputs } : {}),
      ...(request.parameters ? { parameters: request.parameters } : {}),
    },
    shardKeyHash: request.shardKeyHash ?? shardKeyInputHash(request, routeConfig.shardKeyInput),
    prefix: prefixAware ? promptOf(request, routeConfig) : undefined,
  };
}

/** A model whose routing names a `shardKeyInput` and a request without a shard key: that input's bytes, hashed. */
function shardKeyInputHash(request: DispatchRequest, shardKeyInput: string | undefined): number | undefined {
  if (shardKeyInput === undefined) return undefined;
  const input = request.inputs.find((t) => t.name === shardKeyInput);
  return input ? hashBytes(input.data) : undefined;
}

/** The prompt bytes the prefix-aware strategy routes by: the model's prefixInput (default text_input). */
function promptOf(request: DispatchRequest, routeConfig: ModelRoutingConfig): Uint8Array | undefined {
  const name = routeConfig.prefixInput ?? LLM_INPUT;
  return request.inputs.find((t) => t.name === name)?.data;
}

/** What picking a worker for a run needs: the request, its routing, its deadline and who was tried. */
export type PickTarget = Pick<
  RunPlan,
  'request' | 'key' | 'routeConfig' | 'shardKeyHash' | 'prefix' | 'deadline' | 'trace'
> & {
  readonly tried: ReadonlySet<string>;
};

interface RunPlan {
  request: DispatchRequest;
  key: string;
  routeConfig: ModelRoutingConfig;
  maxAttempts: number;
  shardKeyHash: number | undefined;
  /** The prompt, for prefix-aware routing. */
  prefix: Uint8Array | undefined;
  /** When the request's time is up, ms since the epoch. */
  deadline: number;
  attachments: Uint8Array[];
  baseMeta: Omit<InferRequestMeta, 'timeoutMs'>;
  /** Delay before a hedge, ms; undefined: no hedging. */
  hedgeMs: number | undefined;
  /** Parent of the attempts' spans; undefined: not traced. */
  trace: TraceContext | undefined;
}

/**
 * One request's attempts. A class rather than closures: nothing is allocated per request
 * beyond this object and one callback pair per attempt. Without hedging only one attempt runs
 * at a time, so attempts use the request's own signal and need no controller of their own.
 */
class RequestRun implements RunPlan {
  readonly request: DispatchRequest;
  readonly key: string;
  readonly routeConfig: ModelRoutingConfig;
  readonly maxAttempts: number;
  readonly shardKeyHash: number | undefined;
  readonly prefix: Uint8Array | undefined;
  readonly deadline: number;
  readonly attachments: Uint8Array[];
  readonly baseMeta: Omit<InferRequestMeta, 'timeoutMs'>;
  readonly hedgeMs: number | undefined;
  readonly trace: TraceContext | undefined;
  readonly tried = new Set<string>();
  readonly promise: Promise<DispatchResult>;
  readonly #dispatcher: Dispatcher;
  #resolve!: (result: DispatchResult) => void;
  #reject!: (err: InfergridError) => void;
  #settled = false;
  #started = 0;
  #running = 0;
  /** Per-attempt controllers, only when hedging (two attempts may run; the loser is cancelled). */
  #controllers: Set<AbortController> | undefined;
  #hedgeTimer: unknown;
  /** this.#abortRun bound, made only for a request that has a signal to listen to. */
  #onAbort: (() => void) | undefined;

  constructor(dispatcher: Dispatcher, plan: RunPlan) {
    this.#dispatcher = dispatcher;
    this.request = plan.request;
    this.key = plan.key;
    this.routeConfig = plan.routeConfig;
    this.maxAttempts = plan.maxAttempts;
    this.shardKeyHash = plan.shardKeyHash;
    this.prefix = plan.prefix;
    this.deadline = plan.deadline;
    this.attachments = plan.attachments;
    this.baseMeta = plan.baseMeta;
    this.hedgeMs = plan.hedgeMs;
    this.trace = plan.trace;
    this.promise = new Promise<DispatchResult>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    const signal = this.request.signal;
    if (signal?.aborted) {
      this.#abortRun();
      return;
    }
    if (signal) {
      this.#onAbort = this.#abortRun.bind(this);
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    const first = dispatcher.pickFor(this);
    if (!first) {
      // a deadline already past is the deadline, not a lack of workers
      this.#fail(
        this.deadline - dispatcher.clock.now() <= 0
          ? new InfergridError('DEADLINE_EXCEEDED', 'the request ran out of time before it could be sent')
          : dispatcher.unavailable(this.request.entry),
      );
      return;
    }
    if (this.hedgeMs !== undefined) this.#controllers = new Set();
    this.#start(first, 'first');
  }

  #abortRun(): void {
    const signal = this.request.signal;
    this.#fail(
      toInfergridError(
        signal?.reason ?? new InfergridError('CANCELLED', 'request was cancelled'),
        'CANCELLED',
      ),
    );
  }

  #start(worker: Replica, kind: AttemptKind): void {
    const d = this.#dispatcher;
    const remaining = this.deadline - d.clock.now();
    const attemptMs = Math.max(1, Math.min(remaining, d.attemptTimeoutMs ?? Number.POSITIVE_INFINITY));
    const attemptIsShorter = attemptMs < remaining;
    this.tried.add(worker.id);
    this.#started++;
    this.#running++;
    let controller: AbortController | undefined;
    if (this.#controllers) {
      controller = new AbortController();
      this.#controllers.add(controller);
    }
    // the hedge clock runs from the start of the attempt it would back up
    if (this.hedgeMs !== undefined && this.#running === 1) {
      if (this.#hedgeTimer !== undefined) d.clock.clearTimeout(this.#hedgeTimer);
      this.#hedgeTimer = d.clock.setTimeout(() => this.#hedge(), this.hedgeMs);
    }
    const startedAt = d.clock.now();
    const probe = d.router.onSend(this.key, worker.key);
    const meta: InferRequestMeta = { ...this.baseMeta, timeoutMs: attemptMs };
    // the worker's span continues this attempt's
    const stage = startStage(
      d.source,
      'attempt',
      this.trace,
      this.baseMeta.model,
      this.#started,
      kind,
      worker.id,
    );
    if (stage?.traceparent !== undefined) meta.traceparent = stage.traceparent;
    worker
      .infer(meta, this.attachments, {
        timeoutMs: attemptMs,
        signal: controller?.signal ?? this.request.signal,
      })
      .then(
        (reply) => {
          endStage(stage);
          this.#onReply(worker, controller, reply, d.clock.now() - startedAt, probe);
        },
        (err: unknown) => {
          endStage(stage, err);
          this.#onError(worker, controller, err, attemptIsShorter, d.clock.now() - startedAt, probe);
        },
      );
  }

  #onReply(
    worker: Replica,
    controller: AbortController | undefined,
    reply: InferReply,
    latencyMs: number,
    probe: boolean,
  ): void {
    this.#running--;
    if (controller) this.#controllers!.delete(controller);
    this.#dispatcher.router.onResult(this.key, worker.key, 'success', latencyMs, probe);
    if (this.#settled) return;
    this.#settle();
    this.#resolve({ ...reply, workerId: worker.id, attempts: this.#started });
  }

  #onError(
    worker: Replica,
    controller: AbortController | undefined,
    err: unknown,
    attemptIsShorter: boolean,
    elapsedMs: number,
    probe: boolean,
  ): void {
    this.#running--;
    if (controller) this.#controllers!.delete(controller);
    const d = this.#dispatcher;
    const error = toInfergridError(err);
    // an attempt cut short by its own timeout, with request time left: the worker was too slow
    const attemptTimedOut = error.code === 'DEADLINE_EXCEEDED' && attemptIsShorter;
    // a worker that hangs yet answers pings: an attempt that ran far past the model's usual p99
    // counts against it even when the request's own deadline ended it
    const p99 = d.router.latencyPercentile(this.key, 99);
    const farTooSlow =
      error.code === 'DEADLINE_EXCEEDED' &&
      p99 !== undefined &&
      elapsedMs >= Math.max(SLOW_ATTEMPT_FLOOR_MS, SLOW_ATTEMPT_FACTOR * p99);
    const outcome = error.isWorkerFault || attemptTimedOut || farTooSlow ? 'failure' : 'neutral';
    d.router.onResult(this.key, worker.key, outcome, 0, probe);
    if (this.#settled) return;
    // ask the budget before picking, so a refused retry costs no pick (no turn, no weight)
    if ((error.retryable || attemptTimedOut) && this.#started < this.maxAttempts && d.budget.canRetry()) {
      const next = d.pickFor(this);
      if (next && d.budget.tryRetry()) {
        d.retries++;
        this.#start(next, 'retry');
        return;
      }
    }
    if (this.#running === 0) this.#fail(error);
  }

  #hedge(): void {
    this.#hedgeTimer = undefined;
    const d = this.#dispatcher;
    if (this.#settled || this.#running !== 1 || this.#started >= this.maxAttempts || !d.budget.canRetry())
      return;
    const worker = d.pickFor(this);
    if (worker && d.budget.tryRetry()) {
      d.hedges++;
      this.#start(worker, 'hedge');
    }
  }

  #fail(error: InfergridError): void {
    if (this.#settled) return;
    this.#settle(error);
    this.#reject(error);
  }

  /** Marks the run settled and cancels whatever attempt is still running (hedging only). */
  #settle(reason?: InfergridError): void {
    this.#settled = true;
    if (this.#hedgeTimer !== undefined) this.#dispatcher.clock.clearTimeout(this.#hedgeTimer);
    if (this.#onAbort) this.request.signal?.removeEventListener('abort', this.#onAbort);
    if (this.#controllers?.size) {
      const cancel = reason ?? new InfergridError('CANCELLED', 'another attempt was answered first');
      for (const c of this.#controllers) c.abort(cancel);
      this.#controllers.clear();
    }
  }
}
