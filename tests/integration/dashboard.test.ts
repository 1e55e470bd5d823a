/**
 * The dashboard in a real browser (headless Chromium through playwright-core) against a real
 * coordinator and worker with traffic running: the worker shows up, a throughput figure appears
 * and then changes as the traffic does. A screenshot is kept in test-artifacts/dashboard.png.
 * Skips, saying why, when Debian's chromium is not installed.
 *
 * And the figures the page shows (GET /admin/overview) against /metrics after known traffic:
 * both count each request, malformed ones included, under the same model; a pipeline with
 * traffic has its p50 and p99.
 */

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { parseExposition, referenceParserMissing } from '../fixtures/prometheus.ts';
import { post, startCoordinator, startWorker, waitForWorkers, writeConfig } from '../fixtures/processes.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const PAGE_TIMEOUT_MS = 30_000;

const CONFIG = `
models:
  - name: sim
    backend: sim
    sim: { latencyMs: 2 }
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: pipe
    backend: pipeline
    inputs: [{ name: v, datatype: FP32, shape: [-1] }]
    outputs: [{ name: out, datatype: FP32, shape: [-1] }]
    pipeline:
      steps:
        - { name: one, model: sim, inputs: { x: $v } }
        - { name: two, model: sim, inputs: { x: one.y } }
      outputs: { out: two.y }
`;
/** The page's globals, as the functions run inside it see them. */
declare const document: {
  querySelector(selector: string): { textContent: string | null; dataset: Record<string, string> } | null;
  body: { dataset: Record<string, string | undefined> };
};

const x = [{ name: 'x', datatype: 'FP32' as const, shape: [1], data: [1] }];

test('dashboard - shows the workers and live throughput in a browser', { timeout: 120_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} is not installed (apt-get install chromium); the browser test needs it`);
    return;
  }
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'dash-w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['sim']);
  // a pipeline with traffic: its row shows percentiles (it is never routed, so the router has none)
  for (let i = 0; i < 3; i++) await coordinator.client.infer('pipe', [{ ...x[0]!, name: 'v' }]);

  // background traffic: one lane, then three more once a first figure shows, so it must move
  let stopped = false;
  let sent = 0;
  let raise!: () => void;
  const raised = new Promise<void>((resolve) => {
    raise = resolve;
  });
  const laneErrors: string[] = [];
  const lane = async (): Promise<void> => {
    try {
      while (!stopped) {
        await coordinator.client.infer('sim', x);
        sent++;
      }
    } catch (err) {
      // the coordinator is stopped under a lane that is still running when the test ends
      if (!stopped) laneErrors.push((err as Error).message);
    }
  };
  const lanes = [lane(), ...Array.from({ length: 3 }, () => raised.then(lane))];
  t.after(() => {
    stopped = true;
    raise();
  });

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const pageErrors: string[] = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.setDefaultTimeout(PAGE_TIMEOUT_MS);

  await page.goto(`${coordinator.url}/`);
  assert.match(page.url(), /\/dashboard\/$/, 'the root redirects to the dashboard');

  await page.waitForFunction(() =>
    document.querySelector('#workers tr[data-worker="dash-w1"]')?.textContent?.includes('healthy'),
  );
  const models = await page.textContent('#workers tr[data-worker="dash-w1"] [data-field="models"]');
  assert.equal(models, 'sim');

  const rps = '#models tr[data-model="sim"] [data-field="rps"]';
  const first = await page.waitForFunction((sel) => {
    const n = Number(document.querySelector(sel)?.dataset.value);
    return n > 0 ? n : undefined;
  }, rps);
  const firstRps = (await first.jsonValue()) as number;
  raise();
  const changed = await page.waitForFunction(
    ([sel, before]) => {
      const n = Number(document.querySelector(sel as string)?.dataset.value);
      return n > 0 && n !== before ? n : undefined;
    },
    [rps, firstRps] as const,
  );
  const changedRps = (await changed.jsonValue()) as number;
  assert.notEqual(changedRps, firstRps);
  assert.ok(sent > 0);

  // the rest of the page filled in from the same snapshot
  assert.match((await page.textContent('#status')) ?? '', /live/);
  assert.match((await page.textContent('#workers-healthy')) ?? '', /^1 \/ 1$/);
  const p99 = await page.getAttribute('#models tr[data-model="sim"] [data-field="p99"]', 'data-value');
  assert.ok(Number(p99) > 0, `p99 ${p99}`);
  for (const field of ['p50', 'p99']) {
    const cell = `#models tr[data-model="pipe"] [data-field="${field}"]`;
    const shown = await page.getAttribute(cell, 'data-value');
    assert.ok(Number(shown) > 0, `pipeline ${field}: ${shown} (${await page.textContent(cell)})`);
  }
  assert.ok((await page.locator('#chart-rps svg path.line').count()) === 1, 'the throughput chart is drawn');
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(laneErrors, []);

  // a few more snapshots, so the screenshot's charts have a line to show
  const polls = Number(await page.getAttribute('body', 'data-polls'));
  await page.waitForFunction((n) => Number(document.body.dataset.polls) >= n, polls + 5);
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: `${ARTIFACTS}dashboard.png`, fullPage: true });
  stopped = true;
  raise();
  await Promise.all(lanes);
});

const PIPELINE_CONFIG = CONFIG;

interface OverviewModel {
  name: string;
  requests: number;
  errors: number;
  errorsByCode: Record<string, number>;
  latencyMs: { p50: number; p99: number } | null;
  inferenceCount: number;
  executionCount: number;
}

test('dashboard - its figures and /metrics count every request under the same model; a pipeline shows its percentiles', {
  timeout: 60_000,
}, async (t) => {
  const missing = referenceParserMissing();
  if (missing) {
    t.skip(`the reference exposition parser cannot run: ${missing}`);
    return;
  }
  const config = writeConfig(t, PIPELINE_CONFIG);
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'dash-w2', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['sim']);
  const infer = (model: string, payload: unknown) =>
    post(`${coordinator.url}/v2/models/${model}/infer`, JSON.stringify(payload));
  const tensor = (name: string) => ({ inputs: [{ name, datatype: 'FP32', shape: [1], data: [1] }] });

  for (let i = 0; i < 5; i++) assert.equal((await infer('pipe', tensor('v'))).status, 200);
  for (let i = 0; i < 3; i++) assert.equal((await infer('sim', tensor('x'))).status, 200);
  // refused before resolving (not an inference request), after resolving (a wrong input), and
  // for names nobody serves
  assert.equal((await infer('sim', { inputs: 'x' })).status, 400);
  assert.equal((await infer('pipe', { inputs: 'x' })).status, 400);
  assert.equal((await infer('sim', tensor('nope'))).status, 400);
  assert.equal((await infer('nope', tensor('x'))).status, 404);
  assert.equal(
    (await post(`${coordinator.url}/v2/models/sim/versions/9/infer`, JSON.stringify(tensor('x')))).status,
    404,
  );

  const overview = (await (await fetch(`${coordinator.url}/admin/overview`)).json()) as {
    server: { requests: number; errorsByCode: Record<string, number> };
    models: OverviewModel[];
  };
  const samples = parseExposition(await (await fetch(`${coordinator.url}/metrics`)).text()).filter(
    (x) => x.name === 'infergrid_requests_total',
  );
  const counted = (model: string, code?: string) =>
    samples
      .filter((x) => x.labels.model === model && (code === undefined || x.labels.code === code))
      .reduce((n, x) => n + x.value, 0);

  const byName = new Map(overview.models.map((m) => [m.name, m]));
  const sim = byName.get('sim')!;
  const pipe = byName.get('pipe')!;
  // sim: 3 answered, 1 malformed, 1 wrong input, 1 for a version it does not have
  assert.deepEqual(
    { requests: sim.requests, errorsByCode: sim.errorsByCode },
    { requests: 6, errorsByCode: { INVALID_ARGUMENT: 2, MODEL_NOT_FOUND: 1 } },
  );
  assert.deepEqual(
    { requests: pipe.requests, errorsByCode: pipe.errorsByCode },
    { requests: 6, errorsByCode: { INVALID_ARGUMENT: 1 } },
  );
  for (const m of [sim, pipe]) {
    assert.equal(counted(m.name), m.requests, `${m.name}: /metrics counts what the dashboard counts`);
    for (const [code, n] of Object.entries(m.errorsByCode))
      assert.equal(counted(m.name, code), n, `${m.name} ${code}`);
    assert.equal(counted(m.name, 'OK'), m.requests - m.errors);
  }
  assert.equal(counted('', 'MODEL_NOT_FOUND'), 1, 'a name nobody serves: no model on either');
  assert.equal(counted(''), overview.server.requests - sim.requests - pipe.requests);

  // the pipeline had traffic: its percentiles, end to end (two steps of a 2 ms model each)
  assert.ok(pipe.latencyMs, 'a pipeline with traffic has percentiles');
  assert.ok(
    pipe.latencyMs.p50 >= 4 && pipe.latencyMs.p99 >= pipe.latencyMs.p50,
    JSON.stringify(pipe.latencyMs),
  );
  assert.equal(pipe.inferenceCount, 5);
  assert.equal(pipe.executionCount, 5);
});
