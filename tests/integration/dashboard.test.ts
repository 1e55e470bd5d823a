/**
 * The dashboard in a real browser (headless Chromium through playwright-core) against a real
 * coordinator and worker with traffic running: the worker shows up, a throughput figure appears
 * and then changes as the traffic does. A screenshot is kept in test-artifacts/dashboard.png.
 * Skips, saying why, when Debian's chromium is not installed.
 */

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startCoordinator, startWorker, waitForWorkers, writeConfig } from '../fixtures/processes.ts';

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
