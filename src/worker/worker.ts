/**
 * A worker: serves the models of its ModelHost to any number of coordinators, over
 * connections it accepts (coordinators given `--worker host:port`) or dials (workers given
 * `--coordinator host:port`). Either way, after the handshake the worker sends REGISTER with
 * its models, then answers INFER_REQUESTs and heartbeats its load.
 *
 * Drain (SIGTERM): new requests are refused with WORKER_DRAINING (retryable), coordinators are
 * told with a DRAIN message, requests already running finish and are answered, then every
 * connection closes.
 */

import { EventEmitter } from 'node:events';
import { type Server, type Socket, createServer } from 'node:net';
import { hostname } from 'node:os';
import {
  type ModelConfig,
  ModelPaths,
  type RpcConfig,
  type RuntimeLoadPolicy,
  admitRuntimeModel,
  modelSchema,
} from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import {
  type HeartbeatMeta,
  type InferRequestMeta,
  MESSAGE_KIND,
  type RegisterMeta,
  checkInferRequest,
  checkModelControl,
  createPackr,
  priorityOf,
  tensorsFromWire,
  tensorsToWire,
} from '../protocol/index.ts';
import { validateInputs } from '../registry/index.ts';
import type { Tensor } from '../tensor/index.ts';
import {
  AcceptGate,
  type HandshakeIdentity,
  type IncomingRequest,
  Redialer,
  RpcConnection,
  acceptHandshake,
  type RpcTls,
  dial,
  dialHandshake,
  loadRpcTls,
  requireServerCertificate,
  secureAccepted,
  workerCredentials,
} from '../rpc/index.ts';
import {
  type Logger,
  type Tracing,
  type WorkerMetrics,
  type WorkerRequestTrace,
  tracingIfEnabled,
} from '../telemetry/index.ts';
import { type HostPort, formatHostPort } from '../util/address.ts';
import { type Deferred, deferred } from '../util/deferred.ts';
import type { ModelHost, ReadyModel } from './model-host.ts';

export interface WorkerOptions {
  /** Unique worker id; default `<hostname>-<pid>`. */
  id?: string;
  host: ModelHost;
  /** Where to accept coordinator connections; none when absent. */
  listen?: HostPort;
  /** Coordinators to dial and keep dialing. */
  coordinators?: HostPort[];
  /**
   * This worker's RPC key (auth.workerKey, or derived from the cluster secret for this id);
   * connections prove it both ways. None: no authentication (--insecure).
   */
  key?: Buffer | undefined;
  /** Relative capacity reported to coordinators for weighted balancing. Default 1. */
  weight?: number;
  /** Prometheus metrics of this process, sent to coordinators that ask. */
  metrics?: WorkerMetrics | undefined;
  /** The processor pool this worker belongs to (reported to coordinators). */
  pool?: string | undefined;
  /** Traces each INFER_REQUEST (continuing the coordinator's trace), its queue wait and batch. */
  tracing?: Tracing | undefined;
  /**
   * What a coordinator may have this worker load at run time: files inside this worker's own
   * repository roots (a coordinator may be hostile, so the worker checks for itself), and `js`
   * models only when allowed. Default: no file at all and no js model.
   */
  runtimeLoads?: RuntimeLoadPolicy;
  rpc: RpcConfig;
  logger: Logger;
}

export interface WorkerStats {
  /** Requests accepted for execution. */
  requests: number;
  /** Of those, how many failed. */
  failures: number;
  /** Requests refused before execution (bad input, not ready, draining). */
  rejected: number;
}

export interface WorkerEvents {
  /** A coordinator asked this worker to drain. */
  'drain-requested': [string];
}

export class Worker extends EventEmitter<WorkerEvents> {
  readonly id: string;
  readonly #options: WorkerOptions;
  readonly #packr = createPackr();
  readonly #connections = new Set<RpcConnection>();
  /** Coordinators dialed, by address (host:port). */
  readonly #links = new Map<string, Redialer>();
  /** Coordinators no longer redialed whose last connection may still be open, by address. */
  readonly #retiring = new Map<string, Redialer>();
  /** Set only when tracing is on. */
  readonly #tracing: Tracing | undefined;
  /** Bounds the connections waiting for their handshake on the listening port. */
  readonly #gate: AcceptGate;
  readonly #runtimeLoads: RuntimeLoadPolicy;
  /** Who this worker is in every handshake, and the key it proves. */
  readonly #identity: HandshakeIdentity;
  readonly stats: WorkerStats = { requests: 0, failures: 0, rejected: 0 };
  #server: Server | undefined;
  /** rpc.tls loaded at start; undefined: plain TCP. */
  #tls: RpcTls | undefined;
  #port: number | undefined;
  #started = false;
  #inFlight = 0;
  #draining = false;
  #idle: Deferred<void> | undefined;

  constructor(options: WorkerOptions) {
    super();
    this.id = options.id ?? `${hostname()}-${process.pid}`;
    this.#options = options;
    this.#identity = {
      role: 'worker',
      id: this.id,
      credentials: options.key ? workerCredentials(this.id, options.key) : undefined,
    };
    this.#tracing = tracingIfEnabled(options.tracing);
    this.#runtimeLoads = options.runtimeLoads ?? {
      paths: new ModelPaths({ roots: [], baseDir: process.cwd() }),
      allowRuntimeJs: false,
    };
    this.#gate = new AcceptGate({
      maxPendingHandshakes: options.rpc.maxPendingHandshakes,
      logIntervalMs: options.rpc.refusalLogIntervalMs,
      logger: options.logger,
    });
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get draining(): boolean {
    return this.#draining;
  }

  get port(): number | undefined {
    return this.#port;
  }

  /** Starts listening (if configured) and dialing coordinators; resolves once listening. */
  async start(): Promise<void> {
    const { listen, coordinators = [], rpc, logger } = this.#options;
    this.#tls = loadRpcTls(rpc.tls);
    this.#started = true;
    if (listen) {
      requireServerCertificate(this.#tls, `worker ${this.id}`);
      const server = createServer((socket) => this.#accept(socket));
      this.#server = server;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(listen.port, listen.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const address = server.address();
      this.#port = typeof address === 'object' && address ? address.port : listen.port;
      logger.info(
        { worker: this.id, address: formatHostPort({ host: listen.host, port: this.#port }) },
        'worker listening',
      );
    }
    for (const address of coordinators) this.dialCoordinator(address);
  }

  /**
   * Dials the coordinator at `address` and keeps redialing it (what `--coordinator` does; the
   * cluster membership calls it for coordinators it discovers). False when it is dialed already
   * or the worker is draining.
   */
  dialCoordinator(address: HostPort): boolean {
    // the TLS settings are loaded by start(): a dial before it would go out in clear
    if (!this.#started) throw new Error('Worker.dialCoordinator called before start()');
    const label = formatHostPort(address);
    if (this.#draining || this.#links.has(label)) return false;
    const { rpc, logger } = this.#options;
    const link = new Redialer({
      label,
      dial: () => dial(address, this.#connectionOptions(), rpc.connectTimeoutMs, this.#tls),
      setup: async (conn) => {
        await dialHandshake(conn, this.#identity, rpc.handshakeTimeoutMs);
        this.#adopt(conn);
      },
      backoff: { initialDelayMs: rpc.reconnectInitialDelayMs, maxDelayMs: rpc.reconnectMaxDelayMs },
      logger,
    });
    this.#links.set(label, link);
    const retiring = this.#retiring.get(label);
    if (!retiring) {
      link.start();
      return true;
    }
    // back before its last connection closed: that one serves on, and this link dials once it
    // is gone (dialing now would be refused, the coordinator holding this worker's id already)
    this.#retiring.delete(label);
    void retiring.stop(true).then(() => {
      if (this.#links.get(label) === link) link.start();
    });
    return true;
  }

  /**
   * Stops redialing the coordinator at `address` (it left the cluster). Its connection, if up,
   * stays until it closes: a coordinator that is shutting down finishes what it has in flight
   * on it and closes it itself.
   */
  stopDialingCoordinator(address: HostPort): Promise<void> {
    const label = formatHostPort(address);
    const link = this.#links.get(label);
    if (!link) return Promise.resolve();
    this.#links.delete(label);
    this.#retiring.set(label, link);
    // resolves once the connection has closed; the link is then forgotten
    return link.stop(true).then(() => {
      if (this.#retiring.get(label) === link) this.#retiring.delete(label);
    });
  }

  /** The coordinator addresses this worker dials (host:port). */
  get dialing(): string[] {
    return [...this.#links.keys()];
  }

  /** Tells every coordinator the current model list (after a load, unload or state change). */
  modelsChanged(): void {
    const register = this.#registerMeta();
    for (const conn of this.#connections) conn.send(MESSAGE_KIND.REGISTER, register);
  }

  /**
   * Stops taking work and waits for what is running to finish, then closes every
   * connection. Safe to call more than once.
   */
  async drain(reason = 'shutting down'): Promise<void> {
    if (!this.#draining) {
      this.#draining = true;
      this.#options.logger.info({ worker: this.id, inFlight: this.#inFlight, reason }, 'draining');
      for (const conn of this.#connections) conn.send(MESSAGE_KIND.DRAIN, { reason });
      this.#server?.close();
      for (const link of this.#links.values()) link.stop(true);
    }
    if (this.#inFlight > 0) {
      this.#idle ??= deferred<void>();
      await this.#idle.promise;
    }
    // end, not destroy: the last answers may still be on their way out
    await Promise.all([...this.#connections].map((conn) => conn.closeGracefully()));
    await Promise.all([...this.#links.values(), ...this.#retiring.values()].map((link) => link.stop()));
  }

  /** Closes everything at once; running requests are abandoned (their peers see CONNECTION_LOST). */
  close(): void {
    this.#draining = true;
    this.#server?.close();
    for (const link of [...this.#links.values(), ...this.#retiring.values()]) link.stop();
    for (const conn of this.#connections) conn.close();
  }

  #connectionOptions() {
    const heartbeat = (): HeartbeatMeta => ({
      sentAtMs: Date.now(),
      inFlight: this.#inFlight,
      draining: this.#draining,
    });
    return {
      maxFrameBytes: this.#options.rpc.maxFrameBytes,
      heartbeatIntervalMs: this.#options.rpc.heartbeatIntervalMs,
      peerTimeoutMs: this.#options.rpc.peerTimeoutMs,
      heartbeat,
      packr: this.#packr,
    };
  }

  #accept(socket: Socket): void {
    const gate = this.#gate;
    if (!gate.admit(socket)) return;
    const conn = new RpcConnection(secureAccepted(socket, this.#tls), {
      ...this.#connectionOptions(),
      side: 'listener',
    });
    if (this.#draining) {
      gate.done();
      conn.close(new InfergridError('WORKER_DRAINING', `worker ${this.id} is draining`), true);
      return;
    }
    acceptHandshake(conn, this.#identity, this.#options.rpc.handshakeTimeoutMs)
      .then(
        () => {
          gate.done();
          this.#adopt(conn);
        },
        (err: InfergridError) => {
          gate.done();
          gate.refused({ peer: conn.remoteAddress, err: err.message }, 'refused a connection');
        },
      )
      // adopting a connection that completed its handshake is not expected to fail; if it does, say so
      .catch((err: unknown) => this.#options.logger.error({ err }, 'could not adopt a connection'));
  }

  #registerMeta(): RegisterMeta {
    const listen = this.#options.listen;
    return {
      workerId: this.id,
      pid: process.pid,
      ...(listen && this.#port !== undefined ? { host: listen.host, port: this.#port } : {}),
      models: this.#options.host.statuses(),
      draining: this.#draining,
      ...(this.#options.pool !== undefined ? { pool: this.#options.pool } : {}),
      weight: this.#options.weight ?? 1,
    };
  }

  #adopt(conn: RpcConnection): void {
    this.#connections.add(conn);
    conn.on('close', () => this.#connections.delete(conn));
    // each coordinator connection is one sender to the batchers, which share their queues fairly between them
    conn.setRequestHandler((req) => void this.#onRequest(req, conn));
    conn.setMessageHandler((frame) => {
      if (frame.kind === MESSAGE_KIND.DRAIN) {
        const reason = (frame.meta as { reason?: string } | undefined)?.reason ?? 'coordinator asked';
        this.emit('drain-requested', reason);
      }
    });
    conn.send(MESSAGE_KIND.REGISTER, this.#registerMeta());
  }

  /** Loads or unloads models for a coordinator (repository API); answers once done. */
  async #control(req: IncomingRequest): Promise<void> {
    const host = this.#options.host;
    try {
      const meta = checkModelControl(req.meta);
      if (this.#draining) throw new InfergridError('WORKER_DRAINING', `worker ${this.id} is draining`);
      if (meta.action === 'unload') {
        await host.unload(meta.name, meta.versions);
        this.modelsChanged();
        req.reply(MESSAGE_KIND.MODEL_CONTROL_RESPONSE, { models: host.statuses() });
        return;
      }
      const configs = meta.models.map((raw) => this.#modelConfig(raw));
      const loaded = await Promise.all(configs.map((c) => host.load(c)));
      // the model list again, ahead of the reply on the same connection, even when nothing
      // changed: a coordinator sending a load this worker already did for another coordinator
      // (a cluster's shared control plane) may have ignored the list it sent then, before that
      // coordinator placed the model here
      this.modelsChanged();
      req.reply(MESSAGE_KIND.MODEL_CONTROL_RESPONSE, { models: loaded.map((h) => host.status(h)) });
    } catch (err) {
      req.fail(toInfergridError(err, 'MODEL_LOAD_FAILED'));
    }
  }

  /**
   * A model config sent by a coordinator, checked against this worker's runtime load policy,
   * with its path replaced by the real file to open.
   */
  #modelConfig(raw: unknown): ModelConfig {
    const parsed = modelSchema.safeParse(raw);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model config is invalid: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'unknown problem'}`,
      );
    }
    const config = parsed.data;
    const located = admitRuntimeModel(config, this.#runtimeLoads);
    if (located?.state === 'found') config.path = located.path;
    else if (located?.state === 'missing')
      throw new InfergridError(
        'MODEL_LOAD_FAILED',
        `model "${config.name}": ${located.path} was not found on worker ${this.id}`,
      );
    else if (located?.state === 'package-missing')
      throw new InfergridError(
        'MODEL_LOAD_FAILED',
        `model "${config.name}": package file "${config.path}" was not found in any node_modules on worker ${this.id}`,
      );
    return config;
  }

  async #onRequest(req: IncomingRequest, conn: RpcConnection): Promise<void> {
    if (req.kind === MESSAGE_KIND.STATS_REQUEST) {
      req.reply(MESSAGE_KIND.STATS_RESPONSE, { models: this.#options.host.statsSnapshots() });
      return;
    }
    if (req.kind === MESSAGE_KIND.METRICS_REQUEST) {
      const metrics = this.#options.metrics;
      req.reply(MESSAGE_KIND.METRICS_RESPONSE, {
        metrics: metrics ? await metrics.registry.getMetricsAsJSON() : [],
      });
      return;
    }
    if (req.kind === MESSAGE_KIND.MODEL_CONTROL_REQUEST) {
      await this.#control(req);
      return;
    }
    if (req.kind !== MESSAGE_KIND.INFER_REQUEST) {
      req.fail(new InfergridError('UNKNOWN_MESSAGE', `a worker does not answer message kind ${req.kind}`));
      return;
    }
    if (this.#draining) {
      this.stats.rejected++;
      req.fail(new InfergridError('WORKER_DRAINING', `worker ${this.id} is draining`));
      return;
    }
    let meta: InferRequestMeta;
    let hosted: ReturnType<ModelHost['get']>;
    let inputs: Tensor[];
    let trace: WorkerRequestTrace | undefined;
    try {
      meta = checkInferRequest(req.meta);
      if (this.#tracing) trace = this.#tracing.startWorkerRequest(meta, this.id);
      hosted = this.#options.host.get(meta.model, meta.version);
      inputs = tensorsFromWire(meta.inputs, req.attachments);
      validateInputs(hosted.schema, inputs, meta.outputs);
    } catch (err) {
      this.stats.rejected++;
      const error = toInfergridError(err);
      trace?.end(error);
      req.fail(error);
      return;
    }
    if (hosted.model.stream) {
      await this.#stream(req, meta, hosted, inputs, trace);
      return;
    }
    this.#inFlight++;
    this.stats.requests++;
    try {
      // the batcher keeps the deadline (queued or running); the signal carries cancels and a lost connection
      trace?.enqueued();
      // filled in by the batcher when the request succeeds; the coordinator sums them for pipelines
      const timings = { queueNs: 0, computeInputNs: 0, computeInferNs: 0, computeOutputNs: 0 };
      const outputs = await this.#options.host.run(hosted, {
        timings,
        inputs,
        outputs: meta.outputs,
        parameters: meta.parameters,
        priority: priorityOf(meta.parameters?.priority),
        deadlineAt: meta.timeoutMs === undefined ? undefined : performance.now() + meta.timeoutMs,
        signal: req.signal,
        trace,
        source: conn,
      });
      const { headers, attachments } = tensorsToWire(outputs);
      req.reply(
        MESSAGE_KIND.INFER_RESPONSE,
        {
          model: hosted.config.name,
          version: hosted.config.version,
          ...(meta.id ? { id: meta.id } : {}),
          outputs: headers,
          timings,
        },
        attachments,
      );
      trace?.end();
    } catch (err) {
      this.stats.failures++;
      const error = toInfergridError(err, 'BACKEND_ERROR');
      trace?.end(error);
      req.fail(error);
    } finally {
      this.#requestDone();
    }
  }

  #requestDone(): void {
    this.#inFlight--;
    if (this.#inFlight === 0 && this.#idle) this.#idle.resolve();
  }

  /**
   * A request for a model that streams: straight to the model, concurrently with the others.
   * With `meta.stream`, each `emit` is a partial INFER_RESPONSE sent under the request's
   * credit window (emit resolves when the coordinator has room); without, emit sends nothing.
   * The deadline and the coordinator's CANCEL (or a lost connection) abort the model's signal;
   * a deadline also answers the request at once.
   */
  async #stream(
    req: IncomingRequest,
    meta: InferRequestMeta,
    hosted: ReadyModel,
    inputs: Tensor[],
    trace: WorkerRequestTrace | undefined,
  ): Promise<void> {
    this.#inFlight++;
    this.stats.requests++;
    const controller = new AbortController();
    const onCancel = () => controller.abort(req.signal.reason);
    req.signal.addEventListener('abort', onCancel, { once: true });
    const timer =
      meta.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            const error = new InfergridError(
              'DEADLINE_EXCEEDED',
              `the stream did not finish within ${meta.timeoutMs} ms`,
            );
            controller.abort(error);
            // answers now, and wakes an emit waiting for credit
            req.fail(error);
          }, meta.timeoutMs);
    const head = {
      model: hosted.config.name,
      version: hosted.config.version,
      ...(meta.id ? { id: meta.id } : {}),
    };
    if (meta.stream && meta.streamWindow !== undefined) req.openStream(meta.streamWindow);
    const streams = hosted.streams;
    try {
      const result = await this.#options.host.stream(hosted, inputs, {
        signal: controller.signal,
        parameters: meta.parameters ?? {},
        outputs: meta.outputs,
        emit: async (outputs, parameters) => {
          if (controller.signal.aborted) throw controller.signal.reason;
          if (!meta.stream) return;
          const { headers, attachments } = tensorsToWire(outputs);
          await req.partial(
            MESSAGE_KIND.INFER_RESPONSE,
            { ...head, outputs: headers, ...(parameters ? { parameters } : {}) },
            attachments,
          );
          streams.sent++;
        },
      });
      const { headers, attachments } = tensorsToWire(result.outputs);
      req.reply(
        MESSAGE_KIND.INFER_RESPONSE,
        { ...head, outputs: headers, ...(result.parameters ? { parameters: result.parameters } : {}) },
        attachments,
      );
      trace?.end();
    } catch (err) {
      this.stats.failures++;
      const error = toInfergridError(
        controller.signal.aborted ? controller.signal.reason : err,
        'BACKEND_ERROR',
      );
      trace?.end(error);
      req.fail(error);
    } finally {
      clearTimeout(timer);
      req.signal.removeEventListener('abort', onCancel);
      this.#requestDone();
    }
  }
}
