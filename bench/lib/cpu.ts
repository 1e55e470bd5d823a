/**
 * CPU time of a benchmark's process groups between two marks, read from Linux's /proc: the cores
 * each group kept busy, its CPU per answered request (or row), and what the rest of the machine
 * used meanwhile (another job skews a run). Elsewhere every figure is null.
 */

import { readFileSync } from 'node:fs';

/** Linux clock ticks per second for /proc (USER_HZ, 100 on every common build). */
const CLOCK_TICKS_PER_S = 100;

/** The fields of /proc/<pid>/stat after the command name, which may itself hold spaces. */
function statFields(pid: number | 'self'): number[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
}

/** User + system CPU seconds of a process; undefined when unknown (gone, or not Linux). */
export function processCpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const f = statFields(pid);
    return (f[11]! + f[12]!) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/** CPU seconds of this process and of the children it has waited for (they count once reaped). */
export function selfAndChildrenCpuSeconds(): number | undefined {
  try {
    const f = statFields('self');
    return (f[11]! + f[12]! + f[13]! + f[14]!) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/** CPU seconds the whole machine has been busy (all but idle and iowait) since boot. */
export function machineBusySeconds(): number | undefined {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
    const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - cpu[3]! - cpu[4]!) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/** Resident memory of a process, MiB; undefined when unknown. */
export function rssMiB(pid: number | undefined): number | undefined {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined;
  }
}

/** Process groups by name -> their pids. */
export type ProcessGroups<G extends string = string> = Record<G, readonly (number | undefined)[]>;

export interface CpuMark {
  at: number;
  /** CPU seconds of each group so far; undefined when a pid could not be read. */
  seconds: Record<string, number | undefined>;
  /** Seconds the whole machine has been busy. */
  machine: number | undefined;
}

/** The CPU time of each group now; `self` names this process's own (process.cpuUsage) group. */
export function cpuMark(groups: ProcessGroups, self?: string): CpuMark {
  const seconds: Record<string, number | undefined> = {};
  for (const [group, pids] of Object.entries(groups)) {
    const each = pids.map(processCpuSeconds);
    seconds[group] = each.some((s) => s === undefined) ? undefined : each.reduce((a, b) => a! + b!, 0);
  }
  if (self !== undefined) {
    const usage = process.cpuUsage();
    seconds[self] = (usage.user + usage.system) / 1e6;
  }
  return { at: performance.now(), seconds, machine: machineBusySeconds() };
}

/** What each group, and the machine, spent over a wall time. */
export interface CpuSpent {
  wallS: number;
  seconds: Record<string, number | undefined>;
  machine: number | undefined;
}

const between = (x: number | undefined, y: number | undefined): number | undefined =>
  x === undefined || y === undefined ? undefined : y - x;

/** CPU seconds each group spent between two marks, plus `reported` ones (groups that measured themselves). */
export function cpuSpent(a: CpuMark, b: CpuMark, reported: Record<string, number> = {}): CpuSpent {
  const seconds: Record<string, number | undefined> = { ...reported };
  for (const group of Object.keys(b.seconds)) seconds[group] = between(a.seconds[group], b.seconds[group]);
  return { wallS: (b.at - a.at) / 1000, seconds, machine: between(a.machine, b.machine) };
}

/** Two spans as one (a target measured in slices): their wall times and CPU seconds added. */
export function addSpent(a: CpuSpent | undefined, b: CpuSpent): CpuSpent {
  if (!a) return b;
  const seconds: Record<string, number | undefined> = {};
  for (const group of Object.keys(b.seconds)) {
    const x = a.seconds[group];
    const y = b.seconds[group];
    seconds[group] = x === undefined || y === undefined ? undefined : x + y;
  }
  return {
    wallS: a.wallS + b.wallS,
    seconds,
    machine: a.machine === undefined || b.machine === undefined ? undefined : a.machine + b.machine,
  };
}

/**
 * Cores each group kept busy (1 = one core all the time) and its CPU ms per unit (null where
 * /proc could not be read); `machine` is the whole machine, `outsideBench` the rest of it.
 */
export interface CpuFigures<G extends string = string> {
  coresBusy: Record<G | 'machine' | 'outsideBench', number | null>;
  cpuMsPerRequest: Record<G, number | null>;
}

const roundTo = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;

export function cpuFigures<G extends string>(spent: CpuSpent, units: number, msDigits = 2): CpuFigures<G> {
  const coresBusy: Record<string, number | null> = {};
  const cpuMsPerRequest: Record<string, number | null> = {};
  let ours = 0;
  for (const [group, s] of Object.entries(spent.seconds)) {
    ours += s ?? Number.NaN;
    coresBusy[group] = s === undefined ? null : roundTo(s / spent.wallS, 2);
    cpuMsPerRequest[group] = s === undefined ? null : units === 0 ? 0 : roundTo((1000 * s) / units, msDigits);
  }
  const { machine } = spent;
  coresBusy.outsideBench =
    machine === undefined || Number.isNaN(ours)
      ? null
      : roundTo(Math.max(0, machine - ours) / spent.wallS, 2);
  coresBusy.machine = machine === undefined ? null : roundTo(machine / spent.wallS, 2);
  return { coresBusy, cpuMsPerRequest } as CpuFigures<G>;
}

/** More CPU than this used outside the bench during a point makes it suspect, cores. */
export const DISTURBED_CORES = 0.25;

/** A point's name in `into` when other work kept more than DISTURBED_CORES busy during it. */
export function noteDisturbance(into: string[], point: string, cpu: CpuFigures): void {
  const outside = cpu.coresBusy.outsideBench ?? 0;
  if (outside > DISTURBED_CORES) into.push(`${point} (${outside})`);
}
