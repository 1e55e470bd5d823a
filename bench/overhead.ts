/**
 * The engine's own cost. With the `sim` backend at 0 ms (no model compute at all), a KServe v2
 * infer request goes HTTP -> coordinator -> RPC -> worker -> RPC -> coordinator -> HTTP. In
 * the same run, the same request and response go through a bare fastify route (the floor for
 * any HTTP service here) and the backend is called in-process (the floor for the model call).
 *
 *   npm run bench:overhead -- --duration-s 5 --concurrency 1,64
 *
 * Every server runs in its own process; the load comes from this one. All of them share the
 * machine's cores, as they would on a laptop.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSimBackend } from '../src/backends/index.ts';
import { configSchema } from '../src/config/index.ts';
import { type Spawned, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import { type LoadResult, runLoad, summarize } from './lib/load.ts';
import { benchParams, numberList } from './lib/params.ts';
import { report } from './lib/results.ts';

const params = benchParams({ 'duration-s': '5', concurrency: '1,64', elements: '16', 'warmup-s': '1' });
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const elements = Number(params.elements);

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

try {
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup });
  await spawnProcess(
    ['worker', '--config', configFile, '--coordinator', `127.0.0.1:${coordinator.ready.rpcPort}`],
    { cleanup },
  );
  const engineUrl = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  await waitFor(
    'the echo model to be ready',
    async () => (await fetch(`${engineUrl}/v2/models/echo/ready`)).ok,
  );
  const bare = await spawnProcess([], {
    cleanup,
    script: fileURLToPath(new URL('./lib/bare-server.ts', import.meta.url)),
  });
  const bareUrl = `http://127.0.0.1:${bare.ready.httpPort}`;

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
  for (const concurrency of numberList(params.concurrency)) {
    const measure = async (url: string): Promise<LoadResult> => {
      const target = `${url}/v2/models/echo/infer`;
      await runLoad({ url: target, body, concurrency, durationMs: warmupMs });
      return runLoad({ url: target, body, concurrency, durationMs });
    };
    const bareResult = await measure(bareUrl);
    const engineResult = await measure(engineUrl);
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
  report('overhead', {
    params: { ...params, tensor: `FP32 [1,${elements}]` },
    runs,
    backendInProcess: backend,
  });
} finally {
  await Promise.all(children.map((c) => c.stop()));
  rmSync(dir, { recursive: true, force: true });
}
