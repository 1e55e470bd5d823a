/**
 * Counting a process's calls of functions in a shared library with Linux uprobes, through perf:
 * `perf probe` adds an event per function (group `infergrid_bench`), `perf stat -p` counts one
 * process's hits over a span, and stopAll removes the events. It needs perf, a kernel with
 * uprobes and the rights to add them (root); `perfRefusal` says why not when it cannot work here.
 *
 * Trade-off: a uprobe traps into the kernel on every call (a few µs), so only functions called a
 * few hundred times a second are probed, and the figures are counts, never timings.
 */

import { execFile, execFileSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { track } from './processes.ts';

const GROUP = 'infergrid_bench';
const UPROBE_EVENTS = '/sys/kernel/tracing/uprobe_events';

/** Why uprobes cannot be counted here, or undefined when they can. */
export function perfRefusal(): string | undefined {
  try {
    execFileSync('perf', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'perf not available (Debian package linux-perf)';
  }
  try {
    execFileSync('nm', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'nm not available (Debian package binutils): probes are placed by address';
  }
  try {
    accessSync(UPROBE_EVENTS, constants.W_OK);
  } catch (err) {
    return `uprobes cannot be added here (${UPROBE_EVENTS}: ${(err as NodeJS.ErrnoException).code}; tracefs and root needed)`;
  }
  return undefined;
}

/** The path of the first file `pid` maps whose name starts with `prefix` (a library it loaded). */
export function mappedLibrary(pid: number, prefix: string): string | undefined {
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const slash = line.indexOf('/');
    if (slash >= 0 && basename(line.slice(slash)).startsWith(prefix)) return line.slice(slash).trim();
  }
  return undefined;
}

/** The address of exported function `fn` in `library`, from its dynamic symbol table. */
function symbolAddress(library: string, fn: string): string {
  const symbols = execFileSync('nm', ['-D', '--defined-only', library], { encoding: 'utf8' });
  for (const line of symbols.split('\n')) {
    const [address, , symbol] = line.trim().split(/\s+/);
    if (symbol === fn && address) return `0x${address}`;
  }
  throw new Error(`${library} exports no ${fn}`);
}

/**
 * Adds uprobe event `name` on the entry of `fn` in `library` (replacing a leftover of that name);
 * removed at stopAll. Placed by address: by name, perf also probes the library's PLT stub of `fn`,
 * and a call from inside the library then counts twice.
 */
export function addProbe(library: string, fn: string, name: string): string {
  const event = `${GROUP}:${name}`;
  const remove = (): void => {
    try {
      execFileSync('perf', ['probe', '-q', '-d', event], { stdio: 'ignore' });
    } catch {
      // none to remove
    }
  };
  remove();
  execFileSync('perf', ['probe', '-q', '-x', library, '-a', `${event}=${symbolAddress(library, fn)}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  track(async () => remove());
  return event;
}

/** Each event's hits by process `pid` (its threads included) over the next `ms`. */
export function countEvents(
  pid: number,
  events: readonly string[],
  ms: number,
): Promise<Record<string, number>> {
  const args = [
    'stat',
    '-x',
    ',',
    '-p',
    String(pid),
    ...events.flatMap((e) => ['-e', e]),
    '--',
    'sleep',
    String(ms / 1000),
  ];
  return new Promise((resolve, reject) => {
    execFile('perf', args, (err, _stdout, stderr) => {
      if (err) return reject(new Error(`perf ${args.join(' ')}: ${err.message}\n${stderr}`));
      const counts: Record<string, number> = {};
      // CSV lines: value,unit,event,run time,percentage,...
      for (const line of stderr.split('\n')) {
        const [value, , event] = line.split(',');
        if (event && events.includes(event)) counts[event] = Number(value);
      }
      for (const e of events)
        if (!Number.isFinite(counts[e])) return reject(new Error(`perf stat counted no ${e}:\n${stderr}`));
      resolve(counts);
    });
  });
}
