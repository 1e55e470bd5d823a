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

/**
 * Bumped when a change breaks older peers; the handshake refuses a different version.
 * 2: the handshake proves both sides hold the connection's key (HELLO, CHALLENGE, PROOF,
 * HELLO_ACK) instead of sending a token.
 */
export const PROTOCOL_VERSION = 2;
/** Bytes of each side's handshake nonce. */
export const NONCE_BYTES = 32;
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
  /** The dialer's fresh random nonce, {@link NONCE_BYTES} bytes. */
  nonce: Uint8Array;
}

/** Listener -> dialer: who it is, its own nonce, and its proof of the key (absent when it holds none). */
export interface ChallengeMeta {
  protocolVersion: number;
  role: PeerRole;
  id: string;
  nonce: Uint8Array;
  proof?: Uint8Array;
}

/** Dialer -> listener: its proof of the key (absent when it holds none). */
export interface ProofMeta {
  proof?: Uint8Array;
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
  /** What it was loaded from: the SHA-256 of its model file, when it has one (cache keys carry it). */
  fingerprint?: string;
  /** Set for generative models (they stream and serve the OpenAI API): the numbers of their LlmInfo. */
  llm?: LlmStatus;
}

/** A generative model's facts as a worker reports them (its LlmInfo without the chat template). */
export interface LlmStatus {
  contextSize: number;
  vocabularySize: number;
  embeddingSize: number;
  sequences: number;
  trainContextSize?: number;
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
  /**
   * Send partial INFER_RESPONSE frames as the model makes them (models with `stream` only;
   * others answer with one final frame). At most `streamWindow` partial frames may be
   * unacknowledged; the requester returns credit with STREAM_CREDIT as it takes them.
   */
  stream?: boolean;
  /** Partial frames the requester can hold: the initial credit. Required with `stream`. */
  streamWindow?: number;
}

/** The largest stream window a requester may ask for (frames). */
export const MAX_STREAM_WINDOW = 1024;

/** STREAM_CREDIT: this many more partial frames may be sent for the request it names. */
export interface StreamCreditMeta {
  credits: number;
}

export interface InferResponseMeta {
  model: string;
  version: string;
  id?: string;
  outputs: TensorHeader[];
  parameters?: Parameters;
  /**
   * Worker -> coordinator only: where this request's time went on the worker (see
   * {@link ComputeTimings}). The coordinator takes it off the meta before anything else sees it.
   */
  timings?: ComputeTimings;
}

/**
 * One request's time on the worker, ns, in Triton's statistics terms: waiting in the queue, then
 * its batch's input preparation (concatenating the batch, the backend's conversion to its own
 * tensors), the model run itself, and output extraction (the backend's conversion back, checking
 * and splitting the batch's outputs). A pipeline sums its steps' (docs/metrics.md).
 */
export interface ComputeTimings {
  queueNs: number;
  computeInputNs: number;
  computeInferNs: number;
  computeOutputNs: number;
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

export interface CountNs {
  count: number;
  ns: number;
}

/** One model's statistics on one worker (STATS_RESPONSE); the worker's batching/ keeps them. */
export interface ModelStatsSnapshot {
  name: string;
  version: string;
  lastInferenceMs: number;
  /** Rows (first-dimension items) run through the model. */
  inferenceCount: number;
  /** Model executions (batches). */
  executionCount: number;
  /** Per request: success/fail end to end on the worker, time queued, time in the model. */
  success: CountNs;
  fail: CountNs;
  queue: CountNs;
  /** The longest any request waited in the queue, ns. */
  queueMaxNs: number;
  /** Per request, its batch's time preparing inputs / in the model / extracting outputs. */
  computeInput: CountNs;
  computeInfer: CountNs;
  computeOutput: CountNs;
  /**
   * Answers from the response cache (kept by the coordinator, zero on workers): lookups that
   * found an entry (time to look up and decode it), and lookups that did not (time to look up,
   * plus the time to store the computed answer once it is stored).
   */
  cacheHit: CountNs;
  cacheMiss: CountNs;
  /** Per executed batch size: how many batches of that size, and their time in each phase. */
  batchStats: BatchStat[];
  queueDepth: number;
  maxQueueDepth: number;
  rejected: { overloaded: number; deadline: number; cancelled: number };
  /** Models that stream (generative ones): their requests bypass the queue and batcher. */
  streams?: StreamStats;
  /** A generative model's decode loop (running and waiting requests, KV use, prefix reuse). */
  llm?: LlmLoopStats;
}

/** Executions of one batch size (rows): each phase's count is the executions, ns their time. */
export interface BatchStat {
  batchSize: number;
  computeInput: CountNs;
  computeInfer: CountNs;
  computeOutput: CountNs;
}

/** A generative model's decode loop as metrics see it (vLLM's meanings). */
export interface LlmLoopStats {
  /** Requests holding a sequence now / waiting for one. */
  running: number;
  waiting: number;
  /** Tokens held in the sequences' KV caches now, and what they can hold. */
  kvTokens: number;
  kvCapacityTokens: number;
  /** Decode steps run (one batch each). */
  steps: number;
  /** Prompt tokens of admitted requests, and those of them found already in a sequence (prefix reuse). */
  promptTokens: number;
  cachedPromptTokens: number;
}

/** A streaming model's requests on one worker. */
export interface StreamStats {
  /** Requests started / running now. */
  started: number;
  running: number;
  /** Partial answers the model made (`emit` calls: tokens, for the sim model) / sent as frames. */
  partials: number;
  sent: number;
  /** Partial answers waiting now for the coordinator's credit (a stalled reader). */
  waiting: number;
  /** Requests that ended cancelled (client gone, deadline). */
  cancelled: number;
}

export interface StatsResponseMeta {
  models: ModelStatsSnapshot[];
}

/** One metric family as prom-client's `getMetricsAsJSON()` gives it (its typings say `type` is a number; it is this string). */
export interface MetricJson {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram' | 'summary';
  aggregator: 'omit' | 'sum' | 'first' | 'min' | 'max' | 'average';
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}

export interface MetricsResponseMeta {
  metrics: MetricJson[];
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

/** What a value is, for an error message: `a string`, `a list`, `nothing`. */
function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'number') return `the number ${value}`;
  return `a ${typeof value}`;
}

function objectAt(value: unknown, where: string): Record<string, unknown> {
  if (!isRecord(value)) fail(`${where}: expected an object, got ${describe(value)}`);
  return value;
}

function listAt(value: unknown, where: string): unknown[] {
  if (!Array.isArray(value)) fail(`${where}: expected a list, got ${describe(value)}`);
  return value;
}

function stringAt(record: Record<string, unknown>, field: string, where: string): string {
  const value = record[field];
  if (typeof value !== 'string') fail(`${where}.${field}: expected a string, got ${describe(value)}`);
  return value;
}

/** A count or a duration: finite and not negative. */
function countAt(record: Record<string, unknown>, field: string, where: string): number {
  const value = record[field];
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
    fail(`${where}.${field}: expected a non-negative number, got ${describe(value)}`);
  return value;
}

/** An optional field: absent (undefined or null) is fine, any other value must pass `check`. */
function optionalAt<T>(
  record: Record<string, unknown>,
  field: string,
  where: string,
  expected: string,
  check: (value: unknown) => value is T,
): T | undefined {
  const value = record[field];
  if (value === undefined || value === null) return undefined;
  if (!check(value)) fail(`${where}.${field}: expected ${expected}, got ${describe(value)}`);
  return value;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

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

/**
 * The protocol version a HELLO or CHALLENGE says it speaks, read before anything else is
 * checked: a peer of another version is told VERSION_MISMATCH, not about fields its version
 * lacks. `magic` is checked on a HELLO only (the first frame).
 */
export function peerProtocolVersion(what: 'HELLO' | 'CHALLENGE', meta: unknown): number {
  if (!isRecord(meta) || (what === 'HELLO' && meta.magic !== PROTOCOL_MAGIC))
    fail(`${what}: not an infergrid peer (bad magic)`);
  if (typeof meta.protocolVersion !== 'number') fail(`${what}: missing protocolVersion`);
  return meta.protocolVersion;
}

const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;
const isNonce = (v: unknown): v is Uint8Array => isBytes(v) && v.byteLength === NONCE_BYTES;

/** role, id and nonce, shared by HELLO and CHALLENGE. */
function checkPeer(what: string, meta: Record<string, unknown>): void {
  if (meta.role !== 'coordinator' && meta.role !== 'worker')
    fail(`${what}: role must be coordinator or worker`);
  if (typeof meta.id !== 'string') fail(`${what}: missing id`);
  if (!isNonce(meta.nonce)) fail(`${what}: nonce must be ${NONCE_BYTES} bytes`);
}

export function checkHello(meta: unknown): HelloMeta {
  peerProtocolVersion('HELLO', meta);
  checkPeer('HELLO', meta as Record<string, unknown>);
  return meta as unknown as HelloMeta;
}

export function checkChallenge(meta: unknown): ChallengeMeta {
  peerProtocolVersion('CHALLENGE', meta);
  const m = meta as Record<string, unknown>;
  checkPeer('CHALLENGE', m);
  optionalAt(m, 'proof', 'CHALLENGE', 'bytes', isBytes);
  return meta as unknown as ChallengeMeta;
}

export function checkProof(meta: unknown): ProofMeta {
  if (!isRecord(meta)) fail('PROOF: expected an object');
  optionalAt(meta, 'proof', 'PROOF', 'bytes', isBytes);
  return meta as unknown as ProofMeta;
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

/** One model's status in a REGISTER or MODEL_CONTROL_RESPONSE; `where` names the message and index. */
function checkModelStatus(value: unknown, where: string): ModelStatus {
  const m = objectAt(value, where);
  const name = stringAt(m, 'name', where);
  const version = stringAt(m, 'version', where);
  const state = stringAt(m, 'state', where);
  if (!MODEL_STATES.has(state))
    fail(`${where}.state: expected one of ${[...MODEL_STATES].join(', ')}, got "${state}"`);
  const inputs = listAt(m.inputs, `${where}.inputs`);
  const outputs = listAt(m.outputs, `${where}.outputs`);
  const platform = optionalAt(m, 'platform', where, 'a string', isString);
  const batchable = optionalAt(m, 'batchable', where, 'a boolean', isBoolean);
  const maxBatchSize = optionalAt(m, 'maxBatchSize', where, 'a non-negative integer', isCount);
  const error = optionalAt(m, 'error', where, 'a string', isString);
  const fingerprint = optionalAt(m, 'fingerprint', where, 'a hex string', isFingerprint);
  const llm = m.llm === undefined ? undefined : checkLlmStatus(m.llm, `${where}.llm`);
  return {
    name,
    version,
    state: state as ModelState,
    platform: platform ?? 'unknown',
    inputs: inputs.map((s, j) => checkSpec(s, `${where}.inputs[${j}]`)),
    outputs: outputs.map((s, j) => checkSpec(s, `${where}.outputs[${j}]`)),
    batchable: batchable === true,
    maxBatchSize: maxBatchSize ?? 0,
    ...(error !== undefined ? { error } : {}),
    ...(fingerprint !== undefined ? { fingerprint } : {}),
    ...(llm !== undefined ? { llm } : {}),
  };
}

function checkLlmStatus(value: unknown, where: string): LlmStatus {
  const o = objectAt(value, where);
  const count = (key: string): number => {
    const v = o[key];
    if (!isCount(v)) fail(`${where}.${key}: expected a non-negative integer`);
    return v as number;
  };
  const trainContextSize = optionalAt(o, 'trainContextSize', where, 'a non-negative integer', isCount);
  return {
    contextSize: count('contextSize'),
    vocabularySize: count('vocabularySize'),
    embeddingSize: count('embeddingSize'),
    sequences: count('sequences'),
    ...(trainContextSize !== undefined ? { trainContextSize } : {}),
  };
}

function isFingerprint(value: unknown): value is string {
  return typeof value === 'string' && /^[0-9a-f]{1,128}$/.test(value);
}

export function checkRegister(meta: unknown): RegisterMeta {
  if (!isRecord(meta) || typeof meta.workerId !== 'string' || !Array.isArray(meta.models)) {
    fail('REGISTER: expected { workerId, models }');
  }
  const models = meta.models.map((m, i) => checkModelStatus(m, `REGISTER models[${i}]`));
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
  if (meta.stream !== undefined && typeof meta.stream !== 'boolean')
    fail('INFER_REQUEST: stream must be a boolean');
  if (
    meta.stream === true &&
    !(
      Number.isInteger(meta.streamWindow) &&
      (meta.streamWindow as number) >= 1 &&
      (meta.streamWindow as number) <= MAX_STREAM_WINDOW
    )
  )
    fail(`INFER_REQUEST: a stream needs streamWindow, an integer in [1, ${MAX_STREAM_WINDOW}]`);
  return meta as unknown as InferRequestMeta;
}

export function checkStreamCredit(meta: unknown): StreamCreditMeta {
  if (!isRecord(meta) || !Number.isInteger(meta.credits) || (meta.credits as number) < 1)
    fail('STREAM_CREDIT: expected { credits }, a positive integer');
  return { credits: meta.credits as number };
}

const TIMING_KEYS = [
  'queueNs',
  'computeInputNs',
  'computeInferNs',
  'computeOutputNs',
] as const satisfies readonly (keyof ComputeTimings)[];

export function checkInferResponse(meta: unknown): InferResponseMeta {
  if (!isRecord(meta) || typeof meta.model !== 'string' || !Array.isArray(meta.outputs)) {
    fail('INFER_RESPONSE: expected { model, version, outputs }');
  }
  for (const [i, t] of meta.outputs.entries()) checkSpec(t, `INFER_RESPONSE outputs[${i}]`);
  if (meta.timings !== undefined && meta.timings !== null)
    meta.timings = countsAt(meta.timings, 'INFER_RESPONSE timings', TIMING_KEYS);
  return meta as unknown as InferResponseMeta;
}

export function checkModelControlResponse(meta: unknown): ModelControlResponseMeta {
  const where = 'MODEL_CONTROL_RESPONSE';
  const models = listAt(objectAt(meta, where).models, `${where} models`);
  return { models: models.map((m, i) => checkModelStatus(m, `${where} models[${i}]`)) };
}

function checkCountNs(record: Record<string, unknown>, field: string, where: string): CountNs {
  const at = `${where}.${field}`;
  const c = objectAt(record[field], at);
  return { count: countAt(c, 'count', at), ns: countAt(c, 'ns', at) };
}

/** A figure an older worker does not send reads as zero; one it sends is checked. */
function optionalCountNs(record: Record<string, unknown>, field: string, where: string): CountNs {
  return record[field] === undefined ? { count: 0, ns: 0 } : checkCountNs(record, field, where);
}

function checkModelStats(value: unknown, where: string): ModelStatsSnapshot {
  const s = objectAt(value, where);
  const batchStats = listAt(s.batchStats, `${where}.batchStats`).map((b, i) => {
    const at = `${where}.batchStats[${i}]`;
    const batch = objectAt(b, at);
    return {
      batchSize: countAt(batch, 'batchSize', at),
      computeInput: optionalCountNs(batch, 'computeInput', at),
      computeInfer: checkCountNs(batch, 'computeInfer', at),
      computeOutput: optionalCountNs(batch, 'computeOutput', at),
    };
  });
  const rejected = objectAt(s.rejected, `${where}.rejected`);
  return {
    name: stringAt(s, 'name', where),
    version: stringAt(s, 'version', where),
    lastInferenceMs: countAt(s, 'lastInferenceMs', where),
    inferenceCount: countAt(s, 'inferenceCount', where),
    executionCount: countAt(s, 'executionCount', where),
    success: checkCountNs(s, 'success', where),
    fail: checkCountNs(s, 'fail', where),
    queue: checkCountNs(s, 'queue', where),
    queueMaxNs: countAt(s, 'queueMaxNs', where),
    computeInput: optionalCountNs(s, 'computeInput', where),
    computeInfer: checkCountNs(s, 'computeInfer', where),
    computeOutput: optionalCountNs(s, 'computeOutput', where),
    cacheHit: optionalCountNs(s, 'cacheHit', where),
    cacheMiss: optionalCountNs(s, 'cacheMiss', where),
    batchStats,
    queueDepth: countAt(s, 'queueDepth', where),
    maxQueueDepth: countAt(s, 'maxQueueDepth', where),
    rejected: {
      overloaded: countAt(rejected, 'overloaded', `${where}.rejected`),
      deadline: countAt(rejected, 'deadline', `${where}.rejected`),
      cancelled: countAt(rejected, 'cancelled', `${where}.rejected`),
    },
    ...(s.streams === undefined || s.streams === null
      ? {}
      : { streams: checkStreamStats(s.streams, `${where}.streams`) }),
    ...(s.llm === undefined || s.llm === null ? {} : { llm: checkLlmLoopStats(s.llm, `${where}.llm`) }),
  };
}

/** An object of the named counts, each a non-negative integer; nothing else it holds is kept. */
function countsAt<K extends string>(value: unknown, where: string, keys: readonly K[]): Record<K, number> {
  const o = objectAt(value, where);
  return Object.fromEntries(keys.map((k) => [k, countAt(o, k, where)])) as Record<K, number>;
}

const LLM_LOOP_STATS_KEYS = [
  'running',
  'waiting',
  'kvTokens',
  'kvCapacityTokens',
  'steps',
  'promptTokens',
  'cachedPromptTokens',
] as const satisfies readonly (keyof LlmLoopStats)[];
const STREAM_STATS_KEYS = [
  'started',
  'running',
  'partials',
  'sent',
  'waiting',
  'cancelled',
] as const satisfies readonly (keyof StreamStats)[];

const checkLlmLoopStats = (value: unknown, where: string): LlmLoopStats =>
  countsAt(value, where, LLM_LOOP_STATS_KEYS);
const checkStreamStats = (value: unknown, where: string): StreamStats =>
  countsAt(value, where, STREAM_STATS_KEYS);

/** Rebuilds the statistics field by field, so nothing a worker adds reaches the statistics API. */
export function checkStatsResponse(meta: unknown): StatsResponseMeta {
  const where = 'STATS_RESPONSE';
  const models = listAt(objectAt(meta, where).models, `${where} models`);
  return { models: models.map((m, i) => checkModelStats(m, `${where} models[${i}]`)) };
}

const METRIC_TYPES: ReadonlySet<string> = new Set(['counter', 'gauge', 'histogram', 'summary']);
/** prom-client's aggregators: any other name makes the merged /metrics page throw. */
const METRIC_AGGREGATORS: ReadonlySet<string> = new Set(['omit', 'sum', 'first', 'min', 'max', 'average']);
/** Prometheus' own name grammars: a name outside them would corrupt the text exposition. */
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function checkMetric(value: unknown, where: string): MetricJson {
  const m = objectAt(value, where);
  const name = stringAt(m, 'name', where);
  if (!METRIC_NAME.test(name)) fail(`${where}.name: "${name}" is not a Prometheus metric name`);
  const help = stringAt(m, 'help', where);
  const type = stringAt(m, 'type', where);
  if (!METRIC_TYPES.has(type))
    fail(`${where}.type: expected one of ${[...METRIC_TYPES].join(', ')}, got "${type}"`);
  const aggregator = stringAt(m, 'aggregator', where);
  if (!METRIC_AGGREGATORS.has(aggregator))
    fail(`${where}.aggregator: expected one of ${[...METRIC_AGGREGATORS].join(', ')}, got "${aggregator}"`);
  const values = listAt(m.values, `${where}.values`).map((v, i) => {
    const at = `${where}.values[${i}]`;
    const entry = objectAt(v, at);
    if (typeof entry.value !== 'number') fail(`${at}.value: expected a number, got ${describe(entry.value)}`);
    const labels = objectAt(entry.labels, `${at}.labels`);
    for (const [label, labelValue] of Object.entries(labels)) {
      if (!LABEL_NAME.test(label)) fail(`${at}.labels: "${label}" is not a Prometheus label name`);
      if (typeof labelValue !== 'string' && typeof labelValue !== 'number')
        fail(`${at}.labels.${label}: expected a string or a number, got ${describe(labelValue)}`);
    }
    const metricName = optionalAt(entry, 'metricName', at, 'a string', isString);
    if (metricName !== undefined && !METRIC_NAME.test(metricName))
      fail(`${at}.metricName: "${metricName}" is not a Prometheus metric name`);
    return {
      value: entry.value,
      labels: Object.fromEntries(Object.entries(labels)) as Record<string, string | number>,
      ...(metricName !== undefined ? { metricName } : {}),
    };
  });
  return {
    name,
    help,
    type: type as MetricJson['type'],
    aggregator: aggregator as MetricJson['aggregator'],
    values,
  };
}

export function checkMetricsResponse(meta: unknown): MetricsResponseMeta {
  const where = 'METRICS_RESPONSE';
  const metrics = listAt(objectAt(meta, where).metrics, `${where} metrics`);
  return { metrics: metrics.map((m, i) => checkMetric(m, `${where} metrics[${i}]`)) };
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
