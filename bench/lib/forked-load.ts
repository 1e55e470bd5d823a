/**
 * A closed-loop HTTP load generator in a child process of its own, for the scenarios that read
 * the CPU time of the processes they measure (scale-out, real-model): the load never runs inside
 * a measured process, and the child reads its own CPU time over each timed window
 * (process.cpuUsage, every thread). The child is this file, forked with `node --import tsx` in its
 * load-generator role (ROLE_ENV in its environment); its output goes to the parent's stderr, since
 * stdout carries the benchmark's result lines.
 *
 * Also here, for a scenario's own children: `forkRole` forks a file in a role and talks to it
 * over IPC (a message, then the replies until one is taken), and `track` / `stopAll`, the one list
 * of cleanups (forked children, spawned coordinators and workers) a scenario stops at its end.
 *
 * Where the scenarios' load generators differ, an option says which (none has a default):
 * - `connections`: 'per-loop' (scale-out: hundreds of clients, each loop on its own connection,
 *   kept from one job to the next and opened in waves before the warm-up) or 'pooled'
 *   (real-model: one keep-alive agent per job for all its loops, closed after the job);
 * - `rpsDigits`: decimals of the reported requests per second (scale-out 0, real-model 1);
 * - `readyTimeoutMs`: how long the child may take to start.
 * Both count only requests started in the timed window, over the window's start to the last
 * answer of such a request, and both classify errors by HTTP status or error code.
 */

import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request as httpRequest } from 'node:http';
import { fileURLToPath } from 'node:url';
import { type LoadResult, summarize } from './load.ts';

/** Set in the environment of a forked child: which role the forked file plays there. */
export const ROLE_ENV = 'INFERGRID_BENCH_ROLE';
const LOAD_GENERATOR_ROLE = 'load-generator';
/** A request that takes longer counts as an error, so a hung engine cannot stall the run, ms. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Connections a per-loop load generator opens at once, below the server's accept backlog (511). */
const CONNECT_WAVE = 128;

export const round = (v: number, digits = 3): number => Math.round(v * 10 ** digits) / 10 ** digits;
export const sleep = (ms: number): Promise<unknown> => new Promise((r) => setTimeout(r, ms));

// ---- cleanup -----------------------------------------------------------------------------------

const stops: (() => Promise<unknown>)[] = [];
/** Registers a cleanup for stopAll (also fits spawnProcess's `cleanup` option). */
export const track = (stop: () => Promise<unknown>): void => {
  stops.push(stop);
};
/** Runs every registered cleanup at once. */
export const stopAll = () => Promise.all(stops.map((stop) => stop()));

/**
 * A temporary directory for a scenario's config files, removed by stopAll; Ctrl-C runs stopAll
 * (every tracked process stopped, the directory removed) before exiting.
 */
export function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-'));
  track(async () => rmSync(dir, { recursive: true, force: true }));
  process.once('SIGINT', () => void stopAll().finally(() => process.exit(130)));
  return dir;
}

// ---- forked children: IPC ----------------------------------------------------------------------

export interface Child {
  pid: number | undefined;
  /** Sends `message` and resolves with the first reply `accept` takes (rejects on an error reply). */
  ask<T>(message: unknown, accept: (reply: { type: string }) => T | undefined): Promise<T>;
  stop(): Promise<void>;
}

export interface ForkOptions {
  /** How long the child may take to send its first message (any message means ready), ms. */
  readyTimeoutMs: number;
  /** What errors call the child. Default: its role. */
  name?: string;
}

/**
 * Forks the file at `moduleUrl` (an import.meta.url) with ROLE_ENV set to `role`; resolves once
 * the child says it is ready. The child is tracked: stopAll stops it.
 */
export async function forkRole(moduleUrl: string, role: string, options: ForkOptions): Promise<Child> {
  const name = options.name ?? role;
  const child: ChildProcess = fork(fileURLToPath(moduleUrl), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, [ROLE_ENV]: role },
    serialization: 'advanced',
    // stdout carries this benchmark's result lines: the child's output goes to stderr
    stdio: ['ignore', 2, 2, 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  track(stop);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start`)), options.readyTimeoutMs);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    void exited.then(() => reject(new Error(`${name} exited before it was ready`)));
  });
  return {
    pid: child.pid,
    stop,
    ask: (message, accept) =>
      new Promise((resolve, reject) => {
        const onMessage = (reply: { type: string; message?: string }) => {
          if (reply.type === 'error') {
            child.off('message', onMessage);
            reject(new Error(`${name}: ${reply.message}`));
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

// ---- the load generator: the parent's side -------------------------------------------------------

export interface LoadGeneratorOptions {
  /**
   * 'per-loop': each loop has its own keep-alive connection, kept from one job to the next;
   * before the warm-up every loop sends one request, a wave of CONNECT_WAVE at a time with the
   * other loops paused, so the connections a job adds are opened while the server is idle.
   * Measured: a coordinator on a saturated machine accepts new connections slowly (its listen
   * queue held 100+ connections, draining at about 25 a second, with 16 workers and 512+ clients
   * busy), so connections opened under load left loops idle for up to 16 s; a bare fastify
   * server here accepts 1024 under load in about 1.5 s.
   * 'pooled': one keep-alive agent per job, as many sockets as loops, opened by the warm-up's
   * first requests and kept into the timed run; closed after the job.
   */
  connections: 'per-loop' | 'pooled';
  /** Decimals of the reported requests per second. */
  rpsDigits: number;
  /** How long the child may take to start, ms. */
  readyTimeoutMs: number;
}

/** One closed-loop run: `concurrency` loops, one request in flight each, warm-up then timed. */
export interface LoadJob {
  url: string;
  body: Uint8Array;
  headers: Record<string, string>;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

/** A job as the child is sent it. */
interface RunMessage extends LoadJob {
  type: 'run';
  connections: LoadGeneratorOptions['connections'];
  rpsDigits: number;
}

/** A closed loop's timed window: what bench/lib's runLoad reports, and the warm-up's slowest request. */
export type WindowResult = LoadResult & { warmupSlowestMs: number };

/** What the child sends, in this order for each job. */
export type LoadMessage =
  | { type: 'ready' }
  /** The warm-up is over and the timed window starts now. */
  | { type: 'timed' }
  /** The timed window is over (no request starts in it any more); its CPU seconds. */
  | { type: 'stopped'; cpuS: number }
  /** Once the requests started in the window have been answered. */
  | { type: 'result'; result: WindowResult }
  | { type: 'error'; message: string };

export interface WindowHooks {
  /** The timed window starts. */
  onTimed(): void;
  /** The timed window is over; the load generator's CPU seconds in it. */
  onStopped(loadGeneratorCpuS: number): void;
}

export interface LoadGenerator {
  pid: number | undefined;
  /** Runs one job; resolves once every request started in its timed window has been answered. */
  run(job: LoadJob, hooks: WindowHooks): Promise<WindowResult>;
  stop(): Promise<void>;
}

/** Forks the load generator (tracked: stopAll stops it); resolves once it is ready. */
export async function startLoadGenerator(options: LoadGeneratorOptions): Promise<LoadGenerator> {
  const child = await forkRole(import.meta.url, LOAD_GENERATOR_ROLE, {
    readyTimeoutMs: options.readyTimeoutMs,
    name: 'load generator',
  });
  return {
    pid: child.pid,
    stop: child.stop,
    run: (job, hooks) =>
      child.ask(
        {
          type: 'run',
          ...job,
          connections: options.connections,
          rpsDigits: options.rpsDigits,
        } satisfies RunMessage,
        (reply) => {
          const m = reply as LoadMessage;
          if (m.type === 'timed') hooks.onTimed();
          else if (m.type === 'stopped') hooks.onStopped(m.cpuS);
          return m.type === 'result' ? m.result : undefined;
        },
      ),
  };
}

// ---- the load generator: the child's side --------------------------------------------------------

/** Sends one request on `agent`; resolves with the status once the response has been read. */
function sendOnce(agent: Agent, url: URL, body: Buffer, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { agent, method: 'POST', headers: { ...headers, 'content-length': String(body.length) } },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.setTimeout(REQUEST_TIMEOUT_MS, () =>
      req.destroy(Object.assign(new Error('request timed out'), { code: 'TIMEOUT' })),
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * bench/lib's closed loop (`concurrency` loops, one request in flight each on a keep-alive
 * connection, see LoadGeneratorOptions' `connections`), with the connections kept open from the
 * warm-up into the timed run; only requests started in the timed window are counted.
 */
async function closedLoop(
  job: RunMessage,
  loopAgent: (i: number) => Agent,
  hooks: { onTimed(): void; onStopped(): void },
): Promise<WindowResult> {
  const url = new URL(job.url);
  const body = Buffer.from(job.body.buffer, job.body.byteOffset, job.body.byteLength);
  const pool =
    job.connections === 'pooled'
      ? new Agent({ keepAlive: true, maxSockets: job.concurrency, maxFreeSockets: job.concurrency })
      : undefined;
  const agentFor = (i: number): Agent => pool ?? loopAgent(i);
  const samples: number[] = [];
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  let timedFrom = Number.POSITIVE_INFINITY;
  let stopAt = Number.POSITIVE_INFINITY;
  let lastTimedEnd = 0;
  let warmupSlowestMs = 0;
  const fail = (kind: string) => {
    errors++;
    errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  };
  try {
    if (job.connections === 'per-loop')
      for (let first = 0; first < job.concurrency; first += CONNECT_WAVE) {
        const wave = Math.min(CONNECT_WAVE, job.concurrency - first);
        await Promise.all(
          Array.from({ length: wave }, (_, k) =>
            sendOnce(agentFor(first + k), url, body, job.headers).catch(() => 0),
          ),
        );
      }
    const loop = async (agent: Agent): Promise<void> => {
      while (performance.now() < stopAt) {
        const t0 = performance.now();
        const timed = t0 >= timedFrom;
        try {
          const status = await sendOnce(agent, url, body, job.headers);
          const t1 = performance.now();
          if (!timed) {
            warmupSlowestMs = Math.max(warmupSlowestMs, t1 - t0);
            continue;
          }
          lastTimedEnd = Math.max(lastTimedEnd, t1);
          if (status === 200) samples.push(t1 - t0);
          else fail(String(status));
        } catch (err) {
          if (timed) {
            lastTimedEnd = Math.max(lastTimedEnd, performance.now());
            fail((err as NodeJS.ErrnoException).code ?? 'error');
          }
        }
      }
    };
    const loops = Array.from({ length: job.concurrency }, (_, i) => loop(agentFor(i)));
    await sleep(job.warmupMs);
    timedFrom = performance.now();
    hooks.onTimed();
    await sleep(job.durationMs);
    stopAt = performance.now();
    hooks.onStopped();
    await Promise.all(loops);
    // from the window's start to the last answer of a request started in it: a warm-up request
    // still in flight (see warmupSlowestMs) does not stretch it
    const durationS = (Math.max(lastTimedEnd, stopAt) - timedFrom) / 1000;
    return {
      requests: samples.length,
      errors,
      errorKinds,
      durationS: round(durationS),
      rps: round(samples.length / durationS, job.rpsDigits),
      latencyMs: summarize(samples),
      warmupSlowestMs: round(warmupSlowestMs, 1),
    };
  } finally {
    pool?.destroy();
  }
}

/** The child's side: runs each job it is sent (warm-up, then the timed closed loop) in turn. */
function loadGeneratorMain(): void {
  const send = (m: LoadMessage) => process.send!(m);
  process.on('disconnect', () => process.exit(0));
  // per-loop connections: loop i's own keep-alive connection, kept from one job to the next
  const agents: Agent[] = [];
  const loopAgent = (i: number): Agent =>
    (agents[i] ??= new Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 }));
  process.on('message', (job: RunMessage) => {
    let before = process.cpuUsage();
    closedLoop(job, loopAgent, {
      onTimed() {
        before = process.cpuUsage();
        send({ type: 'timed' });
      },
      onStopped() {
        const spent = process.cpuUsage(before);
        send({ type: 'stopped', cpuS: (spent.user + spent.system) / 1e6 });
      },
    }).then(
      (result) => send({ type: 'result', result }),
      (err: Error) => send({ type: 'error', message: err.stack ?? String(err) }),
    );
  });
  send({ type: 'ready' });
}

if (process.env[ROLE_ENV] === LOAD_GENERATOR_ROLE) loadGeneratorMain();
