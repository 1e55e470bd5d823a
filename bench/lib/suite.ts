/**
 * The suite file: what `npm run bench` ran, on what machine, and each scenario's typed result
 * (the JSON line it printed, bench/lib/scenario.ts). One file per run,
 * bench/results/suite-<timestamp>.json; `format` names its version, and bench/report.ts reads
 * nothing else.
 */

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { RESULTS_DIR } from './scenario.ts';

/** v2: one typed result per scenario (v1 held every JSON line each scenario printed). */
export const SUITE_FORMAT = 'infergrid-bench-suite-v2';
export const SUITE_PREFIX = 'suite-';

export type ScenarioStatus = 'ok' | 'failed' | 'timed-out' | 'interrupted' | 'skipped';

export interface SuiteMachine {
  cpuModel: string;
  cpus: number;
  totalMemoryBytes: number;
  node: string;
  platform: string;
  arch: string;
  osRelease: string;
  /** 1-minute load average when the suite started: other work competing for the cores. */
  loadAverage1m: number;
}

export interface SuiteGit {
  commit: string | null;
  /** Uncommitted changes in the working tree; null when git could not tell. */
  dirty: boolean | null;
}

export interface ScenarioRun {
  name: string;
  /** Path from the repository root. */
  file: string;
  /** Flags passed to the scenario; an empty value is a bare switch (`--quick`). */
  flags: Record<string, string>;
  /** Why a flag was set or left out (quick mode, a missing service). */
  notes: string[];
  status: ScenarioStatus;
  exitCode: number | null;
  signal: string | null;
  startedAt: string | null;
  durationS: number;
  timeoutS: number;
  /** Cores other work on the machine kept busy while it ran, on average (Linux only). */
  otherCoresBusy?: number | null;
  /**
   * The scenario's result, of the type its module names (bench/scenarios/<name>.ts); absent when
   * it printed none (it failed, or did not run).
   */
  result?: unknown;
  /** Lines on stdout that were not its result line. */
  otherStdout: string[];
  /** The end of the scenario's stderr, kept when it did not finish ok. */
  stderrTail?: string;
}

export interface SuiteParams {
  quick: boolean;
  timeoutS: number;
  /** Scenarios asked for on the command line; empty for all. */
  requested: string[];
  /** Flags given to the runner and passed on to every scenario that takes them. */
  passThrough: Record<string, string>;
  /** Per-scenario flags from --set scenario.flag=value. */
  sets: Record<string, Record<string, string>>;
  /** BENCH_* variables in the environment, which every scenario reads too. */
  env: Record<string, string>;
  /** The runner's own arguments. */
  argv: string[];
}

export interface SuiteFile {
  format: typeof SUITE_FORMAT;
  startedAt: string;
  finishedAt: string;
  durationS: number;
  interrupted: boolean;
  machine: SuiteMachine;
  git: SuiteGit;
  params: SuiteParams;
  scenarios: ScenarioRun[];
}

export function suiteMachine(): SuiteMachine {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model.trim() ?? 'unknown',
    cpus: cpu.length,
    totalMemoryBytes: totalmem(),
    node: process.version,
    platform: process.platform,
    arch: process.arch,
    osRelease: release(),
    loadAverage1m: Math.round(loadavg()[0]! * 100) / 100,
  };
}

/** HEAD and whether the tree has changes; read-only (no index refresh, so no lock taken). */
export function suiteGit(cwd: string): SuiteGit {
  const git = (args: string[]): string | null => {
    try {
      return execFileSync('git', ['--no-optional-locks', ...args], {
        cwd,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    } catch {
      return null;
    }
  };
  const commit = git(['rev-parse', 'HEAD']);
  const status = commit === null ? null : git(['status', '--porcelain', '--untracked-files=no']);
  return { commit, dirty: status === null ? null : status.length > 0 };
}

/** `2026-11-27T18-40-11.383Z`: an ISO date that is safe in a file name and sorts by time. */
export function fileTimestamp(date: Date): string {
  return date.toISOString().replaceAll(':', '-');
}

/** The newest suite file in bench/results, by the timestamp in its name; undefined when none. */
export function newestSuiteFile(dir = RESULTS_DIR): string | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  const newest = names
    .filter((n) => n.startsWith(SUITE_PREFIX) && n.endsWith('.json'))
    .sort()
    .at(-1);
  return newest === undefined ? undefined : `${dir}${newest}`;
}

export function readSuite(file: string): SuiteFile {
  const suite = JSON.parse(readFileSync(file, 'utf8')) as Partial<SuiteFile>;
  if (suite.format !== SUITE_FORMAT)
    throw new Error(`${file}: format "${String(suite.format)}", expected "${SUITE_FORMAT}"`);
  return suite as SuiteFile;
}

/**
 * `base` with the scenario runs of `added` in place of its own of the same name (new ones
 * appended, in `order`): a scenario measured again, or for the first time, without rerunning the
 * whole suite. Each added run says when, at what commit and on what machine it was measured,
 * since the page's header describes `base`'s run.
 */
export function foldSuite(base: SuiteFile, added: SuiteFile, order: readonly string[]): SuiteFile {
  const commit = added.git.commit ? `commit ${added.git.commit.slice(0, 12)}` : 'an unknown commit';
  const m = added.machine;
  const runs = new Map(base.scenarios.map((run) => [run.name, run]));
  for (const run of added.scenarios)
    runs.set(run.name, {
      ...run,
      notes: [
        ...run.notes,
        `measured apart from the rest of this page, ${added.startedAt.slice(0, 16).replace('T', ' ')} UTC at ${commit}` +
          `${added.git.dirty ? ' with uncommitted changes' : ''}, on ${m.cpuModel} (${m.cpus} cores, load average ${m.loadAverage1m} at its start)`,
      ],
    });
  const rank = (name: string): number => (order.includes(name) ? order.indexOf(name) : order.length);
  return { ...base, scenarios: [...runs.values()].sort((a, b) => rank(a.name) - rank(b.name)) };
}
