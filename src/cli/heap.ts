/**
 * V8 heap sizing for the long-running processes (serve, coordinator, worker).
 *
 * V8 starts a full mark-compact once the old generation plus the off-heap memory allocated
 * since the last one comes within a young generation of the limit, and the limit is only about
 * twice the live heap. A serving process keeps a small live heap (~23 MB for a coordinator)
 * while it allocates large short-lived off-heap buffers: every request and response body and
 * every RPC frame. Relaying the OCR recognizer's 1 MiB output, the coordinator ran a
 * mark-compact every ~5 requests, ~8 ms of CPU per request in all (bench/real-model.ts);
 * growing the heap by 200% instead of V8's default made it ~3 ms.
 *
 * The factor is read whenever V8 recomputes its limits, so setting it at start-up works where
 * --initial-old-space-size (read once, when the heap is created) would not. A flag given to
 * node itself wins: NODE_OPTIONS cannot carry it, `node --heap-growing-percent=N` can.
 */

import { setFlagsFromString } from 'node:v8';
import { InfergridError } from '../errors.ts';

export const HEAP_GROWING_PERCENT_ENV = 'INFERGRID_HEAP_GROWING_PERCENT';
export const DEFAULT_HEAP_GROWING_PERCENT = 200;

/**
 * The V8 flag to set, or undefined to leave V8's own heuristics: when node was started with the
 * flag, or the environment sets 0.
 */
export function heapGrowingFlag(
  env: NodeJS.ProcessEnv = process.env,
  execArgv: readonly string[] = process.execArgv,
): string | undefined {
  if (execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return undefined;
  const raw = env[HEAP_GROWING_PERCENT_ENV];
  let percent = DEFAULT_HEAP_GROWING_PERCENT;
  if (raw !== undefined && raw.trim() !== '') {
    percent = Number(raw);
    if (!Number.isInteger(percent) || percent < 0 || percent > 10_000) {
      throw new InfergridError(
        'CONFIG_INVALID',
        `${HEAP_GROWING_PERCENT_ENV} must be an integer from 0 (V8's default heuristics) to 10000, got "${raw}"`,
      );
    }
  }
  return percent === 0 ? undefined : `--heap-growing-percent=${percent}`;
}

/** Sets the heap growing factor for this process (see the module comment). */
export function tuneHeap(env: NodeJS.ProcessEnv = process.env): void {
  const flag = heapGrowingFlag(env);
  if (flag) setFlagsFromString(flag);
}
