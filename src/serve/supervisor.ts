/**
 * Starts child processes, restarts any that exits unexpectedly (with exponential backoff,
 * reset once a child has stayed up a while), and stops them all together: SIGTERM, then
 * SIGKILL for any still alive after the stop timeout.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { Backoff } from '../util/backoff.ts';
import type { Logger } from '../telemetry/index.ts';

export interface ChildSpec {
  id: string;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
}

export interface SupervisorOptions {
  restartInitialDelayMs: number;
  restartMaxDelayMs: number;
  /** A child that ran at least this long gets its backoff reset, ms. */
  restartResetAfterMs: number;
  logger: Logger;
}

export interface SupervisorEvents {
  spawn: [id: string, pid: number];
  exit: [id: string, code: number | null, signal: NodeJS.Signals | null];
  message: [id: string, message: unknown];
}

interface Supervised {
  spec: ChildSpec;
  child: ChildProcess | undefined;
  startedAt: number;
  backoff: Backoff;
  restartTimer: NodeJS.Timeout | undefined;
  restarts: number;
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  readonly #options: SupervisorOptions;
  readonly #children = new Map<string, Supervised>();
  #stopping = false;

  constructor(options: SupervisorOptions) {
    super();
    this.#options = options;
  }

  start(spec: ChildSpec): void {
    const entry: Supervised = {
      spec,
      child: undefined,
      startedAt: 0,
      backoff: new Backoff({
        initialDelayMs: this.#options.restartInitialDelayMs,
        maxDelayMs: this.#options.restartMaxDelayMs,
      }),
      restartTimer: undefined,
      restarts: 0,
    };
    this.#children.set(spec.id, entry);
    this.#spawn(entry);
  }

  /** pid of a running child. */
  pid(id: string): number | undefined {
    return this.#children.get(id)?.child?.pid;
  }

  restarts(id: string): number {
    return this.#children.get(id)?.restarts ?? 0;
  }

  #spawn(entry: Supervised): void {
    const { spec } = entry;
    const child = spawn(spec.command, spec.args, {
      env: spec.env ?? process.env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    entry.child = child;
    entry.startedAt = Date.now();
    child.on('message', (message) => this.emit('message', spec.id, message));
    child.on('error', (err) =>
      this.#options.logger.error({ child: spec.id, err }, 'could not start child process'),
    );
    child.on('exit', (code, signal) => {
      entry.child = undefined;
      this.emit('exit', spec.id, code, signal);
      if (this.#stopping) return;
      if (Date.now() - entry.startedAt >= this.#options.restartResetAfterMs) entry.backoff.reset();
      const delayMs = entry.backoff.next();
      entry.restarts++;
      this.#options.logger.warn(
        { child: spec.id, code, signal, restartInMs: delayMs },
        'child process exited; restarting',
      );
      entry.restartTimer = setTimeout(() => {
        entry.restartTimer = undefined;
        if (!this.#stopping) this.#spawn(entry);
      }, delayMs);
    });
    if (child.pid !== undefined) this.emit('spawn', spec.id, child.pid);
  }

  /** Stops every child: SIGTERM, then SIGKILL after `timeoutMs`. Resolves when all have exited. */
  async stop(timeoutMs: number): Promise<void> {
    this.#stopping = true;
    const waits: Promise<void>[] = [];
    for (const entry of this.#children.values()) {
      if (entry.restartTimer) clearTimeout(entry.restartTimer);
      const child = entry.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      waits.push(
        new Promise<void>((resolve) => {
          const kill = setTimeout(() => {
            this.#options.logger.warn({ child: entry.spec.id }, 'child did not stop in time; killing it');
            child.kill('SIGKILL');
          }, timeoutMs);
          child.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          child.kill('SIGTERM');
        }),
      );
    }
    await Promise.all(waits);
  }
}
