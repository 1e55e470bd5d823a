/**
 * The worker StatefulSet's start script (deploy/k8s/50-worker.yaml), run for real by /bin/sh:
 * it picks the pod's own key from the mounted Secret folder, execs node (so SIGTERM reaches the
 * worker and drains it), and stops with a message naming the missing key otherwise. Paths are
 * moved to a temp folder; the pod finds the coordinator through the ConfigMap's cluster section,
 * pointed at the test Redis under a namespace of its own.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { IStatefulSet } from 'kubernetes-models/apps/v1';
import type { IConfigMap } from 'kubernetes-models/v1';
import { parse, stringify } from 'yaml';
import { deriveWorkerKey } from '../../src/rpc/credentials.ts';
import { loadManifests } from '../fixtures/deploy-checks.ts';
import { TEST_CLUSTER_SECRET, startCoordinator, waitFor } from '../fixtures/processes.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const manifests = loadManifests(join(ROOT, 'deploy', 'k8s'));
const KEYS_DIR = '/etc/infergrid/worker-keys';
const CONFIG_FILE = '/etc/infergrid/config/cluster.yaml';
const REDIS_URL = process.env.INFERGRID_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

function workerScript(): string {
  const sts = manifests.find((m) => m.object.kind === 'StatefulSet')!.object as unknown as IStatefulSet;
  const container = sts.spec!.template.spec!.containers[0]!;
  assert.deepEqual(container.command, ['/bin/sh', '-c']);
  return container.args![0]!;
}

/**
 * The ConfigMap's config pointed at the test Redis under a namespace of its own, loopback added
 * to cluster.allow (the pods' ranges are private ones), and only its weightless models kept.
 */
function podConfig(namespace: string): string {
  const cm = manifests.find((m) => m.object.kind === 'ConfigMap')!.object as unknown as IConfigMap;
  const config = parse(cm.data!['cluster.yaml']!) as {
    cluster: { redis: { url: string; namespace: string }; allow: string[] };
    models: { backend: string }[];
  };
  config.cluster.redis.url = REDIS_URL;
  config.cluster.redis.namespace = namespace;
  config.cluster.allow.push('127.0.0.0/8');
  config.models = config.models.filter((m) => m.backend === 'sim');
  assert.ok(config.models.length > 0, 'the ConfigMap has a sim model to serve');
  return stringify(config);
}

interface Pod {
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
  kill(signal: NodeJS.Signals): void;
}

/** Runs the script as the pod would, with its paths moved under `dir`. */
function runPod(t: TestContext, dir: string, podName: string): Pod {
  let script = workerScript();
  for (const from of [KEYS_DIR, CONFIG_FILE, '--metrics-port 9100'])
    assert.ok(script.includes(from), `the script no longer mentions ${from}`);
  script = script
    .replaceAll(KEYS_DIR, join(dir, 'keys'))
    .replaceAll(CONFIG_FILE, join(dir, 'cluster.yaml'))
    .replace('--metrics-port 9100', '--metrics-port 0');
  const child = spawn('/bin/sh', ['-c', script], {
    cwd: ROOT,
    // no cluster secret: the worker must run on its own key alone
    env: { ...process.env, POD_NAME: podName, INFERGRID_TOKEN: '', INFERGRID_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
    // its own process group, so cleanup reaches a node the shell left behind (a script without exec)
    detached: true,
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d));
  child.stderr.on('data', (d: Buffer) => (output += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  t.after(async () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // the group is gone already
    }
    await exited;
  });
  return { exited, output: () => output, kill: (s) => child.kill(s) };
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-pod-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'keys'));
  writeFileSync(join(dir, 'cluster.yaml'), podConfig(`test-${randomBytes(6).toString('hex')}:`));
  return dir;
}

test('deploy worker script - the pod serves with its own key from the Secret folder, and SIGTERM drains it', async (t) => {
  const dir = tempDir(t);
  const pod = 'infergrid-worker-0';
  writeFileSync(join(dir, 'keys', pod), deriveWorkerKey(TEST_CLUSTER_SECRET, pod).toString('hex'));
  const coordinator = await startCoordinator(t, join(dir, 'cluster.yaml'), [
    '--host',
    '127.0.0.1',
    '--rpc-host',
    '127.0.0.1',
  ]);
  // no --coordinator: the pod finds the coordinator through the config's cluster section
  const worker = runPod(t, dir, pod);
  await waitFor(
    'the coordinator to be ready with the pod worker',
    async () => (await fetch(`${coordinator.url}/v2/health/ready`)).status === 200,
    60_000,
  ).catch((err: Error) => assert.fail(`${err.message}\nworker output:\n${worker.output()}`));
  const res = await fetch(`${coordinator.url}/v2/models/echo/infer`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { outputs: { name: string; data: number[] }[] };
  assert.deepEqual(body.outputs[0]!.data, [1, 2, 3, 4]);
  const workers = (await (await fetch(`${coordinator.url}/admin/workers`)).json()) as unknown;
  assert.match(JSON.stringify(workers), /infergrid-worker-0/, 'the worker joined under the pod name');

  worker.kill('SIGTERM');
  const { code, signal } = await worker.exited;
  // 0 is the worker's own drain-and-exit; a shell that had not exec'd would die of the signal
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, worker.output());
  assert.match(worker.output(), /"msg":"worker stopped"/);
});

test('deploy worker script - a pod without its key in the Secret stops at once, naming the key to add', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'keys', 'infergrid-worker-0'), 'a'.repeat(64));
  const pod = runPod(t, dir, 'infergrid-worker-7');
  const { code } = await pod.exited;
  assert.equal(code, 78);
  assert.match(
    pod.output(),
    /add infergrid-worker-7 to Secret infergrid-worker-keys \(infergrid credential --worker infergrid-worker-7\)/,
  );
});
