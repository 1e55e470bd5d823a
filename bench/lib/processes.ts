/**
 * A scenario's processes: the one list of cleanups it stops at its end (spawned coordinators and
 * workers, forked children, its scratch directory), and `forkRole`, which forks a file in a role
 * and talks to it over IPC (a message, then the replies until one is taken).
 */

import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Set in the environment of a forked child: which role the forked file plays there. */
export const ROLE_ENV = 'INFERGRID_BENCH_ROLE';

const stops: (() => Promise<unknown>)[] = [];
/** Registers a cleanup for stopAll (also fits spawnProcess's `cleanup` option). */
export const track = (stop: () => Promise<unknown>): void => {
  stops.push(stop);
};
/** Runs every registered cleanup at once, and forgets them. */
export const stopAll = () => Promise.all(stops.splice(0).map((stop) => stop()));

/** A temporary directory for a scenario's config files, removed by stopAll. */
export function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-'));
  track(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const sleep = (ms: number): Promise<unknown> => new Promise((r) => setTimeout(r, ms));

export interface Child {
  pid: number | undefined;
  /** Sends `message` and resolves with the first reply `accept` takes (rejects on an error reply). */
  ask<T>(message: unknown, accept: (reply: { type: string }) => T | undefined): Promise<T>;
  stop(): Promise<void>;
}

/**
 * Forks the file at `moduleUrl` (an import.meta.url) with ROLE_ENV set to `role`; resolves once
 * the child sends its first message (ready). The child is tracked: stopAll stops it.
 */
export async function forkRole(moduleUrl: string, role: string, readyTimeoutMs: number): Promise<Child> {
  const child: ChildProcess = fork(fileURLToPath(moduleUrl), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, [ROLE_ENV]: role },
    serialization: 'advanced',
    // stdout carries the scenario's result line: the child's output goes to stderr
    stdio: ['ignore', 2, 2, 'ipc'],
  });
  // every ask in flight listens for its reply: a child serving many closed loops has many
  child.setMaxListeners(0);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  track(stop);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${role} did not start`)), readyTimeoutMs);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    void exited.then(() => reject(new Error(`${role} exited before it was ready`)));
  });
  return {
    pid: child.pid,
    stop,
    ask: (message, accept) =>
      new Promise((resolve, reject) => {
        const onMessage = (reply: { type: string; message?: string }) => {
          if (reply.type === 'error') {
            child.off('message', onMessage);
            reject(new Error(`${role}: ${reply.message}`));
            return;
          }
          const value = accept(reply);
          if (value !== undefined) {
            child.off('message', onMessage);
            resolve(value);
          }
        };
        child.on('message', onMessage);
        child.send(message as object);
      }),
  };
}
