/**
 * What auth and TLS cost (issue 14). The engine of the overhead scenario — the `sim` backend at
 * 0 ms behind one coordinator and one worker, so nothing but the engine's own work is timed — in
 * five set-ups, each its own coordinator and worker, measured in the same run:
 *
 *   open     no API keys, plain HTTP, plain RPC: the baseline
 *   auth     --keys API keys configured, the client sending the last of them (the key check
 *            compares against every key in constant time, so all of them are scanned)
 *   https    keys + HTTPS (coordinator.tls)
 *   rpc-tls  keys + plain HTTP + TLS on the coordinator <-> worker RPC (rpc.tls)
 *   all      keys + HTTPS + RPC TLS
 *
 *   npm run bench:security -- --duration-s 10 --rounds 5
 *
 * RPC authentication (auth.token) is on in all five: it is a handshake once per connection, so
 * it costs nothing per request, and a build whose RPC needs credentials runs every set-up alike.
 * Certificates come from a throwaway CA (tests/fixtures/tls.ts), ECDSA P-256.
 *
 * Trade-off: each set-up's load keeps its connections open from its warm-up through all its
 * rounds, as a client with keep-alive does; what is measured is TLS's steady state (record
 * encryption and decryption), and the handshakes, once per connection, fall in the warm-up.
 * A client that reconnects for every request would pay a handshake each time, which this does
 * not measure. The rounds take turns (bench/lib/rounds.ts) so a drift in the machine's speed
 * reaches every set-up alike; even so a few percent is within the noise of a shared machine, so
 * the section shows what else kept the cores busy while each set-up was measured.
 *
 * A set-up whose config this build refuses (rpc.tls before RPC TLS exists) is not measured, and
 * the result says why.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { stringify } from 'yaml';
import { generateApiKey, hashApiKey } from '../../src/api/index.ts';
import { configSchema } from '../../src/config/index.ts';
import { makeTestPki, type TestPki } from '../../tests/fixtures/tls.ts';
import { DISTURBED_CORES } from '../lib/cpu.ts';
import { ask, type EngineTarget, startEngine } from '../lib/engine.ts';
import type { HttpBody } from '../../src/cli/bench/index.ts';
import { jsonBody, type LoadFigures, openLoad } from '../lib/load.ts';
import { type Charts, cell, pct, round, table } from '../lib/markdown.ts';
import { scratchDir, track } from '../lib/processes.ts';
import { interleavedRounds, otherCoresBusy, pool, type TargetRun } from '../lib/rounds.ts';
import { NOT_MEASURED, numberList, runIfMain, type Scenario, type TargetResult } from '../lib/scenario.ts';
import { barChart } from '../lib/svg.ts';

const PARAMS = {
  'duration-s': '5',
  concurrency: '1,64',
  elements: '16',
  'warmup-s': '1',
  /** The timed load is split into this many rounds that take turns (bench/lib/rounds.ts). */
  rounds: '3',
  /** API keys configured in the keyed set-ups. */
  keys: '8',
};
type SecurityParams = typeof PARAMS;

export const SETUPS = ['open', 'auth', 'https', 'rpc-tls', 'all'] as const;
export type Setup = (typeof SETUPS)[number];

/** What each set-up switches on. */
const SWITCHES: Record<Setup, { apiKeys: boolean; https: boolean; rpcTls: boolean }> = {
  open: { apiKeys: false, https: false, rpcTls: false },
  auth: { apiKeys: true, https: false, rpcTls: false },
  https: { apiKeys: true, https: true, rpcTls: false },
  'rpc-tls': { apiKeys: true, https: false, rpcTls: true },
  all: { apiKeys: true, https: true, rpcTls: true },
};

type EngineGroups = 'coordinator' | 'worker' | 'loadGenerator';

/** A set-up's rounds pooled, and what else kept the cores busy meanwhile (cores, null off Linux). */
export type SecurityRun = TargetRun<EngineGroups> & { otherCoresBusy: number | null };

/** A set-up against `open` at the same concurrency. */
export interface VsOpen {
  /** Its throughput over open's. */
  throughput: number;
  addedP50Ms: number;
  addedP99Ms: number;
  /** CPU per request of all three processes, minus open's, µs; null when /proc could not be read. */
  addedCpuUs: number | null;
}

export interface SecurityPoint {
  concurrency: number;
  /** The measured set-ups (those this build runs). */
  runs: Partial<Record<Setup, SecurityRun>>;
  vsOpen: Partial<Record<Setup, VsOpen>>;
}

export interface SecurityResult {
  params: SecurityParams;
  tensor: string;
  /** The set-ups not measured, and why. */
  notMeasured: Partial<Record<Setup, string>>;
  points: SecurityPoint[];
  /** Set-ups at a concurrency during which other work kept more than DISTURBED_CORES busy, with those cores. */
  disturbed: string[];
}

interface Secrets {
  pki: TestPki;
  /** The key the client sends: the last of those configured. */
  clientKey: string;
  keyHashes: string[];
  rpcToken: string;
}

/** A set-up's config, as the YAML file a user would write. */
function configOf(setup: Setup, elements: number, s: Secrets): Record<string, unknown> {
  const on = SWITCHES[setup];
  const tensor = (name: string) => ({ name, datatype: 'FP32', shape: [-1, elements] });
  return {
    coordinator: {
      port: 0,
      rpcPort: 0,
      ...(on.https ? { tls: { certFile: s.pki.certFile, keyFile: s.pki.keyFile } } : {}),
    },
    logging: { level: 'warn' },
    auth: {
      token: s.rpcToken,
      ...(on.apiKeys
        ? { apiKeys: s.keyHashes.map((sha256, i) => ({ name: `bench-${i}`, scopes: ['infer'], sha256 })) }
        : {}),
    },
    // the listener presents certFile, the dialer checks it against caFile; both read one file
    ...(on.rpcTls
      ? { rpc: { tls: { certFile: s.pki.certFile, keyFile: s.pki.keyFile, caFile: s.pki.caFile } } }
      : {}),
    models: [{ name: 'echo', backend: 'sim', inputs: [tensor('INPUT0')], outputs: [tensor('OUTPUT0')] }],
  };
}

/** Why this build would refuse a config (keys it does not know, say), or undefined when it takes it. */
function refusal(config: Record<string, unknown>): string | undefined {
  const parsed = configSchema.safeParse(config);
  if (parsed.success) return undefined;
  const unknownKeys = parsed.error.issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys' ? issue.keys.map((key) => [...issue.path, key].join('.')) : [],
  );
  if (unknownKeys.length > 0) return `${unknownKeys.join(', ')} not supported by this build`;
  return `the config is refused: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`;
}

/** Resolves once a TLS session with the CA's certificate is up on the port: it speaks TLS. */
function speaksTls(port: number, ca: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca }, () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

interface Started {
  setup: Setup;
  engine: EngineTarget;
  ca: string | undefined;
  headers: Record<string, string>;
  /** Its answer to the request, which every set-up must give alike. */
  answer: string;
}

/** Starts a set-up and checks it is what it claims: it answers, keys are enforced, RPC is over TLS. */
async function startSetup(setup: Setup, configFile: string, s: Secrets, request: HttpBody): Promise<Started> {
  const on = SWITCHES[setup];
  const caPem = readFileSync(s.pki.caFile, 'utf8');
  const ca = on.https ? caPem : undefined;
  const auth: Record<string, string> = on.apiKeys ? { authorization: `Bearer ${s.clientKey}` } : {};
  const engine = await startEngine(configFile, { headers: auth, ...(ca === undefined ? {} : { ca }) });
  const headers = { ...request.headers, ...auth };
  const url = `${engine.url}/v2/models/echo/infer`;
  const answer = await ask(url, { method: 'POST', body: request.body, headers, ca });
  if (answer.status !== 200)
    throw new Error(`${setup}: the echo model answered ${answer.status}: ${answer.text}`);
  if (on.apiKeys) {
    const refused = await ask(url, { method: 'POST', body: request.body, headers: request.headers, ca });
    if (refused.status !== 401)
      throw new Error(`${setup}: a request without a key got ${refused.status}, not 401`);
  }
  if (on.rpcTls) await speaksTls(engine.rpcPort!, caPem);
  return { setup, engine, ca, headers, answer: answer.text };
}

async function run(params: SecurityParams): Promise<SecurityResult> {
  const durationMs = Number(params['duration-s']) * 1000;
  const warmupMs = Number(params['warmup-s']) * 1000;
  const elements = Number(params.elements);
  const rounds = Math.max(1, Math.round(Number(params.rounds)));
  const keyCount = Math.max(1, Math.round(Number(params.keys)));
  const dir = scratchDir();
  const keys = Array.from({ length: keyCount }, generateApiKey);
  const secrets: Secrets = {
    pki: makeTestPki(dir, { names: ['127.0.0.1', 'localhost'] }),
    clientKey: keys.at(-1)!,
    keyHashes: keys.map(hashApiKey),
    rpcToken: randomBytes(32).toString('hex'),
  };
  const request = jsonBody({
    inputs: [
      {
        name: 'INPUT0',
        datatype: 'FP32',
        shape: [1, elements],
        data: Array.from({ length: elements }, (_, i) => i / 8),
      },
    ],
  });

  const notMeasured: SecurityResult['notMeasured'] = {};
  const started: Started[] = [];
  for (const setup of SETUPS) {
    const config = configOf(setup, elements, secrets);
    const why = refusal(config);
    if (why !== undefined) {
      notMeasured[setup] = why;
      continue;
    }
    const configFile = join(dir, `${setup}.yaml`);
    writeFileSync(configFile, stringify(config));
    started.push(await startSetup(setup, configFile, secrets, request));
  }
  if (started[0]?.setup !== 'open') throw new Error(`the baseline did not start: ${notMeasured.open}`);
  for (const { setup, answer } of started)
    if (answer !== started[0].answer)
      throw new Error(`${setup} must answer as open does:\n${answer}\n${started[0].answer}`);

  const points: SecurityPoint[] = [];
  const disturbed: string[] = [];
  for (const concurrency of numberList(params.concurrency)) {
    const loads = started.map(({ engine, ca, headers }) => {
      const load = openLoad({
        url: `${engine.url}/v2/models/echo/infer`,
        bodies: [{ body: request.body, headers }],
        concurrency,
        ...(ca === undefined ? {} : { ca }),
      });
      track(async () => load.close());
      return { pids: engine.pids, run: load.run, close: load.close };
    });
    const measured = await interleavedRounds(loads, { rounds, durationMs, warmupMs });
    for (const load of loads) load.close();
    const runs: SecurityPoint['runs'] = {};
    for (const [i, { setup }] of started.entries()) {
      const other = otherCoresBusy(measured[i]!);
      runs[setup] = { ...pool<EngineGroups>(measured[i]!), otherCoresBusy: other };
      if (other !== null && other > DISTURBED_CORES) disturbed.push(`${setup} c=${concurrency} (${other})`);
    }
    points.push({ concurrency, runs, vsOpen: compare(runs) });
  }
  return { params, tensor: `FP32 [1,${elements}]`, notMeasured, points, disturbed };
}

const cpuTotal = (r: TargetRun<EngineGroups>): number | null => {
  const { coordinator, worker, loadGenerator } = r.cpuUsPerRequest;
  return coordinator === null || worker === null || loadGenerator === null
    ? null
    : coordinator + worker + loadGenerator;
};

function compare(runs: SecurityPoint['runs']): SecurityPoint['vsOpen'] {
  const open = runs.open!;
  const vsOpen: SecurityPoint['vsOpen'] = {};
  for (const setup of SETUPS) {
    const r = runs[setup];
    if (!r || setup === 'open') continue;
    const [cpu, openCpu] = [cpuTotal(r), cpuTotal(open)];
    vsOpen[setup] = {
      throughput: round(r.rps / open.rps, 3),
      addedP50Ms: round(r.latencyMs.p50 - open.latencyMs.p50, 3),
      addedP99Ms: round(r.latencyMs.p99 - open.latencyMs.p99, 3),
      addedCpuUs: cpu === null || openCpu === null ? null : cpu - openCpu,
    };
  }
  return vsOpen;
}

// ---- the page -------------------------------------------------------------------------------------

const DESCRIPTION: Record<Setup, string> = {
  open: 'no API keys, HTTP, plain RPC',
  auth: 'API keys, HTTP, plain RPC',
  https: 'API keys, HTTPS, plain RPC',
  'rpc-tls': 'API keys, HTTP, RPC over TLS',
  all: 'API keys, HTTPS, RPC over TLS',
};

const latency = (r: LoadFigures): string =>
  [r.latencyMs.p50, r.latencyMs.p90, r.latencyMs.p99].map((v) => cell(v, 3)).join(' / ');

const signed = (v: number | null | undefined, digits = 0): string =>
  v === null || v === undefined ? '-' : `${v > 0 ? '+' : ''}${cell(v, digits)}`;

function section(result: SecurityResult, charts: Charts): string[] {
  const { points } = result;
  const rows = points.flatMap((p) =>
    SETUPS.filter((setup) => p.runs[setup]).map((setup) => {
      const r = p.runs[setup]!;
      const vs = p.vsOpen[setup];
      const { coordinator, worker, loadGenerator } = r.cpuUsPerRequest;
      return [
        cell(p.concurrency),
        `\`${setup}\``,
        cell(r.rps),
        vs ? pct(vs.throughput) : '(baseline)',
        latency(r),
        vs ? signed(vs.addedP50Ms, 3) : '',
        [coordinator, worker, loadGenerator].map((v) => cell(v, 0)).join(' / '),
        vs ? signed(vs.addedCpuUs) : cell(cpuTotal(r), 0),
        cell(r.otherCoresBusy),
      ];
    }),
  );
  const keyed = `${result.params.keys} API keys configured, the client sending the last`;
  const out = [
    "What auth and TLS cost: the overhead scenario's engine (the `sim` backend at 0 ms, one coordinator",
    `and one worker) in five set-ups measured in the same run, in ${result.params.rounds} interleaved rounds. Tensor ${result.tensor}.`,
    '',
    ...SETUPS.map((s) => `- \`${s}\`: ${DESCRIPTION[s]}${SWITCHES[s].apiKeys ? ` (${keyed})` : ''}.`),
    '',
    'RPC authentication (a handshake per connection) is on in all five. Connections are kept alive, so',
    "TLS's handshakes fall in the warm-up and what is timed is its steady state. CPU is per request,",
    'µs, of each process; "other work" is what the rest of the machine kept busy meanwhile, in cores.',
    '',
    ...table(
      [
        'concurrency',
        'set-up',
        'req/s',
        'vs open',
        'p50 / p90 / p99 ms',
        'added p50 ms',
        'CPU µs/req coordinator / worker / load generator',
        'CPU µs/req added (all three)',
        'other work, cores',
      ],
      rows,
    ),
  ];
  for (const setup of SETUPS) {
    const why = result.notMeasured[setup];
    if (why !== undefined) out.push(`\`${setup}\` not measured: ${why}.`, '');
  }
  if (result.disturbed.length > 0)
    out.push(
      `Other work kept more than ${DISTURBED_CORES} cores busy while these were measured: ${result.disturbed.join(', ')}; ` +
        'differences of a few percent there are within the noise.',
      '',
    );
  const measured = SETUPS.filter((s) => s !== 'open' && points.some((p) => p.vsOpen[s]));
  if (measured.length > 0)
    out.push(
      charts.add(
        'security-throughput',
        barChart({
          title: 'Security: throughput against the open API (sim backend, 0 ms)',
          valueLabel: '% of open',
          categories: measured,
          series: points.map((p) => ({
            name: `concurrency ${p.concurrency}`,
            values: measured.map((s) => (p.vsOpen[s] ? round(p.vsOpen[s].throughput * 100, 1) : null)),
          })),
        }),
        'Security: throughput of each set-up against the open API',
      ),
      '',
    );
  return out;
}

// ---- the target -----------------------------------------------------------------------------------

/** CPU per request of open against auth, all three processes. */
function authBound(p: SecurityPoint): string | undefined {
  const [open, auth] = [p.runs.open!, p.runs.auth!];
  const [openCpu, authCpu] = [cpuTotal(open), cpuTotal(auth)];
  if (openCpu === null || authCpu === null) return undefined;
  return (
    `CPU per request, all processes: open ${cell(openCpu, 0)} µs (coordinator ${cell(open.cpuUsPerRequest.coordinator, 0)}), ` +
    `with keys ${cell(authCpu, 0)} µs (coordinator ${cell(auth.cpuUsPerRequest.coordinator, 0)}): ` +
    `the keys change the coordinator's CPU per request by ${signed(auth.cpuUsPerRequest.coordinator! - open.cpuUsPerRequest.coordinator!)} µs` +
    (auth.otherCoresBusy !== null
      ? `; other work kept ${cell(auth.otherCoresBusy)} cores busy meanwhile`
      : '')
  );
}

function targets(result: SecurityResult | undefined): TargetResult[] {
  const target = {
    id: 'security-auth-c64-throughput',
    scenario: 'security',
    goal: 'security, concurrency 64: throughput with API keys ≥ 95% of the open API',
  };
  const c64 = result?.points.find(
    (p) => p.concurrency === 64 && p.runs.auth && p.runs.open && p.runs.open.rps > 0,
  );
  if (!c64) return [{ ...target, status: 'not measured', measured: NOT_MEASURED }];
  const ratio = c64.runs.auth!.rps / c64.runs.open!.rps;
  const bound = authBound(c64);
  return [
    {
      ...target,
      status: ratio >= 0.95 ? 'met' : 'not met',
      measured: `${Math.round(ratio * 100)}% (${cell(c64.runs.auth!.rps)} vs ${cell(c64.runs.open!.rps)} req/s)`,
      ...(bound ? { bound } : {}),
    },
  ];
}

export const security: Scenario<SecurityResult, SecurityParams> = {
  name: 'security',
  title: 'Security: what API keys and TLS cost',
  params: PARAMS,
  // keeps both concurrencies the target is stated at
  quick: { 'duration-s': '2', 'warmup-s': '0.5', concurrency: '1,64' },
  run,
  section,
  targets,
};

await runIfMain(import.meta.url, security);
