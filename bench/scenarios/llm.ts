/**
 * LLM serving (issues 15 and 21): output tokens per second, time to first token (TTFT) and
 * inter-token latency (ITL) of token streams, through the engine and through its baselines, with
 * the same GGUF, the same threads and the same sequence count, in the same run:
 *
 *   engine        coordinator + 1 worker process, OpenAI /v1/completions, stream: true,
 *                 ignore_eos, fixed max_tokens: the engine as deployed
 *   lockstep      the llama backend's stream() called in a plain child process: the same step
 *                 loop (one llama_decode per step) with no RPC and no HTTP — the floor for what
 *                 the engine adds
 *   evaluate      node-llama-cpp's own pattern in a plain child process: one sequence.evaluate()
 *                 generator per stream on one context with N sequences
 *   llama-server  llama.cpp's server built from the source node-llama-cpp ships, --parallel N
 *                 (only with --llama-server <binary>)
 *   engine-t2     the engine with 2 threads (issue 21 item 3), at 1 and 16 streams
 *   engine-seq1   the engine with 1 sequence at 16 streams: run to completion, one request at a
 *                 time, against continuous batching
 *
 *   npm run bench:llm -- --models tiny,mid --concurrency 1,4,16 --llama-server .tmp/llama-server/bin/llama-server
 *
 * Each request has its own ~64-token prompt (a counter first, then words), so no request finds
 * a prefix of another in any system's cache; sampling is greedy (temperature 0) and EOS is
 * banned, so every request generates exactly max_tokens in every system. The models are built
 * at bench time (tests/fixtures/tiny-gguf.ts), random weights in the llama layout.
 *
 * Trade-offs: every system is up at once (idle ones cost nothing) and their windows take turns
 * in rounds (a, b, c, then b, c, a), so a drift in the machine's speed reaches them alike. The
 * streams of the engine and of llama-server are read by an SSE client in this process, which
 * shares the 2 cores with them; the direct systems' streams are timed inside their own process.
 * That client's CPU is part of what the engine is charged with here, as a real client's would
 * be on the same machine. A chunk is one token except where a detokenizer holds back part of a
 * character (counted: `multiTokenChunks`), so ITL is between chunks; `evaluate` yields tokens
 * and detokenizes nothing.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { statSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { createLlamaBackend, vocabularySizeOf } from '../../src/backends/index.ts';
import type { LoadedModel } from '../../src/backends/types.ts';
import { configSchema } from '../../src/config/index.ts';
import { LLM_INPUT, LLM_RESULT_PARAMETERS } from '../../src/llm/index.ts';
import { encodeBytesElements } from '../../src/tensor/index.ts';
import { waitFor } from '../../tests/fixtures/processes.ts';
import { type TinyGgufOptions, tinyGguf } from '../../tests/fixtures/tiny-gguf.ts';
import { addSpent, type CpuSpent, cpuFigures, cpuMark, cpuSpent, DISTURBED_CORES } from '../lib/cpu.ts';
import { ask, startEngine } from '../lib/engine.ts';
import { type Charts, cell, table } from '../lib/markdown.ts';
import { type Child, forkRole, scratchDir, stopAll, track } from '../lib/processes.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import {
  type OpenStream,
  runStreams,
  type StreamFigures,
  type StreamRaw,
  type StreamWindow,
  sseStream,
  streamFigures,
} from '../lib/stream-load.ts';

const PARAMS = {
  /** Models built at bench time, by name (MODELS). */
  models: 'tiny,mid',
  concurrency: '1,4,16',
  /** Timed window of each system at each concurrency, split into the rounds, s. */
  'duration-s': '8',
  /** Before each window, loops starting staggered across it, s. */
  'warmup-s': '3',
  rounds: '2',
  'max-tokens': '64',
  /** Words of each prompt after its counter (48 are about 64 tokens with the llama vocabulary). */
  'prompt-words': '48',
  sequences: '16',
  threads: '1',
  /** Tokens one sequence holds. */
  'context-size': '512',
  /** Tokens one step (one llama_decode) holds: the step loop's stepTokens, llama-server's -b. */
  'step-tokens': '512',
  /** A llama-server binary to measure too; empty: not measured. */
  'llama-server': '',
  /** The engine's extra set-ups: `threads` (engine-t2 at 1 and 16 streams), `run-to-completion` (engine-seq1 at 16). */
  extras: 'threads,run-to-completion',
};
type LlmParams = typeof PARAMS;

/** The models, built by tests/fixtures/tiny-gguf.ts (llama-spm vocabulary, 32,000 tokens). */
export const MODELS: Record<string, TinyGgufOptions> = {
  /** The test model: 2 layers × 64 wide, F32, 17.6 MB. */
  tiny: {},
  /** About 50 MB, the size issue 21 measured first: 8 layers × 256 wide, F16. */
  mid: { layers: 8, embeddingSize: 256, weights: 'f16' },
  /** Bigger than the CPU's last-level cache: 12 layers × 1024 wide, F16, about 530 MB. */
  large: { layers: 12, embeddingSize: 1024, heads: 8, weights: 'f16' },
};

export const SYSTEMS = [
  'engine',
  'lockstep',
  'evaluate',
  'llama-server',
  'engine-t2',
  'engine-seq1',
] as const;
export type System = (typeof SYSTEMS)[number];

const DESCRIPTION: Record<System, string> = {
  engine: 'coordinator + 1 worker, OpenAI /v1/completions streaming (SSE)',
  lockstep: "the llama backend's stream() in a plain process: the same step loop, no RPC, no HTTP",
  evaluate: "node-llama-cpp's sequence.evaluate() per stream, one context, N sequences, plain process",
  'llama-server': "llama.cpp's server from node-llama-cpp's bundled source, --parallel N",
  'engine-t2': 'the engine with 2 threads',
  'engine-seq1': 'the engine with 1 sequence: run to completion, one request at a time',
};

/** The concurrencies a system is measured at (the extras only where their comparison is). */
function appliesAt(system: System, concurrency: number): boolean {
  if (system === 'engine-t2') return concurrency === 1 || concurrency === 16;
  if (system === 'engine-seq1') return concurrency === 16;
  return true;
}

type LlmRun = StreamFigures & {
  /** Cores the system's processes kept busy (the SSE client in this process counted for HTTP systems). */
  coresBusy: number | null;
  /** Cores the rest of the machine kept busy meanwhile. */
  otherCoresBusy: number | null;
};

export interface LlmPoint {
  concurrency: number;
  runs: Partial<Record<System, LlmRun>>;
}

export interface LlmModelResult {
  model: string;
  shape: string;
  fileMB: number;
  /** Prompt tokens of a request (from the lockstep system's accounting). */
  promptTokens: number | null;
  points: LlmPoint[];
}

export interface LlmResult {
  params: LlmParams;
  notMeasured: Partial<Record<System, string>>;
  llamaServerArgs: string[] | null;
  models: LlmModelResult[];
  /** Systems at a point during which other work kept more than DISTURBED_CORES busy. */
  disturbed: string[];
}

/** What every system is given: one model, its threads and sequences, the request shape. */
export interface Spec {
  path: string;
  threads: number;
  sequences: number;
  contextSize: number;
  stepTokens: number;
  maxTokens: number;
  promptWords: number;
}

const WORDS = (
  'the quick brown fox jumps over a lazy dog while seven small birds sing about rivers mountains ' +
  'and distant cities where people walk slowly through narrow streets under bright yellow lamps ' +
  'reading old books writing letters drinking tea and talking about weather music history science'
).split(' ');

/** Request n's prompt: its counter first, so no two requests share more than the BOS token. */
export function promptOf(n: number, words: number): string {
  const out = [`${n}:`];
  for (let i = 0; i < words; i++) out.push(WORDS[(n * 7 + i * 13) % WORDS.length]!);
  return out.join(' ');
}

/** The body of an OpenAI streaming completion, the same for the engine and llama-server. */
export const completionBody = (spec: Spec) => (n: number) => ({
  model: 'llm',
  prompt: promptOf(n, spec.promptWords),
  max_tokens: spec.maxTokens,
  temperature: 0,
  ignore_eos: true,
  stream: true,
  stream_options: { include_usage: true },
});

/** The model's entry in a config, the same for the engine's worker and the lockstep child. */
export const modelEntry = (spec: Spec) => ({
  name: 'llm',
  backend: 'llama',
  path: spec.path,
  // maxQueued: the run-to-completion set-up queues every stream but one
  llama: {
    threads: spec.threads,
    sequences: spec.sequences,
    contextSize: spec.contextSize,
    stepTokens: spec.stepTokens,
    maxQueued: 256,
  },
});

// ---- the direct systems, each in a child process ---------------------------------------------------

type ChildMessage = { type: 'load'; spec: Spec } | { type: 'run'; window: StreamWindow };

/** The lockstep floor: the llama backend loaded as the worker loads it, its stream() called directly. */
async function openLockstep(spec: Spec): Promise<{ open: OpenStream; promptTokens: () => number | null }> {
  const config = configSchema.parse({ models: [modelEntry(spec)] }).models[0]!;
  const model: LoadedModel = await createLlamaBackend().load(config, { warn: (m) => console.error(m) });
  let promptTokens: number | null = null;
  const open: OpenStream = async (n, signal, chunk) => {
    const text = Buffer.from(promptOf(n, spec.promptWords), 'utf8');
    const result = await model.stream!(
      [{ name: LLM_INPUT, datatype: 'BYTES', shape: [1], data: encodeBytesElements([text]) }],
      {
        signal,
        parameters: { max_tokens: spec.maxTokens, temperature: 0, ignore_eos: true, stream: true },
        emit: async () => chunk(),
      },
    );
    promptTokens = Number(result.parameters?.[LLM_RESULT_PARAMETERS.promptTokens] ?? Number.NaN);
    return Number(result.parameters?.[LLM_RESULT_PARAMETERS.completionTokens]);
  };
  return { open, promptTokens: () => promptTokens };
}

/** node-llama-cpp's own pattern: a free sequence per stream, its evaluate() generator read to max_tokens. */
async function openEvaluate(spec: Spec): Promise<OpenStream> {
  const nlc = await import('node-llama-cpp');
  const llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: nlc.LlamaLogLevel.warn });
  const model = await llama.loadModel({ modelPath: spec.path, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: spec.contextSize,
    sequences: spec.sequences,
    threads: spec.threads,
    batchSize: spec.stepTokens,
  });
  const free = Array.from({ length: spec.sequences }, () => context.getSequence());
  // EOS banned as the engine bans it for ignore_eos: every stream makes max_tokens tokens
  const banEog = new nlc.TokenBias(model.tokenizer);
  for (let t = 0; t < vocabularySizeOf(model); t++)
    if (model.isEogToken(t as never)) banEog.set(t as never, 'never');
  return async (n, signal, chunk) => {
    const sequence = free.pop();
    if (!sequence) throw new Error('no free sequence: more streams than sequences');
    try {
      await sequence.clearHistory();
      const tokens = model.tokenize(promptOf(n, spec.promptWords), true);
      const bos = model.tokens.bos;
      if (model.tokens.shouldPrependBosToken && bos !== null && tokens[0] !== bos) tokens.unshift(bos);
      let made = 0;
      for await (const _token of sequence.evaluate(tokens, { temperature: 0, tokenBias: banEog })) {
        chunk();
        if (++made >= spec.maxTokens || signal.aborted) break;
      }
      return made;
    } finally {
      free.push(sequence);
    }
  };
}

/** A direct system's child: loads on `load`, answers each `run` with its window's samples. */
function directRole(kind: 'lockstep' | 'evaluate'): () => Promise<void> {
  return async () => {
    let open: OpenStream | undefined;
    let promptTokens: () => number | null = () => null;
    const send = (m: unknown): void => void process.send!(m as object);
    process.on('message', (m: ChildMessage) => {
      const handle = async (): Promise<void> => {
        if (m.type === 'load') {
          if (kind === 'lockstep') ({ open, promptTokens } = await openLockstep(m.spec));
          else open = await openEvaluate(m.spec);
          send({ type: 'loaded' });
        } else {
          const raw = await runStreams(open!, m.window);
          send({ type: 'result', raw, promptTokens: promptTokens() });
        }
      };
      handle().catch((err: unknown) => send({ type: 'error', message: (err as Error).stack ?? String(err) }));
    });
    send({ type: 'ready' });
  };
}

// ---- the systems as the run sees them -------------------------------------------------------------

interface Target {
  system: System;
  pids: Record<string, number | undefined>;
  /** One window; the samples and, for the lockstep child, the prompt's tokens. */
  run(window: StreamWindow): Promise<{ raw: StreamRaw; promptTokens?: number | null }>;
}

async function directTarget(system: 'lockstep' | 'evaluate', spec: Spec): Promise<Target> {
  const child: Child = await forkRole(import.meta.url, system, 30_000);
  await child.ask({ type: 'load', spec }, (r) => (r.type === 'loaded' ? true : undefined));
  return {
    system,
    pids: { [system]: child.pid },
    run: (window) =>
      child.ask({ type: 'run', window }, (r) =>
        r.type === 'result' ? (r as unknown as { raw: StreamRaw; promptTokens: number | null }) : undefined,
      ),
  };
}

function httpTarget(
  system: System,
  url: string,
  spec: Spec,
  pids: Record<string, number | undefined>,
  keepAlive = true,
): Target {
  const agent = new Agent({ keepAlive, maxSockets: 256 });
  track(async () => agent.destroy());
  const open = sseStream(url, completionBody(spec), agent);
  return { system, pids, run: async (window) => ({ raw: await runStreams(open, window) }) };
}

/** The engine's config: one coordinator, the model from its directory, warnings only. */
export const engineConfig = (spec: Spec) => ({
  coordinator: { port: 0, rpcPort: 0 },
  logging: { level: 'warn' },
  repository: { roots: [dirname(spec.path)] },
  models: [modelEntry(spec)],
});

async function engineTarget(system: System, spec: Spec, dir: string): Promise<Target> {
  const file = join(dir, `${system}.yaml`);
  writeFileSync(file, stringify(engineConfig(spec)));
  const engine = await startEngine(file, { model: 'llm' });
  return httpTarget(system, `${engine.url}/v1/completions`, spec, engine.pids);
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

/**
 * llama.cpp's server with the same model, threads, sequences and batch size, tracked (stopAll
 * stops it); resolves with its base URL once /health answers 200.
 */
export async function startLlamaServer(
  binary: string,
  spec: Spec,
): Promise<{ url: string; pid: number | undefined; args: string[] }> {
  const port = await freePort();
  const args = [
    '-m',
    spec.path,
    '--host',
    '127.0.0.1',
    '--port',
    String(port),
    '-t',
    String(spec.threads),
    '-tb',
    String(spec.threads),
    '--parallel',
    String(spec.sequences),
    // llama-server's -c is the whole context, shared by its slots
    '-c',
    String(spec.contextSize * spec.sequences),
    '-b',
    String(spec.stepTokens),
    '--no-webui',
  ];
  const child: ChildProcess = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  track(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('llama-server to be ready', async () => {
    if (child.exitCode !== null) throw new Error(`llama-server exited ${child.exitCode}:\n${log}`);
    const answer = await ask(`${url}/health`).catch((err: Error) => ({ status: 0, text: err.message }));
    if (answer.status !== 200) throw new Error(`${answer.status} ${answer.text}`);
    return true;
  });
  return { url, pid: child.pid, args };
}

async function llamaServerTarget(binary: string, spec: Spec): Promise<{ target: Target; args: string[] }> {
  const { url, pid, args } = await startLlamaServer(binary, spec);
  // a connection per stream: reused ones were reset by the server between streams (ECONNRESET on
  // about every other request); a loopback connect is far below a stream's TTFT
  return { target: httpTarget('llama-server', `${url}/v1/completions`, spec, { server: pid }, false), args };
}

// ---- the run --------------------------------------------------------------------------------------

/** Why llama-server is not measured, or undefined when it is. */
export function llamaServerRefusal(binary: string): string | undefined {
  if (binary === '')
    return 'no --llama-server binary given (build it from node_modules/node-llama-cpp/llama/gitRelease.bundle, docs/llm-backend.md)';
  try {
    statSync(binary);
    return undefined;
  } catch {
    return `--llama-server ${binary}: no such file`;
  }
}

async function run(params: LlmParams): Promise<LlmResult> {
  const window = {
    durationMs: (Number(params['duration-s']) * 1000) / Math.max(1, Number(params.rounds)),
    warmupMs: Number(params['warmup-s']) * 1000,
  };
  const rounds = Math.max(1, Math.round(Number(params.rounds)));
  const extras = new Set(params.extras.split(',').map((s) => s.trim()));
  const notMeasured: LlmResult['notMeasured'] = {};
  const whyNoServer = llamaServerRefusal(params['llama-server']);
  if (whyNoServer !== undefined) notMeasured['llama-server'] = whyNoServer;
  if (!extras.has('threads')) notMeasured['engine-t2'] = 'not asked for (--extras)';
  if (!extras.has('run-to-completion')) notMeasured['engine-seq1'] = 'not asked for (--extras)';
  let llamaServerArgs: string[] | null = null;
  const models: LlmModelResult[] = [];
  const disturbed: string[] = [];

  for (const name of params.models.split(',').map((s) => s.trim())) {
    const options = MODELS[name];
    if (!options) throw new Error(`--models: no model "${name}" (${Object.keys(MODELS).join(', ')})`);
    const gguf = tinyGguf(options);
    const spec: Spec = {
      path: gguf.path,
      threads: Number(params.threads),
      sequences: Number(params.sequences),
      contextSize: Number(params['context-size']),
      stepTokens: Number(params['step-tokens']),
      maxTokens: Number(params['max-tokens']),
      promptWords: Number(params['prompt-words']),
    };
    const dir = scratchDir();
    process.stderr.write(`llm: ${name} (${gguf.path}), starting the systems\n`);
    const targets: Target[] = [
      await engineTarget('engine', spec, dir),
      await directTarget('lockstep', spec),
      await directTarget('evaluate', spec),
    ];
    if (whyNoServer === undefined) {
      const server = await llamaServerTarget(params['llama-server'], spec);
      targets.push(server.target);
      llamaServerArgs = server.args;
    }
    if (extras.has('threads')) targets.push(await engineTarget('engine-t2', { ...spec, threads: 2 }, dir));
    if (extras.has('run-to-completion'))
      targets.push(await engineTarget('engine-seq1', { ...spec, sequences: 1 }, dir));

    let promptTokens: number | null = null;
    const points: LlmPoint[] = [];
    for (const concurrency of numberList(params.concurrency)) {
      const here = targets.filter((t) => appliesAt(t.system, concurrency));
      const raws = new Map<System, StreamRaw[]>();
      const spent = new Map<System, CpuSpent>();
      for (let r = 0; r < rounds; r++) {
        for (let k = 0; k < here.length; k++) {
          const t = here[(r + k) % here.length]!;
          process.stderr.write(`llm: ${name} c=${concurrency} round ${r + 1}/${rounds} ${t.system}\n`);
          const groups = Object.fromEntries(Object.entries(t.pids).map(([g, pid]) => [g, [pid]]));
          const before = cpuMark(groups, 'loadGenerator');
          const out = await t.run({ concurrency, ...window });
          const cpu = cpuSpent(before, cpuMark(groups, 'loadGenerator'));
          spent.set(t.system, addSpent(spent.get(t.system), cpu));
          raws.set(t.system, [...(raws.get(t.system) ?? []), out.raw]);
          if (out.promptTokens !== undefined && out.promptTokens !== null) promptTokens = out.promptTokens;
        }
      }
      const runs: LlmPoint['runs'] = {};
      for (const t of here) {
        const cpu = cpuFigures(spent.get(t.system)!, 1);
        const busy = Object.entries(cpu.coresBusy)
          .filter(([g]) => g !== 'machine' && g !== 'outsideBench')
          .map(([, v]) => v);
        // the direct systems time themselves: this process is idle meanwhile
        const coresBusy = busy.some((v) => v === null) ? null : busy.reduce((a, b) => a! + b!, 0);
        const otherCoresBusy = cpu.coresBusy.outsideBench ?? null;
        runs[t.system] = { ...streamFigures(raws.get(t.system)!), coresBusy, otherCoresBusy };
        if (otherCoresBusy !== null && otherCoresBusy > DISTURBED_CORES)
          disturbed.push(`${name} ${t.system} c=${concurrency} (${otherCoresBusy})`);
      }
      points.push({ concurrency, runs });
    }
    await stopAll();
    const o = { layers: 2, embeddingSize: 64, weights: 'f32', ...options };
    models.push({
      model: name,
      shape: `${o.layers} layers × ${o.embeddingSize} wide, ${o.weights.toUpperCase()}`,
      fileMB: Math.round(statSync(gguf.path).size / 1e5) / 10,
      promptTokens,
      points,
    });
  }
  return { params, notMeasured, llamaServerArgs, models, disturbed };
}

// ---- the page -------------------------------------------------------------------------------------

const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || b === undefined || b === 0 ? undefined : a / b;

const signed = (v: number | undefined, digits = 1): string =>
  v === undefined ? '-' : `${v > 0 ? '+' : ''}${cell(v, digits)}`;

const pair = (a: number, b: number): string => `${cell(a, 1)} / ${cell(b, 1)}`;

function modelTables(m: LlmModelResult): string[] {
  const rows = m.points.flatMap((p) =>
    SYSTEMS.filter((s) => p.runs[s]).map((s) => {
      const r = p.runs[s]!;
      const vs = ratio(r.outputTokensPerS, p.runs.lockstep?.outputTokensPerS);
      return [
        cell(p.concurrency),
        `\`${s}\``,
        cell(r.outputTokensPerS, 0),
        s === 'lockstep' ? '(floor)' : vs === undefined ? '-' : cell(vs, 2),
        pair(r.ttftMs.p50, r.ttftMs.p99),
        pair(r.itlMs.p50, r.itlMs.p99),
        cell(r.completed),
        cell(r.errors),
        cell(r.coresBusy),
        r.coresBusy === null || r.outputTokensPerS === 0
          ? '-'
          : cell((1e6 * r.coresBusy) / r.outputTokensPerS, 0),
        cell(r.otherCoresBusy),
      ];
    }),
  );
  const added = m.points
    .filter((p) => p.runs.engine && p.runs.lockstep)
    .map((p) => {
      const [e, d] = [p.runs.engine!, p.runs.lockstep!];
      const server = p.runs['llama-server'];
      return [
        cell(p.concurrency),
        cell(e.outputTokensPerS / d.outputTokensPerS, 2),
        signed(e.ttftMs.p50 - d.ttftMs.p50),
        signed(e.ttftMs.p99 - d.ttftMs.p99),
        signed(e.itlMs.p50 - d.itlMs.p50, 2),
        server ? cell(e.outputTokensPerS / server.outputTokensPerS, 2) : '-',
        server ? cell(e.ttftMs.p50 / server.ttftMs.p50, 2) : '-',
        server ? cell(e.itlMs.p99 / server.itlMs.p99, 2) : '-',
      ];
    });
  // the engine against one of its own variants at the concurrencies the variant runs at
  const against = (variant: System) =>
    m.points
      .filter((p) => p.runs.engine && p.runs[variant])
      .map((p) => {
        const [e, v] = [p.runs.engine!, p.runs[variant]!];
        return [
          cell(p.concurrency),
          `${cell(e.outputTokensPerS, 0)} / ${cell(v.outputTokensPerS, 0)}`,
          cell(v.outputTokensPerS / e.outputTokensPerS, 2),
          `${cell(e.ttftMs.p50, 1)} / ${cell(v.ttftMs.p50, 1)}`,
          `${cell(e.itlMs.p99, 1)} / ${cell(v.itlMs.p99, 1)}`,
        ];
      });
  const threads = against('engine-t2');
  const seq1 = against('engine-seq1');
  const variantTable = (name: string, rows: string[][]): string[] =>
    rows.length === 0
      ? []
      : table(
          [
            'streams',
            `output tok/s engine / ${name}`,
            `${name} / engine`,
            `TTFT p50 ms engine / ${name}`,
            `ITL p99 ms engine / ${name}`,
          ],
          rows,
        );
  return [
    `### \`${m.model}\`: ${m.shape}, ${m.fileMB} MB, ${m.promptTokens ?? '?'} prompt tokens`,
    '',
    ...table(
      [
        'streams',
        'system',
        'output tok/s',
        'vs lockstep',
        'TTFT p50 / p99 ms',
        'ITL p50 / p99 ms',
        'streams done',
        'errors',
        'cores busy',
        'CPU µs per token',
        'other work, cores',
      ],
      rows,
    ),
    ...table(
      [
        'streams',
        'engine / lockstep tok/s',
        'TTFT added p50 ms',
        'TTFT added p99 ms',
        'ITL added p50 ms',
        'engine / llama-server tok/s',
        'TTFT p50 engine / llama-server',
        'ITL p99 engine / llama-server',
      ],
      added,
    ),
    ...(threads.length > 0 ? ['Threads, 1 against 2 (`engine-t2`), the engine otherwise alike:', ''] : []),
    ...variantTable('2 threads', threads),
    ...(seq1.length > 0
      ? [
          'Continuous batching (16 sequences, arrivals join the running batch at the next step) against',
          'run to completion (`engine-seq1`: 1 sequence, each request runs alone while the rest queue):',
          '',
        ]
      : []),
    ...variantTable('1 sequence', seq1),
  ];
}

function section(result: LlmResult, _charts: Charts): string[] {
  const p = result.params;
  const out = [
    `Token streams through the engine and its baselines, same GGUF, ${p.threads} thread(s), ${p.sequences} sequences,`,
    `in one run: closed-loop streams, each request a ~64-token prompt of its own (no shared prefix), greedy,`,
    `EOS banned, exactly ${p['max-tokens']} output tokens; ${p.rounds} interleaved rounds, ${p['duration-s']} s timed per`,
    `system and concurrency after a ${p['warmup-s']} s warm-up in which the streams start staggered. Models built at`,
    'bench time, random weights, llama-spm vocabulary (32,000 tokens).',
    '',
    ...SYSTEMS.filter((s) => result.notMeasured[s] === undefined).map(
      (s) => `- \`${s}\`: ${DESCRIPTION[s]}.`,
    ),
    '',
    'TTFT is from sending the request to its first text chunk; ITL is the gap between chunks. "cores busy" is',
    "the system's processes (and, for the engine and llama-server, the SSE client in the bench process),",
    'and "CPU µs per token" what they spent per output token; "other work" is the rest of the machine meanwhile.',
    '',
    ...result.models.flatMap(modelTables),
  ];
  const serverArgs = result.llamaServerArgs;
  if (serverArgs) {
    const args = serverArgs.map((a, i) => (serverArgs[i - 1] === '-m' ? '<model>.gguf' : a));
    out.push(`llama-server ran as \`llama-server ${args.join(' ')}\`.`, '');
  }
  const errors = result.models.flatMap((m) =>
    m.points.flatMap((p) =>
      SYSTEMS.filter((s) => (p.runs[s]?.errors ?? 0) > 0).map(
        (s) =>
          `${m.model} \`${s}\` c=${p.concurrency}: ${Object.entries(p.runs[s]!.errorKinds)
            .map(([k, v]) => `${v} × ${k}`)
            .join(', ')}`,
      ),
    ),
  );
  if (errors.length > 0) out.push('Errors, by kind:', '', ...errors.map((e) => `- ${e}`), '');
  for (const s of SYSTEMS) {
    const why = result.notMeasured[s];
    if (why !== undefined) out.push(`\`${s}\` not measured: ${why}.`, '');
  }
  if (result.disturbed.length > 0)
    out.push(
      `Other work kept more than ${DISTURBED_CORES} cores busy during: ${result.disturbed.join(', ')}.`,
      '',
    );
  return out;
}

// ---- the targets ----------------------------------------------------------------------------------

function targets(result: LlmResult | undefined): TargetResult[] {
  const models = result?.models.map((m) => m.model) ?? PARAMS.models.split(',');
  return models.flatMap((name) => {
    const m = result?.models.find((x) => x.model === name);
    const at = (c: number) => m?.points.find((p) => p.concurrency === c);
    const floor: TargetResult = {
      id: `llm-${name}-engine-vs-lockstep`,
      scenario: 'llm',
      goal: `llm ${name}: engine output tok/s ≥ 0.9 × the lockstep floor at 1, 4 and 16 streams`,
      status: 'not measured',
      measured: NOT_MEASURED,
    };
    const ratios = [1, 4, 16].map((c) => {
      const p = at(c);
      return ratio(p?.runs.engine?.outputTokensPerS, p?.runs.lockstep?.outputTokensPerS);
    });
    if (ratios.every((r) => r !== undefined)) {
      floor.status = ratios.every((r) => r! >= 0.9) ? 'met' : 'not met';
      floor.measured = `${ratios.map((r) => cell(r, 2)).join(' / ')} at 1 / 4 / 16 streams`;
    }
    const server: TargetResult = {
      id: `llm-${name}-c16-vs-llama-server`,
      scenario: 'llm',
      goal: `llm ${name}, 16 streams: engine output tok/s ≥ llama-server's, TTFT p50 ≤ 1.1×, ITL p99 ≤ 1.5×`,
      status: 'not measured',
      measured: result?.notMeasured['llama-server'] ?? NOT_MEASURED,
    };
    const c16 = at(16);
    const [e, s] = [c16?.runs.engine, c16?.runs['llama-server']];
    if (e && s) {
      const tps = e.outputTokensPerS / s.outputTokensPerS;
      const ttft = e.ttftMs.p50 / s.ttftMs.p50;
      const itl = e.itlMs.p99 / s.itlMs.p99;
      server.status = tps >= 1 && ttft <= 1.1 && itl <= 1.5 ? 'met' : 'not met';
      server.measured = `tok/s ${cell(tps, 2)}×, TTFT p50 ${cell(ttft, 2)}×, ITL p99 ${cell(itl, 2)}× llama-server's`;
    }
    return [floor, server];
  });
}

export const llm: Scenario<LlmResult, LlmParams> = {
  name: 'llm',
  title: 'LLM: token streams through the engine, the lockstep floor, evaluate() and llama-server',
  params: PARAMS,
  quick: {
    models: 'tiny',
    concurrency: '1,4',
    'duration-s': '1',
    'warmup-s': '0.5',
    rounds: '1',
    'max-tokens': '16',
    extras: '',
  },
  run,
  section,
  targets,
  roles: { lockstep: directRole('lockstep'), evaluate: directRole('evaluate') },
};

await runIfMain(import.meta.url, llm);
