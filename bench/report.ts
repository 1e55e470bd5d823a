/**
 * Regenerates docs/benchmarks.md and docs/benchmarks/*.svg from a suite file written by
 * `npm run bench` (bench/run.ts, which also calls this at its end).
 *
 *   npm run bench:report                                  the newest bench/results/suite-*.json
 *   npm run bench:report -- bench/results/suite-<timestamp>.json
 *
 * Prints one JSON line: the files written and the targets.
 */

import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeReport } from './lib/page.ts';
import { newestSuiteFile } from './lib/suite.ts';
import { PAGE_SCENARIOS } from './scenarios/index.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

const { positionals } = parseArgs({ allowPositionals: true, strict: true });
if (positionals.length > 1) {
  process.stderr.write('bench:report: give at most one suite file\n');
  process.exit(2);
}
const suiteFile = positionals[0] === undefined ? newestSuiteFile() : resolve(positionals[0]);
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
