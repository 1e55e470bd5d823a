/**
 * A one-line progress bar redrawn in place on a terminal: phase, elapsed time against the
 * plan, answers, the rate over the last second, errors and requests in flight. The caller
 * decides whether the stream is a terminal; nothing here checks.
 */

import type { RunPlan, RunProgress } from './runner.ts';
import { formatDuration } from './format.ts';

/** How often the line is redrawn, ms. */
const REDRAW_INTERVAL_MS = 250;
/** The rate shown is over this much recent time, ms. */
const RATE_WINDOW_MS = 1000;
const BAR_WIDTH = 20;

export interface ProgressSource {
  progress(): RunProgress;
}

export interface ProgressBar {
  /** Stops redrawing and clears the line. */
  stop(): void;
}

export function startProgressBar(
  source: ProgressSource,
  plan: RunPlan,
  stream: NodeJS.WriteStream,
  now: () => number = () => performance.now(),
): ProgressBar {
  const samples: { at: number; answered: number }[] = [];
  const draw = (): void => {
    const p = source.progress();
    const at = now();
    samples.push({ at, answered: p.answeredAll });
    while (samples.length > 2 && at - samples[0]!.at > RATE_WINDOW_MS) samples.shift();
    const first = samples[0]!;
    const ratePerS = at > first.at ? ((p.answeredAll - first.answered) * 1000) / (at - first.at) : 0;

    let fraction: number;
    let clock: string;
    if (p.phase === 'warmup') {
      fraction = Math.min(1, p.elapsedMs / plan.warmupMs);
      clock = `warmup ${formatDuration(p.elapsedMs)}/${formatDuration(plan.warmupMs)}`;
    } else {
      const byTime = plan.durationMs === undefined ? 0 : p.elapsedMs / plan.durationMs;
      const byCount = plan.requests === undefined ? 0 : p.answered / plan.requests;
      fraction = Math.min(1, Math.max(byTime, byCount));
      clock =
        plan.durationMs === undefined
          ? formatDuration(p.elapsedMs)
          : `${formatDuration(Math.min(p.elapsedMs, plan.durationMs))}/${formatDuration(plan.durationMs)}`;
    }
    const filled = Math.round(fraction * BAR_WIDTH);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}]`;
    const count = plan.requests === undefined ? `${p.answered}` : `${p.answered}/${plan.requests}`;
    const line = `${bar} ${clock}  ${count} req  ${ratePerS.toFixed(0)} req/s  ${p.errors} errors  ${p.inFlight} in flight`;
    const width = stream.columns ? stream.columns - 1 : line.length;
    stream.write(`\r${line.slice(0, width)}\x1b[K`);
  };
  const timer = setInterval(draw, REDRAW_INTERVAL_MS);
  timer.unref();
  draw();
  return {
    stop() {
      clearInterval(timer);
      stream.write('\r\x1b[K');
    },
  };
}
