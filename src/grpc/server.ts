/**
 * The KServe v2 gRPC front door (inference.GRPCInferenceService, with Triton's streaming,
 * configuration, statistics and repository RPCs). A thin adapter over the same coordinator entry
 * points as HTTP: requests are parsed into the protocol-neutral request (contents.ts) and go
 * through `coordinator.infer` (or `stream` for a generative model on ModelStreamInfer), with the
 * HTTP front door's credentials (the same ApiKeyAuth instance: same keys, scopes and rate
 * limits), limits, deadlines (grpc-timeout, capped like HTTP's) and cancellation.
 *
 * ModelStreamInfer runs the requests of one call concurrently, up to grpc.maxStreamRequests,
 * and answers each as it completes (the response carries the request's id); a generative model
 * answers one request with a response per partial result, the last with the parameter
 * `triton_final_response: true` (Triton's decoupled models). A failed request is a response
 * with `error_message`, the stream goes on. A response is written only once the transport took
 * the last one, so a slow reader holds back the model.
 */

import {
  type Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceError,
  type UntypedServiceImplementation,
  type sendUnaryData,
} from '@grpc/grpc-js';
import {
  type ApiKeyAuth,
  type RouteScope,
  SERVER_NAME,
  TIMEOUT_HEADER,
  inferenceRequestOf,
  modelConfig,
  tritonModelConfig,
  modelMetadata,
  modelStatistics,
  outputText,
  parsedOrRefused,
  requestTimeoutMs,
} from '../api/index.ts';
import type { Caller, Coordinator, InferenceRequest, StreamChunk } from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { LLM_OUTPUT } from '../llm/index.ts';
import { ASYNC_PARAMETER } from '../protocol/index.ts';
import type { Logger } from '../telemetry/index.ts';
import { textTensor } from '../tensor/index.ts';
import { formatHostPort } from '../util/address.ts';
import {
  type ProtoInferRequest,
  type ProtoInferResponse,
  checkedName,
  inferResponseOf,
  parseInferRequest,
  parametersToProto,
} from './contents.ts';
import { generationOf } from './generation.ts';
import { inferenceServiceDefinition } from './proto.ts';
import { modelConfigMessage, repositoryConfigParameter } from './messages.ts';
import { grpcErrorOf } from './status.ts';

/** Parameter on every ModelStreamInfer response: whether it is the request's last (Triton's). */
export const FINAL_RESPONSE_PARAMETER = 'triton_final_response';
/**
 * Parameter tritonclient sends on a stream to ask for an empty final response: a transport
 * setting, never the model's (it would split batches and cache keys). Every stream here ends a
 * request with a flagged final response anyway.
 */
const EMPTY_FINAL_PARAMETER = 'triton_enable_empty_final_response';
/** Extensions the gRPC endpoint serves (ServerMetadata). */
const GRPC_EXTENSIONS = ['model_repository', 'statistics', 'model_configuration', 'classification'];
/** How long close() lets open calls finish before it cuts them, ms. */
const SHUTDOWN_GRACE_MS = 2000;

export interface GrpcServerOptions {
  coordinator: Coordinator;
  config: Readonly<InfergridConfig>;
  /** The HTTP front door's credentials: one instance, so a key's rate limit is one wherever it calls. */
  auth: ApiKeyAuth;
  logger: Logger;
  serverVersion: string;
  /** PEM certificate and key: serve over TLS. */
  tls?: { cert: Buffer; key: Buffer } | undefined;
}

interface NamedVersion {
  name?: string;
  version?: string;
}

type Unary = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;
type Handler<Req> = (request: Req, call: ServerUnaryCall<Req, unknown>, caller: Caller) => Promise<unknown>;

function firstValue(metadata: Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === 'string' ? value : undefined;
}

/** Resolves once `call` can take more (drain), or is gone; true while it is still open. */
function writable(call: ServerDuplexStream<unknown, unknown>): Promise<boolean> {
  if (call.cancelled || call.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (open: boolean) => () => {
      call.off('drain', onDrain);
      call.off('cancelled', onGone);
      call.off('close', onGone);
      resolve(open);
    };
    const onDrain = done(true);
    const onGone = done(false);
    call.once('drain', onDrain);
    call.once('cancelled', onGone);
    call.once('close', onGone);
  });
}

export class GrpcFrontDoor {
  readonly #o: GrpcServerOptions;
  readonly #server: Server;
  #nextId = 0;

  constructor(options: GrpcServerOptions) {
    this.#o = options;
    const grpc = options.config.coordinator.grpc;
    this.#server = new Server({
      'grpc.max_receive_message_length': grpc.maxMessageBytes,
      'grpc.max_send_message_length': -1,
      'grpc.max_concurrent_streams': grpc.maxConcurrentStreams,
      'grpc.keepalive_time_ms': grpc.keepaliveTimeMs,
      'grpc.keepalive_timeout_ms': grpc.keepaliveTimeoutMs,
    });
    this.#server.addService(inferenceServiceDefinition(), this.#implementation());
  }

  /** Listens; resolves with the port (the one picked when `port` is 0). */
  listen(host: string, port: number): Promise<number> {
    const { tls } = this.#o;
    const credentials = tls
      ? ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }], false)
      : ServerCredentials.createInsecure();
    return new Promise((resolve, reject) => {
      this.#server.bindAsync(formatHostPort({ host, port }), credentials, (err, bound) => {
        if (err) {
          reject(
            new InfergridError(
              'CONFIG_INVALID',
              `cannot listen for gRPC on ${formatHostPort({ host, port })}: ${err.message}; set coordinator.grpc.port (--grpc-port) to a free port, or coordinator.grpc.enabled: false`,
              { cause: err },
            ),
          );
          return;
        }
        resolve(bound);
      });
    });
  }

  /** Stops taking calls; open ones get SHUTDOWN_GRACE_MS to finish, then are cut. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      timer.unref();
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #implementation(): UntypedServiceImplementation {
    const { coordinator, serverVersion } = this.#o;
    const { registry, repository } = coordinator;
    return {
      ServerLive: this.#unary('health', async () => ({ live: true })),
      ServerReady: this.#unary('health', async () => ({ ready: registry.allReady() })),
      ServerMetadata: this.#unary('health', async () => ({
        name: SERVER_NAME,
        version: serverVersion,
        extensions: GRPC_EXTENSIONS,
      })),
      ModelReady: this.#unary<NamedVersion>('infer', async (r) => ({
        ready: registry.isReady(coordinator.resolve(...nameAndVersion(r, true))),
      })),
      ModelMetadata: this.#unary<NamedVersion>('infer', async (r) =>
        modelMetadata(coordinator, coordinator.resolve(...nameAndVersion(r, true))),
      ),
      ModelConfig: this.#unary<NamedVersion>('infer', async (r) => {
        const [name, version] = nameAndVersion(r, true);
        return {
          config: modelConfigMessage(
            tritonModelConfig(coordinator, name, version),
            modelConfig(coordinator, name, version),
          ),
        };
      }),
      ModelStatistics: this.#unary<NamedVersion>('stats', async (r) => {
        const [name, version] = nameAndVersion(r, false);
        return modelStatistics(coordinator, name, name === undefined ? undefined : version);
      }),
      RepositoryIndex: this.#unary<{ ready?: boolean }>('admin', async (r) => {
        const index = repository.index();
        return { models: r.ready ? index.filter((e) => e.state === 'READY') : index };
      }),
      RepositoryModelLoad: this.#unary<{ model_name?: string; parameters?: Record<string, never> }>(
        'admin',
        async (r) => {
          await repository.load(requiredName(r.model_name), repositoryConfigParameter(r.parameters, 'load'));
          return {};
        },
      ),
      RepositoryModelUnload: this.#unary<{ model_name?: string; parameters?: Record<string, never> }>(
        'admin',
        async (r) => {
          repositoryConfigParameter(r.parameters, 'unload');
          await repository.unload(requiredName(r.model_name));
          return {};
        },
      ),
      ModelInfer: this.#unary<ProtoInferRequest>('infer', (r, call, caller) => this.#infer(r, call, caller)),
      ModelStreamInfer: (call: ServerDuplexStream<ProtoInferRequest, unknown>) => this.#streamInfer(call),
    };
  }

  /**
   * Credentials first (the scope an HTTP route of the same meaning needs), then the handler;
   * whatever either throws is answered as its gRPC status.
   */
  #unary<Req>(need: RouteScope | 'stats', handler: Handler<Req>): Unary {
    return (call, callback) => {
      let caller: Caller;
      try {
        caller = this.#authorize(call.metadata, need);
      } catch (err) {
        callback(grpcErrorOf(err) as ServiceError);
        return;
      }
      handler(call.request as Req, call as ServerUnaryCall<Req, unknown>, caller).then(
        (response) => callback(null, response),
        (err: unknown) => {
          this.#logFailure(err);
          callback(grpcErrorOf(err) as ServiceError);
        },
      );
    };
  }

  #authorize(metadata: Metadata, need: RouteScope | 'stats'): Caller {
    if (need === 'admin' && this.#o.config.coordinator.admin)
      throw new InfergridError(
        'NOT_FOUND',
        'repository load, unload and index are served on the admin HTTP listener only (coordinator.admin is set)',
      );
    const decision = this.#o.auth.check(firstValue(metadata, 'authorization'), need);
    if (decision.error) throw decision.error;
    return decision.principal.caller;
  }

  /** The engine's failures are logged; a client's, a worker gone, a deadline are not the engine's. */
  #logFailure(err: unknown): void {
    const typed = toInfergridError(err);
    if (
      typed.httpStatus >= 500 &&
      !['UNAVAILABLE', 'CONNECTION_LOST', 'DEADLINE_EXCEEDED'].includes(typed.code)
    )
      this.#o.logger.error({ err, code: typed.code }, 'gRPC request failed');
  }

  /**
   * The engine request for one ModelInferRequest (a refused one is counted as HTTP's are). The
   * deadline: the call's grpc-timeout, or else the `infergrid-timeout-ms` metadata or the
   * `timeout_ms` / `timeout` (µs) parameters, or else the default; the shorter when both, capped
   * at coordinator.maxRequestTimeoutMs.
   */
  #request(
    message: ProtoInferRequest,
    call: { metadata: Metadata; getDeadline(): Date | number },
    caller: Caller,
    signal: AbortSignal,
  ): InferenceRequest {
    const receivedAtMs = performance.now();
    const requestId = firstValue(call.metadata, 'x-request-id') ?? `grpc-${++this.#nextId}`;
    const traceparent = firstValue(call.metadata, 'traceparent');
    const transport = { requestId, traceparent, receivedAtMs };
    return parsedOrRefused(this.#o.coordinator, message.model_name ?? '', transport, () => {
      const parsed = parseInferRequest(message);
      const asked = parsed.parameters[ASYNC_PARAMETER];
      if (asked === true || asked === 'true')
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `parameter "${ASYNC_PARAMETER}": asynchronous requests are HTTP's (POST .../infer with it, then GET /v2/requests/{id})`,
        );
      delete parsed.parameters[ASYNC_PARAMETER];
      delete parsed.parameters[EMPTY_FINAL_PARAMETER];
      return inferenceRequestOf(this.#o.config.coordinator.limits, {
        ...parsed,
        timeoutMs: this.#timeoutMs(call, parsed.parameters),
        receivedAtMs,
        requestId,
        traceparent,
        traceContext: undefined,
        caller,
        signal,
      });
    });
  }

  #timeoutMs(
    call: { metadata: Metadata; getDeadline(): Date | number },
    parameters: InferenceRequest['parameters'] & object,
  ): number {
    const { requestTimeoutMs: defaultMs, maxRequestTimeoutMs: maxMs } = this.#o.config.coordinator;
    const header = firstValue(call.metadata, TIMEOUT_HEADER);
    const explicit =
      header !== undefined || parameters.timeout_ms !== undefined || parameters.timeout !== undefined;
    const asked = requestTimeoutMs(header, parameters, defaultMs, maxMs);
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    if (!Number.isFinite(at)) return asked;
    const left = Math.max(1, Math.floor(at - Date.now()));
    return Math.min(left, explicit ? asked : maxMs);
  }

  async #infer(message: ProtoInferRequest, call: ServerUnaryCall<unknown, unknown>, caller: Caller) {
    const controller = new AbortController();
    // a client that cancels (or whose deadline passes) cancels the request on its worker;
    // grpc-js says 'cancelled' at every stream's close, answered ones too, so the listener goes
    // once the answer is made (no error built and no signal aborted per answered call)
    const onCancel = () => controller.abort(new InfergridError('CANCELLED', 'the client cancelled the call'));
    call.once('cancelled', onCancel);
    try {
      const request = this.#request(message, call, caller, controller.signal);
      const result = await this.#o.coordinator.infer(request);
      return inferResponseOf(result, request.id);
    } finally {
      call.off('cancelled', onCancel);
    }
  }

  /** Whether `model` generates (its answer streams), when it resolves at all. */
  #generative(model: string | undefined, version: string | undefined): boolean {
    try {
      const { coordinator } = this.#o;
      return Boolean(coordinator.registry.specOf(coordinator.resolve(model ?? '', version || undefined)).llm);
    } catch {
      return false;
    }
  }

  #streamInfer(call: ServerDuplexStream<ProtoInferRequest, unknown>): void {
    let caller: Caller;
    try {
      caller = this.#authorize(call.metadata, 'infer');
    } catch (err) {
      call.emit('error', grpcErrorOf(err));
      return;
    }
    const { maxStreamRequests } = this.#o.config.coordinator.grpc;
    const controllers = new Set<AbortController>();
    const running = new Set<Promise<void>>();
    let first = true;
    let inputEnded = false;
    const finishIfDone = () => {
      if (inputEnded && running.size === 0 && !call.cancelled) call.end();
    };
    call.once('cancelled', () => {
      for (const c of controllers)
        c.abort(new InfergridError('CANCELLED', 'the client cancelled the stream'));
    });
    call.on('data', (message: ProtoInferRequest) => {
      const controller = new AbortController();
      controllers.add(controller);
      // the stream's credentials were checked when it opened; each later request takes its
      // share of the key's rate limit, as an HTTP request does
      const check = first ? undefined : () => this.#authorize(call.metadata, 'infer');
      first = false;
      const job = this.#streamOne(call, message, check ? check : () => caller, controller.signal).finally(
        () => {
          controllers.delete(controller);
          running.delete(job);
          if (running.size < maxStreamRequests) call.resume();
          finishIfDone();
        },
      );
      running.add(job);
      if (running.size >= maxStreamRequests) call.pause();
    });
    call.on('end', () => {
      inputEnded = true;
      finishIfDone();
    });
    call.on('error', () => {
      for (const c of controllers) c.abort(new InfergridError('CANCELLED', 'the stream failed'));
    });
  }

  async #streamOne(
    call: ServerDuplexStream<ProtoInferRequest, unknown>,
    message: ProtoInferRequest,
    authorize: () => Caller,
    signal: AbortSignal,
  ): Promise<void> {
    const write = async (response: object): Promise<boolean> => {
      if (call.cancelled || call.destroyed) return false;
      if (call.write(response)) return true;
      return writable(call);
    };
    try {
      const caller = authorize();
      const request = this.#request(message, call, caller, signal);
      if (!this.#generative(message.model_name, message.model_version)) {
        const result = await this.#o.coordinator.infer(request);
        await write({
          error_message: '',
          infer_response: inferResponseOf(result, request.id, { [FINAL_RESPONSE_PARAMETER]: true }),
        });
        return;
      }
      await this.#generate(request, write);
    } catch (err) {
      if (call.cancelled) return;
      this.#logFailure(err);
      const typed = toInfergridError(err);
      const response: Partial<ProtoInferResponse> = {
        model_name: message.model_name ?? '',
        model_version: message.model_version ?? '',
        id: message.id ?? '',
        parameters: parametersToProto({ [FINAL_RESPONSE_PARAMETER]: true }),
      };
      await write({ error_message: typed.message, infer_response: response });
    }
  }

  /**
   * A generative model's answer on the stream (its request read as generation.ts says): one
   * response per partial result with the text made since the last (empty ones skipped), then
   * the final one with the accounting and `text_output` "" (its text was streamed already), or
   * the whole text when nothing was streamed; with `exclude_input_in_output: false` the prompt
   * leads the first text. `stream: false` asks for the final response only. Never answered
   * from the cache, as generation is sampled.
   */
  async #generate(request: InferenceRequest, write: (response: object) => Promise<boolean>): Promise<void> {
    const generation = generationOf(request);
    const chunks = this.#o.coordinator.stream(generation.request, { partials: generation.partials });
    let pending = generation.lead;
    let streamed = false;
    for await (const chunk of chunks as AsyncGenerator<StreamChunk, void, undefined>) {
      let { result } = chunk;
      const made = chunk.final && streamed ? '' : outputText(result.outputs);
      if (!chunk.final && made === '') continue;
      if (pending !== '' || (chunk.final && streamed)) {
        const text = pending + made;
        pending = '';
        result = {
          ...result,
          outputs: result.outputs.map((t) => (t.name === LLM_OUTPUT ? textTensor(LLM_OUTPUT, text) : t)),
        };
      }
      if (!chunk.final) streamed = true;
      const response = inferResponseOf(result, request.id, { [FINAL_RESPONSE_PARAMETER]: chunk.final });
      // a reader gone: leaving the loop returns the generator, which cancels the worker's request
      if (!(await write({ error_message: '', infer_response: response }))) return;
      if (chunk.final) return;
    }
  }
}

function requiredName(name: string | undefined): string {
  return checkedName(name, 'model_name', true)!;
}

/** A request's `name` and `version`, each within the limit; `name` required or not. */
function nameAndVersion<R extends boolean>(
  r: NamedVersion,
  required: R,
): [R extends true ? string : string | undefined, string | undefined] {
  return [
    checkedName(r.name, 'name', required) as R extends true ? string : string | undefined,
    checkedName(r.version, 'version', false),
  ];
}
