/**
 * deploy/ checked offline: every Kubernetes object against its schema and the others it names,
 * the infergrid config in the ConfigMap and deploy/config/cluster.yaml with infergrid's loader,
 * the command lines against the real CLI's help, and the systemd units' keys. Each check is
 * also run on a deliberately broken copy, which it must reject with the right problem.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { IDeployment } from 'kubernetes-models/apps/v1';
import type { IConfigMap, IService } from 'kubernetes-models/v1';
import {
  type KubeObject,
  type Manifest,
  clusterIssues,
  commandIssues,
  containerCommands,
  dockerIgnores,
  dockerfileIssues,
  embeddedConfigIssues,
  loadConfigFile,
  loadManifests,
  parseUnit,
  referenceIssues,
  runtimePathsOf,
  schemaIssues,
  unitIssues,
} from '../fixtures/deploy-checks.ts';

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const K8S = join(DEPLOY, 'k8s');
const SYSTEMD = join(DEPLOY, 'systemd');
/** The drain the units must allow: the default request deadline (coordinator.requestTimeoutMs, 30 s). */
const MIN_STOP_SEC = 30;

const manifests = loadManifests(K8S);

/** A deep copy of the manifests with one object changed by `edit`. */
function broken(kind: string, name: string, edit: (o: KubeObject) => void): Manifest[] {
  const copy = structuredClone(manifests);
  const target = copy.find((m) => m.object.kind === kind && m.object.metadata.name === name);
  assert.ok(target, `no ${kind} ${name} in deploy/k8s`);
  edit(target.object);
  return copy;
}

function coordinatorDeployment(o: KubeObject): IDeployment {
  return o as unknown as IDeployment;
}

function assertOneIssue(issues: string[], pattern: RegExp): void {
  assert.equal(issues.length, 1, `expected one problem matching ${pattern}, got:\n${issues.join('\n')}`);
  assert.match(issues[0]!, pattern);
}

test('deploy k8s - the files hold the objects the docs promise', () => {
  const kinds = manifests.map((m) => `${m.object.kind}/${m.object.metadata.name}`).sort();
  for (const expected of [
    'Namespace/infergrid',
    'ConfigMap/infergrid-config',
    'Secret/infergrid-secrets',
    'Secret/infergrid-worker-keys',
    'Deployment/infergrid-coordinator',
    'Service/infergrid-coordinator',
    'Service/infergrid-coordinator-rpc',
    'StatefulSet/infergrid-worker',
    'Service/infergrid-worker',
    'Deployment/infergrid-redis',
    'Service/infergrid-redis',
  ])
    assert.ok(kinds.includes(expected), `${expected} missing from deploy/k8s (have ${kinds.join(', ')})`);
  const coordinator = manifests.find(
    (m) => m.object.metadata.name === 'infergrid-coordinator' && m.object.kind === 'Deployment',
  )!;
  assert.equal(coordinatorDeployment(coordinator.object).spec?.replicas, 2);
  const service = manifests.find(
    (m) => m.object.kind === 'Service' && m.object.metadata.name === 'infergrid-coordinator',
  )!;
  const ports = ((service.object as unknown as IService).spec?.ports ?? []).map((p) => p.port).sort();
  assert.deepEqual(ports, [8000, 8001]);
});

test('deploy k8s - every object validates against the Kubernetes schema of its kind', () => {
  assert.deepEqual(schemaIssues(manifests), []);
});

test('deploy k8s - the schema check rejects a wrong type, a bad enum value and an unknown kind', () => {
  const badPort = broken('Deployment', 'infergrid-coordinator', (o) => {
    const c = coordinatorDeployment(o).spec!.template.spec!.containers[0]!;
    (c.ports![0] as { containerPort: unknown }).containerPort = 'http';
  });
  assertOneIssue(schemaIssues(badPort), /Deployment infergrid-coordinator: .*containerPort must be integer/);
  const badPolicy = broken('StatefulSet', 'infergrid-worker', (o) => {
    (o.spec as { podManagementPolicy: string }).podManagementPolicy = 'AllAtOnce';
  });
  assertOneIssue(
    schemaIssues(badPolicy),
    /StatefulSet infergrid-worker: .*podManagementPolicy must be equal to one of the allowed values/,
  );
  const unknownKind = [
    ...manifests,
    {
      file: 'x.yaml',
      object: { apiVersion: 'v1', kind: 'Pdo', metadata: { name: 'x', namespace: 'infergrid' } },
    },
  ];
  assertOneIssue(schemaIssues(unknownKind), /no schema for v1 Pdo/);
  const badName = broken('Service', 'infergrid-redis', (o) => {
    o.metadata.name = 'Infergrid_Redis';
  });
  assert.ok(schemaIssues(badName).some((i) => /metadata.name must be a DNS-1123 label/.test(i)));
});

test('deploy k8s - selectors, ports, probes, ConfigMap and Secret references all resolve', () => {
  assert.deepEqual(referenceIssues(manifests), []);
});

test('deploy k8s - a Service whose selector matches no pods is rejected', () => {
  const copy = broken('Service', 'infergrid-coordinator', (o) => {
    (o as unknown as IService).spec!.selector = { 'app.kubernetes.io/component': 'coordinater' };
  });
  assertOneIssue(referenceIssues(copy), /Service infergrid-coordinator: selector .* selects no pod template/);
});

test('deploy k8s - a probe on a port the container does not expose is rejected', () => {
  const copy = broken('Deployment', 'infergrid-coordinator', (o) => {
    coordinatorDeployment(o).spec!.template.spec!.containers[0]!.readinessProbe!.httpGet!.port = 'htp';
  });
  assertOneIssue(referenceIssues(copy), /readinessProbe uses port "htp", which it does not expose/);
});

test('deploy k8s - a misspelt probe (no readinessProbe behind a Service) is rejected', () => {
  const copy = broken('Deployment', 'infergrid-coordinator', (o) => {
    const c = coordinatorDeployment(o).spec!.template.spec!.containers[0]! as unknown as Record<
      string,
      unknown
    >;
    c.readinesProbe = c.readinessProbe;
    delete c.readinessProbe;
  });
  assert.deepEqual(schemaIssues(copy), [], 'the schema alone lets an unknown field through');
  assertOneIssue(referenceIssues(copy), /is behind a Service but has no readinessProbe/);
});

test('deploy k8s - a reference to a missing Secret, Secret key or ConfigMap is rejected', () => {
  const noSecret = broken('Deployment', 'infergrid-coordinator', (o) => {
    const env = coordinatorDeployment(o).spec!.template.spec!.containers[0]!.env!;
    env.find((e) => e.name === 'INFERGRID_TOKEN')!.valueFrom!.secretKeyRef!.name = 'infergrid-secret';
  });
  assertOneIssue(
    referenceIssues(noSecret),
    /env INFERGRID_TOKEN names Secret "infergrid-secret", which no manifest defines/,
  );
  const noKey = broken('Secret', 'infergrid-secrets', (o) => {
    delete (o.stringData as Record<string, string>)['api-keys'];
  });
  assertOneIssue(
    referenceIssues(noKey),
    /env INFERGRID_API_KEYS names key "api-keys" of Secret "infergrid-secrets", which it lacks/,
  );
  const noConfigMap = manifests.filter((m) => m.object.kind !== 'ConfigMap');
  const issues = referenceIssues(noConfigMap);
  assert.ok(issues.length >= 2, issues.join('\n'));
  assert.ok(
    issues.every((i) => /names ConfigMap "infergrid-config", which no manifest defines/.test(i)),
    issues.join('\n'),
  );
});

test('deploy k8s - a StatefulSet whose serviceName is not a headless Service is rejected', () => {
  const copy = broken('Service', 'infergrid-worker', (o) => {
    delete (o as unknown as IService).spec!.clusterIP;
  });
  const issues = referenceIssues(copy);
  assert.ok(
    issues.some((i) => /serviceName "infergrid-worker" is not a headless Service/.test(i)),
    issues.join('\n'),
  );
});

test("deploy k8s - the ConfigMap config loads with infergrid's schema and names the Redis Service", () => {
  assert.deepEqual(embeddedConfigIssues(manifests), []);
  assert.equal(containerCommands(manifests).length, 2, 'a coordinator and a worker container run infergrid');
});

test('deploy k8s - a config the schema refuses, or a Redis URL naming no Service, is rejected', () => {
  const editConfig = (edit: (text: string) => string) =>
    broken('ConfigMap', 'infergrid-config', (o) => {
      const data = (o as unknown as IConfigMap).data!;
      data['cluster.yaml'] = edit(data['cluster.yaml']!);
    });
  const badField = embeddedConfigIssues(editConfig((t) => t.replace('leaseMs: 10000', 'leaseMs: -1')));
  // the coordinator and the worker read the same file: one problem each
  assert.equal(badField.length, 2, badField.join('\n'));
  assert.ok(
    badField.every((i) => /cluster\.leaseMs/.test(i)),
    badField.join('\n'),
  );
  const badRedis = embeddedConfigIssues(
    editConfig((t) => t.replace('redis://infergrid-redis:6379', 'redis://redis:6379')),
  );
  assert.equal(badRedis.length, 2, badRedis.join('\n'));
  assert.ok(
    badRedis.every((i) => /cluster\.redis\.url host redis is no Service/.test(i)),
    badRedis.join('\n'),
  );
  const badPath = broken('Deployment', 'infergrid-coordinator', (o) => {
    const args = coordinatorDeployment(o).spec!.template.spec!.containers[0]!.args!;
    args[args.indexOf('--config') + 1] = '/etc/infergrid/config/clusterr.yaml';
  });
  assertOneIssue(
    embeddedConfigIssues(badPath),
    /--config \/etc\/infergrid\/config\/clusterr\.yaml is not a file of a mounted ConfigMap/,
  );
});

test('deploy k8s - the containers run infergrid subcommands with flags their help lists', async () => {
  const commands = containerCommands(manifests);
  assert.deepEqual(commands.map((c) => c.subcommand).sort(), ['coordinator', 'worker']);
  assert.deepEqual(await commandIssues(commands), []);
  const typo = containerCommands(
    broken('Deployment', 'infergrid-coordinator', (o) => {
      coordinatorDeployment(o).spec!.template.spec!.containers[0]!.args!.push('--advertize-host');
    }),
  );
  assertOneIssue(await commandIssues(typo), /infergrid coordinator has no flag --advertize-host/);
  const badSub = containerCommands(
    broken('Deployment', 'infergrid-coordinator', (o) => {
      coordinatorDeployment(o).spec!.template.spec!.containers[0]!.args![0] = 'coordinater';
    }),
  );
  assertOneIssue(await commandIssues(badSub), /"coordinater" is not an infergrid command/);
});

test("deploy config - cluster.yaml loads with infergrid's schema, with a cluster section and non-loopback listeners", () => {
  const file = join(DEPLOY, 'config', 'cluster.yaml');
  const loaded = loadConfigFile(file);
  assert.equal(loaded.error, undefined);
  assert.deepEqual(clusterIssues(file, loaded.config!), []);
  assert.ok(loaded.config!.models.length >= 2);
});

test('deploy systemd - the units set the required keys and run existing subcommands', async () => {
  const files = readdirSync(SYSTEMD)
    .filter((f) => f.endsWith('.service'))
    .sort();
  assert.deepEqual(files, ['infergrid-coordinator.service', 'infergrid-worker@.service']);
  const subcommands: string[] = [];
  for (const f of files) {
    const { issues, command } = unitIssues(
      f,
      parseUnit(readFileSync(join(SYSTEMD, f), 'utf8')),
      MIN_STOP_SEC,
    );
    assert.deepEqual(issues, []);
    assert.ok(command);
    assert.deepEqual(await commandIssues([command]), []);
    subcommands.push(command.subcommand);
    if (command.subcommand === 'worker')
      assert.ok(command.args.includes('%i'), 'the worker template passes its instance as --id');
  }
  assert.deepEqual(subcommands.sort(), ['coordinator', 'worker']);
});

test('deploy systemd - a unit missing Restart, with a short stop timeout or an unknown subcommand is rejected', async () => {
  const text = readFileSync(join(SYSTEMD, 'infergrid-coordinator.service'), 'utf8');
  const noRestart = unitIssues('u', parseUnit(text.replace(/^Restart=on-failure\n/m, '')), MIN_STOP_SEC);
  assertOneIssue(noRestart.issues, /\[Service\] Restart is not set/);
  const short = unitIssues(
    'u',
    parseUnit(text.replace(/^TimeoutStopSec=\d+$/m, 'TimeoutStopSec=5')),
    MIN_STOP_SEC,
  );
  assertOneIssue(short.issues, /TimeoutStopSec=5 leaves less than 30 s/);
  const mdwe = unitIssues('u', parseUnit(`${text}\n[Service]\nMemoryDenyWriteExecute=yes\n`), MIN_STOP_SEC);
  assertOneIssue(mdwe.issues, /MemoryDenyWriteExecute=yes stops V8's JIT/);
  const badSub = unitIssues(
    'u',
    parseUnit(text.replace('infergrid.js coordinator', 'infergrid.js coordinatr')),
    MIN_STOP_SEC,
  );
  assert.deepEqual(badSub.issues, []);
  assertOneIssue(await commandIssues([badSub.command!]), /"coordinatr" is not an infergrid command/);
  const noBin = unitIssues(
    'u',
    parseUnit(text.replace('/opt/infergrid/bin/infergrid.js', '/opt/infergrid/src/cli/main.ts')),
    MIN_STOP_SEC,
  );
  assertOneIssue(noBin.issues, /ExecStart does not run bin\/infergrid\.js <command>/);
});

const systemdAnalyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
test('deploy systemd - systemd-analyze verify accepts both units', {
  skip:
    systemdAnalyze.status !== 0
      ? 'systemd-analyze is not installed'
      : !existsSync('/usr/bin/node')
        ? 'the units run /usr/bin/node, which this machine lacks'
        : false,
}, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'infergrid-units-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  copyFileSync(join(SYSTEMD, 'infergrid-coordinator.service'), join(dir, 'infergrid-coordinator.service'));
  copyFileSync(join(SYSTEMD, 'infergrid-worker@.service'), join(dir, 'infergrid-worker@.service'));
  // a template is verified through an instance of it
  copyFileSync(join(SYSTEMD, 'infergrid-worker@.service'), join(dir, 'infergrid-worker@w1.service'));
  for (const unit of ['infergrid-coordinator.service', 'infergrid-worker@w1.service']) {
    const run = spawnSync('systemd-analyze', ['verify', join(dir, unit)], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(run.status, 0, `${unit}: ${run.stderr}`);
    assert.equal(run.stderr.trim(), '', `${unit}: ${run.stderr}`);
  }
});

test('deploy k8s - Secret infergrid-worker-keys has a key for every worker pod the StatefulSet runs', () => {
  const sts = manifests.find(
    (m) => m.object.kind === 'StatefulSet' && m.object.metadata.name === 'infergrid-worker',
  );
  const keys = manifests.find(
    (m) => m.object.kind === 'Secret' && m.object.metadata.name === 'infergrid-worker-keys',
  );
  assert.ok(sts && keys);
  const replicas = (sts.object.spec as { replicas: number }).replicas;
  const have = Object.keys(keys.object.stringData as Record<string, string>);
  for (let i = 0; i < replicas; i++)
    assert.ok(
      have.includes(`infergrid-worker-${i}`),
      `no key for pod infergrid-worker-${i} (have ${have.join(', ')})`,
    );
  // the worker's script reads its key by pod name from the mounted Secret
  const script = JSON.stringify(sts.object.spec);
  assert.match(script, /\/etc\/infergrid\/worker-keys\/\$\{POD_NAME\}/);
});

test('deploy k8s - the example Secrets cannot run a cluster as they are', () => {
  const secrets = manifests.filter((m) => m.object.kind === 'Secret');
  assert.ok(secrets.length > 0);
  for (const s of secrets) {
    assert.match(s.object.metadata.annotations?.['infergrid.dev/example'] ?? '', /placeholder/);
    // an empty cluster secret makes the coordinator refuse to start; REPLACE-ME fails the
    // API key and worker key formats
    for (const [key, value] of Object.entries(s.object.stringData as Record<string, string>))
      assert.ok(value === '' || value === 'REPLACE-ME', `${s.object.metadata.name}.${key} holds a value`);
  }
});

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('deploy image - the Dockerfile copies what the runtime reads, runs as non-root and .dockerignore keeps it', () => {
  const runtime = runtimePathsOf(ROOT);
  // what src opens outside itself today; a new one must reach the image too
  for (const p of ['bin/infergrid.js', 'package.json', 'proto/grpc_service.proto'])
    assert.ok(runtime.includes(p), p);
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8');
  assert.deepEqual(dockerfileIssues(dockerfile, ignore, runtime), []);
  // the models the example configs name come from examples/ and node_modules
  assert.deepEqual(
    dockerfileIssues(dockerfile, ignore, ['examples/ocr/steps/preprocess.ts', 'deploy/config/cluster.yaml']),
    [],
  );
});

test('deploy image - a missing COPY, an ignored source folder or a root user is rejected', () => {
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8');
  const runtime = runtimePathsOf(ROOT);
  assertOneIssue(
    dockerfileIssues(dockerfile.replace(/^COPY proto .*$/m, ''), ignore, runtime),
    /proto\/grpc_service\.proto is read at run time but not copied/,
  );
  assertOneIssue(
    dockerfileIssues(dockerfile, `${ignore}\nproto\n`, runtime),
    /\.dockerignore: excludes proto\/grpc_service\.proto/,
  );
  assertOneIssue(
    dockerfileIssues(dockerfile.replace(/^USER node$/m, 'USER root'), ignore, runtime),
    /non-root USER/,
  );
  assertOneIssue(
    dockerfileIssues(
      dockerfile.replace('ENTRYPOINT ["node", "bin/infergrid.js"]', 'ENTRYPOINT node bin/infergrid.js'),
      ignore,
      runtime,
    ),
    /ENTRYPOINT is node bin\/infergrid\.js/,
  );
  assert.equal(dockerIgnores('*.md\n', 'README.md'), true);
  assert.equal(
    dockerIgnores('*.md\n', 'docs/x.md'),
    false,
    'a * pattern matches at the root only, as in Docker',
  );
  assert.equal(dockerIgnores('deploy/k8s\n', 'deploy/config/cluster.yaml'), false);
});
