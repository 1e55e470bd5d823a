/**
 * The coordinator: owns the registry, the worker pool and the router, accepts workers on its
 * RPC port, dials static workers, and runs each request's lifecycle after the HTTP layer has
 * parsed it: resolve model -> validate -> pick a worker -> send with a deadline -> answer.
 */

import { type Server, type Socket, createServer } from 'node:net';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { createPackr } from '../protocol/index.ts';
import { type ModelEntry, ModelRegistry, type ModelSpec, modelKey } from '../registry/index.ts';
import { RetryBudget, Router } from '../routing/index.ts';
import {
  Redialer,
  RpcConnection,
  type RpcConnectionOptions,
  acceptHandshake,
  dial,
  dialHandshake,
} from '../rpc/index.ts';
import {
  CoordinatorMetrics,
  type Logger,
  type Tracing,
  endSpan,
  tracingIfEnabled,
} from '../telemetry/index.ts';
import { type HostPort, formatHostPort, parseHostPort } from '../util/address.ts';
import {
  type CacheMode,
  type CacheOutcome,
  ResponseCache,
  cacheKey,
  createCacheStore,
} from '../cache/index.ts';
import { PipelineRunner, type StepTrace } from '../pipeline/index.ts';
import { type DispatchRequest, type DispatchResult, Dispatcher } from './dispatcher.ts';
import { ModelRepository } from './repository.ts';
import { HealthMonitor } from './health-monitor.ts';
import { type InferReply, WorkerPool } from './worker-pool.ts';

export interface CoordinatorOptions {
  config: Readonly<InfergridConfig>;
  logger: Logger;
  /** Spans for cache lookups, routing, RPC attempts and pipeline steps; none when absent or off. */
  tracing?: Tracing | undefined;
}

/** What answered a request: a worker (workerId), or the cache (cache: 'hit'). */
export interface InferResult extends InferReply {
  workerId: string | undefined;
  /** How the request met the cache, when the model caches. */
  cache?: CacheOutcome;
  /** For a pipeline: what each step did. */
  steps?: StepTrace[];
}

export class Coordinator {
  readonly registry: ModelRegistry;
  readonly pool: WorkerPool;
  readonly #config: Readonly<InfergridConfig>;
  readonly #logger: Logger;
  readonly router: Router;
  readonly dispatcher: Dispatcher;
  readonly budget: RetryBudget;
  readonly pipelines: PipelineRunner;
  readonly repository: ModelRepository;
  readonly metrics: CoordinatorMetrics;
  /** The process's tracing, only when it is on (one check tells whether to trace). */
  readonly tracing: Tracing | undefined;
  readonly #health: HealthMonitor;
  readonly #packr = createPackr();
  readonly #statics = new Map<string, Redialer>();
  /** Worker id -> the static address it was dialed at. */
  readonly #staticOf = new Map<string, string>();
  #rpcServer: Server | undefined;
  #cache: ResponseCache | undefined;
  #rpcPort: number | undefined;

  constructor(options: CoordinatorOptions) {
    this.#config = options.config;
    this.#logger = options.logger;
    this.tracing = tracingIfEnabled(options.tracing);
    const { routing } = options.config;
    this.registry = new ModelRegistry(options.config.models);
    this.pool = new WorkerPool(this.registry, routing.health, options.logger);
    this.router = new Router({ routing });
    this.budget = new RetryBudget({
      ratio: routing.retry.budgetRatio,
      minPerSecond: routing.retry.minRetriesPerSecond,
    });
    this.dispatcher = new Dispatcher({
      registry: this.registry,
      pool: this.pool,
      router: this.router,
      budget: this.budget,
      routing,
      tracing: this.tracing,
    });
    this.pipelines = new PipelineRunner({
      registry: this.registry,
      runStep: (step) => this.infer(step, step.cacheMode),
      tracing: this.tracing,
    });
    this.repository = new ModelRepository({
      registry: this.registry,
      pool: this.pool,
      logger: options.logger,
      loadTimeoutMs: options.config.serve.readyTimeoutMs,
    });
    this.metrics = new CoordinatorMetrics({
      workers: () =>
        this.pool.list().map((w) => ({
          id: w.id,
          healthy: w.health === 'healthy',
          draining: w.draining,
          inFlight: w.inFlight,
        })),
      retries: () => this.dispatcher.retries,
      hedges: () => this.dispatcher.hedges,
      circuits: () => {
        const out: { model: string; version: string; worker: string; opens: number }[] = [];
        for (const e of this.registry.allEntries()) {
          for (const workerId of e.replicas.keys()) {
            const handle = this.pool.get(workerId);
            const route = handle && this.router.stats(modelKey(e.name, e.version), handle.key);
            if (route)
              out.push({ model: e.name, version: e.version, worker: workerId, opens: route.circuitOpens });
          }
        }
        return out;
      },
      cache: () => this.#cache?.stats() ?? {},
      readyReplicas: () =>
        [...this.registry.entries()].map((e) => ({
          model: e.name,
          version: e.version,
          replicas: this.registry.readyReplicas(e).length,
        })),
      pipelineRuns: () => this.pipelines.runs,
      pipelineStepRuns: () => this.pipelines.stepRuns,
    });
    this.#health = new HealthMonitor({ pool: this.pool, ...routing.health, logger: options.logger });
    // a worker that leaves and comes back (restart) starts with a clean record
    this.pool.on('left', (handle) => this.router.forgetWorker(handle.id, handle.key));
  }

  get rpcPort(): number | undefined {
    return this.#rpcPort;
  }

  /** Opens the RPC port for workers and starts dialing the static workers. */
  async start(): Promise<void> {
    // the cache first: a store that cannot be opened stops the start before any port is taken
    this.#cache = new ResponseCache(await createCacheStore(this.#config.cache, this.#logger), this.#logger);
    const { rpcHost, rpcPort, workers } = this.#config.coordinator;
    const server = createServer((socket) => this.#accept(socket));
    this.#rpcServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(rpcPort, rpcHost, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    this.#rpcPort = typeof address === 'object' && address ? address.port : rpcPort;
    this.#logger.info(
      { address: formatHostPort({ host: rpcHost, port: this.#rpcPort }) },
      'coordinator RPC listening',
    );
    for (const w of workers) this.addStaticWorker(parseHostPort(w, 'coordinator.workers'));
    this.#health.start();
  }

  async stop(): Promise<void> {
    this.#health.stop();
    for (const link of this.#statics.values()) link.stop();
    this.#statics.clear();
    this.pool.closeAll();
    const server = this.#rpcServer;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await this.#cache?.store.close();
  }

  /** The response cache (once started). */
  get cache(): ResponseCache | undefined {
    return this.#cache;
  }

  /**
   * Dials a worker at `address` and keeps it connected (reconnecting with backoff). A weight
   * given here overrides the one the worker reports. Returns false if it is already dialed.
   */
  addStaticWorker(address: HostPort, weight?: number): boolean {
    const label = formatHostPort(address);
    if (this.#statics.has(label)) return false;
    const rpc = this.#config.rpc;
    const link = new Redialer({
      label,
      dial: () => dial(address, this.#connectionOptions(), rpc.connectTimeoutMs),
      setup: async (conn) => {
        await dialHandshake(
          conn,
          { role: 'coordinator', id: 'coordinator', token: this.#config.auth.token },
          rpc.handshakeTimeoutMs,
        );
        const handle = await this.pool.admit(conn, 'static', rpc.handshakeTimeoutMs);
        if (weight !== undefined) handle.weight = weight;
        this.#staticOf.set(handle.id, label);
      },
      backoff: { initialDelayMs: rpc.reconnectInitialDelayMs, maxDelayMs: rpc.reconnectMaxDelayMs },
      logger: this.#logger,
    });
    this.#statics.set(label, link);
    link.start();
    return true;
  }

  /** Static worker addresses being dialed. */
  get staticWorkers(): string[] {
    return [...this.#statics.keys()];
  }

  /**
   * Drains a worker out of this coordinator: no new requests, waits (up to `timeoutMs`) for
   * what it is running, then closes the connection. A static worker is no longer redialed;
   * a worker that dialed in is refused if it comes back, until `readmit`. The worker process
   * itself keeps running (it may serve other coordinators).
   */
  async removeWorker(id: string, timeoutMs: number): Promise<{ drained: boolean }> {
    const handle = this.pool.get(id);
    if (!handle) throw new InfergridError('NOT_FOUND', `no worker "${id}" is connected`);
    handle.removing = true;
    // whichever way it joined, it stays out until re-admitted
    this.pool.block(id);
    const label = this.#staticOf.get(id);
    if (label) {
      this.#statics.get(label)?.stop(true);
      this.#statics.delete(label);
      this.#staticOf.delete(id);
    }
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      handle.idle().then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    await handle.conn.closeGracefully();
    this.#logger.info({ worker: id, drained }, 'worker removed by an operator');
    return { drained };
  }

  /** Lets a removed worker register again. */
  readmit(id: string): boolean {
    return this.pool.unblock(id);
  }

  /** Finds the model a request names and its schema (404 / 503 when it cannot). */
  resolve(name: string, version?: string): { entry: ModelEntry; spec: ModelSpec } {
    const entry = this.registry.resolve(name, version);
    return { entry, spec: this.registry.specOf(entry) };
  }

  /**
   * Finds the model version an inference request goes to (the one named, else by the traffic
   * split, else the newest served) and its schema.
   */
  route(name: string, version?: string, key?: number): { entry: ModelEntry; spec: ModelSpec } {
    const entry = this.registry.route(name, version, key);
    return { entry, spec: this.registry.specOf(entry) };
  }

  /** Routes a validated request to a worker, with retries, failover and hedging. */
  dispatch(request: DispatchRequest): Promise<DispatchResult> {
    return this.dispatcher.dispatch(request);
  }

  /** Runs a request past the cache: a pipeline here, a model on a worker. */
  async #execute(request: DispatchRequest, cacheMode: CacheMode): Promise<InferResult> {
    if (request.entry.config?.backend !== 'pipeline') return this.dispatcher.dispatch(request);
    const result = await this.pipelines.run({ ...request, cacheMode });
    return { meta: result.meta, outputs: result.outputs, workerId: undefined, steps: result.steps };
  }

  /**
   * Answers a validated request: from the response cache when the model caches and the request
   * allows it (joining an identical request in flight), else from a worker.
   */
  async infer(request: DispatchRequest, cacheMode: CacheMode = 'normal'): Promise<InferResult> {
    const { entry } = request;
    const policy = entry.config?.cache;
    const cache = this.#cache;
    if (!cache || !policy?.enabled) return this.#execute(request, cacheMode);
    const key = cacheKey(entry.name, entry.version, request.inputs, request.outputs, request.parameters);
    let workerId: string | undefined;
    // ends when the cache answers, or when it hands the request on to be computed
    let lookup =
      this.tracing && request.traceContext
        ? this.tracing.startCacheLookup(request.traceContext, entry.name)
        : undefined;
    const running = cache.run(
      {
        model: entry.name,
        key,
        ttlMs: policy.ttlMs ?? this.#config.cache.defaultTtlMs,
        mode: cacheMode,
        signal: request.signal,
        timeoutMs: request.timeoutMs,
      },
      async (signal) => {
        if (lookup) {
          lookup.setAttribute('infergrid.cache.outcome', cacheMode === 'normal' ? 'miss' : cacheMode);
          lookup.end();
          lookup = undefined;
        }
        const result = await this.#execute({ ...request, signal }, cacheMode);
        workerId = result.workerId;
        return { meta: result.meta, outputs: result.outputs };
      },
    );
    // the failure itself is the caller's (awaited below); this only closes the span
    if (lookup) running.catch((err: unknown) => lookup && endSpan(lookup, err));
    const { response, outcome } = await running;
    if (lookup) {
      lookup.setAttribute('infergrid.cache.outcome', outcome);
      lookup.end();
    }
    return { ...response, workerId, cache: outcome };
  }

  #connectionOptions(): Omit<RpcConnectionOptions, 'side'> {
    const { maxFrameBytes, heartbeatIntervalMs, peerTimeoutMs } = this.#config.rpc;
    return { maxFrameBytes, heartbeatIntervalMs, peerTimeoutMs, packr: this.#packr };
  }

  #accept(socket: Socket): void {
    const conn = new RpcConnection(socket, { ...this.#connectionOptions(), side: 'listener' });
    const rpc = this.#config.rpc;
    acceptHandshake(
      conn,
      { role: 'coordinator', id: 'coordinator', token: this.#config.auth.token },
      rpc.handshakeTimeoutMs,
    )
      .then((hello) => {
        if (hello.role !== 'worker') {
          const err = new InfergridError(
            'PROTOCOL_ERROR',
            `the RPC port takes workers; a ${hello.role} connected`,
          );
          conn.close(err, true);
          throw err;
        }
        return this.pool.admit(conn, 'inbound', rpc.handshakeTimeoutMs);
      })
      .catch((err: InfergridError) => {
        this.#logger.warn(
          { peer: conn.remoteAddress, code: err.code, err: err.message },
          'refused an RPC connection',
        );
      });
  }
}
