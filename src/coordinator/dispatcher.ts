/**
 * Sends a validated request to a worker and makes a worker's failure invisible when it can:
 * an attempt that fails with a retryable error (worker died or disconnected, refused for
 * overload or drain, model failed, attempt timed out) is retried on a worker not yet tried,
 * within the request's deadline, up to `maxAttempts`, and only while the retry budget allows
 * (so retries cannot multiply the load during an outage). With hedging, a copy goes to a
 * second worker when the first has not answered after the model's recent p95; the first
 * answer wins and the other attempt is cancelled. The client sees one response.
 *
 * Contract: the returned promise settles exactly once; every attempt started is either
 * answered or cancelled, and its outcome reaches the router (circuit breaker, latency).
 */

import type { RoutingConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { type InferRequestMeta, type Parameters, tensorsToWire } from '../protocol/index.ts';
import { type ModelEntry, type ModelRegistry, modelKey } from '../registry/index.ts';
import { type RetryBudget, type Router, hashBytes, hashString } from '../routing/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { InferReply, WorkerHandle, WorkerPool } from './worker-pool.ts';

/** A request after HTTP parsing: tensors as raw bytes, already checked against the model. */
export interface DispatchRequest {
  entry: ModelEntry;
  inputs: Tensor[];
  outputs?: string[] | undefined;
  parameters?: Parameters | undefined;
  id?: string | undefined;
  /** Time allowed, ms. */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

export interface DispatchResult extends InferReply {
  /** The worker whose answer this is. */
  workerId: string;
  /** Attempts started for this request (retries and hedges included). */
  attempts: number;
}

/** Seconds a client is told to wait (Retry-After) when no worker can take a request. */
export const RETRY_AFTER_SECONDS = 1;

/** The request parameter whose value, hashed, picks the worker (same key, same worker). */
export const SHARD_KEY_PARAMETER = 'shard_key';

export interface DispatcherOptions {
  registry: ModelRegistry;
  pool: WorkerPool;
  router: Router;
  budget: RetryBudget;
  routing: RoutingConfig;
  now?: () => number;
}

export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #now: () => number;
  /** Retries and hedges started, for /admin. */
  retries = 0;
  hedges = 0;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  dispatch(request: DispatchRequest): Promise<DispatchResult> {
    const { entry } = request;
    const { router, budget, routing } = this.#options;
    const key = modelKey(entry.name, entry.version);
    const routeConfig = entry.config?.routing ?? {};
    const maxAttempts = routeConfig.maxAttempts ?? routing.retry.maxAttempts;
    const shardKeyHash = this.#shardKeyHash(request, routeConfig.shardKeyInput);
    const deadline = this.#now() + request.timeoutMs;
    const { headers, attachments } = tensorsToWire(request.inputs);
    const baseMeta: Omit<InferRequestMeta, 'timeoutMs'> = {
      model: entry.name,
      version: entry.version,
      inputs: headers,
      ...(request.id !== undefined ? { id: request.id } : {}),
      ...(request.outputs ? { outputs: request.outputs } : {}),
      ...(request.parameters ? { parameters: request.parameters } : {}),
    };
    budget.onRequest();

    return new Promise<DispatchResult>((resolve, reject) => {
      const tried = new Set<string>();
      const running = new Set<AbortController>();
      let settled = false;
      let started = 0;
      let hedgeTimer: NodeJS.Timeout | undefined;

      const finish = (settle: () => void, cancelReason: InfergridError): void => {
        settled = true;
        if (hedgeTimer) clearTimeout(hedgeTimer);
        request.signal?.removeEventListener('abort', onAbort);
        for (const controller of running) controller.abort(cancelReason);
        running.clear();
        settle();
      };
      const onAbort = (): void => {
        const reason = toInfergridError(
          request.signal?.reason ?? new InfergridError('CANCELLED', 'request was cancelled'),
          'CANCELLED',
        );
        finish(() => reject(reason), reason);
      };

      const next = (): WorkerHandle | undefined => {
        if (deadline - this.#now() <= 0) return undefined;
        return router.pick(key, routeConfig, this.#replicas(entry), { shardKeyHash, exclude: tried });
      };

      const start = (worker: WorkerHandle): void => {
        const remaining = deadline - this.#now();
        const attemptMs = Math.max(
          1,
          Math.min(remaining, routing.retry.attemptTimeoutMs ?? Number.POSITIVE_INFINITY),
        );
        const attemptIsShorter = attemptMs < remaining;
        tried.add(worker.id);
        started++;
        const controller = new AbortController();
        running.add(controller);
        const startedAt = this.#now();
        router.onSend(key, worker.id);
        worker
          .infer({ ...baseMeta, timeoutMs: attemptMs }, attachments, {
            timeoutMs: attemptMs,
            signal: controller.signal,
          })
          .then(
            (reply) => {
              running.delete(controller);
              router.onResult(key, worker.id, 'success', this.#now() - startedAt);
              if (settled) return;
              const lost = new InfergridError(
                'CANCELLED',
                `another attempt was answered first (by ${worker.id})`,
              );
              finish(() => resolve({ ...reply, workerId: worker.id, attempts: started }), lost);
            },
            (err: unknown) => {
              running.delete(controller);
              const error = toInfergridError(err);
              // an attempt cut short by its own timeout, with request time left: the worker was too slow
              const attemptTimedOut = error.code === 'DEADLINE_EXCEEDED' && attemptIsShorter;
              router.onResult(
                key,
                worker.id,
                error.isWorkerFault || attemptTimedOut ? 'failure' : 'neutral',
                0,
              );
              if (settled) return;
              // ask the budget before picking, so a refused retry costs no pick (no turn, no weight)
              if ((error.retryable || attemptTimedOut) && started < maxAttempts && budget.canRetry()) {
                const worker2 = next();
                if (worker2 && budget.tryRetry()) {
                  this.retries++;
                  start(worker2);
                  return;
                }
              }
              if (running.size === 0) finish(() => reject(error), error);
            },
          );
      };

      if (request.signal?.aborted) {
        onAbort();
        return;
      }
      request.signal?.addEventListener('abort', onAbort, { once: true });
      const first = next();
      if (!first) {
        const err = this.#unavailable(entry);
        finish(() => reject(err), err);
        return;
      }
      start(first);
      const hedgeMs = maxAttempts > 1 ? router.hedgeDelayMs(key, routeConfig) : undefined;
      if (hedgeMs !== undefined && !settled) {
        hedgeTimer = setTimeout(() => {
          hedgeTimer = undefined;
          if (settled || running.size !== 1 || started >= maxAttempts || !budget.canRetry()) return;
          const worker = next();
          if (worker && budget.tryRetry()) {
            this.hedges++;
            start(worker);
          }
        }, hedgeMs);
      }
    });
  }

  #replicas(entry: ModelEntry): WorkerHandle[] {
    const out: WorkerHandle[] = [];
    for (const id of this.#options.registry.readyReplicas(entry)) {
      const handle = this.#options.pool.get(id);
      if (handle) out.push(handle);
    }
    return out;
  }

  #shardKeyHash(request: DispatchRequest, shardKeyInput: string | undefined): number | undefined {
    const value = request.parameters?.[SHARD_KEY_PARAMETER];
    if (value !== undefined) return hashString(String(value));
    if (shardKeyInput === undefined) return undefined;
    const input = request.inputs.find((t) => t.name === shardKeyInput);
    return input ? hashBytes(input.data) : undefined;
  }

  #unavailable(entry: ModelEntry): InfergridError {
    const { pool } = this.#options;
    const states = [...entry.replicas].map(([id, r]) => {
      const handle = pool.get(id);
      if (handle?.draining) return `${id}: draining`;
      if (r.state === 'ready' && r.schemaKey !== entry.specKey) return `${id}: ready with a different schema`;
      return `${id}: ${r.state}${r.error ? ` (${r.error})` : ''}`;
    });
    return new InfergridError(
      'UNAVAILABLE',
      `no worker has model "${entry.name}" version "${entry.version}" ready${states.length ? ` (${states.join(', ')})` : ' (no worker hosts it)'}; retry later`,
      { details: { retryAfterSeconds: RETRY_AFTER_SECONDS } },
    );
  }
}
