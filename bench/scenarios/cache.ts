/**
 * What the response cache saves, per store. With the `sim` backend at 0 ms (no model compute),
 * a cache hit answers HTTP -> coordinator -> store -> HTTP, while the honest baseline in the same
 * run and the same process, the request with `parameters: { cache: "bypass" }`, goes all the way
 * HTTP -> coordinator -> RPC -> worker -> RPC -> coordinator -> HTTP. At 0 ms compute that is the
 * least a hit can save: a real model's compute comes on top of the bypassed path only.
 *
 *   npm run bench:cache -- --duration-s 5 --concurrency 1,32
 *
 * Store configurations, each with its own coordinator and worker:
 *   memory           the default, one tier
 *   memory+sqlite    SQLite under memory; a repeated request is still a memory hit
 *   memory+redis     Redis under memory (namespace unique to this run, cleared at the end)
 *   sqlite-only-hits memory cut to one entry and `distinct-bodies` different requests in
 *   redis-only-hits  rotation, so nearly every hit falls through to the lower tier (and is
 *                    promoted back into memory, as it would be in production); the share
 *                    that really came from that tier is read from GET /admin/cache
 * The memory case also runs the rotating load, so the lower-tier hits have a like-for-like
 * memory figure. Every timed run is checked afterwards against the coordinator's own counters
 * (hits, misses, worker executions), and a sample of responses for the `infergrid-cache` header.
 * On Linux each run also reports the CPU the coordinator and the worker spent per request (from
 * /proc): with every process sharing a few cores, that says where a path's cost lands more
 * steadily than throughput does.
 *
 * Redis must be reachable at `--redis-url` for the Redis cases; leave them out with
 * `--stores memory,memory+sqlite,sqlite-only-hits` (the suite does when none answers). All
 * processes share the machine's cores with the load generator (the load engine, in this process).
 */

import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import type { HttpBody } from '../../src/cli/bench/index.ts';
import { spawnProcess, waitFor } from '../../tests/fixtures/processes.ts';
import { processCpuSeconds } from '../lib/cpu.ts';
import { type AdminCache, type Counters, counters, delta } from '../lib/cache-counters.ts';
import { figures, jsonBody, type LoadFigures, runLoad } from '../lib/load.ts';
import { type Charts, cell, table } from '../lib/markdown.ts';
import { scratchDir, stopAll, track } from '../lib/processes.ts';
import { numberList, runIfMain, type Scenario } from '../lib/scenario.ts';
import { barChart } from '../lib/svg.ts';

const STORE_CASES = [
  'memory',
  'memory+sqlite',
  'memory+redis',
  'sqlite-only-hits',
  'redis-only-hits',
] as const;
type StoreCase = (typeof STORE_CASES)[number];

const PARAMS = {
  'duration-s': '5',
  'warmup-s': '1',
  concurrency: '1,32',
  elements: '16',
  'distinct-bodies': '1024',
  stores: STORE_CASES.join(','),
  'redis-url': 'redis://127.0.0.1:6379',
};
type CacheParams = typeof PARAMS;

export type { Counters } from '../lib/cache-counters.ts';

export interface CacheRun extends LoadFigures {
  counted: Counters;
  /** CPU each process spent per answered request during the timed run, µs (Linux only). */
  cpuUsPerRequest: { coordinator: number | null; worker: number | null };
}

export interface CachePoint {
  concurrency: number;
  /** `answeredBy`: the tier the hits were meant to come from; `tierShare`: the share that did. */
  hit: CacheRun & { answeredBy: string; tierShare: number };
  /** memory: hits over the ring of bodies too, like for like with the lower tiers' figures. */
  hitRotating?: CacheRun;
  bypass: CacheRun;
  hitVsBypass: { throughput: number; p50Speedup: number; p99Speedup: number; savedP50Ms: number };
}

export interface CacheCase {
  store: StoreCase;
  /** The store as GET /admin/cache names it. */
  tiers: string;
  bodies: number;
  /** Responses checked one by one for their `infergrid-cache` header. */
  headerChecks: number;
  redisKeysCleared?: number;
  points: CachePoint[];
}

export interface CacheResult {
  params: CacheParams;
  cases: CacheCase[];
  /** Keys of this run still in Redis after every case cleared its own (should be 0). */
  redisKeysLeft?: number;
}

/** Entry lifetime, ms: far longer than any run, so nothing expires while it is timed. */
const CACHE_TTL_MS = 3_600_000;
/** Responses fetched one by one after each timed run to check their `infergrid-cache` header. */
const HEADER_SAMPLES = 8;
/** Below this share of hits from the lower tier, a "-only-hits" figure would be mostly memory hits. */
const MIN_FALL_THROUGH = 0.95;

/** One request with fetch: the `infergrid-cache` header, and whether the output echoes the input. */
async function probe(url: string, request: HttpBody): Promise<{ cache: string | null; echoed: boolean }> {
  const res = await fetch(`${url}/v2/models/echo/infer`, { method: 'POST', ...request });
  if (res.status !== 200) throw new Error(`infer answered ${res.status}: ${await res.text()}`);
  const json = (await res.json()) as { outputs: { data: number[] }[] };
  const sent = (JSON.parse(request.body.toString()) as { inputs: { data: number[] }[] }).inputs[0]!.data;
  return {
    cache: res.headers.get('infergrid-cache'),
    echoed: JSON.stringify(json.outputs[0]?.data) === JSON.stringify(sent),
  };
}

async function expectHeader(url: string, bodies: HttpBody[], want: string): Promise<number> {
  for (const body of bodies) {
    const { cache, echoed } = await probe(url, body);
    if (cache !== want) throw new Error(`expected infergrid-cache: ${want}, got ${cache}`);
    if (!echoed) throw new Error(`a ${want} answered other data than the echo of its input`);
  }
  return bodies.length;
}

interface Engine {
  url: string;
  pids: [number | undefined, number | undefined];
}

/** A warm-up, then the timed run, with the coordinator's counters read around the timed run only. */
async function measure(
  engine: Engine,
  bodies: HttpBody[],
  concurrency: number,
  params: CacheParams,
): Promise<CacheRun> {
  const spec = { url: `${engine.url}/v2/models/echo/infer`, bodies, concurrency };
  await runLoad(spec, { durationMs: Number(params['warmup-s']) * 1000 });
  const before = await counters(engine.url);
  const cpuBefore = engine.pids.map(processCpuSeconds);
  const load = figures(await runLoad(spec, { durationMs: Number(params['duration-s']) * 1000 }));
  const cpuAfter = engine.pids.map(processCpuSeconds);
  const perRequest = (i: number): number | null =>
    cpuBefore[i] === undefined || cpuAfter[i] === undefined || load.requests === 0
      ? null
      : Math.round(((cpuAfter[i]! - cpuBefore[i]!) * 1e6) / load.requests);
  return {
    ...load,
    counted: delta(await counters(engine.url), before),
    cpuUsPerRequest: { coordinator: perRequest(0), worker: perRequest(1) },
  };
}

function check(what: string, run: CacheRun, hits: boolean): void {
  const { counted } = run;
  if (run.errors > 0) throw new Error(`${what}: ${run.errors} errors ${JSON.stringify(run.errorKinds)}`);
  const ok = hits
    ? counted.hits === run.requests && counted.misses === 0 && counted.workerInferences === 0
    : counted.bypasses === run.requests && counted.workerInferences === run.requests && counted.hits === 0;
  if (!ok)
    throw new Error(
      `${what}: not all ${hits ? 'hits' : 'bypassed'}: ${run.requests} requests, counters ${JSON.stringify(counted)}`,
    );
}

const ratio = (a: number, b: number, digits = 100): number => Math.round((a / b) * digits) / digits;

/** Every Redis key of a run starts with this (the store adds `ig:v1:cache:` after it). */
const redisRunPrefix = (runId: string): string => `infergrid-bench-cache:${runId}:`;

function cacheConfig(
  store: StoreCase,
  dir: string,
  params: CacheParams,
  runId: string,
): Record<string, unknown> {
  const sqlite = { path: join(dir, `${store}.db`) };
  const redis = { url: params['redis-url'], namespace: `${redisRunPrefix(runId)}${store}:` };
  const tiny = { memory: { maxEntries: 1 } };
  switch (store) {
    case 'memory':
      return {};
    case 'memory+sqlite':
      return { sqlite };
    case 'memory+redis':
      return { redis };
    case 'sqlite-only-hits':
      return { ...tiny, sqlite };
    case 'redis-only-hits':
      return { ...tiny, redis };
  }
}

async function startEngine(
  store: StoreCase,
  dir: string,
  params: CacheParams,
  runId: string,
): Promise<Engine> {
  const configFile = join(dir, `${store}.yaml`);
  const elements = Number(params.elements);
  writeFileSync(
    configFile,
    stringify({
      coordinator: { port: 0, rpcPort: 0 },
      logging: { level: 'warn' },
      cache: cacheConfig(store, dir, params, runId),
      models: [
        {
          name: 'echo',
          backend: 'sim',
          cache: { enabled: true, ttlMs: CACHE_TTL_MS },
          inputs: [{ name: 'INPUT0', datatype: 'FP32', shape: [-1, elements] }],
          outputs: [{ name: 'OUTPUT0', datatype: 'FP32', shape: [-1, elements] }],
        },
      ],
    }),
  );
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup: track });
  const rpc = `127.0.0.1:${coordinator.ready.rpcPort}`;
  const worker = await spawnProcess(['worker', '--config', configFile, '--coordinator', rpc], {
    cleanup: track,
  });
  const url = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  await waitFor('the echo model to be ready', async () => (await fetch(`${url}/v2/models/echo/ready`)).ok);
  return { url, pids: [coordinator.child.pid, worker.child.pid] };
}

/** Deletes a run's Redis keys; returns how many there were. */
async function dropRedisKeys(redis: Redis, runId: string): Promise<number> {
  let removed = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisRunPrefix(runId)}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) removed += await redis.unlink(...keys);
  } while (cursor !== '0');
  return removed;
}

async function runCase(
  store: StoreCase,
  dir: string,
  params: CacheParams,
  runId: string,
): Promise<CacheCase> {
  const engine = await startEngine(store, dir, params, runId);
  const { url } = engine;
  const elements = Number(params.elements);
  const inferBody = (seed: number, parameters?: Record<string, string>): HttpBody =>
    jsonBody({
      inputs: [
        {
          name: 'INPUT0',
          datatype: 'FP32',
          shape: [1, elements],
          data: Array.from({ length: elements }, (_, i) => seed + i / 8),
        },
      ],
      ...(parameters ? { parameters } : {}),
    });
  const lowerTier =
    store === 'sqlite-only-hits' ? 'sqlite' : store === 'redis-only-hits' ? 'redis' : undefined;
  const rotating = lowerTier !== undefined || store === 'memory';
  const single = inferBody(0.5);
  const bypassed = inferBody(0.5, { cache: 'bypass' });
  const ring = rotating
    ? Array.from({ length: Number(params['distinct-bodies']) }, (_, i) => inferBody(i + 1))
    : [];

  // store the bodies that the hit runs will ask for, and see each path answer as labelled
  let headerChecks = 0;
  if ((await probe(url, single)).cache !== 'miss') throw new Error('the first request should be a miss');
  headerChecks += await expectHeader(url, [bypassed], 'bypass');
  for (const body of ring) {
    const { cache } = await probe(url, body);
    if (cache !== 'miss') throw new Error(`storing the ring: expected a miss, got ${cache}`);
  }
  const admin = (await (await fetch(`${url}/admin/cache`)).json()) as AdminCache;
  if (lowerTier) {
    const tier = admin.tiers.find((t) => t.name === lowerTier);
    if (tier?.entries !== undefined && tier.entries !== -1 && tier.entries < ring.length + 1)
      throw new Error(`${lowerTier} holds ${tier.entries} entries, expected ${ring.length + 1}`);
  }
  // ring entries to probe one by one after a timed run: every one must answer as a hit
  const sample = Array.from({ length: HEADER_SAMPLES }, (_, i) => ring[i * 7]).filter((b) => b !== undefined);

  const points: CachePoint[] = [];
  for (const concurrency of numberList(params.concurrency)) {
    const label = `${store} c=${concurrency}`;
    const hit = await measure(engine, lowerTier ? ring : [single], concurrency, params);
    check(`${label} hit`, hit, true);
    headerChecks += await expectHeader(url, lowerTier ? sample : [single], 'hit');
    let hitRotating: CacheRun | undefined;
    if (rotating && !lowerTier) {
      hitRotating = await measure(engine, ring, concurrency, params);
      check(`${label} hit (rotating)`, hitRotating, true);
      headerChecks += await expectHeader(url, sample, 'hit');
    }
    const bypass = await measure(engine, [bypassed], concurrency, params);
    check(`${label} bypass`, bypass, false);
    headerChecks += await expectHeader(url, [bypassed], 'bypass');

    const hitTier = lowerTier ?? 'memory';
    const hits = hit.counted.hits;
    const share =
      hit.counted.tierHits[hitTier] === undefined || hits === 0
        ? 1
        : Math.round(((hit.counted.tierHits[hitTier] ?? 0) / hits) * 10_000) / 10_000;
    if (lowerTier && share < MIN_FALL_THROUGH)
      throw new Error(`${label}: only ${share} of hits came from ${lowerTier}; raise --distinct-bodies`);
    points.push({
      concurrency,
      hit: { ...hit, answeredBy: hitTier, tierShare: share },
      ...(hitRotating ? { hitRotating } : {}),
      bypass,
      hitVsBypass: {
        throughput: ratio(hit.rps, bypass.rps),
        p50Speedup: ratio(bypass.latencyMs.p50, hit.latencyMs.p50),
        p99Speedup: ratio(bypass.latencyMs.p99, hit.latencyMs.p99),
        savedP50Ms: Math.round((bypass.latencyMs.p50 - hit.latencyMs.p50) * 1000) / 1000,
      },
    });
  }

  let cleared: number | undefined;
  if (store.includes('redis')) {
    const res = await fetch(`${url}/admin/cache`, { method: 'DELETE' });
    cleared = ((await res.json()) as { removed: number }).removed;
  }
  await stopAll();
  return {
    store,
    tiers: admin.store,
    bodies: lowerTier ? ring.length : 1,
    headerChecks,
    ...(cleared !== undefined ? { redisKeysCleared: cleared } : {}),
    points,
  };
}

async function run(params: CacheParams): Promise<CacheResult> {
  const stores = params.stores.split(',').map((s) => s.trim()) as StoreCase[];
  for (const s of stores)
    if (!STORE_CASES.includes(s))
      throw new RangeError(`--stores: unknown "${s}"; one of ${STORE_CASES.join(', ')}`);
  const distinct = Number(params['distinct-bodies']);
  if (!(Number.isInteger(distinct) && distinct > 2 * Math.max(...numberList(params.concurrency))))
    throw new RangeError('distinct-bodies must be an integer well above the highest concurrency');
  const runId = `${process.pid}-${Date.now()}`;
  const redis = stores.some((s) => s.includes('redis'))
    ? new Redis(params['redis-url'], { lazyConnect: true, maxRetriesPerRequest: 1 })
    : undefined;
  try {
    const cases: CacheCase[] = [];
    // each case's engine is stopped at its end (stopAll): the scratch directory is made per case
    for (const store of stores) cases.push(await runCase(store, scratchDir(), params, runId));
    // DELETE /admin/cache should have left nothing of this run in Redis
    let redisKeysLeft: number | undefined;
    if (redis) {
      await redis.connect();
      redisKeysLeft = await dropRedisKeys(redis, runId);
    }
    return { params, cases, ...(redisKeysLeft !== undefined ? { redisKeysLeft } : {}) };
  } finally {
    if (redis) {
      if (redis.status === 'wait') await redis.connect().catch(() => {});
      await dropRedisKeys(redis, runId).catch(() => 0);
      redis.disconnect();
    }
  }
}

/** Whether something accepts TCP connections at host:port within `timeoutMs`. */
function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** The Redis cases need a Redis server; without one (and no --stores given) they are left out. */
async function adjustFlags(
  flags: Record<string, string>,
  env: NodeJS.ProcessEnv,
): Promise<string | undefined> {
  if (flags.stores !== undefined || env.BENCH_STORES !== undefined) return undefined;
  const url = new URL(flags['redis-url'] ?? env.BENCH_REDIS_URL ?? PARAMS['redis-url']);
  if (await reachable(url.hostname, Number(url.port || 6379), 1000)) return undefined;
  flags.stores = STORE_CASES.filter((s) => !s.includes('redis')).join(',');
  return `no Redis at ${url.host}: the Redis stores were left out`;
}

// ---- the page -------------------------------------------------------------------------------------

function section(result: CacheResult, charts: Charts): string[] {
  const rows = result.cases.flatMap((c) => c.points.map((p) => ({ store: c.store, ...p })));
  const stores = result.cases.map((c) => c.store);
  const concurrencies = [...new Set(rows.map((r) => r.concurrency))];
  const at = (store: string, c: number) => rows.find((r) => r.store === store && r.concurrency === c);
  return [
    'What a response-cache hit saves, per store: the same request with `cache: "bypass"` (all the way to',
    "the worker, `sim` at 0 ms) is the baseline in the same run, so a real model's compute comes on top of",
    'the saving. `-only-hits` stores answer nearly every hit from the lower tier (memory cut to one entry).',
    '',
    ...table(
      [
        'store',
        'concurrency',
        'hit req/s',
        'bypass req/s',
        'hit / bypass',
        'hit p50 ms',
        'bypass p50 ms',
        'p50 speedup',
        'p99 speedup',
        'coordinator CPU µs/req hit / bypass',
      ],
      rows.map((r) => [
        `${r.store}${r.hit.answeredBy !== 'memory' ? ` (hits from ${r.hit.answeredBy})` : ''}`,
        cell(r.concurrency),
        cell(r.hit.rps),
        cell(r.bypass.rps),
        `${cell(r.hitVsBypass.throughput)}×`,
        cell(r.hit.latencyMs.p50, 3),
        cell(r.bypass.latencyMs.p50, 3),
        `${cell(r.hitVsBypass.p50Speedup)}×`,
        `${cell(r.hitVsBypass.p99Speedup)}×`,
        `${cell(r.hit.cpuUsPerRequest.coordinator)} / ${cell(r.bypass.cpuUsPerRequest.coordinator)}`,
      ]),
    ),
    charts.add(
      'cache-speedup',
      barChart({
        title: 'Cache: p50 speedup of a hit over the bypassed path',
        valueLabel: 'bypass p50 / hit p50',
        categories: stores,
        series: concurrencies.map((c) => ({
          name: `concurrency ${c}`,
          values: stores.map((s) => at(s, c)?.hitVsBypass.p50Speedup),
        })),
      }),
      'Cache: p50 speedup of a hit per store',
    ),
    '',
    charts.add(
      'cache-throughput',
      barChart({
        title: 'Cache: throughput, hit and bypass',
        valueLabel: 'requests / s',
        categories: stores,
        series: concurrencies.flatMap((c) => [
          { name: `hit, c=${c}`, values: stores.map((s) => at(s, c)?.hit.rps) },
          { name: `bypass, c=${c}`, values: stores.map((s) => at(s, c)?.bypass.rps) },
        ]),
      }),
      'Cache: throughput of hits and bypassed requests per store',
    ),
    '',
  ];
}

export const cache: Scenario<CacheResult, CacheParams> = {
  name: 'cache',
  title: 'Response cache',
  params: PARAMS,
  // distinct-bodies must stay above twice the highest concurrency
  quick: { 'duration-s': '1', 'warmup-s': '0.5', concurrency: '1,32', 'distinct-bodies': '256' },
  run,
  section,
  adjustFlags,
};

await runIfMain(import.meta.url, cache);
