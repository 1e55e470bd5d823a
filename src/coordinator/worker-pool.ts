/**
 * Membership: the workers this coordinator can send requests to, whether they dialed in or
 * were dialed as static workers. A worker joins when it has completed the handshake and sent
 * REGISTER, updates its models with later REGISTERs, reports load in heartbeats, and leaves
 * when its connection closes (a lost peer is detected by the connection's own watchdog). A
 * worker id belongs to one connection at a time: a second registration with a connected id is
 * refused (WORKER_ID_IN_USE), never a replacement of the first.
 */

import { EventEmitter } from 'node:events';
import { InfergridError, toInfergridError } from '../errors.ts';
import {
  type Frame,
  type InferRequestMeta,
  type ComputeTimings,
  type InferResponseMeta,
  KIND_NAME,
  type MetricJson,
  type ModelControlMeta,
  type ModelStatsSnapshot,
  type ModelStatus,
  MESSAGE_KIND,
  type RegisterMeta,
  checkHeartbeat,
  checkInferResponse,
  checkMetricsResponse,
  checkModelControlResponse,
  checkRegister,
  checkStatsResponse,
  tensorsFromWire,
} from '../protocol/index.ts';
import type { ModelRegistry } from '../registry/index.ts';
import {
  HealthCheck,
  type HealthThresholds,
  type RoutableWorker,
  type WorkerHealth,
} from '../routing/index.ts';
import type { RequestOptions, RpcConnection } from '../rpc/index.ts';
import type { Tensor } from '../tensor/index.ts';
import type { Logger } from '../telemetry/index.ts';
import { type Deferred, deferred } from '../util/deferred.ts';

export type WorkerState = 'ready' | 'draining';

export interface InferReply {
  meta: InferResponseMeta;
  outputs: Tensor[];
  /** Where the request's time went on the worker, when it says (taken off the meta). */
  timings?: ComputeTimings | undefined;
}

/** The coordinator's view of one connected worker. */
export class WorkerHandle implements RoutableWorker {
  readonly id: string;
  readonly conn: RpcConnection;
  /** 'inbound': the worker dialed us; 'static': we dialed it. */
  readonly origin: 'inbound' | 'static';
  readonly connectedAt = Date.now();
  pid: number;
  /** Where the worker listens, if it does. */
  address: string | undefined;
  /** The processor pool it belongs to, if any. */
  pool: string | undefined;
  state: WorkerState;
  /** Requests this coordinator has sent and not yet seen settle. */
  inFlight = 0;
  /** In-flight count the worker last reported (all coordinators). */
  reportedInFlight = 0;
  lastHeartbeatAt = Date.now();
  /** Requests sent by this coordinator / of which failed by the worker's fault (connection lost, backend error). */
  requests = 0;
  failures = 0;
  /** Relative capacity (weighted balancing), as the worker reports it unless overridden. */
  weight: number;
  /** Active checks (pings): healthy or not. */
  readonly healthCheck: HealthCheck;
  /** An operator asked to drain this worker out of this coordinator (DELETE /admin/workers/{id}). */
  removing = false;
  /** Models it reported that this coordinator does not place on it (name@version), each warned about once. */
  readonly ignoredModels = new Set<string>();
  #idle: Deferred<void> | undefined;

  /** This incarnation: the id plus a number no other connection of this coordinator had. */
  readonly key: string;

  constructor(
    conn: RpcConnection,
    register: RegisterMeta,
    origin: 'inbound' | 'static',
    health: HealthThresholds,
    incarnation: number,
  ) {
    this.id = register.workerId;
    this.key = `${register.workerId}#${incarnation}`;
    this.conn = conn;
    this.origin = origin;
    this.pid = register.pid;
    this.address =
      register.host !== undefined && register.port !== undefined
        ? `${register.host}:${register.port}`
        : undefined;
    this.pool = register.pool;
    this.state = register.draining ? 'draining' : 'ready';
    this.weight = register.weight ?? 1;
    this.healthCheck = new HealthCheck(health);
  }

  get draining(): boolean {
    return this.state === 'draining' || this.removing;
  }

  get connected(): boolean {
    return !this.conn.closed;
  }

  get health(): WorkerHealth {
    return this.healthCheck.state;
  }

  /** The worker's per-model statistics (queue, batches, compute), fetched over its connection. */
  async stats(timeoutMs: number): Promise<ModelStatsSnapshot[]> {
    const frame = await this.conn.request(MESSAGE_KIND.STATS_REQUEST, {}, [], { timeoutMs });
    return this.#checkReply(frame, MESSAGE_KIND.STATS_RESPONSE, checkStatsResponse).models;
  }

  /**
   * The worker's Prometheus metrics (prom-client JSON), fetched over its connection and checked
   * as {@link MetricJson}. Typed `unknown[]` for its caller, which hands them to prom-client,
   * whose typings (`type` a number, a `collect` function) do not describe the JSON it produces.
   */
  async metrics(timeoutMs: number): Promise<unknown[]> {
    const frame = await this.conn.request(MESSAGE_KIND.METRICS_REQUEST, {}, [], { timeoutMs });
    return this.#checkReply(frame, MESSAGE_KIND.METRICS_RESPONSE, checkMetricsResponse).metrics;
  }

  /** Asks the worker to load or unload models; resolves with its statuses once done. */
  async control(meta: ModelControlMeta, timeoutMs: number): Promise<ModelStatus[]> {
    const frame = await this.conn.request(MESSAGE_KIND.MODEL_CONTROL_REQUEST, meta, [], { timeoutMs });
    return this.#checkReply(frame, MESSAGE_KIND.MODEL_CONTROL_RESPONSE, checkModelControlResponse).models;
  }

  /**
   * A reply is untrusted input: the connection resolves a request with whatever final response
   * frame carries its id, so both the kind and the meta are checked here. A malformed reply is
   * a PROTOCOL_ERROR (the worker's fault) naming the worker, the reply kind and the field.
   */
  #checkReply<T>(frame: Frame, kind: number, check: (meta: unknown) => T): T {
    if (frame.kind !== kind) {
      throw new InfergridError(
        'PROTOCOL_ERROR',
        `worker ${this.id} answered with ${KIND_NAME[frame.kind] ?? `kind ${frame.kind}`}, expected ${KIND_NAME[kind]}`,
      );
    }
    try {
      return check(frame.meta);
    } catch (err) {
      const cause = toInfergridError(err, 'PROTOCOL_ERROR');
      throw new InfergridError('PROTOCOL_ERROR', `worker ${this.id} sent ${cause.message}`, { cause });
    }
  }

  /** Resolves when nothing sent by this coordinator is in flight on the worker. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    this.#idle ??= deferred<void>();
    return this.#idle.promise;
  }

  /**
   * Sends one inference request. In-flight is counted here and released in `finally`, so it
   * is released on success, error, deadline and cancel alike.
   */
  async infer(
    meta: InferRequestMeta,
    attachments: Uint8Array[],
    options: RequestOptions,
  ): Promise<InferReply> {
    this.inFlight++;
    this.requests++;
    try {
      const frame = await this.conn.request(MESSAGE_KIND.INFER_REQUEST, meta, attachments, options);
      const { timings, ...responseMeta } = this.#checkReply(
        frame,
        MESSAGE_KIND.INFER_RESPONSE,
        checkInferResponse,
      );
      return {
        meta: responseMeta,
        outputs: tensorsFromWire(responseMeta.outputs, frame.attachments),
        timings,
      };
    } catch (err) {
      // only what says something about the worker: not a cancel, a deadline or bad input
      if (toInfergridError(err).isWorkerFault) this.failures++;
      throw err;
    } finally {
      this.inFlight--;
      if (this.inFlight === 0 && this.#idle) {
        this.#idle.resolve();
        this.#idle = undefined;
      }
    }
  }
}

export interface WorkerPoolEvents {
  joined: [WorkerHandle];
  left: [WorkerHandle, InfergridError | undefined];
}

export class WorkerPool extends EventEmitter<WorkerPoolEvents> {
  readonly #workers = new Map<string, WorkerHandle>();
  readonly #registry: ModelRegistry;
  readonly #logger: Logger;

  readonly #health: HealthThresholds;
  /** Worker ids an operator removed: their registrations are refused until re-admitted. */
  readonly #removed = new Set<string>();
  #incarnations = 0;

  constructor(registry: ModelRegistry, health: HealthThresholds, logger: Logger) {
    super();
    this.#registry = registry;
    this.#health = health;
    this.#logger = logger;
  }

  /** Refuses this worker id from now on (it was removed by an operator). */
  block(id: string): void {
    this.#removed.add(id);
  }

  /** Lets a removed worker id register again; false if it was not blocked. */
  unblock(id: string): boolean {
    return this.#removed.delete(id);
  }

  get blocked(): ReadonlySet<string> {
    return this.#removed;
  }

  get size(): number {
    return this.#workers.size;
  }

  get(id: string): WorkerHandle | undefined {
    return this.#workers.get(id);
  }

  list(): WorkerHandle[] {
    return [...this.#workers.values()];
  }

  /**
   * Waits for a handshaken connection's REGISTER, then adds the worker. Rejects (and closes
   * the connection) when REGISTER does not come in time or is malformed.
   */
  async admit(conn: RpcConnection, origin: 'inbound' | 'static', timeoutMs: number): Promise<WorkerHandle> {
    const frame = await conn.receive(timeoutMs, 'REGISTER');
    if (frame.kind !== MESSAGE_KIND.REGISTER) {
      const err = new InfergridError('PROTOCOL_ERROR', `expected REGISTER, got ${KIND_NAME[frame.kind]}`);
      conn.close(err, true);
      throw err;
    }
    let register: RegisterMeta;
    try {
      register = checkRegister(frame.meta);
    } catch (err) {
      conn.close(toInfergridError(err, 'PROTOCOL_ERROR'), true);
      throw err;
    }
    if (this.#removed.has(register.workerId)) {
      const err = new InfergridError(
        'PROTOCOL_ERROR',
        `worker "${register.workerId}" was removed by an operator; POST /admin/workers {"id": "${register.workerId}"} re-admits it`,
      );
      conn.close(err, true);
      throw err;
    }
    return this.#add(new WorkerHandle(conn, register, origin, this.#health, ++this.#incarnations), register);
  }

  #add(handle: WorkerHandle, register: RegisterMeta): WorkerHandle {
    const previous = this.#workers.get(handle.id);
    if (previous) {
      // never a replacement: the id is the first connection's until it closes (a restarted
      // worker's old connection closes with its process, or after rpc.peerTimeoutMs of silence,
      // and its redialer backs off until then). The same process twice (it dials us and we
      // dial it) lands here too.
      const err = new InfergridError(
        'WORKER_ID_IN_USE',
        `worker id "${handle.id}" is in use: a worker with it (pid ${previous.pid}, ${previous.origin === 'static' ? 'dialed by' : 'dialed in to'} this coordinator) is already connected to this coordinator; this one is pid ${handle.pid}. A restarted worker gets in once the old connection is gone (closed, or silent for rpc.peerTimeoutMs)`,
      );
      handle.conn.close(err, true);
      throw err;
    }
    this.#workers.set(handle.id, handle);
    this.#registry.setWorkerModels(handle.id, this.#placed(handle, register.models));
    handle.conn.setMessageHandler((frame) => this.#onMessage(handle, frame));
    handle.conn.on('close', (err) => {
      if (this.#workers.get(handle.id) !== handle) return;
      this.#workers.delete(handle.id);
      this.#registry.removeWorker(handle.id);
      this.#logger.info({ worker: handle.id, reason: err?.message }, 'worker left');
      this.emit('left', handle, err);
    });
    this.#logger.info(
      {
        worker: handle.id,
        origin: handle.origin,
        models: register.models.map((m) => `${m.name}@${m.version}:${m.state}`),
      },
      'worker joined',
    );
    this.emit('joined', handle);
    return handle;
  }

  /**
   * The models of a worker's report that this coordinator places on it (its config, or a
   * repository load); it is routed those only. The rest are ignored, with a warning once each.
   */
  #placed(handle: WorkerHandle, models: readonly ModelStatus[]): ModelStatus[] {
    const placed: ModelStatus[] = [];
    const ignored: string[] = [];
    for (const m of models) {
      if (this.#registry.placesOn(handle.id, m.name, m.version)) placed.push(m);
      else if (!handle.ignoredModels.has(`${m.name}@${m.version}`)) ignored.push(`${m.name}@${m.version}`);
    }
    if (ignored.length > 0) {
      for (const key of ignored) handle.ignoredModels.add(key);
      this.#logger.warn(
        { worker: handle.id, models: ignored },
        "the worker reports models this coordinator's config does not place on it (models[].workers / pool) and no repository load asked for; ignored, no requests go to them there",
      );
    }
    return placed;
  }

  #onMessage(handle: WorkerHandle, frame: Frame): void {
    try {
      switch (frame.kind) {
        case MESSAGE_KIND.HEARTBEAT: {
          const hb = checkHeartbeat(frame.meta);
          handle.lastHeartbeatAt = Date.now();
          if (typeof hb.inFlight === 'number') handle.reportedInFlight = hb.inFlight;
          if (hb.draining) handle.state = 'draining';
          for (const m of hb.models ?? [])
            this.#registry.setReplicaState(handle.id, m.name, m.version, m.state);
          break;
        }
        case MESSAGE_KIND.REGISTER: {
          const register = checkRegister(frame.meta);
          if (register.draining) handle.state = 'draining';
          this.#registry.setWorkerModels(handle.id, this.#placed(handle, register.models));
          break;
        }
        case MESSAGE_KIND.DRAIN:
          handle.state = 'draining';
          this.#logger.info({ worker: handle.id }, 'worker is draining');
          break;
        case MESSAGE_KIND.ERROR:
          this.#logger.warn({ worker: handle.id, error: frame.meta }, 'worker reported a connection error');
          break;
        default:
          this.#logger.debug({ worker: handle.id, kind: KIND_NAME[frame.kind] }, 'ignored message');
      }
    } catch (err) {
      handle.conn.close(toInfergridError(err, 'PROTOCOL_ERROR'), true);
    }
  }

  closeAll(): void {
    for (const handle of this.#workers.values()) handle.conn.close();
  }
}
