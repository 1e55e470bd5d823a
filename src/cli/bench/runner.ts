/**
 * Drives load through a RequestSender and records what came back.
 *
 * Closed loop (`concurrency`): each of N loops sends its next request when the last answered,
 * so the server's speed sets the rate. Open loop (`rate`): request i is due at i/rate s and is
 * sent then whether or not earlier ones answered, so a slow server meets a growing queue, as
 * it would in production. Which requests are due is fixed by the plan alone (a slot at
 * i·1000/rate ms inside the window), so `scheduled` does not depend on timing; a request the
 * client sends more than LATE_AFTER_MS after its slot is counted `late`, one due while
 * `maxInFlight` are outstanding is `dropped` (never sent).
 *
 * Requests started during the warmup are sent but not recorded. Latency is measured from the
 * moment a request is handed to the sender to its last response byte.
 *
 * This is infergrid's one load engine: the `bench` command drives it, and so does every scenario
 * in bench/ (in its own process, or in a forked load generator: bench/lib/load.ts).
 */

import { LatencyHistogram, type LatencySummary } from './histogram.ts';
import type { RequestSender, SendOutcome } from './http-sender.ts';
import type { LoadMode } from './options.ts';

/** Open loop: a request sent more than this after its slot counts as late, ms. */
export const LATE_AFTER_MS = 5;
/** Open loop: requests sent in one turn of the event loop at most, so answers are read in between. */
const MAX_SENDS_PER_TURN = 100;

export interface RunPlan {
  mode: LoadMode;
  /** Measured window, ms; undefined: until `requests` have been sent. */
  durationMs: number | undefined;
  /** Measured requests; undefined: until `durationMs` has passed. */
  requests: number | undefined;
  warmupMs: number;
}

/** Called as the measured window opens and closes (timers at warmupMs and warmupMs + durationMs). */
export interface RunHooks {
  onMeasureStart?(): void;
  onMeasureEnd?(): void;
}

export interface ErrorKind {
  count: number;
  /** The first such error's message, to show what went wrong. */
  message: string;
}

export interface RunResult {
  /** Measured requests due (open loop) or started (closed loop). */
  scheduled: number;
  /** Measured requests sent: scheduled minus dropped. */
  sent: number;
  /** Measured requests answered with a 2xx. */
  completed: number;
  /** Measured requests that failed: an HTTP error, a network error or a timeout. */
  errors: number;
  /** Errors by kind (`500 BACKEND_ERROR`, `network ECONNREFUSED`, `timeout`), most frequent first. */
  errorKinds: [string, ErrorKind][];
  /** Open loop: sent more than LATE_AFTER_MS after their slot. */
  late: number;
  /** Open loop: not sent, because maxInFlight requests were outstanding when they came due. */
  dropped: number;
  /** Open loop: the most a request was sent after its slot, ms. */
  maxLagMs: number;
  /** From the end of the warmup to the end of the window or the last answer, whichever is later, ms. */
  elapsedMs: number;
  /** Completed requests per second over elapsedMs. */
  throughputPerS: number;
  /** Latencies of completed requests. */
  latency: LatencySummary;
  /** The same latencies, to summarise several runs as one (LatencyHistogram.add). */
  histogram: LatencyHistogram;
  /** The run was stopped early (Ctrl-C); the results cover what was sent until then. */
  interrupted: boolean;
}

export interface RunProgress {
  phase: 'warmup' | 'measuring' | 'finishing';
  /** Since the run started (warmup) or since measuring started, ms. */
  elapsedMs: number;
  /** Measured requests answered so far, either way. */
  answered: number;
  /** Every request answered so far, the warmup's too (for a current rate). */
  answeredAll: number;
  errors: number;
  inFlight: number;
}

export class BenchRun {
  readonly #plan: RunPlan;
  readonly #sender: RequestSender;
  readonly #now: () => number;
  readonly #latency = new LatencyHistogram();
  readonly #errorKinds = new Map<string, ErrorKind>();
  #startAt = 0;
  #measureAt = 0;
  #endAt = Number.POSITIVE_INFINITY;
  #issuingDoneAt: number | undefined;
  #lastAnswerAt = 0;
  #scheduled = 0;
  #sent = 0;
  #errors = 0;
  #late = 0;
  #dropped = 0;
  #maxLagMs = 0;
  #inFlight = 0;
  #answeredAll = 0;
  #stopped = false;
  #started = false;
  /** Open loop: the timer waiting for the next slot, and what it runs; stop() runs it at once. */
  #wait: { timer: NodeJS.Timeout; wake: () => void } | undefined;

  readonly #hooks: RunHooks;

  /** `now` is the clock, ms (performance.now by default). */
  constructor(
    plan: RunPlan,
    sender: RequestSender,
    now: () => number = () => performance.now(),
    hooks: RunHooks = {},
  ) {
    this.#plan = plan;
    this.#sender = sender;
    this.#now = now;
    this.#hooks = hooks;
  }

  /** Runs the plan once; resolves when every request sent has been answered (or timed out). */
  async run(): Promise<RunResult> {
    if (this.#started) throw new Error('a BenchRun runs once');
    this.#started = true;
    const { mode, durationMs, warmupMs } = this.#plan;
    this.#startAt = this.#now();
    this.#measureAt = this.#startAt + warmupMs;
    if (durationMs !== undefined) this.#endAt = this.#measureAt + durationMs;
    const { onMeasureStart, onMeasureEnd } = this.#hooks;
    const timers = [
      ...(onMeasureStart ? [setTimeout(onMeasureStart, warmupMs)] : []),
      ...(onMeasureEnd && durationMs !== undefined ? [setTimeout(onMeasureEnd, warmupMs + durationMs)] : []),
    ];
    try {
      if (mode.kind === 'concurrency') await this.#closedLoop(mode.concurrency);
      else await this.#openLoop(mode.ratePerS, mode.maxInFlight);
    } finally {
      for (const timer of timers) clearTimeout(timer);
    }
    return this.#result();
  }

  /** Stops issuing requests; run() resolves once those in flight are answered. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#issuingDoneAt ??= this.#now();
    if (this.#wait) {
      clearTimeout(this.#wait.timer);
      this.#wait.wake();
    }
  }

  progress(): RunProgress {
    const now = this.#now();
    const measuring = now >= this.#measureAt;
    return {
      phase: this.#issuingDoneAt !== undefined ? 'finishing' : measuring ? 'measuring' : 'warmup',
      elapsedMs: measuring ? now - this.#measureAt : now - this.#startAt,
      answered: this.#latency.count + this.#errors,
      answeredAll: this.#answeredAll,
      errors: this.#errors,
      inFlight: this.#inFlight,
    };
  }

  #record(outcome: SendOutcome, sentAt: number): void {
    const now = this.#now();
    this.#lastAnswerAt = Math.max(this.#lastAnswerAt, now);
    if (outcome.ok) {
      this.#latency.record(now - sentAt);
      return;
    }
    this.#errors++;
    const kind = this.#errorKinds.get(outcome.kind);
    if (kind) kind.count++;
    else this.#errorKinds.set(outcome.kind, { count: 1, message: outcome.message });
  }

  async #closedLoop(concurrency: number): Promise<void> {
    const { requests } = this.#plan;
    const loop = async (_: unknown, index: number): Promise<void> => {
      for (;;) {
        const sentAt = this.#now();
        if (this.#stopped || sentAt >= this.#endAt) break;
        const measured = sentAt >= this.#measureAt;
        if (measured) {
          if (requests !== undefined && this.#scheduled >= requests) break;
          this.#scheduled++;
          this.#sent++;
          if (this.#scheduled === requests) this.#issuingDoneAt ??= sentAt;
        }
        this.#inFlight++;
        const outcome = await this.#sender.send(index);
        this.#inFlight--;
        this.#answeredAll++;
        if (measured) this.#record(outcome, sentAt);
      }
      this.#issuingDoneAt ??= Math.min(this.#now(), this.#endAt);
    };
    await Promise.all(Array.from({ length: concurrency }, loop));
  }

  #openLoop(ratePerS: number, maxInFlight: number): Promise<void> {
    const { requests, warmupMs, durationMs } = this.#plan;
    // offsets from the start, not clock readings: startAt + 1000 - startAt need not be 1000
    const windowEndMs = durationMs === undefined ? Number.POSITIVE_INFINITY : warmupMs + durationMs;
    let slot = 0;
    return new Promise<void>((resolve) => {
      const settleIfDone = (): void => {
        if (this.#issuingDoneAt !== undefined && this.#inFlight === 0) resolve();
      };
      const finishIssuing = (at: number): void => {
        this.#issuingDoneAt ??= at;
        settleIfDone();
      };
      const tick = (): void => {
        this.#wait = undefined;
        for (let sentThisTurn = 0; !this.#stopped; ) {
          // multiply, never accumulate: slot times must not drift, so the schedule is exact
          const dueMs = (slot * 1000) / ratePerS;
          const measured = dueMs >= warmupMs;
          if (dueMs >= windowEndMs || (measured && requests !== undefined && this.#scheduled >= requests)) {
            // the window ends where the next slot would begin
            finishIssuing(this.#startAt + dueMs);
            return;
          }
          const now = this.#now();
          const dueAt = this.#startAt + dueMs;
          if (dueAt > now) {
            this.#wait = { timer: setTimeout(tick, dueAt - now), wake: tick };
            return;
          }
          if (sentThisTurn === MAX_SENDS_PER_TURN) {
            setImmediate(tick);
            return;
          }
          slot++;
          if (measured) this.#scheduled++;
          if (this.#inFlight >= maxInFlight) {
            if (measured) this.#dropped++;
            continue;
          }
          if (measured) {
            const lagMs = now - dueAt;
            if (lagMs > LATE_AFTER_MS) this.#late++;
            if (lagMs > this.#maxLagMs) this.#maxLagMs = lagMs;
            this.#sent++;
          }
          sentThisTurn++;
          this.#inFlight++;
          this.#sender.send().then((outcome) => {
            this.#inFlight--;
            this.#answeredAll++;
            if (measured) this.#record(outcome, now);
            settleIfDone();
          });
        }
        finishIssuing(this.#now());
      };
      tick();
    });
  }

  #result(): RunResult {
    const completed = this.#latency.count;
    const end = Math.max(this.#issuingDoneAt ?? this.#now(), this.#lastAnswerAt);
    const elapsedMs = Math.max(0, end - this.#measureAt);
    return {
      scheduled: this.#scheduled,
      sent: this.#sent,
      completed,
      errors: this.#errors,
      errorKinds: [...this.#errorKinds].sort((a, b) => b[1].count - a[1].count),
      late: this.#late,
      dropped: this.#dropped,
      maxLagMs: Math.round(this.#maxLagMs * 1000) / 1000,
      elapsedMs: Math.round(elapsedMs * 1000) / 1000,
      throughputPerS: elapsedMs > 0 ? Math.round((completed / elapsedMs) * 1e6) / 1000 : 0,
      latency: this.#latency.summary(),
      histogram: this.#latency,
      interrupted: this.#stopped,
    };
  }
}
