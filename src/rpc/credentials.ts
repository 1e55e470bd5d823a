/**
 * RPC credentials. The coordinator holds the cluster secret and derives every worker's key
 * from it; a worker holds only its own key. A connection is keyed with the key of its worker
 * side's id, so a worker's key is good for its own id and no other: one leaked worker key
 * lets nobody pose as another worker, nor as a coordinator to another worker.
 */

import { createHmac } from 'node:crypto';
import { InfergridError } from '../errors.ts';

/** What a worker's key is derived with: HMAC-SHA256(clusterSecret, label + workerId). */
const WORKER_KEY_LABEL = 'infergrid-worker-key:';

/** Bytes of a worker key (SHA-256); written as 64 hex digits. */
export const WORKER_KEY_BYTES = 32;

/** The key of worker `workerId` in the cluster whose secret is `clusterSecret`. */
export function deriveWorkerKey(clusterSecret: string, workerId: string): Buffer {
  return createHmac('sha256', clusterSecret)
    .update(WORKER_KEY_LABEL + workerId)
    .digest();
}

/** A worker key as 64 hex digits (what `infergrid credential` prints and `auth.workerKey` holds) read back. */
export function parseWorkerKey(hex: string, where: string): Buffer {
  if (!new RegExp(`^[0-9a-fA-F]{${WORKER_KEY_BYTES * 2}}$`).test(hex))
    throw new InfergridError(
      'CONFIG_INVALID',
      `${where}: a worker key is ${WORKER_KEY_BYTES * 2} hex digits, as \`infergrid credential --worker <id>\` prints`,
    );
  return Buffer.from(hex, 'hex');
}

/** What one side of a connection can prove. */
export interface RpcCredentials {
  /** The key of a connection whose worker side has this id; undefined when this side holds none for it. */
  keyFor(workerId: string): Buffer | undefined;
}

/** A coordinator's: every worker's key, derived from the cluster secret. */
export function clusterCredentials(clusterSecret: string): RpcCredentials {
  return { keyFor: (workerId) => deriveWorkerKey(clusterSecret, workerId) };
}

/** A worker's: its own key, for its own id only. */
export function workerCredentials(workerId: string, key: Buffer): RpcCredentials {
  return { keyFor: (id) => (id === workerId ? key : undefined) };
}
