/**
 * What a scenario is: one module (bench/scenarios/<name>.ts) that owns its flags, its run, its
 * typed result, its section of docs/benchmarks.md (tables and charts) and its targets. The suite
 * (bench/run.ts) runs it as a process of its own; the report (bench/report.ts) renders its result.
 *
 * Run directly (`node --import tsx bench/scenarios/<name>.ts --flag value`), a scenario prints its
 * result as one JSON line on stdout, writes it to bench/results/<name>-<timestamp>.json, and
 * prints its section's tables on stderr.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Charts } from './markdown.ts';
import { ROLE_ENV, stopAll } from './processes.ts';

export const RESULTS_DIR = fileURLToPath(new URL('../results/', import.meta.url));

/** A scenario's flags, `--name value` or BENCH_NAME, by name, with their default values. */
export type Params = Record<string, string>;

export type TargetStatus = 'met' | 'not met' | 'not measured';

export interface TargetResult {
  id: string;
  /** The scenario it is measured in. */
  scenario: string;
  goal: string;
  status: TargetStatus;
  /** The measured figure and where it comes from; why not, when not measured. */
  measured: string;
  /** What bounds the figure, from what the run measured (CPU per request, the socket floor). */
  bound?: string;
}

export const NOT_MEASURED = 'not measured in this run';

/**
 * Methods rather than function properties: a Scenario<OverheadResult> is then a
 * Scenario<unknown> for the suite and the report, which hand each result back to its own module.
 */
export interface Scenario<R, P extends Params = Params> {
  name: string;
  /** Its section's title on the page. */
  title: string;
  /** Its flags with their defaults. */
  params: P;
  /** What a smoke run (--quick) changes. */
  quick?: Partial<P>;
  run(params: P, quick: boolean): Promise<R>;
  /** Its section of docs/benchmarks.md: text, tables and charts. */
  section(result: R, charts: Charts): string[];
  /** Its targets; `result` is undefined when the suite did not run it, or it printed none. */
  targets?(result: R | undefined, cpus: number): TargetResult[];
  /** Before the suite runs it: adjusts its flags to the services at hand; a note says how. */
  adjustFlags?(flags: Record<string, string>, env: NodeJS.ProcessEnv): Promise<string | undefined>;
  /** What the file does when forked in a role (processes.ts forkRole) instead of as the scenario. */
  roles?: Record<string, () => Promise<void>>;
}

/** The JSON line a scenario prints: what the suite keeps of it. */
export interface ScenarioLine<R = unknown> {
  bench: string;
  at: string;
  quick: boolean;
  params: Params;
  result: R;
}

/** "1,8,64" -> [1, 8, 64]; what is not a positive number is left out. */
export function numberList(text: string): number[] {
  return text
    .split(',')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isFinite(n) && n > 0);
}

const envName = (flag: string): string => `BENCH_${flag.toUpperCase().replaceAll('-', '_')}`;
/** BENCH_QUICK=1, true or yes. */
export const envTrue = (v: string | undefined): boolean => v !== undefined && /^(1|true|yes)$/i.test(v);

/** Flags, strongest first: the command line, BENCH_* variables, the quick value, the default. */
export function parseParams<P extends Params>(
  scenario: Scenario<unknown, P>,
  argv: string[],
  env: NodeJS.ProcessEnv,
): { params: P; quick: boolean } {
  const options: Record<string, { type: 'string' | 'boolean' }> = { quick: { type: 'boolean' } };
  for (const key of Object.keys(scenario.params)) options[key] = { type: 'string' };
  const values = parseArgs({ args: argv, options, strict: true }).values as Record<string, unknown>;
  const quick = values.quick === true || envTrue(env.BENCH_QUICK);
  const params: Params = {};
  for (const [key, fallback] of Object.entries(scenario.params))
    params[key] =
      (values[key] as string | undefined) ??
      env[envName(key)] ??
      (quick ? scenario.quick?.[key] : undefined) ??
      fallback;
  return { params: params as P, quick };
}

/**
 * At the end of a scenario module: when the file is the process's entry point, runs the scenario
 * (or the role it was forked in) and stops whatever it started, even when it fails.
 */
export async function runIfMain(moduleUrl: string, scenario: Scenario<unknown>): Promise<void> {
  if (process.argv[1] === undefined || resolve(process.argv[1]) !== fileURLToPath(moduleUrl)) return;
  const role = process.env[ROLE_ENV];
  if (role !== undefined) {
    const main = scenario.roles?.[role];
    if (!main) throw new Error(`${scenario.name} has no role "${role}"`);
    return main();
  }
  process.once('SIGINT', () => void stopAll().finally(() => process.exit(130)));
  const { params, quick } = parseParams(scenario, process.argv.slice(2), process.env);
  let result: unknown;
  try {
    result = await scenario.run(params, quick);
  } finally {
    await stopAll();
  }
  const line: ScenarioLine = { bench: scenario.name, at: new Date().toISOString(), quick, params, result };
  console.log(JSON.stringify(line));
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    `${RESULTS_DIR}${scenario.name}-${line.at.replaceAll(':', '-')}.json`,
    `${JSON.stringify(line, null, 2)}\n`,
  );
  // the same tables the page will show, for whoever runs it by hand (charts only on the page)
  const text = scenario.section(result, new Charts()).filter((l) => !l.startsWith('!['));
  process.stderr.write(`\n${text.join('\n')}\n`);
}
