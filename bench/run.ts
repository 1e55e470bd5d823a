/**
 * The benchmark suite: runs every scenario (bench/scenarios/, or the named ones) one after
 * another, each as its own child process with a time limit, collects the typed result each
 * prints, writes them with the machine's description to bench/results/suite-<timestamp>.json,
 * and regenerates docs/benchmarks.md from that file (bench/report.ts).
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
 * variables reach every scenario too (bench/lib/scenario.ts); BENCH_QUICK=1 and BENCH_TIMEOUT_S
 * set the runner's own options. stdout carries JSON only: a start line with every parameter, one
 * summary line per scenario, and a last line with the suite file and the targets; the
 * scenarios' stderr is passed through to stderr, each line prefixed with the scenario's name.
 *
 * Every scenario runs in a process group of its own; on timeout, on SIGINT/SIGTERM and after it
 * exits, whatever is left of the group is stopped (bench/lib/suite-process.ts).
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeReport } from './lib/page.ts';
import { envTrue, RESULTS_DIR, type Scenario } from './lib/scenario.ts';
import {
  fileTimestamp,
  type ScenarioRun,
  SUITE_FORMAT,
  SUITE_PREFIX,
  type SuiteFile,
  suiteGit,
  suiteMachine,
} from './lib/suite.ts';
import { ScenarioProcesses } from './lib/suite-process.ts';
import { PAGE_SCENARIOS, SCENARIOS, scenarioFile } from './scenarios/index.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const RUNNER_FLAGS = new Set(['quick', 'timeout-s', 'set', 'no-report', 'help']);
/** Per-scenario time limit, s, unless --timeout-s says otherwise. */
const DEFAULT_TIMEOUT_S = 900;
const DEFAULT_QUICK_TIMEOUT_S = 240;

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

// ---- what to run, with which flags ---------------------------------------------------------------

const names = SCENARIOS.map((s) => s.name);
const declared = (s: Scenario<unknown>): string[] => Object.keys(s.params);
const scenarioFlags = new Set(SCENARIOS.flatMap(declared));

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
  const header = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!;
  process.stderr.write(`${header.replace(/^\/\*\*\n|^ \* ?/gm, '').trimEnd()}\n\n`);
  process.stderr.write(`scenarios: ${names.join(', ')}\n`);
  for (const s of SCENARIOS)
    process.stderr.write(
      `  ${s.name}: ${declared(s)
        .map((f) => `--${f}`)
        .join(' ')}\n`,
    );
  process.exit(0);
}

const quick = values.quick === true || envTrue(process.env.BENCH_QUICK);
const timeoutS = Number(
  values['timeout-s'] ?? process.env.BENCH_TIMEOUT_S ?? (quick ? DEFAULT_QUICK_TIMEOUT_S : DEFAULT_TIMEOUT_S),
);
if (!(timeoutS > 0)) fail(`--timeout-s must be a positive number of seconds, got "${values['timeout-s']}"`);

const problems: string[] = [];
for (const name of positionals)
  if (!names.includes(name)) problems.push(`unknown scenario "${name}"; one of ${names.join(', ')}`);
const sets: Record<string, Record<string, string>> = {};
for (const item of (values.set as string[] | undefined) ?? []) {
  const m = /^([a-z0-9-]+)\.([a-z0-9-]+)=(.*)$/.exec(item);
  const scenario = SCENARIOS.find((s) => s.name === m?.[1]);
  if (!m) problems.push(`--set "${item}": expected <scenario>.<flag>=<value>`);
  else if (!scenario) problems.push(`--set "${item}": no scenario "${m[1]}"`);
  else if (!declared(scenario).includes(m[2]!))
    problems.push(`--set "${item}": ${m[1]} has no --${m[2]}; it takes ${declared(scenario).join(', ')}`);
  else sets[m[1]!] = { ...sets[m[1]!], [m[2]!]: m[3]! };
}
if (problems.length) fail(problems.join('\n'));

const passThrough: Record<string, string> = Object.fromEntries(
  Object.entries(values).filter(
    (entry): entry is [string, string] => !RUNNER_FLAGS.has(entry[0]) && typeof entry[1] === 'string',
  ),
);
const benchEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    (entry): entry is [string, string] => entry[0].startsWith('BENCH_') && entry[1] !== undefined,
  ),
);

/**
 * One scenario's flags, strongest first: --set for it, a runner flag it declares (a duration in
 * seconds reaches a scenario that only takes `-ms` flags in milliseconds), then --quick, which it
 * applies itself (its module says what a smoke run shortens). BENCH_* variables reach it anyway.
 */
async function flagsFor(
  scenario: Scenario<unknown>,
): Promise<{ flags: Record<string, string>; notes: string[] }> {
  const own = new Set(declared(scenario));
  const flags: Record<string, string> = { ...sets[scenario.name] };
  const notes: string[] = [];
  for (const [flag, value] of Object.entries(passThrough)) {
    if (flag in flags) continue;
    const ms = flag.replace(/-s$/, '-ms');
    if (own.has(flag)) flags[flag] = value;
    else if (flag.endsWith('-s') && own.has(ms) && !(ms in flags)) {
      flags[ms] = String(Math.round(Number(value) * 1000));
      notes.push(`--${flag} ${value} passed as --${ms} ${flags[ms]}`);
    }
  }
  if (quick) {
    flags.quick = '';
    const shortened = Object.entries(scenario.quick ?? {}).filter(([flag]) => !(flag in flags));
    notes.push(`quick: ${shortened.map(([f, v]) => `--${f} ${v}`).join(', ')} for a smoke run`);
  }
  const note = await scenario.adjustFlags?.(flags, process.env);
  if (note) notes.push(note);
  return { flags, notes };
}

const planned: ScenarioRun[] = [];
for (const scenario of SCENARIOS.filter((s) => positionals.length === 0 || positionals.includes(s.name))) {
  planned.push({
    name: scenario.name,
    file: scenarioFile(scenario.name),
    ...(await flagsFor(scenario)),
    status: 'skipped',
    exitCode: null,
    signal: null,
    startedAt: null,
    durationS: 0,
    timeoutS,
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
    ...(result.line ? { result: result.line.result } : {}),
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
      result: run.result !== undefined,
      ...(run.notes.length ? { notes: run.notes } : {}),
    }),
  );
}
save();

let reportFile: string | undefined;
let targets: unknown;
if (!interrupt.signal.aborted && values['no-report'] !== true) {
  const written = writeReport(suiteFile, ROOT, PAGE_SCENARIOS);
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
