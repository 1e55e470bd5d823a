/**
 * Runs one scenario as a child process in a process group of its own, so that the scenario and
 * everything it started (coordinators, workers, baseline servers) can be stopped together: on
 * timeout, on interrupt, and after a normal exit if anything was left behind. Stopping is
 * SIGTERM to the group, then SIGKILL once the grace period is over.
 *
 * Trade-off: a group is the one handle that reaches grandchildren without the scenarios'
 * help, but a scenario's own cleanup (temp folders) does not run when its group is killed.
 */

import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { machineBusySeconds, selfAndChildrenCpuSeconds } from './cpu.ts';
import type { ScenarioLine } from './scenario.ts';

/** How long a group gets between SIGTERM and SIGKILL, ms. */
export const DEFAULT_STOP_GRACE_MS = 5000;
/** How long to wait for stdout and stderr to drain after the scenario exited, ms. */
const DRAIN_TIMEOUT_MS = 2000;
const POLL_MS = 100;
/** How long the group may take to empty by itself once the scenario has exited, ms. */
const LEFT_BEHIND_WAIT_MS = 1000;
const STDERR_TAIL_BYTES = 16 * 1024;

export interface ScenarioProcessOptions {
  cwd: string;
  /** Node arguments after `node`: `--import tsx bench/scenarios/x.ts --flag value`. */
  argv: string[];
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** Aborting stops the scenario (SIGINT to the runner). */
  signal: AbortSignal;
  /** Each line of the scenario's stderr as it arrives. */
  onStderrLine(line: string): void;
  graceMs?: number;
}

export interface ScenarioProcessResult {
  status: 'ok' | 'failed' | 'timed-out' | 'interrupted';
  exitCode: number | null;
  signal: string | null;
  durationS: number;
  /** The scenario's result line (the last one, if it printed several). */
  line: ScenarioLine | undefined;
  otherStdout: string[];
  stderrTail: string;
  /** Command names of processes of the group still alive after the scenario exited, stopped by the runner. */
  leftBehind: string[];
  /**
   * Cores other work on the machine kept busy, on average, while the scenario ran (null where
   * /proc is not there): above a fraction of a core, the scenario's figures are suspect.
   */
  otherCoresBusy: number | null;
}

function killGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    // ESRCH: no process left in the group
    return false;
  }
}

/** Command names of the processes in a group (Linux /proc; empty elsewhere), for diagnostics. */
function groupMembers(pgid: number): string[] {
  const names: string[] = [];
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return names;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // after the parenthesised command name: state, ppid, pgrp
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) names.push(stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')));
    } catch {
      // the process ended meanwhile
    }
  }
  return names;
}

interface CpuSnapshot {
  atMs: number;
  /** Busy CPU seconds of the whole machine, every core. */
  machineS: number;
  /**
   * CPU seconds of this process and of its children that have been waited for: a scenario's
   * processes count in them once reaped, descendants included (each parent waits for its own),
   * so after a scenario has exited the difference is the CPU other work took.
   */
  suiteS: number;
}

function cpuSnapshot(): CpuSnapshot | undefined {
  const machineS = machineBusySeconds();
  const suiteS = selfAndChildrenCpuSeconds();
  return machineS === undefined || suiteS === undefined
    ? undefined
    : { atMs: performance.now(), machineS, suiteS };
}

/** Cores kept busy, on average, by work other than the suite between two snapshots. */
function otherCores(a: CpuSnapshot | undefined, b: CpuSnapshot | undefined): number | null {
  if (!a || !b || b.atMs <= a.atMs) return null;
  const other = b.machineS - a.machineS - (b.suiteS - a.suiteS);
  return Math.round((Math.max(0, other) / ((b.atMs - a.atMs) / 1000)) * 100) / 100;
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until no process of the group is left or `ms` have passed; true when it is empty. */
async function groupGone(pgid: number, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (killGroup(pgid, 0)) {
    if (performance.now() >= end) return false;
    await delay(POLL_MS);
  }
  return true;
}

/** Splits a stream into lines, calling `onLine` for each complete one. */
function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; end(): void } {
  let pending = '';
  return {
    push(chunk) {
      pending += chunk.toString('utf8');
      let at = pending.indexOf('\n');
      while (at >= 0) {
        onLine(pending.slice(0, at));
        pending = pending.slice(at + 1);
        at = pending.indexOf('\n');
      }
    },
    end() {
      if (pending) onLine(pending);
      pending = '';
    },
  };
}

/** The scenario processes the runner has started and not yet seen the end of, by group id. */
export class ScenarioProcesses {
  readonly #live = new Set<number>();

  /** SIGKILL to every live group, synchronously: the last resort from a `process.on('exit')`. */
  killAllNow(): void {
    for (const pgid of this.#live) killGroup(pgid, 'SIGKILL');
    this.#live.clear();
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the group is empty (or after SIGKILL). */
  async stopGroup(pgid: number, graceMs: number): Promise<void> {
    if (!killGroup(pgid, 'SIGTERM')) return;
    if (await groupGone(pgid, graceMs)) return;
    killGroup(pgid, 'SIGKILL');
    await groupGone(pgid, DRAIN_TIMEOUT_MS);
  }

  async run(options: ScenarioProcessOptions): Promise<ScenarioProcessResult> {
    const graceMs = options.graceMs ?? DEFAULT_STOP_GRACE_MS;
    const started = performance.now();
    const cpuBefore = cpuSnapshot();
    const child = spawn(process.execPath, options.argv, {
      cwd: options.cwd,
      env: options.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const pgid = child.pid;
    let line: ScenarioLine | undefined;
    const otherStdout: string[] = [];
    let stderrTail = '';
    const stdout = lineSplitter((text) => {
      const parsed = parseJsonObject(text);
      if (parsed && typeof parsed.bench === 'string' && 'result' in parsed)
        line = parsed as unknown as ScenarioLine;
      else if (text.trim()) otherStdout.push(text);
    });
    const stderr = lineSplitter((line) => {
      stderrTail = (stderrTail + line + '\n').slice(-STDERR_TAIL_BYTES);
      options.onStderrLine(line);
    });
    child.stdout!.on('data', (d: Buffer) => stdout.push(d));
    child.stderr!.on('data', (d: Buffer) => stderr.push(d));
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (err) => {
        stderrTail += `${err.message}\n`;
        resolve({ code: null, signal: null });
      });
    });

    let timedOut = false;
    let interrupted = false;
    let stopping: Promise<void> | undefined;
    const stop = (): void => {
      if (pgid !== undefined) stopping ??= this.stopGroup(pgid, graceMs);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, options.timeoutMs);
    const onAbort = (): void => {
      interrupted = true;
      stop();
    };
    if (pgid !== undefined) this.#live.add(pgid);
    if (options.signal.aborted) onAbort();
    else options.signal.addEventListener('abort', onAbort, { once: true });

    let leftBehind: string[] = [];
    try {
      const { code, signal } = await exited;
      clearTimeout(timer);
      await stopping;
      // the scenario is gone; what is still in its group after a moment (tsx's esbuild service
      // exits on its own once its parent has gone) was left behind
      if (pgid !== undefined && !(await groupGone(pgid, LEFT_BEHIND_WAIT_MS))) {
        leftBehind = groupMembers(pgid);
        await this.stopGroup(pgid, Math.min(graceMs, 2000));
      }
      await Promise.race([closed, delay(DRAIN_TIMEOUT_MS)]);
      stdout.end();
      stderr.end();
      const cpuAfter = cpuSnapshot();
      return {
        status: interrupted ? 'interrupted' : timedOut ? 'timed-out' : code === 0 ? 'ok' : 'failed',
        exitCode: code,
        signal,
        durationS: Math.round((performance.now() - started) / 100) / 10,
        line,
        otherStdout,
        stderrTail,
        leftBehind,
        otherCoresBusy: otherCores(cpuBefore, cpuAfter),
      };
    } finally {
      clearTimeout(timer);
      options.signal.removeEventListener('abort', onAbort);
      if (pgid !== undefined) {
        killGroup(pgid, 'SIGKILL');
        this.#live.delete(pgid);
      }
    }
  }
}

function parseJsonObject(line: string): Record<string, unknown> | undefined {
  const text = line.trim();
  if (!text.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}
