/**
 * Keeps one outgoing connection alive: dial, set up (handshake, registration), wait for the
 * close, back off, dial again — until stopped. Used by workers dialing coordinators and by
 * coordinators dialing static workers.
 */

import { Backoff, type BackoffOptions } from '../util/backoff.ts';
import { delay } from '../util/deadline.ts';
import type { InfergridError } from '../errors.ts';
import type { Logger } from '../telemetry/index.ts';
import type { RpcConnection } from './connection.ts';

/** A connection that stays up this long counts as in service; shorter ones count as failures, ms. */
const STABLE_CONNECTION_MS = 1000;

export interface RedialerOptions {
  /** For logs: what is being dialed. */
  label: string;
  dial: () => Promise<RpcConnection>;
  /** Sets a fresh connection up; resolves once it is in service, rejects (and the connection is dropped) otherwise. */
  setup: (conn: RpcConnection) => Promise<void>;
  backoff: BackoffOptions;
  logger: Logger;
}

export class Redialer {
  readonly #options: RedialerOptions;
  readonly #backoff: Backoff;
  readonly #stop = new AbortController();
  #connection: RpcConnection | undefined;
  #loop: Promise<void> | undefined;
  #failures = 0;
  #lastError: string | undefined;

  constructor(options: RedialerOptions) {
    this.#options = options;
    this.#backoff = new Backoff(options.backoff);
  }

  get connection(): RpcConnection | undefined {
    return this.#connection;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /**
   * Stops redialing; closes the live connection too unless `keepOpen` (to let answers drain
   * first). Resolves once the dial loop has exited: no dial starts after that.
   */
  stop(keepOpen = false): Promise<void> {
    this.#stop.abort();
    if (!keepOpen) this.#connection?.close();
    return this.#loop ?? Promise.resolve();
  }

  /** Counts a failed attempt; says it once per reason at warn, repeats at debug. */
  #noteFailure(message: string): void {
    this.#failures++;
    const { label, logger } = this.#options;
    const log = message !== this.#lastError ? logger.warn.bind(logger) : logger.debug.bind(logger);
    this.#lastError = message;
    log({ peer: label, attempt: this.#failures, err: message }, 'could not connect');
  }

  async #run(): Promise<void> {
    const { label, logger } = this.#options;
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      try {
        const conn = await this.#options.dial();
        if (signal.aborted) {
          conn.close();
          break;
        }
        const closed = new Promise<InfergridError | undefined>((resolve) => conn.once('close', resolve));
        try {
          await this.#options.setup(conn);
        } catch (err) {
          conn.close();
          throw err;
        }
        if (signal.aborted) {
          // stopped while the connection was being set up: it must not go into service
          conn.close();
          break;
        }
        this.#connection = conn;
        if (this.#failures > 0) logger.info({ peer: label, failedAttempts: this.#failures }, 'connected');
        const upAt = Date.now();
        const reason = await closed;
        this.#connection = undefined;
        if (signal.aborted) break;
        if (Date.now() - upAt >= STABLE_CONNECTION_MS) {
          // it was in service: a fresh outage starts the backoff over
          this.#failures = 0;
          this.#lastError = undefined;
          this.#backoff.reset();
          logger.warn({ peer: label, err: reason?.message }, 'connection lost; redialing');
        } else {
          // closed right after set-up (e.g. the peer refused the registration): back off
          this.#noteFailure(`connection closed right after set-up: ${reason?.message ?? 'no reason given'}`);
        }
      } catch (err) {
        this.#noteFailure((err as Error).message);
      }
      if (signal.aborted) break;
      await delay(this.#backoff.next(), signal).catch(() => {});
    }
  }
}
