/**
 * Active health checks: every `intervalMs`, each connected worker is pinged over its RPC
 * connection; a ping unanswered within `timeoutMs` is a failed check. The worker's
 * HealthCheck turns consecutive results into healthy/unhealthy. (A worker that dies outright
 * is noticed sooner: its connection closes. Checks catch the ones that stay connected but
 * stop answering — a stuck event loop, a stopped process.)
 */

import type { Logger } from '../telemetry/index.ts';
import type { WorkerHandle, WorkerPool } from './worker-pool.ts';

export interface HealthMonitorOptions {
  pool: WorkerPool;
  intervalMs: number;
  timeoutMs: number;
  logger: Logger;
}

export class HealthMonitor {
  readonly #options: HealthMonitorOptions;
  readonly #checking = new WeakSet<WorkerHandle>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: HealthMonitorOptions) {
    this.#options = options;
  }

  start(): void {
    this.#timer ??= setInterval(() => this.#checkAll(), this.#options.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #checkAll(): void {
    for (const handle of this.#options.pool.list()) {
      if (this.#checking.has(handle) || !handle.connected) continue;
      this.#checking.add(handle);
      handle.conn.ping(this.#options.timeoutMs).then(
        (rttMs) => {
          this.#checking.delete(handle);
          if (handle.healthCheck.onSuccess(rttMs))
            this.#options.logger.info({ worker: handle.id }, 'worker is healthy again');
        },
        (err: Error) => {
          this.#checking.delete(handle);
          if (!handle.connected) return;
          if (handle.healthCheck.onFailure()) {
            this.#options.logger.warn(
              { worker: handle.id, err: err.message },
              'worker failed its health checks; no traffic until it recovers',
            );
          }
        },
      );
    }
  }
}
