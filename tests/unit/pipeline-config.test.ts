/**
 * Config checks for pipelines, processor pools and version policies: each refusal names the
 * field at fault (one CONFIG_INVALID listing every problem), and a sound config expands pools
 * into workers that pool-placed models list.
 */

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { type LoadedConfig, loadConfig } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';

/** Writes `yaml` as config.yaml in a fresh folder (removed after the test) and loads it. */
function load(t: TestContext, yaml: string): LoadedConfig {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-pipeline-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, yaml);
  return loadConfig({ file });
}

/** The issues of the CONFIG_INVALID error loading `yaml` throws. */
function issuesOf(t: TestContext, yaml: string): string[] {
  try {
    load(t, yaml);
  } catch (err) {
    assert.ok(err instanceof InfergridError, `expected an InfergridError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    const issues = (err.details as { issues?: string[] } | undefined)?.issues ?? [];
    assert.ok(issues.length > 0, 'CONFIG_INVALID lists its issues');
    for (const issue of issues) assert.ok(err.message.includes(issue), `the message lists "${issue}"`);
    return issues;
  }
  assert.fail('expected loadConfig to refuse the config');
}

/** Asserts exactly one issue, matching `pattern`. */
function assertOneIssue(issues: string[], pattern: RegExp): void {
  assert.equal(issues.length, 1, `one issue expected, got: ${JSON.stringify(issues, null, 2)}`);
  assert.match(issues[0]!, pattern);
}

const V = '{ name: v, datatype: FP32, shape: [-1] }';
const OUT = '{ name: out, datatype: FP32, shape: [-1] }';

/** Two sim step models (a: x -> y, b: x -> y) and what follows `models:` after them. */
function withSteps(rest: string): string {
  return `
models:
  - name: a
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: b
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
${rest}`;
}

/** A pipeline model `p` with the given steps and outputs (and extra fields). */
function pipeline(steps: string, outputs: string, extra = '', outputSpecs = `[${OUT}]`): string {
  return `  - name: p
    backend: pipeline
    inputs: [${V}]
    outputs: ${outputSpecs}${extra}
    pipeline:
      steps:
${steps}
      outputs: ${outputs}
`;
}

const TWO_STEPS = `        - { name: first, model: a, inputs: { x: $v } }
        - { name: second, model: b, inputs: { x: first.y } }`;

test('pipeline config - a sound pipeline loads with its steps and outputs as written', (t) => {
  const { config } = load(t, withSteps(pipeline(TWO_STEPS, '{ out: second.y }')));
  const p = config.models.find((m) => m.name === 'p')!;
  assert.equal(p.backend, 'pipeline');
  assert.deepEqual(
    p.pipeline!.steps.map((s) => [s.name, s.model, s.inputs]),
    [
      ['first', 'a', { x: '$v' }],
      ['second', 'b', { x: 'first.y' }],
    ],
  );
  assert.deepEqual(p.pipeline!.outputs, { out: 'second.y' });
  assert.equal(p.workers, undefined, 'a pipeline runs on the coordinator');
});

test('pipeline config - a step reading a later step is refused, naming the input', (t) => {
  const steps = `        - { name: first, model: a, inputs: { x: second.y } }
        - { name: second, model: b, inputs: { x: $v } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: second.y }'))),
    /models\[2\]\.pipeline\.steps\[0\]\.inputs\.x: "second" is not an earlier step/,
  );
});

test('pipeline config - a step reading itself is refused (no cycles)', (t) => {
  const steps = `        - { name: first, model: a, inputs: { x: first.y } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: first.y }'))),
    /steps\[0\]\.inputs\.x: "first" is not an earlier step/,
  );
});

test('pipeline config - an unknown pipeline input is refused, listing the inputs', (t) => {
  const steps = `        - { name: first, model: a, inputs: { x: $image } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: first.y }'))),
    /steps\[0\]\.inputs\.x: the pipeline has no input "image" \(inputs: v\)/,
  );
});

test('pipeline config - a source that is neither $input nor step.output is refused', (t) => {
  const steps = `        - { name: first, model: a, inputs: { x: nodot } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: first.y }'))),
    /steps\[0\]\.inputs\.x: "nodot" is neither/,
  );
});

test('pipeline config - a step naming an unknown model is refused', (t) => {
  const steps = `        - { name: first, model: nope, inputs: { x: $v } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: first.y }'))),
    /steps\[0\]\.model: no model "nope" is defined/,
  );
});

test('pipeline config - a step naming a version its model does not have is refused', (t) => {
  const steps = `        - { name: first, model: a, version: 7, inputs: { x: $v } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: first.y }'))),
    /steps\[0\]\.version: model "a" has no version "7"/,
  );
});

test('pipeline config - a pipeline step naming another pipeline is refused (no nesting)', (t) => {
  const inner = pipeline(`        - { name: first, model: a, inputs: { x: $v } }`, '{ out: first.y }');
  const outer = `  - name: outer
    backend: pipeline
    inputs: [${V}]
    outputs: [${OUT}]
    pipeline:
      steps:
        - { name: whole, model: p, inputs: { v: $v } }
      outputs: { out: whole.out }
`;
  assertOneIssue(
    issuesOf(t, withSteps(inner + outer)),
    /models\[3\]\.pipeline\.steps\[0\]\.model: "p" is a pipeline; pipelines do not nest/,
  );
});

test('pipeline config - a declared output no step feeds is refused', (t) => {
  const specs = `[${OUT}, { name: extra, datatype: FP32, shape: [-1] }]`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(TWO_STEPS, '{ out: second.y }', '', specs))),
    /pipeline\.outputs: output "extra" says no "<step>\.<output>" it comes from/,
  );
});

test('pipeline config - mapping an output the pipeline does not declare is refused', (t) => {
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(TWO_STEPS, '{ out: second.y, stray: first.y }'))),
    /pipeline\.outputs\.stray: not one of the declared outputs/,
  );
});

test('pipeline config - an output read from an unknown step is refused', (t) => {
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(TWO_STEPS, '{ out: third.y }'))),
    /pipeline\.outputs\.out: "third" is not an earlier step/,
  );
});

test('pipeline config - two steps with one name are refused', (t) => {
  const steps = `        - { name: first, model: a, inputs: { x: $v } }
        - { name: first, model: b, inputs: { x: $v } }`;
  assertOneIssue(
    issuesOf(t, withSteps(pipeline(steps, '{ out: first.y }'))),
    /steps\[1\]\.name: step "first" is named twice/,
  );
});

test('pipeline config - a pipeline placed on workers or a pool is refused', (t) => {
  const onWorkers = issuesOf(
    t,
    `workers: [{ id: w1 }]\n${withSteps(pipeline(TWO_STEPS, '{ out: second.y }', '\n    workers: [w1]'))}`,
  );
  assertOneIssue(onWorkers, /models\[2\]: a pipeline runs on the coordinator/);
  const onPool = issuesOf(
    t,
    `pools: [{ name: pre }]\n${withSteps(pipeline(TWO_STEPS, '{ out: second.y }', '\n    pool: pre'))}`,
  );
  assertOneIssue(onPool, /models\[2\]: a pipeline runs on the coordinator/);
});

test('pipeline config - a pipeline without steps or declared inputs is refused', (t) => {
  const noSteps = issuesOf(
    t,
    withSteps(`  - name: p
    backend: pipeline
    inputs: [${V}]
    outputs: [${OUT}]
`),
  );
  assertOneIssue(noSteps, /models\[2\]\.pipeline: required for backend "pipeline"/);
  const noInputs = issuesOf(
    t,
    withSteps(`  - name: p
    backend: pipeline
    outputs: [${OUT}]
    pipeline:
      steps: [{ name: first, model: a, inputs: { x: $v } }]
      outputs: { out: first.y }
`),
  );
  assert.ok(
    noInputs.some((i) => /models\[2\]: a pipeline needs its inputs and outputs declared/.test(i)),
    JSON.stringify(noInputs),
  );
});

test('pipeline config - `pipeline:` on a model that is not a pipeline is refused', (t) => {
  const issues = issuesOf(
    t,
    `models:
  - name: a
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
    pipeline:
      steps: [{ name: first, model: a, inputs: { x: $x } }]
      outputs: { y: first.y }
`,
  );
  assertOneIssue(issues, /models\[0\]\.pipeline: only for backend "pipeline"/);
});

test('pipeline config - every problem is listed at once', (t) => {
  const steps = `        - { name: first, model: nope, inputs: { x: $image } }
        - { name: second, model: b, inputs: { x: third.y } }`;
  const issues = issuesOf(t, withSteps(pipeline(steps, '{ out: second.y, stray: first.y }')));
  assert.equal(issues.length, 4, JSON.stringify(issues, null, 2));
});

const SIM = `
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]`;

test('pools - a pool expands into workers <pool>-<i> with pool set; a pool-placed model lists them', (t) => {
  const { config } = load(
    t,
    `
workers:
  - { id: m1 }
pools:
  - { name: pre, processes: 3, weight: 2 }
  - { name: post }
models:
  - name: prep${SIM}
    pool: pre
  - name: both${SIM}
    pool: post
    workers: [m1]
  - name: everywhere${SIM}
`,
  );
  assert.deepEqual(
    config.workers.map((w) => [w.id, w.pool, w.weight]),
    [
      ['m1', undefined, 1],
      ['pre-1', 'pre', 2],
      ['pre-2', 'pre', 2],
      ['pre-3', 'pre', 2],
      ['post-1', 'post', 1],
    ],
  );
  const byName = Object.fromEntries(config.models.map((m) => [m.name, m]));
  assert.deepEqual(byName.prep!.workers, ['pre-1', 'pre-2', 'pre-3']);
  assert.deepEqual(byName.both!.workers, ['m1', 'post-1'], 'the pool is added to workers');
  assert.equal(byName.everywhere!.workers, undefined);
  assert.ok(Object.isFrozen(config.workers), 'the expanded config is frozen like the rest');
});

test('pools - a model naming an unknown pool is refused, listing the pools', (t) => {
  assertOneIssue(
    issuesOf(t, `pools: [{ name: pre }]\nmodels:\n  - name: m${SIM}\n    pool: post\n`),
    /models\[0\]\.pool: no pool "post" \(pools: pre\)/,
  );
  assertOneIssue(
    issuesOf(t, `models:\n  - name: m${SIM}\n    pool: post\n`),
    /models\[0\]\.pool: no pool "post" \(pools: none\)/,
  );
});

test('pools - a pool whose worker ids clash with workers is refused', (t) => {
  assertOneIssue(
    issuesOf(t, `workers: [{ id: pre-2 }]\npools: [{ name: pre, processes: 2 }]\n`),
    /pools\[0\]: pool "pre" makes worker "pre-2", which workers already defines/,
  );
});

test('pools - two pools with one name are refused', (t) => {
  const issues = issuesOf(t, `pools: [{ name: pre }, { name: pre }]\n`);
  assert.ok(
    issues.some((i) => /pools\[1\]\.name: pool "pre" is defined twice/.test(i)),
    JSON.stringify(issues),
  );
});

test('pools - a model placed on a worker nobody defines is refused', (t) => {
  assertOneIssue(
    issuesOf(t, `pools: [{ name: pre }]\nmodels:\n  - name: m${SIM}\n    workers: [pre-9]\n`),
    /models\[0\]\.workers: no worker "pre-9" in workers \(have: pre-1\)/,
  );
});

/** Versions 1, 2 and 3 of `m`, the first with `policy` (YAML flow), others with `other`. */
function versions(policy: string, other = ''): string {
  return `models:
  - name: m
    version: 1${SIM}
    versionPolicy: ${policy}
  - name: m
    version: 2${SIM}${other}
  - name: m
    version: 3${SIM}
`;
}

test('version policy - latest and specific naming existing versions load', (t) => {
  const latest = load(t, versions('{ latest: 2 }')).config;
  assert.deepEqual(latest.models[0]!.versionPolicy, { latest: 2 });
  const specific = load(t, versions('{ specific: [1, "3"] }')).config;
  assert.deepEqual(specific.models[0]!.versionPolicy, { specific: ['1', '3'] }, 'labels are strings');
  const same = load(t, versions('all', '\n    versionPolicy: all')).config;
  assert.equal(same.models[1]!.versionPolicy, 'all', 'the same policy stated twice is fine');
});

test('version policy - specific naming a version that is not declared is refused', (t) => {
  assertOneIssue(
    issuesOf(t, versions('{ specific: [1, 4] }')),
    /models\[0\]\.versionPolicy\.specific: model "m" has no version "4"/,
  );
});

test('version policy - two different policies for one name are refused', (t) => {
  assertOneIssue(
    issuesOf(t, versions('{ latest: 1 }', '\n    versionPolicy: { latest: 2 }')),
    /models\[1\]\.versionPolicy: differs from models\[0\]'s for "m"/,
  );
});

test('version policy - a malformed policy is refused by the schema', (t) => {
  const issues = issuesOf(t, versions('{ latest: 0 }'));
  assert.ok(
    issues.some((i) => i.startsWith('models[0].versionPolicy')),
    JSON.stringify(issues),
  );
});

test('version policy - a version defined twice is refused', (t) => {
  const issues = issuesOf(t, `models:\n  - name: m${SIM}\n  - name: m${SIM}\n`);
  assertOneIssue(issues, /models\[1\]: model "m" version "1" is defined twice/);
});

test('pipeline config - a step pinning a version its model policy does not serve is refused', (t) => {
  const yaml = `${versions('{ latest: 1 }')}${pipeline(
    '        - { name: s, model: m, version: 1, inputs: { x: $v } }',
    '{ out: s.y }',
  )}`;
  assertOneIssue(
    issuesOf(t, yaml),
    /models\[3\]\.pipeline\.steps\[0\]\.version: model "m" version "1" is not served by its version policy/,
  );
});

/** Step models a (on `aWorkers`, or everywhere) and b (everywhere), and `p` with runOn: worker. */
function onWorker(aWorkers: string | undefined, extra = ''): string {
  return `workers: [{ id: w1 }, { id: w2 }]
models:
  - name: a
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]${aWorkers ? `\n    workers: ${aWorkers}` : ''}
  - name: b
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
${pipeline(TWO_STEPS, '{ out: second.y }\n      runOn: worker', extra)}`;
}

test('pipeline config - runOn defaults to coordinator; runOn: worker may be placed where its steps are', (t) => {
  const plain = load(t, withSteps(pipeline(TWO_STEPS, '{ out: second.y }')));
  assert.equal(plain.config.models[2]!.pipeline!.runOn, 'coordinator');
  const everywhere = load(t, onWorker(undefined));
  assert.equal(everywhere.config.models[2]!.pipeline!.runOn, 'worker');
  const placed = load(t, onWorker('[w1]', '\n    workers: [w1]'));
  assert.deepEqual(placed.config.models[2]!.workers, ['w1']);
});

test('pipeline config - runOn: worker with a step model missing where the pipeline is placed is refused', (t) => {
  assertOneIssue(
    issuesOf(t, onWorker('[w1]', '\n    workers: [w1, w2]')),
    /models\[2\]\.pipeline\.steps\[0\]\.model: pipeline "p" runs on its workers \(runOn: worker\), but model "a" is not placed on worker w2; place it there too/,
  );
  assertOneIssue(
    issuesOf(t, onWorker('[w1]')),
    /models\[2\]\.pipeline\.steps\[0\]\.model: .*model "a" is not placed on every worker \(the pipeline has no workers: placement; the model is only on w1\)/,
  );
});
