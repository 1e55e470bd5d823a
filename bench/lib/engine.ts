/**
 * An engine for a scenario to measure: one coordinator and one worker (or more) spawned from a
 * config file, ready once the model answers ready — over HTTP or HTTPS (a private CA trusted), which is
 * why the probes here use node:http(s) and not fetch.
 */

import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { spawnProcess, waitFor, waitForWorkers } from '../../tests/fixtures/processes.ts';
import { track } from './processes.ts';

export interface EngineTarget {
  /** The coordinator's base URL, http: or https:. */
  url: string;
  /** The processes serving it, whose CPU time is read around each run. */
  pids: { coordinator: number | undefined; worker: number | undefined };
  /** Every worker's pid, the first one's included. */
  workerPids: (number | undefined)[];
  /** The coordinator's RPC port, where the worker dialed in. */
  rpcPort: number | undefined;
  /** The coordinator's gRPC port (a free one: the spawned processes get INFERGRID_GRPC_PORT=0). */
  grpcPort: number | undefined;
}

export interface StartEngineOptions {
  /** Added to the processes' environment (tracing, say). */
  env?: NodeJS.ProcessEnv;
  /** The coordinator serves HTTPS (coordinator.tls in the config): the CA its certificate chains to. */
  ca?: string;
  /** Resolves once this model answers ready. Default `echo`. */
  model?: string;
  /** Sent with the readiness probe: an API key where one is needed (model readiness takes `infer`). */
  headers?: Record<string, string>;
  /** Worker processes, each dialing the coordinator; ready once every one has the model ready. Default 1. */
  workers?: number;
}

/** One request's answer: its status and its body as text. */
export interface Answer {
  status: number;
  text: string;
}

/** One HTTP(S) request with node:http(s); rejects only when no answer comes at all. */
export function ask(
  url: string,
  options: { method?: string; body?: Buffer; headers?: Record<string, string>; ca?: string } = {},
): Promise<Answer> {
  const send = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      url,
      { method: options.method ?? 'GET', headers: options.headers, ca: options.ca },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A coordinator and its worker(s) on loopback, tracked (stopAll stops them); resolves once the model is ready. */
export async function startEngine(
  configFile: string,
  options: StartEngineOptions = {},
): Promise<EngineTarget> {
  const spawnOptions = { cleanup: track, ...(options.env ? { env: options.env } : {}) };
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], spawnOptions);
  const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
  const workers = await Promise.all(
    Array.from({ length: options.workers ?? 1 }, () =>
      spawnProcess(['worker', '--config', configFile, '--coordinator', rpc], spawnOptions),
    ),
  );
  const url = `${options.ca === undefined ? 'http' : 'https'}://127.0.0.1:${coordinator.ready.httpPort}`;
  const model = options.model ?? 'echo';
  await waitFor(`the ${model} model to be ready at ${url}`, async () => {
    const answer = await ask(`${url}/v2/models/${model}/ready`, { ca: options.ca, headers: options.headers });
    // thrown, so that a time-out says what the last probe got
    if (answer.status !== 200) throw new Error(`${answer.status} ${answer.text}`);
    return true;
  });
  if (workers.length > 1) await waitForWorkers(url, workers.length, [model]);
  return {
    url,
    pids: { coordinator: coordinator.child.pid, worker: workers[0]!.child.pid },
    workerPids: workers.map((w) => w.child.pid),
    rpcPort: coordinator.ready.rpcPort,
    grpcPort: coordinator.ready.grpcPort,
  };
}
