/**
 * Regenerates docs/benchmarks.md and docs/benchmarks/*.svg from a suite file written by
 * `npm run bench` (bench/run.ts, which also calls this at its end).
 *
 *   npm run bench:report                                  the newest bench/results/suite-*.json
 *   npm run bench:report -- bench/results/suite-<timestamp>.json
 *   npm run bench:report -- --add bench/results/suite-<timestamp>.json
 *                            the page's own data (docs/benchmarks/suite.json) with the scenarios
 *                            of that run folded in (`npm run bench -- security`, say), each
 *                            noting when and where it was measured
 *
 * Prints one JSON line: the files written and the targets.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { REPORT_DATA, writeReport } from './lib/page.ts';
import { RESULTS_DIR } from './lib/scenario.ts';
import { fileTimestamp, foldSuite, newestSuiteFile, readSuite, SUITE_PREFIX } from './lib/suite.ts';
import { PAGE_SCENARIOS, SCENARIOS } from './scenarios/index.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

const { positionals, values } = parseArgs({
  options: { add: { type: 'string' } },
  allowPositionals: true,
  strict: true,
});
if (positionals.length > 1 || (values.add !== undefined && positionals.length > 0)) {
  process.stderr.write('bench:report: give at most one suite file, or --add <suite file>\n');
  process.exit(2);
}

/** The page's data with --add's runs folded in, written as a suite file of its own in bench/results. */
function folded(addFile: string): string {
  const suite = foldSuite(
    readSuite(`${ROOT}${REPORT_DATA}`),
    readSuite(resolve(addFile)),
    SCENARIOS.map((s) => s.name),
  );
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = `${RESULTS_DIR}${SUITE_PREFIX}${fileTimestamp(new Date())}-folded.json`;
  writeFileSync(file, `${JSON.stringify(suite, null, 2)}\n`);
  return file;
}

const suiteFile =
  values.add !== undefined
    ? folded(values.add)
    : positionals[0] === undefined
      ? newestSuiteFile()
      : resolve(positionals[0]);
if (suiteFile === undefined) {
  process.stderr.write('bench:report: no bench/results/suite-*.json yet; run `npm run bench` first\n');
  process.exit(1);
}

const written = writeReport(suiteFile, ROOT, PAGE_SCENARIOS);
console.log(
  JSON.stringify({
    suite: relative(ROOT, suiteFile),
    report: relative(ROOT, written.markdownFile),
    charts: written.svgFiles.map((f) => relative(ROOT, f)),
    targets: written.targets,
  }),
);
