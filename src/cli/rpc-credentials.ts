/**
 * RPC credentials at start-up: what a worker proves (its own key, or one derived from the
 * cluster secret), and the refusal to start a coordinator or worker without any unless the
 * operator says --insecure, in which case it says loudly what that opens.
 */

import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { deriveWorkerKey, parseWorkerKey } from '../rpc/index.ts';
import type { Logger } from '../telemetry/index.ts';

type AuthConfig = InfergridConfig['auth'];

/** A worker's key: auth.workerKey, else derived from the cluster secret for `id`; none without either. */
export function workerKeyFrom(auth: AuthConfig, id: string): Buffer | undefined {
  if (auth.workerKey) return parseWorkerKey(auth.workerKey, 'auth.workerKey');
  return auth.token ? deriveWorkerKey(auth.token, id) : undefined;
}

const HOW_TO = {
  coordinator: 'set the cluster secret (auth.token in the config, or INFERGRID_TOKEN)',
  worker:
    "set this worker's key (auth.workerKey, or INFERGRID_WORKER_KEY; `infergrid credential --worker <id>` prints it) or the cluster secret (auth.token, or INFERGRID_TOKEN)",
} as const;

const EXPOSED = {
  coordinator:
    'anyone who can reach the RPC port can join as a worker and receive requests and their tensors',
  worker:
    'anyone who can reach this worker can connect as a coordinator, send it requests and load models on it',
} as const;

/**
 * Throws CONFIG_INVALID when `role` has no credentials and was not started with --insecure
 * (auth.insecure); with it, logs a warning saying who can then do what.
 */
export function requireRpcCredentials(
  role: 'coordinator' | 'worker',
  auth: AuthConfig,
  logger: Logger,
): void {
  const has =
    role === 'coordinator'
      ? auth.token !== undefined
      : auth.token !== undefined || auth.workerKey !== undefined;
  if (has) return;
  if (!auth.insecure)
    throw new InfergridError(
      'CONFIG_INVALID',
      `no RPC credentials: ${HOW_TO[role]}, or pass --insecure (auth.insecure: true) to run RPC without authentication, where ${EXPOSED[role]}`,
    );
  logger.warn(
    { insecure: true },
    `RPC RUNS WITHOUT AUTHENTICATION (--insecure): ${EXPOSED[role]}. ${HOW_TO[role].replace(/^set/, 'Set')} to close it.`,
  );
}
