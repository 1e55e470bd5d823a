/**
 * A closed-loop HTTP load generator with microsecond latencies (autocannon records whole
 * milliseconds, too coarse for an engine whose overhead is a fraction of one). `concurrency`
 * loops each keep one request in flight on their own keep-alive connection.
 */

import { Agent, request } from 'node:http';
import { createConnection } from 'node:net';
import { processCpuSeconds } from './proc.ts';

export interface LoadOptions {
  url: string;
  method?: 'GET' | 'POST';
  body?: Buffer;
  headers?: Record<string, string>;
  concurrency: number;
  durationMs: number;
  /** Status that counts as success. Default 200. */
  okStatus?: number;
  /** Return every successful request's latency (ms) too, to pool several runs. */
  keepSamples?: boolean;
}

export interface LatencySummary {
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface LoadResult {
  requests: number;
  errors: number;
  /** Errors by HTTP status or error code. */
  errorKinds: Record<string, number>;
  durationS: number;
  rps: number;
  latencyMs: LatencySummary;
  /** Every successful request's latency, ms, when asked for (keepSamples). */
  samplesMs?: number[];
}

/** Several runs as one: their requests over their summed time, latencies pooled. */
export function poolRuns(runs: readonly LoadResult[]): LoadResult {
  const samples = runs.flatMap((r) => r.samplesMs ?? []);
  const errorKinds: Record<string, number> = {};
  for (const r of runs)
    for (const [k, n] of Object.entries(r.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
  const requests = runs.reduce((n, r) => n + r.requests, 0);
  const durationS = runs.reduce((t, r) => t + r.durationS, 0);
  return {
    requests,
    errors: runs.reduce((n, r) => n + r.errors, 0),
    errorKinds,
    durationS: Math.round(durationS * 1000) / 1000,
    rps: durationS > 0 ? Math.round(requests / durationS) : 0,
    latencyMs: summarize(samples),
  };
}

export function summarize(samplesMs: number[]): LatencySummary {
  if (samplesMs.length === 0) return { mean: 0, p50: 0, p90: 0, p99: 0, max: 0 };
  const sorted = Float64Array.from(samplesMs).sort();
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const round = (v: number): number => Math.round(v * 1000) / 1000;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    mean: round(sum / sorted.length),
    p50: round(at(0.5)),
    p90: round(at(0.9)),
    p99: round(at(0.99)),
    max: round(sorted[sorted.length - 1]!),
  };
}

function once(agent: Agent, url: URL, options: LoadOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        agent,
        method: options.method ?? (options.body ? 'POST' : 'GET'),
        headers: {
          ...(options.body
            ? { 'content-type': 'application/json', 'content-length': String(options.body.length) }
            : {}),
          ...options.headers,
        },
      },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const url = new URL(options.url);
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const okStatus = options.okStatus ?? 200;
  const samples: number[] = [];
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  const start = performance.now();
  const end = start + options.durationMs;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        const status = await once(agent, url, options);
        if (status === okStatus) samples.push(performance.now() - t0);
        else {
          errors++;
          errorKinds[String(status)] = (errorKinds[String(status)] ?? 0) + 1;
        }
      } catch (err) {
        errors++;
        const kind = (err as NodeJS.ErrnoException).code ?? 'error';
        errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, loop));
  const durationS = (performance.now() - start) / 1000;
  agent.destroy();
  return {
    requests: samples.length,
    errors,
    errorKinds,
    durationS: Math.round(durationS * 1000) / 1000,
    rps: Math.round(samples.length / durationS),
    latencyMs: summarize(samples),
    ...(options.keepSamples ? { samplesMs: samples } : {}),
  };
}

/**
 * One connection to a TCP echo server (echo-server.ts): sends `bytes` bytes, waits until all of
 * them are back, and again, for `durationMs`. The round trip between two processes, with nothing
 * but the sockets in between.
 */
export function pingPong(
  port: number,
  durationMs: number,
  bytes = 256,
): Promise<{ roundTrips: number; latencyMs: LatencySummary }> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    const message = Buffer.alloc(bytes, 0x2a);
    const samples: number[] = [];
    let received = 0;
    let sentAt = 0;
    let endAt = 0;
    const send = (): void => {
      received = 0;
      sentAt = performance.now();
      socket.write(message);
    };
    socket.on('connect', () => {
      endAt = performance.now() + durationMs;
      send();
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.byteLength;
      if (received < bytes) return;
      const now = performance.now();
      samples.push(now - sentAt);
      if (now < endAt) send();
      else {
        socket.destroy();
        resolve({ roundTrips: samples.length, latencyMs: summarize(samples) });
      }
    });
    socket.on('error', reject);
    // the server went away before the run ended: fail now rather than wait for the suite's limit
    socket.on('close', () => reject(new Error('the echo server closed the connection before the run ended')));
  });
}

/**
 * One connection to an echo server started with --request-bytes/--reply-bytes: sends a request of
 * `requestBytes`, waits for the whole `replyBytes` answer, and again, for `durationMs`. Returns the
 * round trips and the CPU both ends spent on each (this process's from process.cpuUsage, the
 * server's from /proc): the cost of moving those bytes over one socket with nothing else done.
 */
export function transferRoundTrips(
  server: { port: number; pid: number | undefined },
  requestBytes: number,
  replyBytes: number,
  durationMs: number,
): Promise<{
  roundTrips: number;
  perS: number;
  cpuMsPerRoundTrip: { sender: number | null; receiver: number | null };
}> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port: server.port });
    socket.setNoDelay(true);
    const request = Buffer.alloc(requestBytes, 0x2a);
    let received = 0;
    let roundTrips = 0;
    let started = 0;
    let ownBefore: NodeJS.CpuUsage;
    let serverBefore: number | undefined;
    socket.on('connect', () => {
      started = performance.now();
      ownBefore = process.cpuUsage();
      serverBefore = processCpuSeconds(server.pid);
      socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => {
      received += chunk.byteLength;
      if (received < replyBytes) return;
      received -= replyBytes;
      roundTrips++;
      const elapsed = performance.now() - started;
      if (elapsed < durationMs) {
        socket.write(request);
        return;
      }
      const own = process.cpuUsage(ownBefore);
      const serverAfter = processCpuSeconds(server.pid);
      socket.destroy();
      const perTrip = (seconds: number | undefined): number | null =>
        seconds === undefined ? null : Math.round((seconds * 1e6) / roundTrips) / 1000;
      resolve({
        roundTrips,
        perS: Math.round((roundTrips * 1000) / elapsed),
        cpuMsPerRoundTrip: {
          // the server sends the reply, this side receives it
          sender: perTrip(
            serverBefore === undefined || serverAfter === undefined ? undefined : serverAfter - serverBefore,
          ),
          receiver: perTrip((own.user + own.system) / 1e6),
        },
      });
    });
    socket.on('error', reject);
    // the server went away before the run ended: fail now rather than wait for the suite's limit
    socket.on('close', () => reject(new Error('the echo server closed the connection before the run ended')));
  });
}
