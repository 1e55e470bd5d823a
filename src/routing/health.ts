/**
 * Active health of one worker, from pings over its RPC connection: `failureThreshold`
 * consecutive failed pings make it unhealthy (no traffic), `recoveryThreshold` consecutive
 * successes make it healthy again. The pinging itself (timers) belongs to the coordinator.
 */

export type WorkerHealth = 'healthy' | 'unhealthy';

export interface HealthThresholds {
  failureThreshold: number;
  recoveryThreshold: number;
}

export class HealthCheck {
  readonly #thresholds: HealthThresholds;
  state: WorkerHealth = 'healthy';
  consecutiveFailures = 0;
  consecutiveSuccesses = 0;
  lastRttMs: number | undefined;
  checks = 0;

  constructor(thresholds: HealthThresholds) {
    if (!(thresholds.failureThreshold >= 1 && thresholds.recoveryThreshold >= 1)) {
      throw new RangeError('health thresholds must be >= 1');
    }
    this.#thresholds = thresholds;
  }

  /** Records a successful check; returns true when this made the worker healthy again. */
  onSuccess(rttMs: number): boolean {
    this.checks++;
    this.lastRttMs = rttMs;
    this.consecutiveFailures = 0;
    this.consecutiveSuccesses++;
    if (this.state === 'unhealthy' && this.consecutiveSuccesses >= this.#thresholds.recoveryThreshold) {
      this.state = 'healthy';
      return true;
    }
    return false;
  }

  /** Records a failed check; returns true when this made the worker unhealthy. */
  onFailure(): boolean {
    this.checks++;
    this.consecutiveSuccesses = 0;
    this.consecutiveFailures++;
    if (this.state === 'healthy' && this.consecutiveFailures >= this.#thresholds.failureThreshold) {
      this.state = 'unhealthy';
      return true;
    }
    return false;
  }
}
