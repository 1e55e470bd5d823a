import { InfergridError } from '../errors.ts';
import type { Parameters } from '../protocol/index.ts';

/** Header a client may set to give a request its own deadline, in ms. */
export const TIMEOUT_HEADER = 'infergrid-timeout-ms';

/** Where the request's timeout comes from: the value, where it was, and its scale to ms. */
function pickTimeout(
  header: string | string[] | undefined,
  parameters: Parameters,
): [unknown, string, number] {
  if (header !== undefined)
    return [Array.isArray(header) ? header[0] : header, `header ${TIMEOUT_HEADER}`, 1];
  if (parameters.timeout_ms !== undefined) return [parameters.timeout_ms, 'parameters.timeout_ms', 1];
  return [parameters.timeout, 'parameters.timeout (microseconds)', 1 / 1000];
}

/**
 * A request's time budget in ms, from (first found) the `infergrid-timeout-ms` header, the
 * `timeout_ms` parameter, or Triton's `timeout` parameter (microseconds); else the default.
 * Capped at `maxMs`.
 */
export function requestTimeoutMs(
  header: string | string[] | undefined,
  parameters: Parameters,
  defaultMs: number,
  maxMs: number,
): number {
  if (header === undefined && parameters.timeout_ms === undefined && parameters.timeout === undefined)
    return defaultMs;
  const found = pickTimeout(header, parameters);
  const [raw, where, scale] = found;
  const n = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) {
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `${where} must be a positive number, got ${JSON.stringify(raw)}`,
    );
  }
  return Math.min(Math.max(1, Math.round(n * scale)), maxMs);
}
