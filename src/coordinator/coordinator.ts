/**
 * The coordinator: owns the registry, the worker pool and the router, accepts workers on its
 * RPC port, dials static workers, and runs each request's lifecycle after the HTTP layer has
 * parsed it: resolve model -> validate -> pick a worker -> send with a deadline -> answer.
 */

import { type Server, type Socket, createServer } from 'node:net';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { type Parameters, createPackr, tensorsToWire } from '../protocol/index.ts';
import { type ModelEntry, ModelRegistry, type ModelSpec, modelKey } from '../registry/index.ts';
import { RoundRobinRouter } from '../routing/index.ts';
import {
  Redialer,
  RpcConnection,
  type RpcConnectionOptions,
  acceptHandshake,
  dial,
  dialHandshake,
} from '../rpc/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { Logger } from '../telemetry/index.ts';
import { type HostPort, formatHostPort, parseHostPort } from '../util/address.ts';
import { type InferReply, type WorkerHandle, WorkerPool } from './worker-pool.ts';

export interface CoordinatorOptions {
  config: Readonly<InfergridConfig>;
  logger: Logger;
}

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
  workerId: string;
}

/** Seconds a client is told to wait (Retry-After) when no worker can take a request. */
export const RETRY_AFTER_SECONDS = 1;

export class Coordinator {
  readonly registry: ModelRegistry;
  readonly pool: WorkerPool;
  readonly #config: Readonly<InfergridConfig>;
  readonly #logger: Logger;
  readonly #router = new RoundRobinRouter();
  readonly #packr = createPackr();
  readonly #statics = new Map<string, Redialer>();
  #rpcServer: Server | undefined;
  #rpcPort: number | undefined;

  constructor(options: CoordinatorOptions) {
    this.#config = options.config;
    this.#logger = options.logger;
    this.registry = new ModelRegistry(options.config.models);
    this.pool = new WorkerPool(this.registry, options.logger);
  }

  get rpcPort(): number | undefined {
    return this.#rpcPort;
  }

  /** Opens the RPC port for workers and starts dialing the static workers. */
  async start(): Promise<void> {
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
  }

  async stop(): Promise<void> {
    for (const link of this.#statics.values()) link.stop();
    this.#statics.clear();
    this.pool.closeAll();
    const server = this.#rpcServer;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Dials a worker at `address` and keeps it connected (reconnecting with backoff). */
  addStaticWorker(address: HostPort): void {
    const label = formatHostPort(address);
    if (this.#statics.has(label)) return;
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
        await this.pool.admit(conn, 'static', rpc.handshakeTimeoutMs);
      },
      backoff: { initialDelayMs: rpc.reconnectInitialDelayMs, maxDelayMs: rpc.reconnectMaxDelayMs },
      logger: this.#logger,
    });
    this.#statics.set(label, link);
    link.start();
  }

  /** Finds the model a request names and its schema (404 / 503 when it cannot). */
  resolve(name: string, version?: string): { entry: ModelEntry; spec: ModelSpec } {
    const entry = this.registry.resolve(name, version);
    return { entry, spec: this.registry.specOf(entry) };
  }

  /** Sends a validated request to one worker that has the model ready. */
  async dispatch(request: DispatchRequest): Promise<DispatchResult> {
    const { entry } = request;
    const worker = this.#pick(entry);
    const { headers, attachments } = tensorsToWire(request.inputs);
    const meta = {
      model: entry.name,
      version: entry.version,
      inputs: headers,
      timeoutMs: request.timeoutMs,
      ...(request.id !== undefined ? { id: request.id } : {}),
      ...(request.outputs ? { outputs: request.outputs } : {}),
      ...(request.parameters ? { parameters: request.parameters } : {}),
    };
    const reply = await worker.infer(meta, attachments, {
      timeoutMs: request.timeoutMs,
      signal: request.signal,
    });
    return { ...reply, workerId: worker.id };
  }

  #pick(entry: ModelEntry): WorkerHandle {
    const candidates: WorkerHandle[] = [];
    for (const id of this.registry.readyReplicas(entry)) {
      const handle = this.pool.get(id);
      if (handle && handle.state === 'ready' && !handle.conn.closed) candidates.push(handle);
    }
    const worker = this.#router.pick(modelKey(entry.name, entry.version), candidates);
    if (worker) return worker;
    const states = [...entry.replicas].map(([id, r]) => {
      if (this.pool.get(id)?.state === 'draining') return `${id}: draining`;
      if (r.state === 'ready' && r.schemaKey !== entry.specKey) return `${id}: ready with a different schema`;
      return `${id}: ${r.state}${r.error ? ` (${r.error})` : ''}`;
    });
    throw new InfergridError(
      'UNAVAILABLE',
      `no worker has model "${entry.name}" version "${entry.version}" ready${states.length ? ` (${states.join(', ')})` : ' (no worker hosts it)'}; retry later`,
      { details: { retryAfterSeconds: RETRY_AFTER_SECONDS } },
    );
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
