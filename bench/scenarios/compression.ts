/**
 * When compressing an answer pays (issue 16): what gzip costs in CPU against the bytes it saves,
 * for the answers the engine sends — KServe JSON responses of FP32 and INT32 outputs, and the
 * same FP32 outputs as binary tensor data — at sizes from a few elements to 64K.
 *
 *   npm run bench:compression -- --elements 4,32,128,512,4096,65536 --requests 200
 *
 * Two parts, in one run:
 *   codec     in this process: each payload compressed at zlib levels 1 and 6 and decompressed,
 *             timed as CPU time over enough repetitions; its compressed size; and the link
 *             speed under which compressing it lowers the time to deliver it (bytes saved over
 *             the CPU time of compressing and decompressing: on a slower link the saved bytes
 *             take longer to send than the compression takes).
 *   loopback  a real coordinator and sim worker (compression.responseMinBytes 0, so every answer
 *             may be compressed): the same requests, sequentially on one keep-alive
 *             connection, with `Accept-Encoding: identity` and with `gzip`, in alternating
 *             rounds; latency as the client sees it (decoding included), coordinator CPU per
 *             request, bytes on the wire. Loopback has no bandwidth to save, so this is the
 *             cost side alone: what a client on the same machine or a fast LAN pays for asking.
 *
 * Trade-off: payloads are random values (floats from Math.random rounded to FP32, integers
 * below 1000), which compress worse than a model's real outputs often do (probabilities near
 * 0, repeated labels): the ratios are a floor, and the break-even speeds with them.
 */

import { writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { encodeInferResponse } from '../../src/api/index.ts';
import type { Datatype, Tensor } from '../../src/tensor/index.ts';
import { cpuMark, cpuSpent } from '../lib/cpu.ts';
import { startEngine } from '../lib/engine.ts';
import { type Charts, cell, round, table } from '../lib/markdown.ts';
import { scratchDir } from '../lib/processes.ts';
import { numberList, runIfMain, type Scenario } from '../lib/scenario.ts';

const PARAMS = {
  elements: '4,32,128,512,4096,65536',
  /** Loopback: requests per payload and coding, split over the rounds. */
  requests: '200',
  rounds: '4',
  /** Codec: CPU time spent timing each payload and level at least, ms. */
  'codec-ms': '200',
  levels: '1,6',
};
type CompressionParams = typeof PARAMS;

export type PayloadKind = 'json-fp32' | 'json-int32' | 'binary-fp32';
const KINDS: readonly PayloadKind[] = ['json-fp32', 'json-int32', 'binary-fp32'];

export interface CodecPoint {
  kind: PayloadKind;
  elements: number;
  bytes: number;
  level: number;
  compressedBytes: number;
  /** compressed / original. */
  ratio: number;
  compressUs: number;
  decompressUs: number;
  /** Below this link speed, MB/s (10^6 bytes), compressing lowers the time to deliver; 0 when it saves nothing. */
  breakEvenMBps: number;
}

export interface LoopbackPoint {
  kind: 'json-fp32';
  elements: number;
  coding: 'identity' | 'gzip';
  requests: number;
  /** Answer bytes on the wire, per request. */
  wireBytes: number;
  p50Ms: number;
  p90Ms: number;
  /** Coordinator CPU per request, ms (null off Linux). */
  coordinatorCpuMs: number | null;
}

export interface CompressionResult {
  codec: CodecPoint[];
  loopback: LoopbackPoint[];
  /** The default coordinator.compression settings this run speaks to. */
  defaults: { responseMinBytes: number; level: number };
}

/** A Park-Miller generator: the same payloads every run. */
function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 48271) % 2147483647;
    return s / 2147483647;
  };
}

function tensorOf(kind: PayloadKind, elements: number): Tensor {
  const next = random(elements);
  if (kind === 'json-int32') {
    const data = Int32Array.from({ length: elements }, () => Math.floor(next() * 1000));
    return { name: 'y', datatype: 'INT32' as Datatype, shape: [elements], data: new Uint8Array(data.buffer) };
  }
  const data = Float32Array.from({ length: elements }, () => next());
  return { name: 'y', datatype: 'FP32' as Datatype, shape: [elements], data: new Uint8Array(data.buffer) };
}

/** The answer body the engine would send for this output. */
function payloadOf(kind: PayloadKind, elements: number): Buffer {
  const encoded = encodeInferResponse(
    { meta: { model: 'echo', version: '1', outputs: [] }, outputs: [tensorOf(kind, elements)], id: 'bench' },
    () => kind === 'binary-fp32',
  );
  return Buffer.isBuffer(encoded.payload) ? encoded.payload : Buffer.from(JSON.stringify(encoded.payload));
}

/** CPU µs per call of `fn`, over at least `budgetMs` of CPU and 5 calls. */
function cpuUsPerCall(fn: () => void, budgetMs: number): number {
  fn();
  const start = process.cpuUsage();
  let calls = 0;
  let spentUs = 0;
  while (calls < 5 || spentUs < budgetMs * 1000) {
    fn();
    calls++;
    const u = process.cpuUsage(start);
    spentUs = u.user + u.system;
  }
  return spentUs / calls;
}

function codecPoints(elements: number[], levels: number[], budgetMs: number): CodecPoint[] {
  const points: CodecPoint[] = [];
  for (const kind of KINDS) {
    for (const n of elements) {
      const body = payloadOf(kind, n);
      for (const level of levels) {
        const compressed = gzipSync(body, { level });
        const compressUs = cpuUsPerCall(() => gzipSync(body, { level }), budgetMs);
        const decompressUs = cpuUsPerCall(() => gunzipSync(compressed), budgetMs);
        const saved = body.byteLength - compressed.byteLength;
        points.push({
          kind,
          elements: n,
          bytes: body.byteLength,
          level,
          compressedBytes: compressed.byteLength,
          ratio: round(compressed.byteLength / body.byteLength, 3),
          compressUs: round(compressUs, 1),
          decompressUs: round(decompressUs, 1),
          breakEvenMBps: saved <= 0 ? 0 : round(saved / (compressUs + decompressUs), 1),
        });
      }
    }
  }
  return points;
}

interface Timed {
  ms: number;
  wireBytes: number;
}

/** One infer request on the keep-alive agent; the answer read and, when compressed, decoded. */
function inferOnce(url: string, agent: Agent, body: Buffer, coding: 'identity' | 'gzip'): Promise<Timed> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/v2/models/echo/infer`,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': body.byteLength,
          'accept-encoding': coding,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const wire = Buffer.concat(chunks);
          if (res.statusCode !== 200) {
            reject(new Error(`HTTP ${res.statusCode}: ${wire.toString('utf8', 0, 300)}`));
            return;
          }
          const text = res.headers['content-encoding'] === 'gzip' ? gunzipSync(wire) : wire;
          if (text[0] !== 0x7b) reject(new Error('answer is not JSON'));
          resolve({ ms: performance.now() - t0, wireBytes: wire.byteLength });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const quantile = (sorted: number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;

async function loopbackPoints(
  elements: number[],
  requests: number,
  rounds: number,
): Promise<LoopbackPoint[]> {
  const configFile = join(scratchDir(), 'config.yaml');
  writeFileSync(
    configFile,
    `coordinator: { port: 0, rpcPort: 0, compression: { responseMinBytes: 0, level: 1 } }
logging: { level: warn }
models:
  - name: echo
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
`,
  );
  const engine = await startEngine(configFile);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const points: LoopbackPoint[] = [];
  try {
    for (const n of elements) {
      const next = random(n);
      const values = Array.from({ length: n }, () => Math.fround(next()));
      const body = Buffer.from(
        JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [n], data: values }] }),
      );
      for (let i = 0; i < 20; i++) await inferOnce(engine.url, agent, body, i % 2 ? 'gzip' : 'identity');
      const per = Math.max(1, Math.round(requests / rounds));
      const timed: Record<
        'identity' | 'gzip',
        { ms: number[]; wire: number; cpuS: number; cpuKnown: boolean }
      > = {
        identity: { ms: [], wire: 0, cpuS: 0, cpuKnown: true },
        gzip: { ms: [], wire: 0, cpuS: 0, cpuKnown: true },
      };
      for (let r = 0; r < rounds; r++) {
        for (const coding of ['identity', 'gzip'] as const) {
          const groups = { coordinator: [engine.pids.coordinator] };
          const before = cpuMark(groups);
          for (let i = 0; i < per; i++) {
            const t = await inferOnce(engine.url, agent, body, coding);
            timed[coding].ms.push(t.ms);
            timed[coding].wire = t.wireBytes;
          }
          const s = cpuSpent(before, cpuMark(groups)).seconds.coordinator;
          if (s === undefined) timed[coding].cpuKnown = false;
          else timed[coding].cpuS += s;
        }
      }
      for (const coding of ['identity', 'gzip'] as const) {
        const t = timed[coding];
        const sorted = [...t.ms].sort((a, b) => a - b);
        points.push({
          kind: 'json-fp32',
          elements: n,
          coding,
          requests: sorted.length,
          wireBytes: t.wire,
          p50Ms: round(quantile(sorted, 0.5)),
          p90Ms: round(quantile(sorted, 0.9)),
          coordinatorCpuMs: t.cpuKnown ? round((1000 * t.cpuS) / sorted.length) : null,
        });
      }
    }
  } finally {
    agent.destroy();
  }
  return points;
}

async function run(params: CompressionParams): Promise<CompressionResult> {
  const { compressionSchema } = await import('../../src/config/schema.ts');
  const defaults = compressionSchema.parse({});
  const elements = numberList(params.elements);
  const codec = codecPoints(elements, numberList(params.levels), Number(params['codec-ms']));
  const loopback = await loopbackPoints(
    elements,
    Number(params.requests),
    Math.max(1, Math.round(Number(params.rounds))),
  );
  return {
    codec,
    loopback,
    defaults: { responseMinBytes: defaults.responseMinBytes, level: defaults.level },
  };
}

const MBPS_TO_MBIT = 8;

function section(r: CompressionResult, _charts: Charts): string[] {
  const lines: string[] = [
    `gzip on the engine's answers: CPU per call in this process (compress at each level, and decompress), compressed size, and the link speed under which compressing lowers the time to deliver the answer (bytes saved ÷ CPU time of both ends). Defaults in this build: coordinator.compression.responseMinBytes ${r.defaults.responseMinBytes}, level ${r.defaults.level}.`,
    '',
    ...table(
      [
        'payload',
        'elements',
        'bytes',
        'level',
        'gzip bytes',
        'ratio',
        'compress µs',
        'decompress µs',
        'pays below, Mbit/s',
      ],
      r.codec.map((p) => [
        p.kind,
        cell(p.elements, 0),
        cell(p.bytes, 0),
        String(p.level),
        cell(p.compressedBytes, 0),
        cell(p.ratio, 3),
        cell(p.compressUs, 1),
        cell(p.decompressUs, 1),
        p.breakEvenMBps === 0 ? 'never' : cell(p.breakEvenMBps * MBPS_TO_MBIT, 0),
      ]),
    ),
  ];
  if (r.loopback.length > 0) {
    lines.push(
      "On loopback, against a coordinator and sim worker (every answer compressible, level 1), one request at a time on one keep-alive connection: latency as the client sees it, decoding included, and the coordinator's CPU per request.",
      '',
      ...table(
        [
          'elements',
          'Accept-Encoding',
          'wire bytes',
          'p50 ms',
          'p90 ms',
          'coordinator CPU ms/request',
          'requests',
        ],
        r.loopback.map((p) => [
          cell(p.elements, 0),
          p.coding,
          cell(p.wireBytes, 0),
          cell(p.p50Ms, 3),
          cell(p.p90Ms, 3),
          cell(p.coordinatorCpuMs, 3),
          String(p.requests),
        ]),
      ),
    );
  }
  return lines;
}

export const compression: Scenario<CompressionResult, CompressionParams> = {
  name: 'compression',
  title: 'Compressed answers: CPU against bytes saved',
  params: PARAMS,
  quick: { elements: '32,4096', requests: '40', rounds: '2', 'codec-ms': '30' },
  run,
  section,
};

await runIfMain(import.meta.url, compression);
