/**
 * Keeps one outgoing connection alive: dial, set up (handshake, registration), wait for the
 * close, back off, dial again — until stopped. Used by workers dialing coordinators and by
 * coordinators dialing static workers.
 */

import { Backoff, type BackoffOptions } from '../util/backoff.ts';
import { delay } from '../util/deadline.ts';
import type { Logger } from '../telemetry/index.ts';
import type { RpcConnection } from './connection.ts';

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
        const closed = new Promise<void>((resolve) => conn.once('close', () => resolve()));
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
        if (this.#failures > 0) logger.info({ peer: label }, 'reconnected');
        this.#failures = 0;
        this.#lastError = undefined;
        this.#backoff.reset();
        await closed;
        this.#connection = undefined;
        if (!signal.aborted) logger.warn({ peer: label }, 'connection lost; redialing');
      } catch (err) {
        this.#failures++;
        // say it once per reason at warn; repeats of the same reason go to debug
        const message = (err as Error).message;
        const log = message !== this.#lastError ? logger.warn.bind(logger) : logger.debug.bind(logger);
        this.#lastError = message;
        log({ peer: label, attempt: this.#failures, err: message }, 'could not connect');
      }
      if (signal.aborted) break;
      await delay(this.#backoff.next(), signal).catch(() => {});
    }
  }
}
