/**
 * Closed-loop load for token streams (the LLM scenario): `concurrency` loops, each with one
 * stream in flight, timing every stream's time to first token (TTFT) and the gaps between its
 * chunks (inter-token latency, ITL). The same driver runs against the engine over HTTP (an SSE
 * client, `sseStream`) and, inside a forked child, against a model called in-process, so every
 * system is timed by one piece of code.
 *
 * Trade-off: the window is cut, not drained. Loops start staggered across the warm-up (so
 * streams are at different points of their generation when the window opens, as arrivals are in
 * service), and at the window's end the streams in flight are aborted; only what happened inside
 * the window counts: chunks (as tokens) arriving in it, TTFTs whose first chunk lands in it, gaps
 * that end in it. Draining would instead add a tail where fewer streams run. The raw samples are
 * kept so rounds of one system pool into one percentile computation (`streamFigures`).
 *
 * `runArrivals` is the open-loop counterpart: requests arrive at exponential (Poisson) gaps at a
 * fixed rate, whether or not earlier ones have answered, from a seeded generator so every system
 * sees the same arrivals. There the latencies are those of the requests that arrived in the
 * window, followed to their end (a drain, capped): cutting them would drop the slowest, queued
 * ones exactly when the system falls behind. Throughput is still the tokens that landed in the
 * window.
 */

import { setMaxListeners } from 'node:events';
import { type Agent, request } from 'node:http';
import { type Percentiles, summarize } from './load.ts';

/**
 * One streaming request: calls `chunk(tokens)` for each piece of output as it arrives (`tokens`
 * it holds, 1 when the source does not say), resolves with the completion tokens when the
 * source reports them. Rejects on failure; on `signal` it stops (resolving or rejecting).
 */
export type OpenStream = (
  n: number,
  signal: AbortSignal,
  chunk: (tokens?: number) => void,
) => Promise<number | undefined>;

export interface StreamWindow {
  concurrency: number;
  durationMs: number;
  /** Before the window: loops start staggered across it. */
  warmupMs: number;
}

/** One window's raw samples (structured-clonable: children send them over IPC). */
export interface StreamRaw {
  durationS: number;
  /** Output tokens that arrived inside the window. */
  tokens: number;
  /** Streams that ended inside the window. */
  completed: number;
  errors: number;
  errorKinds: Record<string, number>;
  ttftMs: number[];
  itlMs: number[];
  /** Per stream that made 2 tokens or more: from its first chunk to its last, per token after the first. */
  tpotMs: number[];
  /** Chunks that held more than one token (a detokenizer holding back a partial character). */
  multiTokenChunks: number;
}

/** The abort at the window's end: not an error. */
const WINDOW_END = new Error('window end');

const emptyRaw = (durationMs: number): StreamRaw => ({
  durationS: durationMs / 1000,
  tokens: 0,
  completed: 0,
  errors: 0,
  errorKinds: {},
  ttftMs: [],
  itlMs: [],
  tpotMs: [],
  multiTokenChunks: 0,
});

/** Which of one stream's events count, by the time they happen. */
interface Counting {
  /** Its output tokens, toward throughput. */
  tokens(now: number): boolean;
  /** Its latency samples: TTFT, ITL, TPOT. */
  samples(now: number): boolean;
  /** Its end: completed or failed. */
  outcome(now: number): boolean;
}

/** One stream, sent at `sent`, timed into `raw`; 'aborted' when `signal` ended it. */
async function timeStream(
  open: OpenStream,
  n: number,
  signal: AbortSignal,
  sent: number,
  raw: StreamRaw,
  counting: Counting,
): Promise<'done' | 'failed' | 'aborted'> {
  let first: number | undefined;
  let last: number | undefined;
  let chunks = 0;
  try {
    const reported = await open(n, signal, (tokens = 1) => {
      const now = performance.now();
      if (counting.samples(now)) {
        if (last === undefined) raw.ttftMs.push(now - sent);
        else raw.itlMs.push(now - last);
        if (tokens > 1) raw.multiTokenChunks++;
      }
      if (counting.tokens(now)) raw.tokens += tokens;
      first ??= now;
      chunks += tokens;
      last = now;
    });
    const now = performance.now();
    if (signal.aborted) return 'aborted';
    if (counting.outcome(now)) {
      raw.completed++;
      // tokens a chunk carried without saying so
      if (reported !== undefined && reported > chunks && counting.tokens(now))
        raw.tokens += reported - chunks;
      if (first !== undefined && last !== undefined && chunks > 1 && counting.samples(now))
        raw.tpotMs.push((last - first) / (Math.max(chunks, reported ?? 0) - 1));
    }
    return 'done';
  } catch (err) {
    if (signal.aborted) return 'aborted';
    if (counting.outcome(performance.now())) {
      raw.errors++;
      const kind = (err as { code?: string }).code ?? (err as Error).message.slice(0, 60);
      raw.errorKinds[kind] = (raw.errorKinds[kind] ?? 0) + 1;
    }
    return 'failed';
  }
}

export async function runStreams(open: OpenStream, w: StreamWindow): Promise<StreamRaw> {
  const t0 = performance.now();
  const start = t0 + w.warmupMs;
  const end = start + w.durationMs;
  const inWindow = (t: number): boolean => t >= start && t < end;
  const counting: Counting = { tokens: inWindow, samples: inWindow, outcome: inWindow };
  const raw = emptyRaw(w.durationMs);
  const stop = new AbortController();
  // every stream in flight listens for the window's end
  setMaxListeners(w.concurrency + 8, stop.signal);
  const timer = setTimeout(() => stop.abort(WINDOW_END), end - t0);
  let n = 0;
  const loop = async (i: number): Promise<void> => {
    const staggerMs = (w.warmupMs * i) / w.concurrency;
    if (staggerMs > 0) await new Promise((r) => setTimeout(r, staggerMs));
    while (!stop.signal.aborted)
      if ((await timeStream(open, n++, stop.signal, performance.now(), raw, counting)) === 'aborted') break;
  };
  await Promise.all(Array.from({ length: w.concurrency }, (_, i) => loop(i)));
  clearTimeout(timer);
  return raw;
}

export interface ArrivalWindow {
  /** Mean arrivals per second (exponential gaps). */
  ratePerS: number;
  durationMs: number;
  /** Arrivals before the window, not measured: queues and caches reach their running state. */
  warmupMs: number;
  /** After the window, how long the requests that arrived in it may take to end; the rest are cut, ms. */
  drainMs: number;
  /** Seeds the arrival gaps: the same seed, the same arrivals. */
  seed: number;
}

export interface ArrivalRaw extends StreamRaw {
  /** Requests that arrived in the window. */
  arrived: number;
  /** Of those, still running when the drain ended (cut, neither completed nor errors). */
  unfinished: number;
  /** Most requests in flight at once, warm-up included. */
  maxInFlight: number;
}

/** mulberry32: a tiny seeded generator of uniform numbers in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Open-loop Poisson arrivals (see the header): every request counted by when it arrived. */
export async function runArrivals(open: OpenStream, w: ArrivalWindow): Promise<ArrivalRaw> {
  const t0 = performance.now();
  const start = t0 + w.warmupMs;
  const end = start + w.durationMs;
  const raw: ArrivalRaw = { ...emptyRaw(w.durationMs), arrived: 0, unfinished: 0, maxInFlight: 0 };
  const inWindow = (t: number): boolean => t >= start && t < end;
  const measured: Counting = { tokens: inWindow, samples: () => true, outcome: () => true };
  const warmup: Counting = { tokens: inWindow, samples: () => false, outcome: () => false };
  const stop = new AbortController();
  // as many listeners as requests in flight, which an overloaded system lets grow
  setMaxListeners(0, stop.signal);
  const inFlight = new Set<Promise<unknown>>();
  const arrivedInWindow = new Set<Promise<unknown>>();
  const random = seededRandom(w.seed);
  let due = t0;
  for (let n = 0; ; n++) {
    due += (-Math.log(1 - random()) * 1000) / w.ratePerS;
    if (due >= end) break;
    const waitMs = due - performance.now();
    if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
    const sent = performance.now();
    const counted = sent >= start;
    const stream = timeStream(open, n, stop.signal, sent, raw, counted ? measured : warmup);
    inFlight.add(stream);
    void stream.finally(() => inFlight.delete(stream));
    if (counted) {
      raw.arrived++;
      arrivedInWindow.add(stream);
      void stream.finally(() => arrivedInWindow.delete(stream));
    }
    raw.maxInFlight = Math.max(raw.maxInFlight, inFlight.size);
  }
  let drainTimer: NodeJS.Timeout | undefined;
  const drainEnd = end + w.drainMs;
  await Promise.race([
    Promise.all([...arrivedInWindow]),
    new Promise((r) => {
      drainTimer = setTimeout(r, Math.max(0, drainEnd - performance.now()));
    }),
  ]);
  clearTimeout(drainTimer);
  raw.unfinished = arrivedInWindow.size;
  stop.abort(WINDOW_END);
  await Promise.all([...inFlight]);
  return raw;
}

/** What a scenario keeps of a system's windows at one concurrency. */
export interface StreamFigures {
  durationS: number;
  outputTokensPerS: number;
  completed: number;
  errors: number;
  errorKinds: Record<string, number>;
  ttftMs: Percentiles;
  itlMs: Percentiles;
  tpotMs: Percentiles;
  multiTokenChunks: number;
}

const roundTo = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** Windows (rounds) of one system pooled: throughput over their total time, one set of percentiles. */
export function streamFigures(windows: readonly StreamRaw[]): StreamFigures {
  const durationS = windows.reduce((s, w) => s + w.durationS, 0);
  const errorKinds: Record<string, number> = {};
  for (const w of windows)
    for (const [k, v] of Object.entries(w.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + v;
  const sum = (f: (w: StreamRaw) => number): number => windows.reduce((s, w) => s + f(w), 0);
  const empty: Percentiles = { mean: 0, p50: 0, p90: 0, p99: 0, max: 0 };
  const ttft = windows.flatMap((w) => w.ttftMs);
  const itl = windows.flatMap((w) => w.itlMs);
  const tpot = windows.flatMap((w) => w.tpotMs);
  return {
    durationS,
    outputTokensPerS: roundTo(sum((w) => w.tokens) / durationS, 1),
    completed: sum((w) => w.completed),
    errors: sum((w) => w.errors),
    errorKinds,
    ttftMs: ttft.length === 0 ? empty : summarize(ttft),
    itlMs: itl.length === 0 ? empty : summarize(itl),
    tpotMs: tpot.length === 0 ? empty : summarize(tpot),
    multiTokenChunks: sum((w) => w.multiTokenChunks),
  };
}

/** An OpenAI-style error or a status the server answered instead of a stream. */
class HttpStatusError extends Error {
  readonly code: string;
  constructor(status: number, body: string) {
    super(`HTTP ${status}: ${body.slice(0, 200)}`);
    this.code = `HTTP ${status}`;
  }
}

/** A stream's `usage` as OpenAI servers send it (llama-server adds the cached prompt tokens). */
export interface StreamUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number } | null;
}

/**
 * An OpenAI `/v1/completions` stream over node:http: POSTs `body(n)` and reads the SSE `data:`
 * lines; every chunk whose first choice has text is one chunk, a `usage` gives the completion
 * tokens (and goes to `onUsage`), `[DONE]` ends it.
 */
export function sseStream(
  url: string,
  body: (n: number) => unknown,
  agent: Agent,
  onUsage?: (usage: StreamUsage) => void,
): OpenStream {
  return (n, signal, chunk) =>
    new Promise((resolve, reject) => {
      const payload = Buffer.from(JSON.stringify(body(n)));
      const req = request(
        url,
        {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': payload.byteLength },
        },
        (res) => {
          res.setEncoding('utf8');
          if (res.statusCode !== 200) {
            let text = '';
            res.on('data', (d: string) => {
              text += d;
            });
            res.on('end', () => reject(new HttpStatusError(res.statusCode ?? 0, text)));
            return;
          }
          let buffered = '';
          let usage: number | undefined;
          let done = false;
          res.on('data', (d: string) => {
            buffered += d;
            let nl = buffered.indexOf('\n');
            while (nl >= 0) {
              const line = buffered.slice(0, nl).trim();
              buffered = buffered.slice(nl + 1);
              nl = buffered.indexOf('\n');
              if (!line.startsWith('data:')) continue;
              const data = line.slice(5).trim();
              if (data === '[DONE]') {
                done = true;
                continue;
              }
              const event = JSON.parse(data) as {
                choices?: { text?: string }[];
                usage?: StreamUsage | null;
                error?: { message?: string };
              };
              if (event.error) {
                reject(
                  Object.assign(new Error(event.error.message ?? 'stream error'), {
                    code: `stream error: ${(event.error.message ?? '').slice(0, 80)}`,
                  }),
                );
                req.destroy();
                return;
              }
              if (event.choices?.[0]?.text) chunk();
              if (event.usage) {
                usage = event.usage.completion_tokens ?? usage;
                onUsage?.(event.usage);
              }
            }
          });
          res.on('end', () =>
            done
              ? resolve(usage)
              : reject(Object.assign(new Error('stream ended without [DONE]'), { code: 'truncated' })),
          );
          res.on('error', reject);
        },
      );
      const onAbort = (): void => {
        req.destroy(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      req.on('close', () => signal.removeEventListener('abort', onAbort));
      req.on('error', reject);
      req.end(payload);
    });
}
