/**
 * LLM serving under the loads bench/scenarios/llm.ts does not make (issues 15 and 21), with the
 * same models, request shape (greedy, EOS banned, fixed max_tokens) and SSE client:
 *
 *   poisson  open-loop arrivals at exponential gaps, at `rate-fraction` (0.9) of the system's
 *            saturation rate: its closed-loop request rate at `saturation-streams` (16) streams,
 *            measured first in the same run (or given, --saturation-rps). The engine (its
 *            admission limits: llama.sequences, llama.maxQueued) and llama-server.
 *   prefix   a shared-prefix workload: `system-prompts` (8) system prompts of ~512 tokens, each
 *            request one of them (a seeded random pick) and a ~32-token suffix of its own, at
 *            `prefix-streams` (16) closed-loop streams. The engine with prefix reuse and with
 *            llama.prefixReuse false; llama-server with cache_prompt true and false (one server,
 *            the request body says which).
 *   routing  the prefix workload through an engine with `routing-workers` (2) worker processes,
 *            routing strategy prefix-aware against round-robin.
 *   graph    ggml graph computes and llama_decode calls per decode step, counted by perf uprobes
 *            on ggml_backend_sched_graph_compute_async and llama_decode in the libraries the
 *            model's process maps, at `graph-streams` (1, 16) closed-loop streams of the poisson
 *            prompts: one step should be one decode and one graph (bench/lib/uprobes.ts).
 *
 *   npm run bench:llm-loads -- --llama-server .tmp/llama-server/src/build/bin/llama-server
 *   npm run bench:llm-loads -- --loads prefix --prefix-streams 8,16
 *
 * The prefix hit rate is prompt tokens served from a cache over prompt tokens: for the engine from
 * the workers' counters (infergrid_llm_prefix_cache_{queries,hits}_total, through the
 * coordinator's /metrics, by worker), for llama-server from each stream's usage
 * (prompt_tokens_details.cached_tokens); both read over the timed window only.
 *
 * Trade-offs: the loads start their own systems and stop them before the next load, so no load
 * shares the 2 cores with another's idle processes' memory. The systems of one load are up at
 * once and their windows take turns in rounds, as in llm.ts. Open-loop latencies are those of the
 * requests that arrived in the window, drained to their end (bench/lib/stream-load.ts); the
 * arrival gaps are seeded, so both systems see the same arrivals. The bound next to the engine's
 * TTFT p99 is what its admission limits allow: a request admitted to a full queue waits for the
 * running requests and ceil(maxQueued / sequences) rounds of the queue ahead of it, each about
 * one request's time at saturation (saturation streams / saturation rate, Little's law).
 * llama-server queues without a limit, so it has no such bound.
 */

import { statSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { tinyGguf } from '../../tests/fixtures/tiny-gguf.ts';
import { cpuFigures, cpuMark, cpuSpent, noteDisturbance } from '../lib/cpu.ts';
import { ask, startEngine } from '../lib/engine.ts';
import { type Charts, cell, pct, table } from '../lib/markdown.ts';
import { scratchDir, sleep, stopAll, track } from '../lib/processes.ts';
import { addProbe, countEvents, mappedLibrary, perfRefusal } from '../lib/uprobes.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import {
  type ArrivalRaw,
  type OpenStream,
  runArrivals,
  runStreams,
  type StreamFigures,
  type StreamRaw,
  type StreamUsage,
  type StreamWindow,
  seededRandom,
  sseStream,
  streamFigures,
} from '../lib/stream-load.ts';
import {
  completionBody,
  engineConfig,
  llamaServerRefusal,
  MODELS,
  promptOf,
  type Spec,
  startLlamaServer,
} from './llm.ts';

const PARAMS = {
  /** The model, built at bench time (llm.ts MODELS). */
  model: 'mid',
  /** The loads to run: poisson, prefix, routing, graph. */
  loads: 'poisson,prefix,routing,graph',
  threads: '1',
  /** Sequences of one model instance (per worker), llama-server's --parallel. */
  sequences: '16',
  'max-tokens': '64',
  'step-tokens': '512',
  /** A llama-server binary to measure too; empty: not measured. */
  'llama-server': '',
  /** Before each poisson window (saturation, open loop), s: streams start staggered, arrivals run unmeasured. */
  'warmup-s': '3',
  /** Seeds the arrival gaps and the prefix workload's system prompt picks. */
  seed: '1',
  // ---- poisson
  /** Arrival rate as a fraction of the saturation rate. */
  'rate-fraction': '0.9',
  /** Saturation rate, requests/s, the same for every system; empty: each system's measured first. */
  'saturation-rps': '',
  /** Closed-loop streams whose request rate is the saturation rate. */
  'saturation-streams': '16',
  /** The closed-loop window that measures it, s. */
  'saturation-s': '8',
  /** The open-loop window, s. */
  'poisson-s': '30',
  /** After the open-loop window, how long its requests may take to end, s. */
  'drain-s': '30',
  /** The engine's llama.maxQueued in the poisson load (the config default). */
  'max-queued': '64',
  /** Words of each poisson prompt after its counter (48: about 64 tokens). */
  'prompt-words': '48',
  /** Tokens one sequence holds in the poisson load. */
  'poisson-context-size': '512',
  // ---- prefix and routing
  'prefix-streams': '16',
  'system-prompts': '8',
  /** Words of a system prompt (470: about 512 tokens with the llama vocabulary). */
  'system-words': '470',
  /** Words of a request's own suffix after its counter (26: about 32 tokens). */
  'suffix-words': '26',
  /** Tokens one sequence holds in the prefix loads: the prompt and max_tokens must fit. */
  'prefix-context-size': '1024',
  /**
   * Timed window of each system at each stream count, split into the rounds, s. A request takes
   * seconds here (~550 prompt tokens, 64 output tokens, 16 streams): shorter windows hold too
   * few admissions for a hit rate.
   */
  'prefix-duration-s': '20',
  /** Before each prefix window, s: the streams start staggered and the caches fill. */
  'prefix-warmup-s': '10',
  rounds: '2',
  'routing-workers': '2',
  // ---- graph
  'graph-streams': '1,16',
  /** Timed window of each system at each stream count, s (after warmup-s). */
  'graph-s': '5',
};
type LoadsParams = typeof PARAMS;

const LOADS = ['poisson', 'prefix', 'routing', 'graph'] as const;

/** Prompt tokens of admitted requests and those of them served from a cache. */
export interface PrefixCounts {
  promptTokens: number;
  cachedTokens: number;
}

/** A system as the loads see it: its streams and its counters, read at any time. */
interface LoadTarget {
  system: string;
  pids: (number | undefined)[];
  open: OpenStream;
  /** The process that runs the model: the (first) worker, llama-server itself. */
  modelPid: number | undefined;
  /** Decode steps so far, where the system counts them (the engine's workers). */
  steps?: () => Promise<number>;
  /** Cumulative counts so far: by worker (engine: its counters; llama-server: `server`, from usage). */
  counts(): Promise<Counts>;
}

interface Counts {
  /** Streams that reported usage, and the prompt tokens they reported. */
  usage: { streams: number; promptTokens: number };
  byWorker: Record<string, PrefixCounts>;
}

const hitRate = (c: PrefixCounts): number | null =>
  c.promptTokens === 0 ? null : Math.round((1000 * c.cachedTokens) / c.promptTokens) / 1000;

// ---- the workloads --------------------------------------------------------------------------------

interface Workload {
  spec: Spec;
  /** Request n's prompt. */
  prompt(n: number): string;
}

/** The prefix workload: request n's system prompt is a seeded pick, its suffix its own. */
function sharedPrefixPrompt(params: LoadsParams): (n: number) => string {
  const count = Number(params['system-prompts']);
  // 1..count: the counter first, so system prompts share nothing past the first token or two
  const systems = Array.from({ length: count }, (_, i) => promptOf(i + 1, Number(params['system-words'])));
  const seed = Number(params.seed);
  return (n) => {
    const system = systems[Math.floor(seededRandom(seed * 1_000_003 + n)() * count)]!;
    return `${system}\n${promptOf(n, Number(params['suffix-words']))}`;
  };
}

// ---- the systems ----------------------------------------------------------------------------------

/** An SSE client's usage sums; llama-server's hit counts come from them. */
function usageSums() {
  const sums = { streams: 0, promptTokens: 0, cachedTokens: 0 };
  const onUsage = (u: StreamUsage): void => {
    sums.streams++;
    sums.promptTokens += u.prompt_tokens ?? 0;
    sums.cachedTokens += u.prompt_tokens_details?.cached_tokens ?? 0;
  };
  return { sums, onUsage };
}

function httpOpen(
  url: string,
  body: (n: number) => unknown,
  keepAlive: boolean,
  onUsage: (u: StreamUsage) => void,
) {
  // open loops can hold many streams: the agent must not queue them in this process
  const agent = new Agent({ keepAlive, maxSockets: 4096 });
  track(async () => agent.destroy());
  return sseStream(url, body, agent, onUsage);
}

/** The coordinator's /metrics text (every worker's, labelled by worker). */
async function engineMetrics(url: string): Promise<string> {
  const { status, text } = await ask(`${url}/metrics`).catch((err: Error) => {
    throw new Error(`the coordinator's ${url}/metrics: ${err.message}`, { cause: err });
  });
  if (status !== 200) throw new Error(`${url}/metrics: ${status} ${text.slice(0, 200)}`);
  return text;
}

/** A counter's value summed by worker. */
function byWorker(metrics: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const m = /\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    const worker = /worker="([^"]*)"/.exec(m[1]!)?.[1] ?? 'worker';
    out[worker] = (out[worker] ?? 0) + Number(m[2]);
  }
  return out;
}

/** The engine's per-worker prefix counters. */
async function enginePrefixCounts(url: string): Promise<Record<string, PrefixCounts>> {
  const text = await engineMetrics(url);
  const hits = byWorker(text, 'infergrid_llm_prefix_cache_hits_total');
  return Object.fromEntries(
    Object.entries(byWorker(text, 'infergrid_llm_prefix_cache_queries_total')).map(([w, promptTokens]) => [
      w,
      { promptTokens, cachedTokens: hits[w] ?? 0 },
    ]),
  );
}

async function engineTarget(
  system: string,
  w: Workload,
  dir: string,
  options: { prefixReuse?: boolean; maxQueued?: number; workers?: number; strategy?: string } = {},
): Promise<LoadTarget> {
  const base = engineConfig(w.spec);
  const model = base.models[0]!;
  const config = {
    ...base,
    ...(options.strategy === undefined ? {} : { routing: { strategy: options.strategy } }),
    models: [
      {
        ...model,
        llama: {
          ...model.llama,
          ...(options.maxQueued === undefined ? {} : { maxQueued: options.maxQueued }),
          ...(options.prefixReuse === undefined ? {} : { prefixReuse: options.prefixReuse }),
        },
      },
    ],
  };
  const file = join(dir, `${system}.yaml`);
  writeFileSync(file, stringify(config));
  const engine = await startEngine(file, { model: 'llm', workers: options.workers ?? 1 });
  const body = completionBody(w.spec);
  const { sums, onUsage } = usageSums();
  const sum = (counts: Record<string, number>): number => Object.values(counts).reduce((a, b) => a + b, 0);
  return {
    system,
    pids: [engine.pids.coordinator, ...engine.workerPids],
    modelPid: engine.pids.worker,
    steps: async () => sum(byWorker(await engineMetrics(engine.url), 'infergrid_llm_decode_steps_total')),
    open: httpOpen(
      `${engine.url}/v1/completions`,
      (n) => ({ ...body(n), prompt: w.prompt(n) }),
      true,
      onUsage,
    ),
    counts: async () => ({ usage: { ...sums }, byWorker: await enginePrefixCounts(engine.url) }),
  };
}

/** llama-server's streams, `extra` added to every request body (cache_prompt). */
function llamaServerTarget(
  system: string,
  server: { url: string; pid: number | undefined },
  w: Workload,
  extra: Record<string, unknown> = {},
): LoadTarget {
  const body = completionBody(w.spec);
  const { sums, onUsage } = usageSums();
  return {
    system,
    pids: [server.pid],
    modelPid: server.pid,
    // a connection per stream: it resets reused ones (llm.ts)
    open: httpOpen(
      `${server.url}/v1/completions`,
      (n) => ({ ...body(n), prompt: w.prompt(n), ...extra }),
      false,
      onUsage,
    ),
    counts: async () => ({
      usage: { streams: sums.streams, promptTokens: sums.promptTokens },
      byWorker: { server: { promptTokens: sums.promptTokens, cachedTokens: sums.cachedTokens } },
    }),
  };
}

/** `a` and `b` × `sign` added, worker by worker. */
function combine(a: Counts, b: Counts, sign: 1 | -1): Counts {
  const byWorker: Record<string, PrefixCounts> = {};
  for (const w of new Set([...Object.keys(a.byWorker), ...Object.keys(b.byWorker)])) {
    const [x, y] = [a.byWorker[w], b.byWorker[w]];
    byWorker[w] = {
      promptTokens: (x?.promptTokens ?? 0) + sign * (y?.promptTokens ?? 0),
      cachedTokens: (x?.cachedTokens ?? 0) + sign * (y?.cachedTokens ?? 0),
    };
  }
  return {
    usage: {
      streams: a.usage.streams + sign * b.usage.streams,
      promptTokens: a.usage.promptTokens + sign * b.usage.promptTokens,
    },
    byWorker,
  };
}

/** What a result keeps of a window's counts: the hit rate over all workers and by worker. */
function windowCounts(c: Counts) {
  const all = Object.values(c.byWorker).reduce(
    (s, w) => ({
      promptTokens: s.promptTokens + w.promptTokens,
      cachedTokens: s.cachedTokens + w.cachedTokens,
    }),
    { promptTokens: 0, cachedTokens: 0 },
  );
  return {
    ...all,
    hitRate: hitRate(all),
    byWorker: Object.fromEntries(
      Object.entries(c.byWorker).map(([w, x]) => [w, { ...x, hitRate: hitRate(x) }]),
    ),
    /** Mean prompt tokens of the streams that ended in the window, from their usage. */
    promptTokensMean: c.usage.streams === 0 ? null : Math.round(c.usage.promptTokens / c.usage.streams),
  };
}
type WindowCounts = ReturnType<typeof windowCounts>;

// ---- measuring ------------------------------------------------------------------------------------

/** One window of a target: its samples, its counters over the timed part, the rest of the machine's CPU. */
async function measured<R extends StreamRaw>(
  t: LoadTarget,
  warmupMs: number,
  drive: () => Promise<R>,
): Promise<{ raw: R; counts: Counts; otherCoresBusy: number | null }> {
  const groups = Object.fromEntries(t.pids.map((pid, i) => [`p${i}`, [pid]]));
  const before = cpuMark(groups, 'loadGenerator');
  const atStart = sleep(warmupMs).then(() => t.counts());
  // settled before it is awaited: a failed read must not be an unhandled rejection meanwhile
  atStart.catch(() => {});
  const raw = await drive();
  const counts = combine(await t.counts(), await atStart, -1);
  const cpu = cpuFigures(cpuSpent(before, cpuMark(groups, 'loadGenerator')), 1);
  return { raw, counts, otherCoresBusy: cpu.coresBusy.outsideBench ?? null };
}

export interface ClosedRun extends StreamFigures {
  system: string;
  streams: number;
  prefix: WindowCounts;
  otherCoresBusy: number | null;
}

/** Closed-loop windows of every target at every stream count, in rounds taking turns (llm.ts). */
async function closedRounds(
  label: string,
  targets: LoadTarget[],
  streamCounts: number[],
  window: Omit<StreamWindow, 'concurrency'>,
  rounds: number,
  disturbed: string[],
): Promise<ClosedRun[]> {
  const runs: ClosedRun[] = [];
  for (const streams of streamCounts) {
    const raws = new Map<string, StreamRaw[]>();
    const counts = new Map<string, Counts>();
    const other = new Map<string, number | null>();
    for (let r = 0; r < rounds; r++)
      for (let k = 0; k < targets.length; k++) {
        const t = targets[(r + k) % targets.length]!;
        process.stderr.write(
          `llm-loads: ${label} ${streams} streams, round ${r + 1}/${rounds}, ${t.system}\n`,
        );
        const out = await measured(t, window.warmupMs, () =>
          runStreams(t.open, { ...window, concurrency: streams }),
        );
        raws.set(t.system, [...(raws.get(t.system) ?? []), out.raw]);
        const sum = counts.get(t.system);
        counts.set(t.system, sum ? combine(sum, out.counts, 1) : out.counts);
        const busiest = Math.max(other.get(t.system) ?? 0, out.otherCoresBusy ?? 0);
        other.set(t.system, out.otherCoresBusy === null ? null : busiest);
      }
    for (const t of targets) {
      const run: ClosedRun = {
        system: t.system,
        streams,
        ...streamFigures(raws.get(t.system)!),
        prefix: windowCounts(counts.get(t.system)!),
        otherCoresBusy: other.get(t.system) ?? null,
      };
      runs.push(run);
      noteDisturbance(disturbed, `${label} ${t.system} ${streams} streams`, {
        coresBusy: { machine: null, outsideBench: run.otherCoresBusy },
        cpuMsPerRequest: {},
      });
    }
  }
  return runs;
}

export interface PoissonRun {
  system: string;
  saturation: {
    requestsPerS: number;
    source: 'measured' | 'given';
    /** The closed-loop window it was measured in. */
    closed: (StreamFigures & { streams: number }) | null;
  };
  ratePerS: number;
  figures: StreamFigures & Pick<ArrivalRaw, 'arrived' | 'unfinished' | 'maxInFlight'>;
  /** 429 OVERLOADED answers, apart from the other errors. */
  overloaded: number;
  otherErrors: number;
  /** What the engine's admission limits allow a TTFT to reach; null for llama-server (no queue limit). */
  queueBound: { maxQueued: number; sequences: number; ttftMs: number } | null;
  otherCoresBusy: number | null;
}

const roundTo = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;

async function poissonRun(
  t: LoadTarget,
  params: LoadsParams,
  admission: { maxQueued: number; sequences: number } | null,
  disturbed: string[],
): Promise<PoissonRun> {
  const warmupMs = Number(params['warmup-s']) * 1000;
  const maxTokens = Number(params['max-tokens']);
  const satStreams = Number(params['saturation-streams']);
  let saturation: PoissonRun['saturation'];
  if (params['saturation-rps'] !== '') {
    saturation = { requestsPerS: Number(params['saturation-rps']), source: 'given', closed: null };
  } else {
    process.stderr.write(
      `llm-loads: poisson, ${t.system}: saturation at ${satStreams} closed-loop streams\n`,
    );
    const raw = await runStreams(t.open, {
      concurrency: satStreams,
      durationMs: Number(params['saturation-s']) * 1000,
      warmupMs,
    });
    const closed = { streams: satStreams, ...streamFigures([raw]) };
    // tokens rather than completed streams: a window holds few whole streams, and every one makes max_tokens
    saturation = {
      requestsPerS: roundTo(closed.outputTokensPerS / maxTokens, 3),
      source: 'measured',
      closed,
    };
  }
  const ratePerS = roundTo(saturation.requestsPerS * Number(params['rate-fraction']), 3);
  if (!(ratePerS > 0)) throw new Error(`${t.system}: saturation rate ${saturation.requestsPerS} requests/s`);
  process.stderr.write(`llm-loads: poisson, ${t.system}: ${ratePerS} requests/s\n`);
  const out = await measured(t, warmupMs, () =>
    runArrivals(t.open, {
      ratePerS,
      durationMs: Number(params['poisson-s']) * 1000,
      warmupMs,
      drainMs: Number(params['drain-s']) * 1000,
      seed: Number(params.seed),
    }),
  );
  const figures = {
    ...streamFigures([out.raw]),
    arrived: out.raw.arrived,
    unfinished: out.raw.unfinished,
    maxInFlight: out.raw.maxInFlight,
  };
  const overloaded = figures.errorKinds['HTTP 429'] ?? 0;
  const requestMs = (1000 * satStreams) / saturation.requestsPerS;
  noteDisturbance(disturbed, `poisson ${t.system}`, {
    coresBusy: { machine: null, outsideBench: out.otherCoresBusy },
    cpuMsPerRequest: {},
  });
  return {
    system: t.system,
    saturation,
    ratePerS,
    figures,
    overloaded,
    otherErrors: figures.errors - overloaded,
    queueBound:
      admission === null
        ? null
        : {
            ...admission,
            ttftMs: Math.round((Math.ceil(admission.maxQueued / admission.sequences) + 1) * requestMs),
          },
    otherCoresBusy: out.otherCoresBusy,
  };
}

export interface GraphRun {
  system: string;
  streams: number;
  outputTokensPerS: number;
  /** Over the timed window: decode steps (llama-server: its llama_decode calls), llama_decode calls, graph computes. */
  steps: number;
  decodes: number;
  graphComputes: number;
  decodesPerStep: number | null;
  graphComputesPerStep: number | null;
  /** Exact: both counted over the same span by perf (steps are read around it). */
  graphComputesPerDecode: number | null;
  outputTokensPerStep: number | null;
}

/** The uprobe events on a system's model process: llama_decode and the scheduler's graph compute. */
function probeModel(t: LoadTarget): { decode: string; graph: string } {
  const pid = t.modelPid;
  if (pid === undefined) throw new Error(`${t.system}: no model process to probe`);
  const library = (prefix: string): string => {
    const path = mappedLibrary(pid, prefix);
    if (path === undefined) throw new Error(`${t.system} (pid ${pid}) maps no ${prefix}* library`);
    return path;
  };
  const name = t.system.replaceAll(/[^A-Za-z0-9]/g, '_');
  return {
    decode: addProbe(library('libllama.'), 'llama_decode', `${name}_decode`),
    graph: addProbe(library('libggml-base'), 'ggml_backend_sched_graph_compute_async', `${name}_graph`),
  };
}

async function graphRun(
  t: LoadTarget,
  events: { decode: string; graph: string },
  streams: number,
  params: LoadsParams,
): Promise<GraphRun> {
  const warmupMs = Number(params['warmup-s']) * 1000;
  const durationMs = Number(params['graph-s']) * 1000;
  process.stderr.write(`llm-loads: graph ${streams} streams, ${t.system}\n`);
  const counting = (async () => {
    await sleep(warmupMs);
    const before = await t.steps?.();
    const counts = await countEvents(t.modelPid!, [events.decode, events.graph], durationMs);
    const after = await t.steps?.();
    return {
      counts,
      steps: before === undefined || after === undefined ? counts[events.decode]! : after - before,
    };
  })();
  counting.catch(() => {}); // awaited below, after the streams: no unhandled rejection meanwhile
  const figures = streamFigures([await runStreams(t.open, { concurrency: streams, warmupMs, durationMs })]);
  const { counts, steps } = await counting;
  const per = (v: number): number | null => (steps === 0 ? null : roundTo(v / steps, 3));
  return {
    system: t.system,
    streams,
    outputTokensPerS: figures.outputTokensPerS,
    steps,
    decodes: counts[events.decode]!,
    graphComputes: counts[events.graph]!,
    decodesPerStep: per(counts[events.decode]!),
    graphComputesPerStep: per(counts[events.graph]!),
    graphComputesPerDecode:
      counts[events.decode] === 0 ? null : roundTo(counts[events.graph]! / counts[events.decode]!, 3),
    outputTokensPerStep: per((figures.outputTokensPerS * durationMs) / 1000),
  };
}

// ---- the run --------------------------------------------------------------------------------------

export interface LoadsResult {
  params: LoadsParams;
  model: { name: string; shape: string; fileMB: number };
  /** Why a load or a system was not measured, by name. */
  notMeasured: Record<string, string>;
  llamaServerArgs: string[] | null;
  poisson: PoissonRun[];
  prefix: ClosedRun[];
  routing: ClosedRun[];
  graph: GraphRun[];
  /** Windows during which other work kept more than DISTURBED_CORES busy. */
  disturbed: string[];
}

async function run(params: LoadsParams): Promise<LoadsResult> {
  const loads = new Set(params.loads.split(',').map((s) => s.trim()));
  for (const l of loads)
    if (!(LOADS as readonly string[]).includes(l))
      throw new Error(`--loads: no load "${l}" (${LOADS.join(', ')})`);
  const options = MODELS[params.model];
  if (!options) throw new Error(`--model: no model "${params.model}" (${Object.keys(MODELS).join(', ')})`);
  const gguf = tinyGguf(options);
  const spec = (contextSize: string): Spec => ({
    path: gguf.path,
    threads: Number(params.threads),
    sequences: Number(params.sequences),
    contextSize: Number(contextSize),
    stepTokens: Number(params['step-tokens']),
    maxTokens: Number(params['max-tokens']),
    promptWords: Number(params['prompt-words']),
  });
  const notMeasured: Record<string, string> = {};
  for (const l of LOADS) if (!loads.has(l)) notMeasured[l] = 'not asked for (--loads)';
  const whyNoServer = llamaServerRefusal(params['llama-server']);
  if (whyNoServer !== undefined) notMeasured['llama-server'] = whyNoServer;
  const disturbed: string[] = [];
  let llamaServerArgs: string[] | null = null;
  const window = {
    durationMs: (Number(params['prefix-duration-s']) * 1000) / Math.max(1, Number(params.rounds)),
    warmupMs: Number(params['prefix-warmup-s']) * 1000,
  };
  const rounds = Math.max(1, Math.round(Number(params.rounds)));
  const result: LoadsResult = {
    params,
    model: {
      name: params.model,
      shape: `${options.layers ?? 2} layers × ${options.embeddingSize ?? 64} wide, ${(options.weights ?? 'f32').toUpperCase()}`,
      fileMB: Math.round(statSync(gguf.path).size / 1e5) / 10,
    },
    notMeasured,
    llamaServerArgs,
    poisson: [],
    prefix: [],
    routing: [],
    graph: [],
    disturbed,
  };

  if (loads.has('poisson')) {
    const w: Workload = {
      spec: spec(params['poisson-context-size']),
      prompt: (n) => promptOf(n, Number(params['prompt-words'])),
    };
    const maxQueued = Number(params['max-queued']);
    process.stderr.write('llm-loads: poisson, starting the systems\n');
    const engine = await engineTarget('engine', w, scratchDir(), { maxQueued });
    result.poisson.push(
      await poissonRun(engine, params, { maxQueued, sequences: w.spec.sequences }, disturbed),
    );
    if (whyNoServer === undefined) {
      const server = await startLlamaServer(params['llama-server'], w.spec);
      llamaServerArgs = server.args;
      result.poisson.push(
        await poissonRun(llamaServerTarget('llama-server', server, w), params, null, disturbed),
      );
    }
    await stopAll();
  }

  const shared: Workload = { spec: spec(params['prefix-context-size']), prompt: sharedPrefixPrompt(params) };
  const streamCounts = numberList(params['prefix-streams']);
  if (loads.has('prefix')) {
    process.stderr.write('llm-loads: prefix, starting the systems\n');
    const dir = scratchDir();
    const targets = [
      await engineTarget('engine', shared, dir),
      await engineTarget('engine-no-reuse', shared, dir, { prefixReuse: false }),
    ];
    if (whyNoServer === undefined) {
      const server = await startLlamaServer(params['llama-server'], shared.spec);
      llamaServerArgs ??= server.args;
      targets.push(
        llamaServerTarget('llama-server', server, shared, { cache_prompt: true }),
        llamaServerTarget('llama-server-no-cache', server, shared, { cache_prompt: false }),
      );
    }
    result.prefix = await closedRounds('prefix', targets, streamCounts, window, rounds, disturbed);
    await stopAll();
  }

  if (loads.has('routing')) {
    const workers = Number(params['routing-workers']);
    process.stderr.write(`llm-loads: routing, starting 2 engines of ${workers} workers\n`);
    const dir = scratchDir();
    const targets = [
      await engineTarget('prefix-aware', shared, dir, { workers, strategy: 'prefix-aware' }),
      await engineTarget('round-robin', shared, dir, { workers, strategy: 'round-robin' }),
    ];
    result.routing = await closedRounds('routing', targets, streamCounts, window, rounds, disturbed);
    await stopAll();
  }
  const whyNoPerf = loads.has('graph') ? perfRefusal() : undefined;
  if (whyNoPerf !== undefined) notMeasured.graph = whyNoPerf;
  else if (loads.has('graph')) {
    process.stderr.write('llm-loads: graph, starting the systems\n');
    const w: Workload = {
      spec: spec(params['poisson-context-size']),
      prompt: (n) => promptOf(n, Number(params['prompt-words'])),
    };
    const targets = [await engineTarget('engine', w, scratchDir())];
    if (whyNoServer === undefined)
      targets.push(
        llamaServerTarget('llama-server', await startLlamaServer(params['llama-server'], w.spec), w),
      );
    const probes = targets.map(probeModel);
    for (const streams of numberList(params['graph-streams']))
      for (const [i, t] of targets.entries())
        result.graph.push(await graphRun(t, probes[i]!, streams, params));
    await stopAll();
  }
  result.llamaServerArgs = llamaServerArgs;
  return result;
}

// ---- the page -------------------------------------------------------------------------------------

const pair = (a: number, b: number, digits = 1): string => `${cell(a, digits)} / ${cell(b, digits)}`;

const errorText = (kinds: Record<string, number>): string =>
  Object.entries(kinds)
    .map(([k, v]) => `${v} × ${k}`)
    .join(', ');

function poissonSection(result: LoadsResult): string[] {
  const p = result.params;
  if (result.poisson.length === 0) return [];
  const rows = result.poisson.map((r) => [
    `\`${r.system}\``,
    `${cell(r.saturation.requestsPerS, 2)} (${r.saturation.source})`,
    cell(r.ratePerS, 2),
    cell(r.figures.arrived),
    cell(r.figures.completed),
    cell(r.figures.unfinished),
    cell(r.figures.outputTokensPerS, 0),
    pair(r.figures.ttftMs.p50, r.figures.ttftMs.p99),
    r.queueBound === null
      ? 'none (unbounded queue)'
      : `${cell(r.queueBound.ttftMs, 0)} (${r.queueBound.maxQueued} queued, ${r.queueBound.sequences} seq)`,
    pair(r.figures.itlMs.p50, r.figures.itlMs.p99),
    cell(r.figures.tpotMs.p50, 2),
    cell(r.overloaded),
    cell(r.otherErrors),
    cell(r.figures.maxInFlight),
    cell(r.otherCoresBusy),
  ]);
  const errors = result.poisson
    .filter((r) => r.figures.errors > 0)
    .map((r) => `- \`${r.system}\`: ${errorText(r.figures.errorKinds)}`);
  return [
    `**Open-loop Poisson arrivals** at ${p['rate-fraction']} of each system's saturation rate (its request rate`,
    `at ${p['saturation-streams']} closed-loop streams, ${p['saturation-s']} s, unless given), ${p['poisson-s']} s timed after`,
    `a ${p['warmup-s']} s warm-up at the same rate; ~64-token prompts of their own, ${p['max-tokens']} output tokens.`,
    'Latencies are those of the requests that arrived in the window, each followed to its end.',
    '',
    ...table(
      [
        'system',
        'saturation req/s',
        'rate req/s',
        'arrived',
        'completed',
        'unfinished',
        'output tok/s',
        'TTFT p50 / p99 ms',
        'TTFT bound ms (admission limits)',
        'ITL p50 / p99 ms',
        'TPOT p50 ms',
        '429 OVERLOADED',
        'other errors',
        'most in flight',
        'other work, cores',
      ],
      rows,
    ),
    ...(errors.length > 0 ? ['Errors, by kind:', '', ...errors, ''] : []),
  ];
}

function closedTable(runs: ClosedRun[], firstColumn: string): string[] {
  return table(
    [
      'streams',
      firstColumn,
      'prompt tokens',
      'prefix hit rate',
      'output tok/s',
      'TTFT p50 / p99 ms',
      'ITL p50 / p99 ms',
      'TPOT p50 ms',
      'streams done',
      'errors',
      'other work, cores',
    ],
    runs.map((r) => [
      cell(r.streams),
      `\`${r.system}\``,
      cell(r.prefix.promptTokensMean),
      pct(r.prefix.hitRate),
      cell(r.outputTokensPerS, 0),
      pair(r.ttftMs.p50, r.ttftMs.p99),
      pair(r.itlMs.p50, r.itlMs.p99),
      r.completed === 0 ? '-' : cell(r.tpotMs.p50, 2),
      cell(r.completed),
      r.errors === 0 ? '0' : `${r.errors} (${errorText(r.errorKinds)})`,
      cell(r.otherCoresBusy),
    ]),
  );
}

/** TTFT p50 and tok/s of `without` over `with`, at each stream count. */
function reuseGains(runs: ClosedRun[], pairs: [string, string][]): string[] {
  const rows = pairs.flatMap(([on, off]) =>
    [...new Set(runs.map((r) => r.streams))].flatMap((streams) => {
      const a = runs.find((r) => r.system === on && r.streams === streams);
      const b = runs.find((r) => r.system === off && r.streams === streams);
      if (!a || !b) return [];
      return [
        [
          cell(streams),
          `\`${on}\` / \`${off}\``,
          cell(b.ttftMs.p50 / a.ttftMs.p50, 2),
          cell(b.ttftMs.p99 / a.ttftMs.p99, 2),
          cell(a.outputTokensPerS / b.outputTokensPerS, 2),
        ],
      ];
    }),
  );
  return rows.length === 0
    ? []
    : table(['streams', 'with / without reuse', 'TTFT p50 gain ×', 'TTFT p99 gain ×', 'tok/s ×'], rows);
}

function prefixSection(result: LoadsResult): string[] {
  const p = result.params;
  if (result.prefix.length === 0 && result.routing.length === 0) return [];
  const out = [
    `**Shared prefix**: ${p['system-prompts']} system prompts of ${p['system-words']} words (~512 tokens), each request one`,
    `of them (seeded random) and a ${p['suffix-words']}-word suffix of its own (~32 tokens), closed-loop streams,`,
    `${p['max-tokens']} output tokens, contexts of ${p['prefix-context-size']} tokens per sequence, ${p.sequences} sequences; ${p.rounds}`,
    `interleaved rounds, ${p['prefix-duration-s']} s timed per system, each round after a ${p['prefix-warmup-s']} s warm-up. Prefix hit rate: prompt`,
    'tokens served from a cache over prompt tokens, in the timed window.',
    '',
  ];
  if (result.prefix.length > 0)
    out.push(
      ...closedTable(result.prefix, 'system'),
      ...reuseGains(result.prefix, [
        ['engine', 'engine-no-reuse'],
        ['llama-server', 'llama-server-no-cache'],
      ]),
    );
  if (result.routing.length > 0) {
    out.push(
      `**Routing over ${p['routing-workers']} workers** (${p.sequences} sequences and ${p.threads} thread(s) each), the same`,
      'workload: the coordinator routes by `prefix-aware` against `round-robin`.',
      '',
      ...closedTable(result.routing, 'strategy'),
      ...table(
        ['streams', 'strategy', 'per worker: prompt tokens, hit rate'],
        result.routing.map((r) => [
          cell(r.streams),
          `\`${r.system}\``,
          Object.entries(r.prefix.byWorker)
            .map(([w, c]) => `${w}: ${cell(c.promptTokens)}, ${pct(c.hitRate)}`)
            .join('; '),
        ]),
      ),
    );
  }
  return out;
}

function graphSection(result: LoadsResult): string[] {
  if (result.graph.length === 0) return [];
  return [
    `**Graph computes per decode step** (perf uprobes on \`llama_decode\` and`,
    `\`ggml_backend_sched_graph_compute_async\` in the model process, ${result.params['graph-s']} s per point, ~64-token`,
    "prompts of their own): one step should be one llama_decode and one graph compute. llama-server's steps",
    'are its llama_decode calls. Steps are read from the worker around the perf span, so the per-step',
    'figures are within a few percent; graph computes per llama_decode are counted over one span.',
    '',
    ...table(
      [
        'streams',
        'system',
        'output tok/s',
        'steps',
        'llama_decode per step',
        'graph computes per step',
        'graph computes per llama_decode',
        'output tokens per step',
      ],
      result.graph.map((g) => [
        cell(g.streams),
        `\`${g.system}\``,
        cell(g.outputTokensPerS, 0),
        cell(g.steps),
        cell(g.decodesPerStep, 3),
        cell(g.graphComputesPerStep, 3),
        cell(g.graphComputesPerDecode, 3),
        cell(g.outputTokensPerStep, 2),
      ]),
    ),
  ];
}

function section(result: LoadsResult, _charts: Charts): string[] {
  const m = result.model;
  const out = [
    `Model \`${m.name}\`: ${m.shape}, ${m.fileMB} MB; ${result.params.threads} thread(s). Systems: \`engine\` is`,
    "coordinator + worker over OpenAI `/v1/completions` streaming; `llama-server` is llama.cpp's server",
    "from node-llama-cpp's bundled source with `--parallel` = sequences.",
    '',
    ...poissonSection(result),
    ...prefixSection(result),
    ...graphSection(result),
  ];
  const args = result.llamaServerArgs;
  if (args)
    out.push(
      `llama-server ran as \`llama-server ${args.map((a, i) => (args[i - 1] === '-m' ? '<model>.gguf' : a)).join(' ')}\` (-c per load).`,
      '',
    );
  for (const [what, why] of Object.entries(result.notMeasured))
    out.push(`\`${what}\` not measured: ${why}.`, '');
  if (result.disturbed.length > 0)
    out.push(`Other work on the machine during: ${result.disturbed.join(', ')}.`, '');
  return out;
}

// ---- the targets ----------------------------------------------------------------------------------

function targets(result: LoadsResult | undefined): TargetResult[] {
  const fraction = result?.params['rate-fraction'] ?? PARAMS['rate-fraction'];
  const poisson: TargetResult = {
    id: 'llm-loads-poisson-engine',
    scenario: 'llm-loads',
    goal: `llm poisson: the engine at ${fraction} × its saturation rate has no errors and TTFT p99 within its admission limits' bound`,
    status: 'not measured',
    measured: result?.notMeasured.poisson ?? NOT_MEASURED,
  };
  const e = result?.poisson.find((r) => r.system === 'engine');
  if (e?.queueBound) {
    const ok =
      e.figures.errors === 0 && e.figures.unfinished === 0 && e.figures.ttftMs.p99 <= e.queueBound.ttftMs;
    poisson.status = ok ? 'met' : 'not met';
    poisson.measured = `${e.figures.errors} errors (${e.overloaded} × 429), ${e.figures.unfinished} unfinished, TTFT p99 ${cell(e.figures.ttftMs.p99, 0)} ms`;
    poisson.bound = `${cell(e.queueBound.ttftMs, 0)} ms: (ceil(${e.queueBound.maxQueued} / ${e.queueBound.sequences}) + 1) × one request's time at saturation`;
  }
  const reuse: TargetResult = {
    id: 'llm-loads-prefix-reuse',
    scenario: 'llm-loads',
    goal: 'llm shared prefix: the engine TTFT p50 with prefix reuse ≥ 2× better than without',
    status: 'not measured',
    measured: result?.notMeasured.prefix ?? NOT_MEASURED,
  };
  const streams = result?.prefix.map((r) => r.streams) ?? [];
  const at = Math.max(...streams);
  const on = result?.prefix.find((r) => r.system === 'engine' && r.streams === at);
  const off = result?.prefix.find((r) => r.system === 'engine-no-reuse' && r.streams === at);
  if (on && off) {
    const gain = off.ttftMs.p50 / on.ttftMs.p50;
    reuse.status = gain >= 2 ? 'met' : 'not met';
    reuse.measured = `${cell(gain, 2)}× at ${at} streams (TTFT p50 ${cell(on.ttftMs.p50, 1)} against ${cell(off.ttftMs.p50, 1)} ms, hit rate ${pct(on.prefix.hitRate)})`;
  }
  return [poisson, reuse];
}

export const llmLoads: Scenario<LoadsResult, LoadsParams> = {
  name: 'llm-loads',
  title: 'LLM loads: open-loop Poisson arrivals, a shared prefix, prefix-aware routing',
  params: PARAMS,
  quick: {
    model: 'tiny',
    'max-tokens': '16',
    'warmup-s': '0.5',
    'saturation-s': '1',
    'poisson-s': '2',
    'drain-s': '5',
    'prefix-duration-s': '1',
    'prefix-warmup-s': '1',
    rounds: '1',
    sequences: '4',
    'prefix-streams': '4',
    'graph-streams': '4',
    'graph-s': '1',
    'saturation-streams': '4',
    'max-queued': '16',
  },
  run,
  section,
  targets,
};

await runIfMain(import.meta.url, llmLoads);
