/**
 * CPU time of a benchmark's process groups between two marks, read from /proc (proc.ts): the
 * cores each group kept busy, its CPU per answered request (or row), and what the rest of the
 * machine used meanwhile (another job skews a run).
 */

import { machineBusySeconds, processCpuSeconds } from './proc.ts';

/** Process groups by name -> their pids. */
export type ProcessGroups = Record<string, readonly (number | undefined)[]>;

export interface CpuMark {
  at: number;
  /** CPU seconds of each group so far; undefined when a pid could not be read. */
  seconds: Record<string, number | undefined>;
  /** Seconds the whole machine has been busy. */
  machine: number | undefined;
}

export function cpuMark(groups: ProcessGroups): CpuMark {
  const seconds: Record<string, number | undefined> = {};
  for (const [group, pids] of Object.entries(groups)) {
    const each = pids.map(processCpuSeconds);
    seconds[group] = each.some((s) => s === undefined) ? undefined : each.reduce((a, b) => a! + b!, 0);
  }
  return { at: performance.now(), seconds, machine: machineBusySeconds() };
}

const roundTo = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;
const between = (x: number | undefined, y: number | undefined): number | undefined =>
  x === undefined || y === undefined ? undefined : y - x;

/** CPU seconds each group spent between two marks (undefined where /proc could not be read). */
export function cpuSpent(a: CpuMark, b: CpuMark): Record<string, number | undefined> {
  const spent: Record<string, number | undefined> = {};
  for (const group of Object.keys(b.seconds)) spent[group] = between(a.seconds[group], b.seconds[group]);
  return spent;
}

/**
 * Cores each group kept busy between two marks (1 = one core all the time) and its CPU ms per
 * unit; `reported` adds groups that measured themselves (CPU seconds, e.g. a forked load
 * generator's own process.cpuUsage). `coresBusy.outsideBench` is the rest of the machine.
 */
export function cpuReport(
  a: CpuMark,
  b: CpuMark,
  units: number,
  options: { reported?: Record<string, number>; msDigits?: number } = {},
): { coresBusy: Record<string, number | null>; cpuMsPerRequest: Record<string, number | null> } {
  const wallS = (b.at - a.at) / 1000;
  const msDigits = options.msDigits ?? 2;
  const spent = { ...cpuSpent(a, b), ...options.reported };
  const coresBusy: Record<string, number | null> = {};
  const cpuMsPerRequest: Record<string, number | null> = {};
  let ours = 0;
  for (const [group, s] of Object.entries(spent)) {
    ours += s ?? Number.NaN;
    coresBusy[group] = s === undefined ? null : roundTo(s / wallS, 2);
    cpuMsPerRequest[group] = s === undefined ? null : units === 0 ? 0 : roundTo((1000 * s) / units, msDigits);
  }
  const machine = between(a.machine, b.machine);
  coresBusy.outsideBench =
    machine === undefined || Number.isNaN(ours) ? null : roundTo(Math.max(0, machine - ours) / wallS, 2);
  coresBusy.machine = machine === undefined ? null : roundTo(machine / wallS, 2);
  return { coresBusy, cpuMsPerRequest };
}
