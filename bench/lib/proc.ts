/** CPU time from Linux's /proc, for benchmarks that report what each process group spent. */

import { readFileSync } from 'node:fs';

/** Linux clock ticks per second for /proc (USER_HZ, 100 on every common build). */
const CLOCK_TICKS_PER_S = 100;

/** User + system CPU seconds of a process; undefined when unknown (gone, or not Linux). */
export function processCpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesised command name, which may itself hold spaces
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
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
