/**
 * The coordinator: owns the registry, the worker pool and the router, accepts workers on its
 * RPC port, dials static workers, and is the one entry point every front door calls with a
 * protocol-neutral request (`infer`, `submit` for an asynchronous answer, `stream`). Each
 * request goes through the same stages, here and nowhere else:
 *   resolve the version and traffic split (the shard key hashed once) -> validate against the
 *   schema -> response cache and single-flight -> a pipeline, or dispatch to a worker with
 *   retries, failover and hedging -> publish the outcome (request-events channel).
 */

import { type Server, type Socket, createServer } from 'node:net';
import { type InfergridConfig, runsOnCoordinator, runtimeLoadPolicy } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { createPackr } from '../protocol/index.ts';
import { type ModelEntry, ModelRegistry, validateInputs } from '../registry/index.ts';
import { RetryBudget, Router, hashString } from '../routing/index.ts';
import {
  AcceptGate,
  Redialer,
  RpcConnection,
  type RpcConnectionOptions,
  type RpcCredentials,
  type RpcTls,
  acceptHandshake,
  clusterCredentials,
  dial,
  dialHandshake,
  loadRpcTls,
  requireServerCertificate,
  secureAccepted,
} from '../rpc/index.ts';
import {
  CoordinatorMetrics,
  type Logger,
  type RequestEndEvent,
  type Tracing,
  type StageEvent,
  countedModel,
  endStage,
  requestEnd,
  startStage,
  subscribeLlmMetrics,
  subscribeMetrics,
  subscribeRequestLog,
  subscribeTracing,
  tracingIfEnabled,
} from '../telemetry/index.ts';
import { type HostPort, formatHostPort, parseHostPort } from '../util/address.ts';
import { type CacheStore, ResponseCache, cacheKey, createCacheStore } from '../cache/index.ts';
import { AsyncRequests, asyncStore } from '../async/index.ts';
import {
  type PipelineResult,
  PipelineRunner,
  type StepRequest,
  stepInputsMisfit,
} from '../pipeline/index.ts';
import { batchSizeOf } from '../batching/index.ts';
import { CoordinatorStats } from './coordinator-stats.ts';
import { type FleetWorker, fleetSnapshot } from './fleet.ts';
import { type DispatchRequest, Dispatcher, type Replica, type ReplicaSource } from './dispatcher.ts';
import { checkBytesTensor, checkRequestShape } from './limits.ts';
import type { InferResult, InferenceRequest } from './request.ts';
import { ModelRepository } from './repository.ts';
import { type ControlChangeOptions, type ControlJournal, NO_ENTRY } from './control-journal.ts';
import { HealthMonitor } from './health-monitor.ts';
import { StreamRun } from './stream-run.ts';
import { LabelFiles, applyClassification, checkClassification } from './classification.ts';
import { StreamTiming, publishStreamEnd } from './stream-timing.ts';
import { WorkerPool } from './worker-pool.ts';

export interface CoordinatorOptions {
  config: Readonly<InfergridConfig>;
  logger: Logger;
  /** Spans for cache lookups, routing, RPC attempts and pipeline steps; none when absent or off. */
  tracing?: Tracing | undefined;
  /** The config file's folder: relative model paths of runtime loads resolve against it. Default: the working directory. */
  baseDir?: string | undefined;
}

/** A request resolved to a model version and checked against its schema. */
interface Resolved {
  entry: ModelEntry;
  /** 32-bit hash of the shard key, computed once for the version split and the worker pick. */
  shardKeyHash: number | undefined;
  /** The validate stage, open from resolve to the end of validation (traced requests only). */
  stage: StageEvent | undefined;
}

/** Turns an asynchronous request's result into what is kept for the client to fetch. */
export type EncodeResult = (result: InferResult, request: InferenceRequest) => object;

/** One part of a streamed answer; the last has `final: true`. */
export interface StreamChunk {
  result: InferResult;
  final: boolean;
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
  /** What only the coordinator counts per version: cache hits and misses, pipelines (the statistics API adds the workers'). */
  readonly stats: CoordinatorStats;
  /** The process's tracing, only when it is on (one check tells whether to trace). */
  readonly tracing: Tracing | undefined;
  /**
   * Where operators' control-plane changes are shared with other coordinators (set by the
   * cluster's control plane when `cluster` is configured); undefined: they stay here.
   */
  controlJournal: ControlJournal | undefined;
  readonly #health: HealthMonitor;
  readonly #packr = createPackr();
  readonly #statics = new Map<string, Redialer>();
  /** Every worker's key, from the cluster secret; none when RPC runs without authentication. */
  readonly #credentials: RpcCredentials | undefined;
  /** Worker id -> the static address it was dialed at. */
  readonly #staticOf = new Map<string, string>();
  #rpcServer: Server | undefined;
  /** rpc.tls loaded at start; undefined: plain TCP. */
  #tls: RpcTls | undefined;
  #cache: ResponseCache | undefined;
  #asyncRequests: AsyncRequests | undefined;
  /** The cluster Redis opened for asynchronous requests when the cache has no Redis tier (closed at stop). */
  #ownedAsyncStore: CacheStore | undefined;
  /** Bounds the connections waiting for their handshake on the RPC port (once started). */
  #gate: AcceptGate | undefined;
  #rpcPort: number | undefined;
  readonly #unsubscribe: (() => void)[];
  /** Labels of the classification extension. */
  readonly #labels: LabelFiles;
  /** Whether a name is served (has a version): which model a refused request counts under. */
  readonly #servesName = (name: string): boolean => this.registry.versions(name).length > 0;

  constructor(options: CoordinatorOptions) {
    this.#config = options.config;
    this.#logger = options.logger;
    this.tracing = tracingIfEnabled(options.tracing);
    const { token } = options.config.auth;
    this.#credentials = token ? clusterCredentials(token) : undefined;
    const { routing } = options.config;
    this.registry = new ModelRegistry(options.config.models);
    this.stats = new CoordinatorStats((name, version) => this.registry.versions(name).includes(version));
    this.pool = new WorkerPool(this.registry, routing.health, options.logger);
    this.router = new Router({ routing });
    this.budget = new RetryBudget({
      ratio: routing.retry.budgetRatio,
      minPerSecond: routing.retry.minRetriesPerSecond,
    });
    this.dispatcher = new Dispatcher({
      replicas: this.#replicaSource(),
      router: this.router,
      budget: this.budget,
      retry: routing.retry,
      source: this,
    });
    this.pipelines = new PipelineRunner({
      runStep: (step) => this.infer(stepRequest(step)),
      source: this,
    });
    const runtimeLoads = runtimeLoadPolicy(options.config, options.baseDir ?? process.cwd());
    this.repository = new ModelRepository({
      registry: this.registry,
      pool: this.pool,
      logger: options.logger,
      loadTimeoutMs: options.config.serve.readyTimeoutMs,
      runtimeLoads,
      journal: () => this.controlJournal,
    });
    this.#labels = new LabelFiles(runtimeLoads.paths);
    this.metrics = new CoordinatorMetrics({
      workers: () => this.fleet(),
      retries: () => this.dispatcher.retries,
      hedges: () => this.dispatcher.hedges,
      circuits: () =>
        this.fleet().flatMap((w) =>
          w.models.map((m) => ({ model: m.name, version: m.version, worker: w.id, opens: m.circuitOpens })),
        ),
      cache: () => this.#cache?.stats() ?? {},
      readyReplicas: () =>
        [...this.registry.entries()].map((e) => ({
          model: e.name,
          version: e.version,
          replicas: this.registry.readyReplicas(e).length,
        })),
      pipelineRuns: () => this.pipelines.runs,
      pipelineStepRuns: () => this.pipelines.stepRuns,
      prefixRouting: () => {
        const { queries, hits, size } = this.router.prefixes;
        return { queries, hits, entries: size };
      },
    });
    this.#health = new HealthMonitor({ pool: this.pool, ...routing.health, logger: options.logger });
    // the request path publishes its stages; metrics, the log line and spans are subscribers
    this.#unsubscribe = [
      subscribeMetrics(this, this.metrics),
      subscribeLlmMetrics(this, this.metrics.registry),
      subscribeRequestLog(this, options.logger),
    ];
    if (this.tracing) this.#unsubscribe.push(subscribeTracing(this, this.tracing));
    // a worker that leaves and comes back (restart) starts with a clean record
    this.pool.on('left', (handle) => this.router.forgetWorker(handle.id, handle.key));
  }

  get rpcPort(): number | undefined {
    return this.#rpcPort;
  }

  /** Opens the RPC port for workers and starts dialing the static workers. */
  async start(): Promise<void> {
    // files that cannot be read stop the start before anything is opened
    this.#tls = loadRpcTls(this.#config.rpc.tls);
    requireServerCertificate(this.#tls, 'the coordinator');
    // the cache first: a store that cannot be opened stops the start before any port is taken
    this.#cache = new ResponseCache(await createCacheStore(this.#config.cache, this.#logger), this.#logger);
    const { store, owned } = asyncStore(this.#cache.store, this.#config.cluster);
    this.#ownedAsyncStore = owned;
    this.#asyncRequests = new AsyncRequests({
      resultTtlMs: this.#config.async.resultTtlMs,
      maxPending: this.#config.async.maxPending,
      cancelWaitMs: this.#config.async.cancelWaitMs,
      store,
      logger: this.#logger,
    });
    // listening for cancels from other coordinators before this one is reported ready
    await this.#asyncRequests.ready();
    const { rpcHost, rpcPort, workers } = this.#config.coordinator;
    this.#gate = new AcceptGate({
      maxPendingHandshakes: this.#config.rpc.maxPendingHandshakes,
      logIntervalMs: this.#config.rpc.refusalLogIntervalMs,
      logger: this.#logger,
    });
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
    // before the store it writes to
    await this.#asyncRequests?.close();
    await this.#ownedAsyncStore?.close();
    await this.#cache?.store.close();
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
  }

  /** Every connected worker with the model versions it hosts: what the admin routes, the dashboard and the gauges show. */
  fleet(): FleetWorker[] {
    return fleetSnapshot(this.registry, this.pool, this.router);
  }

  /** Where asynchronous requests run and keep their results (once started). */
  get asyncRequests(): AsyncRequests | undefined {
    return this.#asyncRequests;
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
      dial: () => dial(address, this.#connectionOptions(), rpc.connectTimeoutMs, this.#tls),
      setup: async (conn) => {
        await dialHandshake(
          conn,
          { role: 'coordinator', id: 'coordinator', credentials: this.#credentials },
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

  /**
   * Stops dialing the static target `label` (host:port) whether or not it ever connected. A
   * worker it connected is left to `removeWorker`: its id is returned. False: no such target.
   */
  stopStaticWorker(label: string): { stopped: boolean; workerId?: string } {
    const link = this.#statics.get(label);
    if (!link) return { stopped: false };
    for (const [id, l] of this.#staticOf) if (l === label) return { stopped: true, workerId: id };
    void link.stop();
    this.#statics.delete(label);
    return { stopped: true };
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
  async removeWorker(
    id: string,
    timeoutMs: number,
    options: ControlChangeOptions = {},
  ): Promise<{ drained: boolean }> {
    const handle = this.pool.get(id);
    if (!handle) {
      // another coordinator removed it: it stays out of here too, connected or not
      if (options.replicated) {
        this.pool.block(id);
        return { drained: true };
      }
      throw new InfergridError('NOT_FOUND', `no worker "${id}" is connected`);
    }
    handle.removing = true;
    // whichever way it joined, it stays out until re-admitted
    this.pool.block(id);
    const entry = options.replicated ? NO_ENTRY : (this.controlJournal?.begin('removal', id) ?? NO_ENTRY);
    entry.commit('remove', { timeoutMs });
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
  readmit(id: string, options: ControlChangeOptions = {}): boolean {
    const entry = options.replicated ? NO_ENTRY : (this.controlJournal?.begin('removal', id) ?? NO_ENTRY);
    const unblocked = this.pool.unblock(id);
    if (unblocked) entry.commit('readmit', {});
    else entry.abort();
    return unblocked;
  }

  /**
   * Finds the model version a control-plane request names (metadata, readiness, config,
   * statistics, traffic), else the newest served (404 when there is none).
   * Inference requests are resolved by `infer`, with the traffic split.
   */
  resolve(name: string, version?: string): ModelEntry {
    return this.registry.resolve(name, version);
  }

  /**
   * The one entry point: answers a request from the cache or a worker (a pipeline's steps come
   * back here). Throws a typed error; a deadline is reported in the request's own terms.
   */
  async infer(request: InferenceRequest): Promise<InferResult> {
    const receivedAtMs = request.receivedAtMs ?? performance.now();
    let resolved: Resolved | undefined;
    try {
      resolved = this.#resolve(request);
      this.#validate(request, resolved);
      const result = await this.#answer(
        request,
        resolved,
        remainingMs(request, receivedAtMs),
        request.signal,
      );
      this.#published(request, resolved.entry, undefined, 'answered', receivedAtMs, result);
      return result;
    } catch (err) {
      const e = inClientTerms(err, request.timeoutMs);
      this.#published(request, resolved?.entry, e.code, 'answered', receivedAtMs, undefined);
      throw e;
    }
  }

  /**
   * Takes a request to run asynchronously: it is resolved and validated now (bad input is the
   * caller's error at once), then runs on after this returns; `encode` turns its result into
   * what GET /v2/requests/{id} returns.
   */
  submit(request: InferenceRequest, encode: EncodeResult): { id: string } {
    const receivedAtMs = request.receivedAtMs ?? performance.now();
    const asyncRequests = this.#asyncRequests;
    let resolved: Resolved | undefined;
    try {
      if (!asyncRequests) throw new InfergridError('UNAVAILABLE', 'the coordinator is not started');
      resolved = this.#resolve(request);
      this.#validate(request, resolved);
      const target = resolved;
      const timeoutMs = remainingMs(request, receivedAtMs);
      const submitted = asyncRequests.submit(
        (signal) => this.#runAsync(request, target, timeoutMs, signal, encode),
        { timeoutMs, owner: request.caller.kind === 'client' ? request.caller.id : undefined },
      );
      this.#published(request, target.entry, undefined, 'accepted', receivedAtMs, undefined);
      return submitted;
    } catch (err) {
      const e = toInfergridError(err);
      this.#published(request, resolved?.entry, e.code, 'answered', receivedAtMs, undefined);
      throw e;
    }
  }

  /**
   * The streaming entry: the same resolve and validate as `infer`, then partial results as the
   * worker makes them and a final one (a model that does not stream answers with the final one
   * only; a pipeline too). The cache is never used. The consumer pulling from the generator is
   * what returns credit to the worker, so a slow consumer slows the model instead of growing a
   * buffer; a consumer that stops (return, throw) cancels the request on its worker at once.
   * A failure before any partial result was taken is retried on another worker like `infer`'s;
   * after one, the generator throws it. `partials: false` asks for the final result only.
   */
  async *stream(
    request: InferenceRequest,
    options: { partials?: boolean } = {},
  ): AsyncGenerator<StreamChunk, void, undefined> {
    const receivedAtMs = request.receivedAtMs ?? performance.now();
    let resolved: Resolved;
    try {
      resolved = this.#resolve(request);
      this.#validate(request, resolved);
    } catch (err) {
      const e = inClientTerms(err, request.timeoutMs);
      this.#published(request, undefined, e.code, 'answered', receivedAtMs, undefined);
      throw e;
    }
    const { entry } = resolved;
    if (runsOnCoordinator(entry.config)) {
      let result: InferResult;
      try {
        result = await this.#execute(request, resolved, remainingMs(request, receivedAtMs), request.signal);
        if (request.classification?.size)
          result = await this.#classified(result, request.classification, entry);
      } catch (err) {
        const e = inClientTerms(err, request.timeoutMs);
        this.#published(request, entry, e.code, 'answered', receivedAtMs, undefined);
        throw e;
      }
      this.#published(request, entry, undefined, 'answered', receivedAtMs, result);
      yield { result, final: true };
      return;
    }
    const run = new StreamRun({
      dispatcher: this.dispatcher,
      request: dispatchRequest(request, resolved, remainingMs(request, receivedAtMs), request.signal),
      window: this.#config.rpc.streamWindow,
      partials: options.partials !== false,
    });
    const timing = new StreamTiming(receivedAtMs);
    let ended = false;
    const end = (code: string | undefined, result: InferResult | undefined): void => {
      if (ended) return;
      ended = true;
      this.#published(request, entry, code, 'answered', receivedAtMs, result);
      if (request.caller.kind === 'client') publishStreamEnd(this, entry, run.workerId, code, timing, result);
    };
    try {
      for (;;) {
        const item = await run.next();
        if (item.final) {
          let result: InferResult = {
            meta: item.result.meta,
            outputs: item.result.outputs,
            workerId: item.result.workerId,
          };
          if (request.classification?.size)
            result = await this.#classified(result, request.classification, entry);
          end(undefined, result);
          yield { result, final: true };
          return;
        }
        timing.partial(request.traceContext);
        yield {
          result: { meta: item.reply.meta, outputs: item.reply.outputs, workerId: item.workerId },
          final: false,
        };
      }
    } catch (err) {
      const e = inClientTerms(err, request.timeoutMs);
      end(e.code, undefined);
      throw e;
    } finally {
      // the consumer stopped early (or it all ended): nothing more is wanted from the worker
      run.close();
      end('CANCELLED', undefined);
    }
  }

  /** Counts a request a front door refused before it reached the entry point (it could not be parsed). */
  refused(
    model: string,
    err: unknown,
    transport: { requestId?: string | undefined; traceparent?: string | undefined; receivedAtMs: number },
  ): void {
    const { requestId, traceparent, receivedAtMs } = transport;
    this.#publish(
      model,
      undefined,
      toInfergridError(err).code,
      'answered',
      receivedAtMs,
      undefined,
      requestId,
      traceparent,
    );
  }

  async #runAsync(
    request: InferenceRequest,
    resolved: Resolved,
    timeoutMs: number,
    signal: AbortSignal,
    encode: EncodeResult,
  ): Promise<object> {
    const started = performance.now();
    try {
      const result = await this.#answer(request, resolved, timeoutMs, signal);
      const response = encode(result, request);
      this.#published(request, resolved.entry, undefined, 'finished', started, result);
      return response;
    } catch (err) {
      const e = inClientTerms(err, request.timeoutMs);
      this.#published(request, resolved.entry, e.code, 'finished', started, undefined);
      throw e;
    }
  }

  #published(
    request: InferenceRequest,
    entry: ModelEntry | undefined,
    code: string | undefined,
    phase: RequestEndEvent['phase'],
    sinceMs: number,
    result: InferResult | undefined,
  ): void {
    // a pipeline's steps are counted by the pipeline runner, not as clients' requests
    if (request.caller.kind !== 'client') return;
    this.#publish(request.model, entry, code, phase, sinceMs, result, request.requestId, request.traceparent);
  }

  #publish(
    model: string,
    entry: ModelEntry | undefined,
    code: string | undefined,
    phase: RequestEndEvent['phase'],
    sinceMs: number,
    result: InferResult | undefined,
    requestId: string | undefined,
    traceparent: string | undefined,
  ): void {
    if (!requestEnd.hasSubscribers) return;
    requestEnd.publish({
      source: this,
      model,
      entry,
      code,
      phase,
      countedModel: countedModel(model, entry, this.#servesName),
      durationMs: performance.now() - sinceMs,
      workerId: result?.workerId,
      cache: result?.cache,
      requestId,
      traceparent,
    } satisfies RequestEndEvent);
  }

  /**
   * Resolve: the model version (named, else by the traffic split, else the newest served), the
   * shard key hashed once for the split and the worker pick. For a pipeline's step, a model that
   * cannot be served is UNAVAILABLE (the pipeline exists; a step it needs does not).
   */
  #resolve(request: InferenceRequest): Resolved {
    const { caller } = request;
    const stage = startStage(this, 'validate', request.traceContext, request.model);
    const shardKeyHash = request.shardKey === undefined ? undefined : hashString(request.shardKey);
    try {
      const entry = this.registry.route(
        request.model,
        request.version,
        shardKeyHash === undefined ? undefined : shardKeyHash / 2 ** 32,
      );
      return { entry, shardKeyHash, stage };
    } catch (err) {
      endStage(stage, err);
      if (caller.kind === 'client') throw err;
      throw new InfergridError(
        'UNAVAILABLE',
        `pipeline "${caller.pipeline}" step "${caller.step}": ${(err as Error).message}`,
        { cause: err, details: { pipeline: caller.pipeline, step: caller.step } },
      );
    }
  }

  /**
   * Validate: the request checked against the resolved model's schema. For a pipeline's step,
   * inputs that do not fit are the pipeline definition's fault (INTERNAL), not the client's.
   */
  #validate(request: InferenceRequest, resolved: Resolved): void {
    const { caller } = request;
    try {
      if (caller.kind === 'client') {
        const { limits } = this.#config.coordinator;
        checkRequestShape(limits, request.inputs, request.id);
        for (const t of request.inputs) if (t.datatype === 'BYTES') checkBytesTensor(limits, t);
      }
      const spec = this.registry.specOf(resolved.entry);
      validateInputs(spec, request.inputs, request.outputs);
      if (request.classification?.size) checkClassification(spec, request.classification, request.outputs);
    } catch (err) {
      endStage(resolved.stage, err);
      if (caller.kind === 'client') throw err;
      throw stepInputsMisfit(caller.pipeline, caller.step, request.model, err);
    }
    endStage(resolved.stage);
  }

  /**
   * Cache and execute: from the response cache when the model caches and the request allows it
   * (joining an identical request in flight), else a pipeline here or a model on a worker.
   */
  #answer(
    request: InferenceRequest,
    resolved: Resolved,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<InferResult> {
    const policy = resolved.entry.config?.cache;
    // not async: a model without a cache costs no extra promise on the hot path
    const answered =
      !this.#cache || !policy?.enabled
        ? this.#execute(request, resolved, timeoutMs, signal)
        : this.#cached(this.#cache, policy, request, resolved, timeoutMs, signal);
    // after the cache: it keeps the model's own outputs, whatever count a request asks for
    const { classification } = request;
    if (!classification?.size) return answered;
    return answered.then((result) => this.#classified(result, classification, resolved.entry));
  }

  /** A result with the outputs a request classifies replaced by their top classes. */
  async #classified(
    result: InferResult,
    classification: ReadonlyMap<string, number>,
    entry: ModelEntry,
  ): Promise<InferResult> {
    const spec = this.registry.specOf(entry);
    const outputs = await applyClassification(
      result.outputs,
      classification,
      spec,
      entry.config,
      this.#labels,
    );
    return { ...result, outputs };
  }

  async #cached(
    cache: ResponseCache,
    policy: { ttlMs?: number | undefined },
    request: InferenceRequest,
    resolved: Resolved,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<InferResult> {
    const { entry } = resolved;
    const { cacheMode } = request;
    const key = cacheKey(
      entry.name,
      entry.version,
      this.#generationOf(entry),
      request.inputs,
      request.outputs,
      request.parameters,
    );
    let workerId: string | undefined;
    let timings: InferResult['timings'];
    const stats = this.stats.forEntry(entry);
    // Triton's cache_hit/cache_miss: the lookup (and decoding, on a hit; storing, on a miss)
    const lookupStartedMs = performance.now();
    let lookupMs = 0;
    // ends when the cache answers, or when it hands the request on to be computed
    let lookup = startStage(this, 'cache', request.traceContext, entry.name);
    const running = cache.run(
      {
        model: entry.name,
        key,
        ttlMs: policy.ttlMs ?? this.#config.cache.defaultTtlMs,
        mode: cacheMode,
        signal,
        timeoutMs,
        onStored: cacheMode === 'normal' ? (ms) => stats.onCacheInsert(ms) : undefined,
      },
      async (computeSignal) => {
        lookupMs = performance.now() - lookupStartedMs;
        if (lookup) {
          lookup.outcome = cacheMode === 'normal' ? 'miss' : cacheMode;
          endStage(lookup);
          lookup = undefined;
        }
        const result = await this.#execute(request, resolved, timeoutMs, computeSignal);
        workerId = result.workerId;
        timings = result.timings;
        return { meta: result.meta, outputs: result.outputs };
      },
    );
    // the failure itself is the caller's (awaited below); this only closes the stage
    if (lookup) running.catch((err: unknown) => endStage(lookup, err));
    const { response, outcome } = await running;
    if (lookup) {
      lookup.outcome = outcome;
      endStage(lookup);
    }
    // counted once answered, as Triton counts them with a successful response
    if (outcome === 'hit') stats.onCacheHit(performance.now() - lookupStartedMs, Date.now());
    else if (outcome === 'miss') stats.onCacheMiss(lookupMs);
    return { ...response, workerId, cache: outcome, timings };
  }

  /**
   * What a version's answers come from, for its cache keys: its own generation (config and model
   * files), and for a pipeline also that of the version each step goes to now.
   */
  #generationOf(entry: ModelEntry): string {
    const steps = entry.config?.backend === 'pipeline' ? entry.config.pipeline?.steps : undefined;
    if (!steps) return entry.generation;
    let generation = entry.generation;
    for (const step of steps) {
      let stepGeneration: string;
      try {
        stepGeneration = this.#generationOf(this.registry.route(step.model, step.version));
      } catch {
        // the step cannot be served: the pipeline fails before its answer could be stored
        stepGeneration = 'unavailable';
      }
      generation += `|${step.name}=${stepGeneration}`;
    }
    return generation;
  }

  /**
   * Runs a request past the cache: a pipeline here, a model on a worker (a pipeline that runs on
   * its workers too: dispatched whole, its steps never come back here).
   */
  #execute(
    request: InferenceRequest,
    resolved: Resolved,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<InferResult> {
    const { entry } = resolved;
    if (runsOnCoordinator(entry.config)) return this.#runPipeline(request, entry, timeoutMs, signal);
    return this.dispatcher.dispatch(dispatchRequest(request, resolved, timeoutMs, signal));
  }

  async #runPipeline(
    request: InferenceRequest,
    entry: ModelEntry,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<InferResult> {
    const startedMs = performance.now();
    const stats = this.stats.forEntry(entry);
    let result: PipelineResult;
    try {
      result = await this.pipelines.run({
        entry,
        inputs: request.inputs,
        outputs: request.outputs,
        parameters: request.parameters,
        id: request.id,
        timeoutMs,
        signal,
        cacheMode: request.cacheMode,
        traceContext: request.traceContext,
      });
    } catch (err) {
      stats.onPipeline(false, performance.now() - startedMs, 0, undefined, Date.now());
      throw err;
    }
    const ms = performance.now() - startedMs;
    // an ensemble's rows: its batch size when it batches, else 1 (Triton's max(1, batch size))
    const rows = entry.config?.batchable ? Math.max(1, batchSizeOf(request.inputs)) : 1;
    stats.onPipeline(true, ms, rows, result.timings, Date.now());
    this.stats.observePipelineLatency(entry.name, entry.version, ms);
    return {
      meta: result.meta,
      outputs: result.outputs,
      workerId: undefined,
      steps: result.steps,
      timings: result.timings,
    };
  }

  /** The registry and pool as the dispatcher sees them: a model's ready replicas, and why none is. */
  #replicaSource(): ReplicaSource {
    const { registry, pool } = this;
    return {
      replicas(entry: ModelEntry): Replica[] {
        const out: Replica[] = [];
        for (const id of registry.readyReplicas(entry)) {
          const handle = pool.get(id);
          if (handle) out.push(handle);
        }
        return out;
      },
      describeReplicas(entry: ModelEntry): string[] {
        return [...entry.replicas].map(([id, r]) => {
          const handle = pool.get(id);
          if (handle?.draining) return `${id}: draining`;
          if (r.state === 'ready' && r.schemaKey !== entry.specKey)
            return `${id}: ready with a different schema`;
          return `${id}: ${r.state}${r.error ? ` (${r.error})` : ''}`;
        });
      },
    };
  }

  #connectionOptions(): Omit<RpcConnectionOptions, 'side'> {
    const { maxFrameBytes, heartbeatIntervalMs, peerTimeoutMs } = this.#config.rpc;
    return { maxFrameBytes, heartbeatIntervalMs, peerTimeoutMs, packr: this.#packr };
  }

  #accept(socket: Socket): void {
    const gate = this.#gate;
    if (!gate?.admit(socket)) return;
    const conn = new RpcConnection(secureAccepted(socket, this.#tls), {
      ...this.#connectionOptions(),
      side: 'listener',
    });
    const rpc = this.#config.rpc;
    // the handshake refuses anything but a worker holding the key of the id it gives
    acceptHandshake(
      conn,
      { role: 'coordinator', id: 'coordinator', credentials: this.#credentials },
      rpc.handshakeTimeoutMs,
    )
      .then(() => this.pool.admit(conn, 'inbound', rpc.handshakeTimeoutMs))
      .then(
        () => gate.done(),
        (err: InfergridError) => {
          gate.done();
          gate.refused(
            { peer: conn.remoteAddress, code: err.code, err: err.message },
            'refused an RPC connection',
          );
        },
      );
  }
}

/** A resolved request as the dispatcher (or a stream's run) sends it. */
function dispatchRequest(
  request: InferenceRequest,
  resolved: Resolved,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): DispatchRequest {
  return {
    entry: resolved.entry,
    shardKeyHash: resolved.shardKeyHash,
    inputs: request.inputs,
    outputs: request.outputs,
    parameters: request.parameters,
    id: request.id,
    timeoutMs,
    signal,
    traceContext: request.traceContext,
  };
}

/** Time left of a request's budget, ms (at least 1): the coordinator's own time counts too. */
function remainingMs(request: InferenceRequest, receivedAtMs: number): number {
  return Math.max(1, Math.round(request.timeoutMs - (performance.now() - receivedAtMs)));
}

/** Says a deadline in the client's terms (the whole request's), not one step's or attempt's. */
function inClientTerms(err: unknown, timeoutMs: number): InfergridError {
  const e = toInfergridError(err);
  if (e.code !== 'DEADLINE_EXCEEDED') return e;
  return new InfergridError(
    'DEADLINE_EXCEEDED',
    `request did not complete within its deadline of ${timeoutMs} ms`,
    {
      details: { timeoutMs },
    },
  );
}

/** A pipeline step as a request to the entry point, the pipeline its caller. */
function stepRequest(step: StepRequest): InferenceRequest {
  return {
    model: step.model,
    version: step.version,
    inputs: step.inputs,
    parameters: step.parameters,
    id: step.id,
    timeoutMs: step.timeoutMs,
    cacheMode: step.cacheMode,
    signal: step.signal,
    traceContext: step.traceContext,
    caller: { kind: 'pipeline', pipeline: step.pipeline, step: step.step },
  };
}
