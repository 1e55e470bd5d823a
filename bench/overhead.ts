/**
 * The engine's own cost. With the `sim` backend at 0 ms (no model compute at all), a KServe v2
 * infer request goes HTTP -> coordinator -> RPC -> worker -> RPC -> coordinator -> HTTP. In
 * the same run, the same request and response go through a bare fastify route (the floor for
 * any HTTP service here) and the backend is called in-process (the floor for the model call).
 *
 *   npm run bench:overhead -- --duration-s 5 --concurrency 1,64
 *
 * The timed load at each concurrency is split into --rounds rounds that take turns (bare,
 * engine, traced engine, then again), each target's rounds pooled into one result: on a shared VM
 * whose speed drifts by tens of percent within minutes, a drift reaches every target alike
 * instead of whichever ran during it.
 *
 * Every server runs in its own process; the load comes from this one. All of them share the
 * machine's cores, as they would on a laptop. Around each timed run the CPU time of every
 * serving process (from /proc) and of this one (the load) is read: `cpuUsPerRequest` says what
 * a request costs each of them, which is what bounds throughput when the cores are shared.
 * Last, `processRoundTrip`: 256 bytes sent to a bare TCP echo process and back, one at a time —
 * the floor for the one hop (coordinator -> worker) the engine adds to the bare route.
 *
 * Tracing: a second coordinator and worker run with OpenTelemetry on (--sample-ratio of the
 * requests recorded, default 1: all; OTLP/HTTP JSON to a receiver in this process that counts and
 * drops the spans), measured in the same loop as the engine with tracing off; each prints a JSON
 * line of its own.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSimBackend } from '../src/backends/index.ts';
import { configSchema } from '../src/config/index.ts';
import { type Spawned, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import { type LoadResult, pingPong, poolRuns, runLoad, summarize } from './lib/load.ts';
import { cpuMark, cpuSpent } from './lib/cpu.ts';
import { benchParams, numberList } from './lib/params.ts';
import { report } from './lib/results.ts';

const params = benchParams({
  'duration-s': '5',
  concurrency: '1,64',
  elements: '16',
  'warmup-s': '1',
  /** Share of requests the traced engine records (tracing.sampleRatio). */
  'sample-ratio': '1',
  /**
   * The timed load is split into this many rounds that take turns (bare, engine, traced, then
   * again): a drift in the machine's speed (a shared VM's neighbours) reaches all of them alike.
   */
  rounds: '3',
});
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const elements = Number(params.elements);
const rounds = Math.max(1, Math.round(Number(params.rounds)));

const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-'));
const configFile = join(dir, 'config.yaml');
writeFileSync(
  configFile,
  `coordinator: { port: 0, rpcPort: 0 }
logging: { level: warn }
models:
  - name: echo
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, ${elements}] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, ${elements}] }]
`,
);

const children: Spawned[] = [];
const cleanup = (stop: () => Promise<unknown>): void => {
  children.push({ stop } as Spawned);
};

/**
 * A no-op OTLP/HTTP receiver: drops each export unread but for counting its spans (one
 * "startTimeUnixNano" each, searched chunk by chunk: cheap, a marker split across two chunks is
 * missed), and answers 200. It shares this process with the load, so it is kept this light.
 */
async function startNoopReceiver() {
  const received = { exports: 0, spans: 0, bytes: 0 };
  const marker = Buffer.from('"startTimeUnixNano"');
  const server = createServer((req, res) => {
    req.on('data', (chunk: Buffer) => {
      received.bytes += chunk.length;
      for (let at = chunk.indexOf(marker); at >= 0; at = chunk.indexOf(marker, at + 1)) received.spans++;
    });
    req.on('end', () => {
      received.exports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, received, close: () => server.close() };
}

async function directBackend(
  ms: number,
): Promise<{ callsPerS: number; latencyMs: ReturnType<typeof summarize> }> {
  const model = await createSimBackend().load(
    configSchema.parse({
      models: [
        {
          name: 'echo',
          backend: 'sim',
          inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [-1, elements] }],
          outputs: [{ name: 'OUTPUT0', datatype: 'FP32', shape: [-1, elements] }],
        },
      ],
    }).models[0]!,
    { warn: () => {} },
  );
  const input = {
    name: 'INPUT0',
    datatype: 'FP32' as const,
    shape: [1, elements],
    data: new Uint8Array(4 * elements),
  };
  const signal = new AbortController().signal;
  const samples: number[] = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const t0 = performance.now();
    await model.infer([input], { signal, parameters: {} });
    samples.push(performance.now() - t0);
  }
  return { callsPerS: Math.round(samples.length / (ms / 1000)), latencyMs: summarize(samples) };
}

const receiver = await startNoopReceiver();

interface Target {
  url: string;
  /** The processes serving it, whose CPU time is read around each run. */
  pids: Record<string, number | undefined>;
}

/** A coordinator and a worker; `env` switches tracing on. Resolves once echo is ready. */
async function startEngine(env?: NodeJS.ProcessEnv): Promise<Target> {
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], {
    cleanup,
    ...(env ? { env } : {}),
  });
  const worker = await spawnProcess(
    ['worker', '--config', configFile, '--coordinator', `127.0.0.1:${coordinator.ready.rpcPort}`],
    { cleanup, ...(env ? { env } : {}) },
  );
  const url = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  await waitFor('the echo model to be ready', async () => (await fetch(`${url}/v2/models/echo/ready`)).ok);
  return { url, pids: { coordinator: coordinator.child.pid, worker: worker.child.pid } };
}

/** CPU microseconds per request each serving process and this one (the load) spent. */
type CpuPerRequest = Record<string, number | null>;

interface Measured {
  load: LoadResult;
  /** CPU seconds each process spent during the load (undefined when unreadable). */
  cpuS: Record<string, number | undefined>;
}

/** Runs `load` and reads the CPU time every process spent meanwhile. */
async function withCpu(target: Target, load: () => Promise<LoadResult>): Promise<Measured> {
  const groups = Object.fromEntries(Object.entries(target.pids).map(([k, pid]) => [k, [pid]]));
  const before = cpuMark(groups);
  const own = process.cpuUsage();
  const result = await load();
  const ownSpent = process.cpuUsage(own);
  const cpuS = cpuSpent(before, cpuMark(groups));
  cpuS.loadGenerator = (ownSpent.user + ownSpent.system) / 1e6;
  return { load: result, cpuS };
}

/** The rounds of one target as one result, with CPU per request over all of them. */
function pool(measured: readonly Measured[]): LoadResult & { cpuUsPerRequest: CpuPerRequest } {
  const load = poolRuns(measured.map((m) => m.load));
  const cpuUsPerRequest: CpuPerRequest = {};
  for (const k of Object.keys(measured[0]!.cpuS)) {
    const spent = measured.map((m) => m.cpuS[k]);
    cpuUsPerRequest[k] =
      spent.some((v) => v === undefined) || load.requests === 0
        ? null
        : Math.round((spent.reduce((a, b) => a! + b!, 0)! * 1e6) / load.requests);
  }
  return { ...load, cpuUsPerRequest };
}

try {
  const engine = await startEngine();
  const traced = await startEngine({
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
    OTEL_TRACES_SAMPLER_ARG: params['sample-ratio'],
    // export every 100 ms rather than every 5 s, so the traced rounds' exports (and the receiver's
    // work in this process) land in those rounds, not in the bare or engine rounds after them
    OTEL_BSP_SCHEDULE_DELAY: '100',
  });
  const bare = await spawnProcess([], {
    cleanup,
    script: fileURLToPath(new URL('./lib/bare-server.ts', import.meta.url)),
  });
  const bareUrl = `http://127.0.0.1:${bare.ready.httpPort}`;
  const bareTarget: Target = { url: bareUrl, pids: { server: bare.child.pid } };
  const engineUrl = engine.url;
  const echo = await spawnProcess([], {
    cleanup,
    script: fileURLToPath(new URL('./lib/echo-server.ts', import.meta.url)),
  });

  const body = Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: 'INPUT0',
          datatype: 'FP32',
          shape: [1, elements],
          data: Array.from({ length: elements }, (_, i) => i / 8),
        },
      ],
    }),
  );
  const engineResponse = await (
    await fetch(`${engineUrl}/v2/models/echo/infer`, { method: 'POST', body })
  ).text();
  const bareResponse = await (
    await fetch(`${bareUrl}/v2/models/echo/infer`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
    })
  ).text();
  if (engineResponse !== bareResponse)
    throw new Error(`the baseline must answer the same JSON:\n${engineResponse}\n${bareResponse}`);

  const runs = [];
  const tracingRuns: { concurrency: number; off: LoadResult; on: LoadResult }[] = [];
  for (const concurrency of numberList(params.concurrency)) {
    const targets = [bareTarget, engine, traced];
    const urlOf = (target: Target): string => `${target.url}/v2/models/echo/infer`;
    for (const target of targets)
      await runLoad({ url: urlOf(target), body, concurrency, durationMs: warmupMs });
    const measured: Measured[][] = targets.map(() => []);
    for (let round = 0; round < rounds; round++) {
      for (const [i, target] of targets.entries()) {
        const load = () =>
          runLoad({
            url: urlOf(target),
            body,
            concurrency,
            durationMs: durationMs / rounds,
            keepSamples: true,
          });
        measured[i]!.push(await withCpu(target, load));
      }
    }
    const [bareResult, engineResult, tracedResult] = measured.map(pool) as [
      ReturnType<typeof pool>,
      ReturnType<typeof pool>,
      ReturnType<typeof pool>,
    ];
    tracingRuns.push({ concurrency, off: engineResult, on: tracedResult });
    runs.push({
      concurrency,
      engine: engineResult,
      bareFastify: bareResult,
      ratio: {
        throughput: Math.round((engineResult.rps / bareResult.rps) * 1000) / 1000,
        p50: Math.round((engineResult.latencyMs.p50 / bareResult.latencyMs.p50) * 100) / 100,
        p99: Math.round((engineResult.latencyMs.p99 / bareResult.latencyMs.p99) * 100) / 100,
      },
      engineAddedP50Ms: Math.round((engineResult.latencyMs.p50 - bareResult.latencyMs.p50) * 1000) / 1000,
    });
  }
  const backend = await directBackend(Math.min(durationMs, 2000));
  const hop = await pingPong(echo.ready.httpPort!, Math.min(durationMs, 3000));
  report('overhead', {
    params: { ...params, tensor: `FP32 [1,${elements}]` },
    runs,
    backendInProcess: backend,
    // the floor for the engine's extra hop: 256 bytes to another process and back on a socket
    processRoundTrip: hop,
  });
  const tracingParams = { ...params, tensor: `FP32 [1,${elements}]` };
  report('overhead-tracing-off', {
    params: tracingParams,
    runs: tracingRuns.map(({ concurrency, off }) => ({ concurrency, engine: off })),
  });
  report('overhead-tracing-on', {
    params: { ...tracingParams, exporter: 'otlp http/json to a no-op receiver in the bench process' },
    runs: tracingRuns.map(({ concurrency, off, on }) => ({
      concurrency,
      engine: on,
      vsOff: {
        throughput: Math.round((on.rps / off.rps) * 1000) / 1000,
        addedP50Ms: Math.round((on.latencyMs.p50 - off.latencyMs.p50) * 1000) / 1000,
        addedP99Ms: Math.round((on.latencyMs.p99 - off.latencyMs.p99) * 1000) / 1000,
      },
    })),
    // received while measuring (spans still buffered in the processes are not counted)
    receiver: receiver.received,
  });
} finally {
  await Promise.all(children.map((c) => c.stop()));
  receiver.close();
  rmSync(dir, { recursive: true, force: true });
}
