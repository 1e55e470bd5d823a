/**
 * The door of a listening RPC port: at most `maxPendingHandshakes` connections may be waiting
 * for their handshake at once (more are closed as they arrive, so a peer that opens sockets and
 * says nothing cannot hold memory and file descriptors), and refusals are logged at most once per
 * `logIntervalMs`, with how many were left out since, so a flood of bad peers cannot flood the log.
 */

import type { Socket } from 'node:net';
import type { Logger } from '../telemetry/index.ts';

export interface AcceptGateOptions {
  /** Connections waiting for their handshake at once, at most. */
  maxPendingHandshakes: number;
  /** At most one refusal line per this many ms. */
  logIntervalMs: number;
  logger: Logger;
  /** Default: Date.now. */
  now?: () => number;
}

export class AcceptGate {
  readonly #o: AcceptGateOptions;
  readonly #now: () => number;
  #pending = 0;
  #lastLogAt = Number.NEGATIVE_INFINITY;
  #suppressed = 0;
  /** Connections closed because too many were waiting for their handshake. */
  overflowed = 0;

  constructor(options: AcceptGateOptions) {
    if (!Number.isInteger(options.maxPendingHandshakes) || options.maxPendingHandshakes < 1)
      throw new RangeError('maxPendingHandshakes must be a positive integer');
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Whether this socket may start its handshake; when not, it has been destroyed. Pair a true with `done()`. */
  admit(socket: Socket): boolean {
    if (this.#pending >= this.#o.maxPendingHandshakes) {
      this.overflowed++;
      socket.destroy();
      this.refused(
        { peer: socket.remoteAddress, pending: this.#pending },
        'too many connections waiting for their handshake; closed one',
      );
      return false;
    }
    this.#pending++;
    return true;
  }

  /** The handshake of an admitted socket ended, either way. */
  done(): void {
    this.#pending--;
  }

  get pending(): number {
    return this.#pending;
  }

  /** A refusal, logged at most once per interval (with the count of those left out since). */
  refused(fields: Record<string, unknown>, message: string): void {
    const now = this.#now();
    if (now - this.#lastLogAt < this.#o.logIntervalMs) {
      this.#suppressed++;
      return;
    }
    this.#lastLogAt = now;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    this.#o.logger.warn(suppressed > 0 ? { ...fields, suppressedSinceLast: suppressed } : fields, message);
  }
}
