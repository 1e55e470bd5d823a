/**
 * Targets measured in interleaved rounds: the timed load is split into rounds that take turns
 * (a, b, c, then b, c, a, ...), each target's rounds pooled into one result. On a shared VM whose
 * speed drifts by tens of percent within minutes, a drift then reaches every target alike instead
 * of whichever ran during it; the starting target rotates so none always runs first after a
 * switch. Around each round the CPU time of the target's processes and of this one (the load,
 * when it runs here) is read from /proc.
 */

import type { RunResult } from '../../src/cli/bench/index.ts';
import { addSpent, type CpuSpent, cpuFigures, cpuMark, cpuSpent } from './cpu.ts';
import { figures, type LoadFigures, type LoadWindow } from './load.ts';

/** A target's rounds pooled, with the CPU µs each process spent per request. */
export type TargetRun<G extends string> = LoadFigures & { cpuUsPerRequest: Record<G, number | null> };

/** What a round measures: processes whose CPU is read, and a run of the load against them. */
export interface RoundTarget {
  pids: Record<string, number | undefined>;
  /** One closed-loop run of the target's load, in this process. */
  run(window: LoadWindow): Promise<RunResult>;
}

/** One round: the run, and the CPU seconds every process (`loadGenerator`: this one) spent meanwhile. */
export interface Round {
  run: RunResult;
  cpu: CpuSpent;
}

/** The CPU group this process's own time is counted in. */
const SELF = 'loadGenerator';

/**
 * Warms every target up (`warmupMs` each, not counted), then runs `rounds` rounds in turn, each
 * `durationMs / rounds` long; the rounds of each target, in the targets' order.
 */
export async function interleavedRounds(
  targets: readonly RoundTarget[],
  options: { rounds: number; durationMs: number; warmupMs: number },
): Promise<Round[][]> {
  for (const target of targets) await target.run({ durationMs: options.warmupMs });
  const measured: Round[][] = targets.map(() => []);
  for (let r = 0; r < options.rounds; r++) {
    for (let k = 0; k < targets.length; k++) {
      const i = (r + k) % targets.length;
      const target = targets[i]!;
      const groups = Object.fromEntries(Object.entries(target.pids).map(([name, pid]) => [name, [pid]]));
      const before = cpuMark(groups, SELF);
      const run = await target.run({ durationMs: options.durationMs / options.rounds });
      measured[i]!.push({ run, cpu: cpuSpent(before, cpuMark(groups, SELF)) });
    }
  }
  return measured;
}

/** The rounds of one target as one result, with CPU per request over all of them. */
export function pool<G extends string>(rounds: readonly Round[]): TargetRun<G> {
  const load = figures(rounds.map((r) => r.run));
  const cpuUsPerRequest: Record<string, number | null> = {};
  for (const k of Object.keys(rounds[0]!.cpu.seconds)) {
    const spent = rounds.map((r) => r.cpu.seconds[k]);
    cpuUsPerRequest[k] =
      spent.some((v) => v === undefined) || load.requests === 0
        ? null
        : Math.round((spent.reduce((a, b) => a! + b!, 0)! * 1e6) / load.requests);
  }
  return { ...load, cpuUsPerRequest: cpuUsPerRequest as Record<G, number | null> };
}

/**
 * Cores the rest of the machine kept busy on average during a target's rounds (null off Linux):
 * what else competed for the cores while it was measured.
 */
export function otherCoresBusy(rounds: readonly Round[]): number | null {
  const spent = rounds.reduce<CpuSpent | undefined>((sum, r) => addSpent(sum, r.cpu), undefined);
  return spent ? (cpuFigures(spent, 1).coresBusy.outsideBench ?? null) : null;
}
