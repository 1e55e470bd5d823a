/**
 * The benchmark suite: runs every scenario (or the named ones) one after another, each as its
 * own child process with a time limit, collects the JSON lines each prints, writes them with the
 * machine's description to bench/results/suite-<timestamp>.json, and regenerates
 * docs/benchmarks.md from that file (bench/report.ts).
 *
 *   npm run bench                                  every scenario, default parameters
 *   npm run bench -- overhead batching             only these
 *   npm run bench -- --quick                       shortened durations: a smoke run
 *   npm run bench -- --duration-s 3 --concurrency 1,8,64
 *                                                  passed to every scenario that takes the flag
 *   npm run bench -- cache --set cache.stores=memory,memory+sqlite
 *                                                  one scenario's own flag
 *   npm run bench -- --timeout-s 300 --no-report
 *
 * Any flag a scenario declares can be given here; it goes to each scenario that declares it
 * (`--duration-s` reaches a scenario with only `--duration-ms` in milliseconds). BENCH_*
 * variables reach every scenario too (bench/lib/params.ts); BENCH_QUICK=1 and BENCH_TIMEOUT_S
 * set the runner's own options. stdout carries JSON only: a start line with every parameter, one
 * summary line per scenario, and a last line with the suite file and the targets; the
 * scenarios' stderr is passed through to stderr, each line prefixed with the scenario's name.
 *
 * Every scenario runs in a process group of its own; on timeout, on SIGINT/SIGTERM and after it
 * exits, whatever is left of the group is stopped (bench/lib/suite-process.ts).
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { RESULTS_DIR } from './lib/results.ts';
import {
  fileTimestamp,
  type ScenarioRun,
  SUITE_FORMAT,
  SUITE_PREFIX,
  type SuiteFile,
  suiteGit,
  suiteMachine,
} from './lib/suite-format.ts';
import { ScenarioProcesses } from './lib/suite-process.ts';
import { writeReport } from './lib/suite-report.ts';
import {
  adjustForServices,
  availableScenarios,
  DEFAULT_QUICK_TIMEOUT_S,
  DEFAULT_TIMEOUT_S,
  declaredFlags,
  readSource,
  resolveFlags,
  SCENARIOS,
  scenarioFile,
} from './lib/suite-scenarios.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const RUNNER_FLAGS = new Set(['quick', 'timeout-s', 'set', 'no-report', 'help']);

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

// ---- what to run, with which flags ---------------------------------------------------------------

const available = availableScenarios(ROOT);
const sources = new Map(available.map((name) => [name, readSource(scenarioFile(ROOT, name))]));
const declared = new Map(available.map((name) => [name, declaredFlags(sources.get(name)!)]));
const scenarioFlags = new Set([...declared.values()].flatMap((flags) => [...flags]));

const { values, positionals } = (() => {
  try {
    return parseArgs({
      options: {
        quick: { type: 'boolean' },
        'timeout-s': { type: 'string' },
        set: { type: 'string', multiple: true },
        'no-report': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        ...Object.fromEntries(
          [...scenarioFlags].filter((f) => !RUNNER_FLAGS.has(f)).map((f) => [f, { type: 'string' as const }]),
        ),
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    return fail(`${(err as Error).message}; see --help`);
  }
})();

if (values.help) {
  const header = readSource(fileURLToPath(import.meta.url)).split('*/')[0]!;
  process.stderr.write(`${header.replace(/^\/\*\*\n|^ \* ?/gm, '').trimEnd()}\n\n`);
  process.stderr.write(`scenarios here: ${available.join(', ')}\n`);
  for (const name of available)
    process.stderr.write(`  ${name}: ${[...declared.get(name)!].map((f) => `--${f}`).join(' ')}\n`);
  process.exit(0);
}

const envTrue = (v: string | undefined): boolean => v !== undefined && /^(1|true|yes)$/i.test(v);
const quick = values.quick === true || envTrue(process.env.BENCH_QUICK);
const timeoutS = Number(
  values['timeout-s'] ?? process.env.BENCH_TIMEOUT_S ?? (quick ? DEFAULT_QUICK_TIMEOUT_S : DEFAULT_TIMEOUT_S),
);
if (!(timeoutS > 0)) fail(`--timeout-s must be a positive number of seconds, got "${values['timeout-s']}"`);

const problems: string[] = [];
for (const name of positionals) {
  if (available.includes(name)) continue;
  problems.push(
    (SCENARIOS as readonly string[]).includes(name)
      ? `scenario "${name}": bench/${name}.ts does not exist`
      : `unknown scenario "${name}"; one of ${available.join(', ')}`,
  );
}
const sets: Record<string, Record<string, string>> = {};
for (const item of (values.set as string[] | undefined) ?? []) {
  const m = /^([a-z0-9-]+)\.([a-z0-9-]+)=(.*)$/.exec(item);
  if (!m) {
    problems.push(`--set "${item}": expected <scenario>.<flag>=<value>`);
    continue;
  }
  const [, scenario, flag, value] = m as unknown as [string, string, string, string];
  if (!available.includes(scenario)) problems.push(`--set "${item}": no scenario "${scenario}"`);
  else if (!declared.get(scenario)!.has(flag))
    problems.push(
      `--set "${item}": ${scenario} has no --${flag}; it takes ${[...declared.get(scenario)!].join(', ')}`,
    );
  else sets[scenario] = { ...sets[scenario], [flag]: value };
}
if (problems.length) fail(problems.join('\n'));

const passThrough: Record<string, string> = Object.fromEntries(
  Object.entries(values).filter(
    (entry): entry is [string, string] => !RUNNER_FLAGS.has(entry[0]) && typeof entry[1] === 'string',
  ),
);
const selected = positionals.length ? available.filter((n) => positionals.includes(n)) : available;
const benchEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    (entry): entry is [string, string] => entry[0].startsWith('BENCH_') && entry[1] !== undefined,
  ),
);

const planned: ScenarioRun[] = [];
for (const name of selected) {
  const resolved = resolveFlags(name, sources.get(name)!, declared.get(name)!, {
    quick,
    passThrough,
    sets: sets[name] ?? {},
    env: process.env,
  });
  await adjustForServices(name, sources.get(name)!, resolved, process.env);
  planned.push({
    name,
    file: relative(ROOT, scenarioFile(ROOT, name)),
    flags: resolved.flags,
    notes: resolved.notes,
    status: 'skipped',
    exitCode: null,
    signal: null,
    startedAt: null,
    durationS: 0,
    timeoutS,
    results: [],
    otherStdout: [],
  });
}

// ---- running ----------------------------------------------------------------------------------------

const processes = new ScenarioProcesses();
const interrupt = new AbortController();
process.on('exit', () => processes.killAllNow());
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupt.signal.aborted) {
      // a second signal: no more waiting for graceful stops
      processes.killAllNow();
      process.exit(130);
    }
    process.stderr.write(`\nbench: ${sig}: stopping the running scenario\n`);
    interrupt.abort();
  });
}

const started = new Date();
const suiteFile = `${RESULTS_DIR}${SUITE_PREFIX}${fileTimestamp(started)}.json`;
const suite: SuiteFile = {
  format: SUITE_FORMAT,
  startedAt: started.toISOString(),
  finishedAt: started.toISOString(),
  durationS: 0,
  interrupted: false,
  machine: suiteMachine(),
  git: suiteGit(ROOT),
  params: {
    quick,
    timeoutS,
    requested: positionals,
    passThrough,
    sets,
    env: benchEnv,
    argv: process.argv.slice(2),
  },
  scenarios: planned,
};

function save(): void {
  const now = new Date();
  suite.finishedAt = now.toISOString();
  suite.durationS = Math.round((now.getTime() - started.getTime()) / 100) / 10;
  suite.interrupted = interrupt.signal.aborted;
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(suiteFile, `${JSON.stringify(suite, null, 2)}\n`);
}

const argvOf = (run: ScenarioRun): string[] => [
  '--import',
  'tsx',
  run.file,
  ...Object.entries(run.flags).flatMap(([flag, value]) =>
    value === '' ? [`--${flag}`] : [`--${flag}`, value],
  ),
];

console.log(
  JSON.stringify({
    suite: 'start',
    startedAt: suite.startedAt,
    file: relative(ROOT, suiteFile),
    machine: suite.machine,
    git: suite.git,
    params: suite.params,
    scenarios: planned.map((run) => ({ name: run.name, flags: run.flags, notes: run.notes })),
  }),
);

for (const run of planned) {
  if (interrupt.signal.aborted) break;
  process.stderr.write(`\nbench: ${run.name}: node ${argvOf(run).join(' ')} (limit ${timeoutS} s)\n`);
  for (const note of run.notes) process.stderr.write(`bench: ${run.name}: ${note}\n`);
  run.startedAt = new Date().toISOString();
  const result = await processes.run({
    cwd: ROOT,
    argv: argvOf(run),
    env: process.env,
    timeoutMs: timeoutS * 1000,
    signal: interrupt.signal,
    onStderrLine: (line) => process.stderr.write(`[${run.name}] ${line}\n`),
  });
  Object.assign(run, {
    status: result.status,
    exitCode: result.exitCode,
    signal: result.signal,
    durationS: result.durationS,
    otherCoresBusy: result.otherCoresBusy,
    results: result.results,
    otherStdout: result.otherStdout,
  });
  if (result.status !== 'ok') run.stderrTail = result.stderrTail;
  // tsx's esbuild service exits by itself once its parent has gone, late on a busy machine: not a leak
  const leftBehind = result.leftBehind.filter((name) => name !== 'esbuild');
  if (leftBehind.length)
    run.notes.push(`left behind by the scenario and stopped by the runner: ${leftBehind.join(', ')}`);
  save();
  console.log(
    JSON.stringify({
      suite: 'scenario',
      scenario: run.name,
      status: run.status,
      exitCode: run.exitCode,
      signal: run.signal,
      durationS: run.durationS,
      timeoutS,
      otherCoresBusy: run.otherCoresBusy,
      flags: run.flags,
      resultLines: run.results.length,
      benches: [...new Set(run.results.map((r) => r.bench))],
      ...(run.notes.length ? { notes: run.notes } : {}),
    }),
  );
}
save();

let reportFile: string | undefined;
let targets: unknown;
if (!interrupt.signal.aborted && values['no-report'] !== true) {
  const written = writeReport(suiteFile, ROOT);
  reportFile = relative(ROOT, written.markdownFile);
  targets = written.targets;
  process.stderr.write(`\nbench: wrote ${reportFile} and ${written.svgFiles.length} charts\n`);
}
console.log(
  JSON.stringify({
    suite: 'done',
    file: relative(ROOT, suiteFile),
    durationS: suite.durationS,
    interrupted: suite.interrupted,
    statuses: Object.fromEntries(planned.map((run) => [run.name, run.status])),
    ...(reportFile ? { report: reportFile, targets } : {}),
  }),
);
process.exitCode = interrupt.signal.aborted ? 130 : planned.every((run) => run.status === 'ok') ? 0 : 1;
