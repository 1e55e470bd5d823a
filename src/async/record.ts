/**
 * What is known about one asynchronous request, and how it is kept in a shared store.
 *
 * Persisted format (JSON bytes, version in the value: `"v": 1`): the store key is
 * `async:<id>`; a record carries its own expiry (`expires_at_ms`, by the writer's clock) so no
 * copy in any tier is served past it, whatever the tier's own TTL. An owner's liveness key,
 * `async:instance:<instance id>`, holds nothing useful and lives as long as its lease.
 *
 * Cancels across coordinators (JSON, `"v": 1`): a coordinator that does not run a request
 * writes a cancel message under `async:cancel:<id>` (it lives as long as the pending record),
 * then a fresh random value under the owner's marker `async:cancels:<instance id>`, then
 * publishes the message on the owner's channel `async:events:<instance id>`. The owner answers
 * on the sender's channel with an ack. None of these keys is a UUID, so none is a request id.
 */

import type { WireError } from '../errors.ts';

export type AsyncRequestStatus = 'pending' | 'done' | 'failed';

/** Who submitted a request: the API key's name; absent for a request without credentials. */
interface Owned {
  readonly owner?: string | undefined;
}

export interface PendingRecord extends Owned {
  readonly status: 'pending';
  readonly id: string;
  /** Epoch ms, by the owner's clock. */
  readonly submittedAtMs: number;
}

export interface DoneRecord extends Owned {
  readonly status: 'done';
  readonly id: string;
  readonly submittedAtMs: number;
  readonly finishedAtMs: number;
  /** The KServe v2 infer response JSON object, exactly as the synchronous call would answer. */
  readonly response: object;
}

export interface FailedRecord extends Owned {
  readonly status: 'failed';
  readonly id: string;
  readonly submittedAtMs: number;
  readonly finishedAtMs: number;
  readonly error: WireError;
  /** The status a synchronous call would have answered with. */
  readonly httpStatus: number;
}

export type AsyncRecord = PendingRecord | DoneRecord | FailedRecord;
export type FinishedRecord = DoneRecord | FailedRecord;

/** Store key of a request's record. */
export const STORE_KEY_PREFIX = 'async:';
/** Store key of a coordinator instance's liveness lease (never a UUID, so never a request id). */
export const INSTANCE_KEY_PREFIX = 'async:instance:';
/** Store key of a cancel asked by another coordinator. */
export const CANCEL_KEY_PREFIX = 'async:cancel:';
/** Store key an owner reads every tick: a new value means new cancel keys may be waiting. */
export const CANCEL_MARKER_PREFIX = 'async:cancels:';
/** Pub/sub channel a coordinator listens on for cancels and acks. */
export const EVENTS_CHANNEL_PREFIX = 'async:events:';
/** A control message bigger than this, read from the store or a channel, is refused. */
export const MAX_CONTROL_MESSAGE_BYTES = 4096;
const MAX_NAME_LENGTH = 512;
const FORMAT_VERSION = 1;

export function cancelKey(id: string): string {
  return CANCEL_KEY_PREFIX + id;
}

export function cancelMarkerKey(instanceId: string): string {
  return CANCEL_MARKER_PREFIX + instanceId;
}

export function eventsChannel(instanceId: string): string {
  return EVENTS_CHANNEL_PREFIX + instanceId;
}

/**
 * What one coordinator tells another about a request the second runs: cancel it (on behalf
 * of `owner`, the API key the DELETE came with), or, back, what became of that cancel
 * ('cancelled'; 'finished': it had already finished or is not run there).
 */
export type ControlMessage =
  | { kind: 'cancel'; id: string; owner?: string | undefined; from: string }
  | { kind: 'ack'; id: string; outcome: 'cancelled' | 'finished'; from: string };

export function encodeControl(message: ControlMessage): Uint8Array {
  return Buffer.from(JSON.stringify({ v: FORMAT_VERSION, ...message }), 'utf8');
}

function isName(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= MAX_NAME_LENGTH;
}

/** Reads a control message back; throws (Error naming what is wrong) on anything else. */
export function decodeControl(bytes: Uint8Array, isRequestId: (id: string) => boolean): ControlMessage {
  if (bytes.byteLength > MAX_CONTROL_MESSAGE_BYTES) {
    throw new Error(`control message of ${bytes.byteLength} bytes, over ${MAX_CONTROL_MESSAGE_BYTES}`);
  }
  const parsed: unknown = JSON.parse(
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(),
  );
  if (!isObject(parsed)) throw new Error('not a JSON object');
  if (parsed.v !== FORMAT_VERSION) throw new Error(`format version ${String(parsed.v)}, expected 1`);
  const { kind, id, from } = parsed;
  if (typeof id !== 'string' || !isRequestId(id)) throw new Error('id is not a request id');
  if (!isName(from)) throw new Error('from is not an instance id');
  if (kind === 'cancel') {
    const owner = parsed.owner;
    if (owner !== undefined && typeof owner !== 'string') throw new Error('owner is not a string');
    if (typeof owner === 'string' && owner.length > MAX_NAME_LENGTH) throw new Error('owner is too long');
    return { kind, id, from, ...(owner !== undefined ? { owner } : {}) };
  }
  if (kind === 'ack') {
    const outcome = parsed.outcome;
    if (outcome !== 'cancelled' && outcome !== 'finished') throw new Error('unknown ack outcome');
    return { kind, id, from, outcome };
  }
  throw new Error(`unknown kind ${JSON.stringify(kind)}`);
}

export function recordKey(id: string): string {
  return STORE_KEY_PREFIX + id;
}

export function instanceKey(instanceId: string): string {
  return INSTANCE_KEY_PREFIX + instanceId;
}

/** A record as read back from the store: a pending one names the instance that runs it. */
export type StoredRecord =
  | { record: PendingRecord; instanceId: string; expiresAtMs: number }
  | { record: FinishedRecord; instanceId: string; expiresAtMs: number };

interface PersistedV1 {
  v: 1;
  id: string;
  status: AsyncRequestStatus;
  instance: string;
  owner?: string;
  submitted_at_ms: number;
  finished_at_ms?: number;
  expires_at_ms: number;
  response?: object;
  error?: WireError;
  http_status?: number;
}

/** JSON bytes; throws (TypeError) when the response cannot be serialised (a BigInt, a cycle). */
export function encodeRecord(record: AsyncRecord, instanceId: string, expiresAtMs: number): Uint8Array {
  const out: PersistedV1 = {
    v: FORMAT_VERSION,
    id: record.id,
    status: record.status,
    instance: instanceId,
    submitted_at_ms: record.submittedAtMs,
    expires_at_ms: expiresAtMs,
  };
  if (record.owner !== undefined) out.owner = record.owner;
  if (record.status !== 'pending') out.finished_at_ms = record.finishedAtMs;
  if (record.status === 'done') out.response = record.response;
  if (record.status === 'failed') {
    out.error = record.error;
    out.http_status = record.httpStatus;
  }
  return Buffer.from(JSON.stringify(out), 'utf8');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Reads a persisted record back. Throws (Error naming what is wrong) on bytes that are not a
 * record of this format: another version, or something else under the key.
 */
export function decodeRecord(bytes: Uint8Array): StoredRecord {
  const parsed: unknown = JSON.parse(
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(),
  );
  if (!isObject(parsed)) throw new Error('not a JSON object');
  if (parsed.v !== FORMAT_VERSION) throw new Error(`format version ${String(parsed.v)}, expected 1`);
  const p = parsed as unknown as PersistedV1;
  if (typeof p.id !== 'string' || typeof p.instance !== 'string') throw new Error('id or instance missing');
  if (typeof p.submitted_at_ms !== 'number' || typeof p.expires_at_ms !== 'number') {
    throw new Error('submitted_at_ms or expires_at_ms missing');
  }
  if (p.owner !== undefined && typeof p.owner !== 'string') throw new Error('owner is not a string');
  const base = {
    id: p.id,
    submittedAtMs: p.submitted_at_ms,
    ...(p.owner !== undefined ? { owner: p.owner } : {}),
  };
  const meta = { instanceId: p.instance, expiresAtMs: p.expires_at_ms };
  if (p.status === 'pending') return { record: { status: 'pending', ...base }, ...meta };
  if (typeof p.finished_at_ms !== 'number') throw new Error('finished_at_ms missing');
  if (p.status === 'done') {
    if (!isObject(p.response)) throw new Error('response missing');
    return {
      record: { status: 'done', ...base, finishedAtMs: p.finished_at_ms, response: p.response },
      ...meta,
    };
  }
  if (p.status === 'failed') {
    if (!isObject(p.error) || typeof p.error.code !== 'string' || typeof p.http_status !== 'number') {
      throw new Error('error or http_status missing');
    }
    return {
      record: {
        status: 'failed',
        ...base,
        finishedAtMs: p.finished_at_ms,
        error: p.error,
        httpStatus: p.http_status,
      },
      ...meta,
    };
  }
  throw new Error(`unknown status ${JSON.stringify(p.status)}`);
}
