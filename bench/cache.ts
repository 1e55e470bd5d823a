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
 * `--stores memory,memory+sqlite,sqlite-only-hits`. All processes share the machine's cores
 * with the load generator.
 */

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { type Spawned, spawnProcess, waitFor } from '../tests/fixtures/processes.ts';
import { type LoadResult, runLoad, summarize } from './lib/load.ts';
import { benchParams, numberList } from './lib/params.ts';
import { report } from './lib/results.ts';

const STORE_CASES = [
  'memory',
  'memory+sqlite',
  'memory+redis',
  'sqlite-only-hits',
  'redis-only-hits',
] as const;
type StoreCase = (typeof STORE_CASES)[number];

const params = benchParams({
  'duration-s': '5',
  'warmup-s': '1',
  concurrency: '1,32',
  elements: '16',
  'distinct-bodies': '1024',
  stores: STORE_CASES.join(','),
  'redis-url': 'redis://127.0.0.1:6379',
});
const durationMs = Number(params['duration-s']) * 1000;
const warmupMs = Number(params['warmup-s']) * 1000;
const elements = Number(params.elements);
const distinctBodies = Number(params['distinct-bodies']);
const concurrencies = numberList(params.concurrency);
const stores = params.stores.split(',').map((s) => s.trim()) as StoreCase[];
for (const s of stores) {
  if (!STORE_CASES.includes(s))
    throw new RangeError(`--stores: unknown "${s}"; one of ${STORE_CASES.join(', ')}`);
}
if (!(Number.isInteger(distinctBodies) && distinctBodies > 2 * Math.max(...concurrencies)))
  throw new RangeError('distinct-bodies must be an integer well above the highest concurrency');

/** Entry lifetime, ms: far longer than any run, so nothing expires while it is timed. */
const CACHE_TTL_MS = 3_600_000;
/** Responses fetched one by one after each timed run to check their `infergrid-cache` header. */
const HEADER_SAMPLES = 8;
/** Below this share of hits from the lower tier, a "-only-hits" figure would be mostly memory hits. */
const MIN_FALL_THROUGH = 0.95;
const RUN_ID = `${process.pid}-${Date.now()}`;
/** Every Redis key of this run starts with this (the store adds `ig:v1:cache:` after it). */
const REDIS_RUN_PREFIX = `infergrid-bench-cache:${RUN_ID}:`;

const dir = mkdtempSync(join(tmpdir(), 'infergrid-bench-cache-'));
const children: Spawned[] = [];
const cleanup = (stop: () => Promise<unknown>): void => {
  children.push({ stop } as Spawned);
};

function inferBody(seed: number, parameters?: Record<string, string>): Buffer {
  return Buffer.from(
    JSON.stringify({
      inputs: [
        {
          name: 'INPUT0',
          datatype: 'FP32',
          shape: [1, elements],
          data: Array.from({ length: elements }, (_, i) => seed + i / 8),
        },
      ],
      ...(parameters ? { parameters } : {}),
    }),
  );
}

function cacheConfig(store: StoreCase): Record<string, unknown> {
  const sqlite = { path: join(dir, `${store}.db`) };
  const redis = { url: params['redis-url'], namespace: `${REDIS_RUN_PREFIX}${store}:` };
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

interface TierStats {
  name: string;
  entries: number;
  evictions: number;
  errors: number;
  hits?: number;
}
interface AdminCache {
  store: string;
  tiers: TierStats[];
  models: Record<string, { hits: number; misses: number; joins: number; bypasses: number; stores: number }>;
}
interface Counters {
  hits: number;
  misses: number;
  bypasses: number;
  /** Requests the worker ran (Triton's inference_count). */
  workerInferences: number;
  tierHits: Record<string, number>;
}

async function counters(url: string): Promise<Counters> {
  const admin = (await (await fetch(`${url}/admin/cache`)).json()) as AdminCache;
  const stats = (await (await fetch(`${url}/v2/models/echo/stats`)).json()) as {
    model_stats: { inference_count: number }[];
  };
  const model = admin.models.echo ?? { hits: 0, misses: 0, bypasses: 0 };
  return {
    hits: model.hits,
    misses: model.misses,
    bypasses: model.bypasses,
    workerInferences: stats.model_stats[0]?.inference_count ?? 0,
    // only a tiered store counts hits per tier
    tierHits: Object.fromEntries(
      admin.tiers.flatMap((t) => (t.hits === undefined ? [] : [[t.name, t.hits]])),
    ),
  };
}

function delta(after: Counters, before: Counters): Counters {
  return {
    hits: after.hits - before.hits,
    misses: after.misses - before.misses,
    bypasses: after.bypasses - before.bypasses,
    workerInferences: after.workerInferences - before.workerInferences,
    tierHits: Object.fromEntries(
      Object.entries(after.tierHits).map(([k, v]) => [k, v - (before.tierHits[k] ?? 0)]),
    ),
  };
}

/** One request with fetch: the `infergrid-cache` header, and whether the output echoes the input. */
async function probe(url: string, body: Buffer): Promise<{ cache: string | null; echoed: boolean }> {
  const res = await fetch(`${url}/v2/models/echo/infer`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json' },
  });
  if (res.status !== 200) throw new Error(`infer answered ${res.status}: ${await res.text()}`);
  const json = (await res.json()) as { outputs: { data: number[] }[] };
  const sent = (JSON.parse(body.toString()) as { inputs: { data: number[] }[] }).inputs[0]!.data;
  return {
    cache: res.headers.get('infergrid-cache'),
    echoed: JSON.stringify(json.outputs[0]?.data) === JSON.stringify(sent),
  };
}

async function expectHeader(url: string, bodies: Buffer[], want: string): Promise<number> {
  for (const body of bodies) {
    const { cache, echoed } = await probe(url, body);
    if (cache !== want) throw new Error(`expected infergrid-cache: ${want}, got ${cache}`);
    if (!echoed) throw new Error(`a ${want} answered other data than the echo of its input`);
  }
  return bodies.length;
}

function post(agent: Agent, url: URL, body: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        agent,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
      },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * bench/lib/load.ts's runLoad with a ring of bodies instead of one: each request, whichever loop
 * sends it, takes the next body, so consecutive requests never share a cache key.
 */
async function runRotatingLoad(options: {
  url: string;
  bodies: Buffer[];
  concurrency: number;
  durationMs: number;
}): Promise<LoadResult> {
  const url = new URL(options.url);
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const samples: number[] = [];
  const errorKinds: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const start = performance.now();
  const end = start + options.durationMs;
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const body = options.bodies[next++ % options.bodies.length]!;
      const t0 = performance.now();
      try {
        const status = await post(agent, url, body);
        if (status === 200) samples.push(performance.now() - t0);
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
  };
}

/** Clock ticks per second of /proc/<pid>/stat's CPU times. */
const CLOCK_TICKS_PER_S = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU time (user + system) a process has used, µs; undefined where /proc is not there. */
function cpuUs(pid: number | undefined): number | undefined {
  const file = `/proc/${pid}/stat`;
  if (pid === undefined || !existsSync(file)) return undefined;
  // the fields after the command name, which is in parentheses and may hold spaces
  const stat = readFileSync(file, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S) * 1e6;
}

interface Engine {
  url: string;
  coordinatorPid: number | undefined;
  workerPid: number | undefined;
}

type Measured = LoadResult & {
  counted: Counters;
  /** CPU each process spent per answered request during the timed run, µs (Linux only). */
  cpuUsPerRequest?: { coordinator: number; worker: number };
};

/** A warm-up, then the timed run, with the coordinator's counters read around the timed run only. */
async function measure(engine: Engine, load: (ms: number) => Promise<LoadResult>): Promise<Measured> {
  await load(warmupMs);
  const before = await counters(engine.url);
  const cpuBefore = [cpuUs(engine.coordinatorPid), cpuUs(engine.workerPid)];
  const result = await load(durationMs);
  const cpuAfter = [cpuUs(engine.coordinatorPid), cpuUs(engine.workerPid)];
  const counted = delta(await counters(engine.url), before);
  const perRequest = (i: number): number | undefined =>
    cpuBefore[i] === undefined || cpuAfter[i] === undefined || result.requests === 0
      ? undefined
      : Math.round((cpuAfter[i]! - cpuBefore[i]!) / result.requests);
  const coordinator = perRequest(0);
  const worker = perRequest(1);
  return {
    ...result,
    counted,
    ...(coordinator !== undefined && worker !== undefined
      ? { cpuUsPerRequest: { coordinator, worker } }
      : {}),
  };
}

function checkHits(what: string, run: Measured): void {
  const { counted } = run;
  if (run.errors > 0) throw new Error(`${what}: ${run.errors} errors ${JSON.stringify(run.errorKinds)}`);
  if (counted.hits !== run.requests || counted.misses !== 0 || counted.workerInferences !== 0)
    throw new Error(`${what}: not all hits: ${run.requests} requests, counters ${JSON.stringify(counted)}`);
}

function checkBypass(what: string, run: Measured): void {
  const { counted } = run;
  if (run.errors > 0) throw new Error(`${what}: ${run.errors} errors ${JSON.stringify(run.errorKinds)}`);
  if (counted.bypasses !== run.requests || counted.workerInferences !== run.requests || counted.hits !== 0)
    throw new Error(
      `${what}: not all bypassed: ${run.requests} requests, counters ${JSON.stringify(counted)}`,
    );
}

/** Share of a run's hits that the named tier answered. */
function tierShare(run: Measured, tier: string): number {
  const total = run.counted.hits;
  return total === 0 ? 0 : Math.round(((run.counted.tierHits[tier] ?? 0) / total) * 10_000) / 10_000;
}

const ratio = (a: number, b: number, digits = 100): number => Math.round((a / b) * digits) / digits;

function comparison(hit: Measured, bypass: Measured) {
  return {
    throughput: ratio(hit.rps, bypass.rps),
    p50Speedup: ratio(bypass.latencyMs.p50, hit.latencyMs.p50),
    p99Speedup: ratio(bypass.latencyMs.p99, hit.latencyMs.p99),
    savedP50Ms: Math.round((bypass.latencyMs.p50 - hit.latencyMs.p50) * 1000) / 1000,
  };
}

async function startEngine(store: StoreCase): Promise<Engine> {
  const configFile = join(dir, `${store}.yaml`);
  writeFileSync(
    configFile,
    stringify({
      coordinator: { port: 0, rpcPort: 0 },
      logging: { level: 'warn' },
      cache: cacheConfig(store),
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
  const coordinator = await spawnProcess(['coordinator', '--config', configFile], { cleanup });
  const worker = await spawnProcess(
    ['worker', '--config', configFile, '--coordinator', `127.0.0.1:${coordinator.ready.rpcPort}`],
    { cleanup },
  );
  const url = `http://127.0.0.1:${coordinator.ready.httpPort}`;
  await waitFor('the echo model to be ready', async () => (await fetch(`${url}/v2/models/echo/ready`)).ok);
  return { url, coordinatorPid: coordinator.child.pid, workerPid: worker.child.pid };
}

async function stopEngine(): Promise<void> {
  await Promise.all(children.splice(0).map((c) => c.stop()));
}

/** Deletes this run's Redis keys; returns how many there were. */
async function dropRedisKeys(redis: Redis): Promise<number> {
  let removed = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${REDIS_RUN_PREFIX}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) removed += await redis.unlink(...keys);
  } while (cursor !== '0');
  return removed;
}

async function runCase(store: StoreCase) {
  const engine = await startEngine(store);
  const { url } = engine;
  const target = `${url}/v2/models/echo/infer`;
  const lowerTier =
    store === 'sqlite-only-hits' ? 'sqlite' : store === 'redis-only-hits' ? 'redis' : undefined;
  const rotating = lowerTier !== undefined || store === 'memory';
  const single = inferBody(0.5);
  const bypassed = inferBody(0.5, { cache: 'bypass' });
  const ring = rotating ? Array.from({ length: distinctBodies }, (_, i) => inferBody(i + 1)) : [];

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

  const runs = [];
  for (const concurrency of concurrencies) {
    const fixed = (body: Buffer) => (ms: number) =>
      runLoad({ url: target, body, concurrency, durationMs: ms });
    const rotate = (ms: number) =>
      runRotatingLoad({ url: target, bodies: ring, concurrency, durationMs: ms });
    const label = `${store} c=${concurrency}`;

    let hit: Measured;
    let hitRotating: Measured | undefined;
    if (lowerTier) {
      hit = await measure(engine, rotate);
      checkHits(`${label} hit`, hit);
      headerChecks += await expectHeader(url, sample, 'hit');
    } else {
      hit = await measure(engine, fixed(single));
      checkHits(`${label} hit`, hit);
      headerChecks += await expectHeader(url, [single], 'hit');
      if (rotating) {
        hitRotating = await measure(engine, rotate);
        checkHits(`${label} hit (rotating)`, hitRotating);
        headerChecks += await expectHeader(url, sample, 'hit');
      }
    }
    const bypass = await measure(engine, fixed(bypassed));
    checkBypass(`${label} bypass`, bypass);
    headerChecks += await expectHeader(url, [bypassed], 'bypass');

    const hitTier = lowerTier ?? 'memory';
    const share = hit.counted.tierHits[hitTier] === undefined ? 1 : tierShare(hit, hitTier);
    if (lowerTier && share < MIN_FALL_THROUGH)
      throw new Error(`${label}: only ${share} of hits came from ${lowerTier}; raise --distinct-bodies`);
    runs.push({
      concurrency,
      hit: { ...hit, answeredBy: hitTier, tierShare: share },
      ...(hitRotating ? { hitRotating } : {}),
      bypass,
      hitVsBypass: comparison(hit, bypass),
    });
  }

  let cleared: number | undefined;
  if (store.includes('redis')) {
    const res = await fetch(`${url}/admin/cache`, { method: 'DELETE' });
    cleared = ((await res.json()) as { removed: number }).removed;
  }
  await stopEngine();
  return {
    store,
    tiers: admin.store,
    bodies: lowerTier ? ring.length : 1,
    headerChecks,
    ...(cleared !== undefined ? { redisKeysCleared: cleared } : {}),
    runs,
  };
}

const redis = stores.some((s) => s.includes('redis'))
  ? new Redis(params['redis-url'], { lazyConnect: true, maxRetriesPerRequest: 1 })
  : undefined;
try {
  const cases = [];
  for (const store of stores) cases.push(await runCase(store));
  // DELETE /admin/cache should have left nothing of this run in Redis
  let redisKeysLeft: number | undefined;
  if (redis) {
    await redis.connect();
    redisKeysLeft = await dropRedisKeys(redis);
  }
  report('cache', {
    params: {
      ...params,
      tensor: `FP32 [1,${elements}]`,
      backend: 'sim 0 ms',
      redisNamespace: REDIS_RUN_PREFIX,
    },
    summary: cases.flatMap((c) =>
      c.runs.map((r) => ({
        store: c.store,
        concurrency: r.concurrency,
        hitFrom: r.hit.answeredBy,
        hitP50Ms: r.hit.latencyMs.p50,
        hitP99Ms: r.hit.latencyMs.p99,
        hitRps: r.hit.rps,
        bypassP50Ms: r.bypass.latencyMs.p50,
        bypassP99Ms: r.bypass.latencyMs.p99,
        bypassRps: r.bypass.rps,
        ...r.hitVsBypass,
      })),
    ),
    cases,
    ...(redisKeysLeft !== undefined ? { redisKeysLeft } : {}),
  });
} finally {
  await stopEngine();
  if (redis) {
    if (redis.status === 'wait') await redis.connect().catch(() => {});
    await dropRedisKeys(redis).catch(() => 0);
    redis.disconnect();
  }
  rmSync(dir, { recursive: true, force: true });
}
