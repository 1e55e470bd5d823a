/**
 * The meta (msgpack part) of each message kind, and checks that turn an untrusted decoded
 * meta into a typed one. A meta that fails its check is a PROTOCOL_ERROR for that message.
 */

import { InfergridError, type WireError } from '../errors.ts';
import {
  type Datatype,
  ELEMENT_BYTES,
  type Tensor,
  type TensorSpec,
  describeTensor,
  elementCount,
  isDatatype,
} from '../tensor/index.ts';

/** Bumped when a change breaks older peers; the handshake refuses a different major version. */
export const PROTOCOL_VERSION = 1;
export const PROTOCOL_MAGIC = 'infergrid';

export type PeerRole = 'coordinator' | 'worker';
export type ModelState = 'loading' | 'ready' | 'unloading' | 'unavailable';
/** KServe v2 parameter values. */
export type ParameterValue = string | number | boolean;
export type Parameters = Record<string, ParameterValue>;

export interface HelloMeta {
  magic: typeof PROTOCOL_MAGIC;
  protocolVersion: number;
  role: PeerRole;
  id: string;
  token?: string;
}

export interface HelloAckMeta {
  protocolVersion: number;
  role: PeerRole;
  id: string;
}

/** A model as a worker hosts it: identity, state and the schema its backend reports. */
export interface ModelStatus {
  name: string;
  version: string;
  state: ModelState;
  platform: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  batchable: boolean;
  /** 0 when the model takes no batch dimension limit. */
  maxBatchSize: number;
  /** Why the model is unavailable, when it is. */
  error?: string;
}

export interface RegisterMeta {
  workerId: string;
  pid: number;
  /** The processor pool the worker belongs to, when it does. */
  pool?: string;
  /** Where the worker listens for coordinators, when it does. */
  host?: string;
  port?: number;
  models: ModelStatus[];
  draining: boolean;
  /** Relative capacity for weighted balancing (default 1). */
  weight?: number;
}

export interface HeartbeatMeta {
  sentAtMs: number;
  /** Requests the worker is running or has queued. Present in a worker's heartbeats only. */
  inFlight?: number;
  draining?: boolean;
  /** Model states that changed or all of them; absent when nothing changed. */
  models?: Pick<ModelStatus, 'name' | 'version' | 'state'>[];
}

/** Name, datatype and shape of a tensor whose bytes travel as the attachment at the same index. */
export interface TensorHeader {
  name: string;
  datatype: Datatype;
  shape: number[];
}

export interface InferRequestMeta {
  model: string;
  version: string;
  /** The client's request id, echoed back. */
  id?: string;
  inputs: TensorHeader[];
  /** Outputs to return; all of them when absent. */
  outputs?: string[];
  parameters?: Parameters;
  /** Time left for this request when it was sent; the receiver sets its own deadline from it. */
  timeoutMs?: number;
  /** W3C trace context of the sender's span. */
  traceparent?: string;
}

export interface InferResponseMeta {
  model: string;
  version: string;
  id?: string;
  outputs: TensorHeader[];
  parameters?: Parameters;
}

export type ErrorMeta = WireError;

/**
 * Coordinator -> worker model management (the repository API). `models` are model configs
 * (the config file's schema) the worker validates itself; paths are resolved on the worker.
 */
export type ModelControlMeta =
  | { action: 'load'; models: unknown[] }
  | { action: 'unload'; name: string; versions?: string[] };

export interface ModelControlResponseMeta {
  models: ModelStatus[];
}

export function checkModelControl(meta: unknown): ModelControlMeta {
  if (!isRecord(meta)) fail('MODEL_CONTROL_REQUEST: expected an object');
  if (meta.action === 'load' && Array.isArray(meta.models)) return { action: 'load', models: meta.models };
  if (
    meta.action === 'unload' &&
    typeof meta.name === 'string' &&
    (meta.versions === undefined ||
      (Array.isArray(meta.versions) && meta.versions.every((v) => typeof v === 'string')))
  ) {
    return {
      action: 'unload',
      name: meta.name,
      ...(meta.versions ? { versions: meta.versions as string[] } : {}),
    };
  }
  fail('MODEL_CONTROL_REQUEST: expected { action: "load", models } or { action: "unload", name, versions? }');
}

export interface CancelMeta {
  reason?: string;
}

export interface DrainMeta {
  reason?: string;
}

export interface PingMeta {
  sentAtMs: number;
}

function fail(what: string): never {
  throw new InfergridError('PROTOCOL_ERROR', what);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isShape(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((d) => Number.isInteger(d) && d >= -1);
}

function checkSpec(value: unknown, where: string): TensorSpec {
  if (
    !isRecord(value) ||
    typeof value.name !== 'string' ||
    !isDatatype(value.datatype) ||
    !isShape(value.shape)
  ) {
    fail(`${where}: expected { name, datatype, shape }`);
  }
  return { name: value.name, datatype: value.datatype, shape: value.shape };
}

export function checkHello(meta: unknown): HelloMeta {
  if (!isRecord(meta) || meta.magic !== PROTOCOL_MAGIC) fail('HELLO: not an infergrid peer (bad magic)');
  if (typeof meta.protocolVersion !== 'number') fail('HELLO: missing protocolVersion');
  if (meta.role !== 'coordinator' && meta.role !== 'worker')
    fail('HELLO: role must be coordinator or worker');
  if (typeof meta.id !== 'string') fail('HELLO: missing id');
  if (meta.token !== undefined && typeof meta.token !== 'string') fail('HELLO: token must be a string');
  return meta as unknown as HelloMeta;
}

export function checkHelloAck(meta: unknown): HelloAckMeta {
  if (!isRecord(meta) || typeof meta.protocolVersion !== 'number' || typeof meta.id !== 'string') {
    fail('HELLO_ACK: expected { protocolVersion, role, id }');
  }
  if (meta.role !== 'coordinator' && meta.role !== 'worker')
    fail('HELLO_ACK: role must be coordinator or worker');
  return meta as unknown as HelloAckMeta;
}

const MODEL_STATES: ReadonlySet<string> = new Set(['loading', 'ready', 'unloading', 'unavailable']);

export function checkRegister(meta: unknown): RegisterMeta {
  if (!isRecord(meta) || typeof meta.workerId !== 'string' || !Array.isArray(meta.models)) {
    fail('REGISTER: expected { workerId, models }');
  }
  const models = meta.models.map((m, i): ModelStatus => {
    const where = `REGISTER models[${i}]`;
    if (!isRecord(m) || typeof m.name !== 'string' || typeof m.version !== 'string')
      fail(`${where}: missing name/version`);
    if (typeof m.state !== 'string' || !MODEL_STATES.has(m.state)) fail(`${where}: bad state`);
    if (!Array.isArray(m.inputs) || !Array.isArray(m.outputs)) fail(`${where}: missing inputs/outputs`);
    return {
      name: m.name,
      version: m.version,
      state: m.state as ModelState,
      platform: typeof m.platform === 'string' ? m.platform : 'unknown',
      inputs: m.inputs.map((s, j) => checkSpec(s, `${where}.inputs[${j}]`)),
      outputs: m.outputs.map((s, j) => checkSpec(s, `${where}.outputs[${j}]`)),
      batchable: m.batchable === true,
      maxBatchSize: typeof m.maxBatchSize === 'number' ? m.maxBatchSize : 0,
      ...(typeof m.error === 'string' ? { error: m.error } : {}),
    };
  });
  return {
    workerId: meta.workerId,
    pid: typeof meta.pid === 'number' ? meta.pid : 0,
    ...(typeof meta.host === 'string' ? { host: meta.host } : {}),
    ...(typeof meta.port === 'number' ? { port: meta.port } : {}),
    ...(typeof meta.pool === 'string' ? { pool: meta.pool } : {}),
    models,
    draining: meta.draining === true,
    ...(typeof meta.weight === 'number' && meta.weight > 0 && Number.isFinite(meta.weight)
      ? { weight: meta.weight }
      : {}),
  };
}

export function checkHeartbeat(meta: unknown): HeartbeatMeta {
  if (!isRecord(meta) || typeof meta.sentAtMs !== 'number') fail('HEARTBEAT: missing sentAtMs');
  if (meta.inFlight !== undefined && typeof meta.inFlight !== 'number')
    fail('HEARTBEAT: inFlight must be a number');
  if (meta.models !== undefined) {
    if (!Array.isArray(meta.models)) fail('HEARTBEAT: models must be a list');
    for (const [i, m] of meta.models.entries()) {
      const ok =
        isRecord(m) &&
        typeof m.name === 'string' &&
        typeof m.version === 'string' &&
        typeof m.state === 'string' &&
        MODEL_STATES.has(m.state);
      if (!ok) fail(`HEARTBEAT models[${i}]: expected { name, version, state }`);
    }
  }
  return meta as unknown as HeartbeatMeta;
}

export function checkInferRequest(meta: unknown): InferRequestMeta {
  if (!isRecord(meta) || typeof meta.model !== 'string' || typeof meta.version !== 'string') {
    fail('INFER_REQUEST: expected { model, version, inputs }');
  }
  if (!Array.isArray(meta.inputs)) fail('INFER_REQUEST: inputs must be an array');
  for (const [i, t] of meta.inputs.entries()) checkSpec(t, `INFER_REQUEST inputs[${i}]`);
  if (
    meta.outputs !== undefined &&
    !(Array.isArray(meta.outputs) && meta.outputs.every((o) => typeof o === 'string'))
  ) {
    fail('INFER_REQUEST: outputs must be a list of names');
  }
  if (meta.parameters !== undefined && !isRecord(meta.parameters))
    fail('INFER_REQUEST: parameters must be a map');
  if (meta.timeoutMs !== undefined && typeof meta.timeoutMs !== 'number')
    fail('INFER_REQUEST: timeoutMs must be a number');
  return meta as unknown as InferRequestMeta;
}

export function checkInferResponse(meta: unknown): InferResponseMeta {
  if (!isRecord(meta) || typeof meta.model !== 'string' || !Array.isArray(meta.outputs)) {
    fail('INFER_RESPONSE: expected { model, version, outputs }');
  }
  for (const [i, t] of meta.outputs.entries()) checkSpec(t, `INFER_RESPONSE outputs[${i}]`);
  return meta as unknown as InferResponseMeta;
}

/** Splits tensors into headers for the meta and raw attachments for the frame (no copies). */
export function tensorsToWire(tensors: readonly Tensor[]): {
  headers: TensorHeader[];
  attachments: Uint8Array[];
} {
  const headers: TensorHeader[] = [];
  const attachments: Uint8Array[] = [];
  for (const t of tensors) {
    headers.push({ name: t.name, datatype: t.datatype, shape: t.shape });
    attachments.push(t.data);
  }
  return { headers, attachments };
}

/**
 * Joins headers and attachments back into tensors, checking that each fixed-size tensor's
 * byte length matches its datatype and shape.
 */
export function tensorsFromWire(
  headers: readonly TensorHeader[],
  attachments: readonly Uint8Array[],
): Tensor[] {
  if (headers.length !== attachments.length) {
    fail(`message lists ${headers.length} tensors but carries ${attachments.length} attachments`);
  }
  return headers.map((h, i) => {
    const data = attachments[i]!;
    const size = ELEMENT_BYTES[h.datatype];
    if (size > 0 && data.byteLength !== size * elementCount(h.shape)) {
      fail(
        `tensor "${h.name}" ${describeTensor(h.datatype, h.shape)} needs ${size * elementCount(h.shape)} bytes, got ${data.byteLength}`,
      );
    }
    return { name: h.name, datatype: h.datatype, shape: h.shape, data };
  });
}
