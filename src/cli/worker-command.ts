import { createBackends } from '../backends/index.ts';
import { Membership, followCoordinators, workerRecord } from '../cluster/index.ts';
import { hostname } from 'node:os';
import { type ModelConfig, loadConfig, runsOnCoordinator, runtimeLoadPolicy } from '../config/index.ts';
import { servedModels } from '../registry/index.ts';
import { InfergridError } from '../errors.ts';
import { WorkerMetrics, createLogger, createTracing, registerClusterMetrics } from '../telemetry/index.ts';
import { type HostPort, parseHostPort } from '../util/address.ts';
import { deferred } from '../util/deferred.ts';
import { ModelHost, Worker, createPipelineBackend } from '../worker/index.ts';
import { serveMetrics } from './metrics-server.ts';
import { parseCommandArgs, portFlag } from './args.ts';
import { exitOnFatal, notifyParent, onShutdownSignal } from './process.ts';
import { requireRpcCredentials, workerKeyFrom } from './rpc-credentials.ts';

export const WORKER_HELP = `Usage: infergrid worker --config <file> [options]

Loads models and serves them to coordinators over RPC. The worker dials the coordinators
given with --coordinator and those announced in the cluster's Redis (--cluster-redis), and
redials them when they restart; it listens on --port for coordinators that dial it
(coordinator --worker host:port). SIGTERM drains: in-flight
requests finish, then the process exits 0.

Options:
  -c, --config <file>            YAML config holding the models             (required)
      --id <id>                  worker id; its entry in config.workers places models on it
                                 (default <hostname>-<pid>)
      --models <a,b>             host exactly these models (default: the models placed on --id,
                                 or every model with no placement)
      --host <addr>              listen address for coordinators (default 127.0.0.1)
  -p, --port <port>              listen port, 0 for any free one (default: the config entry's
                                 port; none when only dialing)
      --coordinator <host:port>  coordinator RPC address to dial; repeatable
      --cluster-redis <url>      join a cluster through Redis (cluster.redis.url): announce this
                                 worker there, and dial every coordinator announced in it (and
                                 stop once one has left); combines with --coordinator
                                 (docs/cluster.md)
      --advertise-host <host>    the host coordinators reach this worker's --port at (announced)
      --weight <n>               relative capacity for weighted balancing (default: the config
                                 entry's weight, else 1)
      --metrics-port <port>      serve Prometheus metrics at http://<host>:<port>/metrics, 0 for any
                                 free port (default: the config entry's metricsPort; none). The
                                 coordinator's /metrics includes this worker's either way.
      --insecure                 run RPC without authentication when no key is set: anyone
                                 who reaches this worker can use it as a coordinator
      --log-level <level>        fatal|error|warn|info|debug|trace|silent
  -h, --help                     show this help

Every RPC connection proves this worker's key both ways (HMAC challenge-response; the key
never crosses the wire). Give the worker its own key (INFERGRID_WORKER_KEY, from
'infergrid credential --worker <id>'; needs --id) or the cluster secret (INFERGRID_TOKEN);
without either it refuses to start unless --insecure. rpc.tls in the config adds TLS
(docs/rpc-security.md).

Environment: INFERGRID_WORKER_KEY (this worker's RPC key, 64 hex digits), INFERGRID_TOKEN (the
cluster secret, from which the worker derives its key), INFERGRID_LOG_LEVEL, OTEL_* (tracing; see
docs/tracing.md), INFERGRID_HEAP_GROWING_PERCENT (V8 heap growth before a full collection,
default 200; 0 for V8's own; see docs/configuration.md).`;

/**
 * The models a worker hosts: --models, else those placed on its id, else those placed
 * nowhere; only versions their version policy serves, and never a pipeline the coordinator
 * runs. Pipelines that run on the worker come last: their steps are loaded before them.
 */
export function modelsForWorker(
  all: readonly ModelConfig[],
  id: string | undefined,
  only: string[] | undefined,
): ModelConfig[] {
  const served = servedModels(all).filter((m) => !runsOnCoordinator(m));
  const models = [
    ...served.filter((m) => m.backend !== 'pipeline'),
    ...served.filter((m) => m.backend === 'pipeline'),
  ];
  if (only?.length) {
    const unknown = only.filter((name) => !all.some((m) => m.name === name));
    if (unknown.length) {
      throw new InfergridError(
        'CONFIG_INVALID',
        `--models names models the config does not define: ${unknown.join(', ')}`,
      );
    }
    return models.filter((m) => only.includes(m.name));
  }
  return models.filter((m) => !m.workers || (id !== undefined && m.workers.includes(id)));
}

export async function runWorkerCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('worker', argv, {
    config: { type: 'string', short: 'c' },
    id: { type: 'string' },
    models: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string', short: 'p' },
    coordinator: { type: 'string', multiple: true },
    'cluster-redis': { type: 'string' },
    'advertise-host': { type: 'string' },
    weight: { type: 'string' },
    'metrics-port': { type: 'string' },
    insecure: { type: 'boolean' },
    'log-level': { type: 'string' },
  });
  if (values.help) {
    console.log(WORKER_HELP);
    return;
  }
  if (!values.config)
    throw new InfergridError('CONFIG_INVALID', '--config <file> is required; see infergrid worker --help');
  const { config, baseDir } = loadConfig({
    file: values.config as string,
    env: process.env,
    overrides: {
      logLevel: values['log-level'] as string | undefined,
      insecure: values.insecure as boolean | undefined,
      clusterRedis: values['cluster-redis'] as string | undefined,
      advertiseHost: values['advertise-host'] as string | undefined,
    },
  });
  const id = values.id as string | undefined;
  if (config.auth.workerKey && id === undefined)
    throw new InfergridError(
      'CONFIG_INVALID',
      'a worker key (INFERGRID_WORKER_KEY or auth.workerKey) belongs to one worker id: give it with --id',
    );
  const entry = id === undefined ? undefined : config.workers.find((w) => w.id === id);
  const models = modelsForWorker(
    config.models,
    id,
    (values.models as string | undefined)
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  );
  const coordinators: HostPort[] = ((values.coordinator as string[] | undefined) ?? []).map((c) =>
    parseHostPort(c, '--coordinator'),
  );
  const flagPort = portFlag(values.port, '--port');
  // a worker with nothing to dial listens; one that finds coordinators in the cluster need not
  const port = flagPort ?? entry?.port ?? (coordinators.length === 0 && !config.cluster ? 0 : undefined);
  const host = (values.host as string | undefined) ?? entry?.host ?? '127.0.0.1';
  const weight = values.weight === undefined ? (entry?.weight ?? 1) : Number(values.weight);
  if (!(weight > 0 && Number.isFinite(weight))) {
    throw new InfergridError('CONFIG_INVALID', `--weight must be a positive number, got "${values.weight}"`);
  }

  const logger = createLogger({
    level: config.logging.level,
    format: config.logging.format,
    name: `worker${id ? `:${id}` : ''}`,
  });
  exitOnFatal((err, what) => logger.fatal({ err }, what));
  requireRpcCredentials('worker', config.auth, logger);
  // the id the Worker would pick, known here so spans carry it
  const workerId = id ?? `${hostname()}-${process.pid}`;
  const tracing = await createTracing({
    config: config.tracing,
    env: process.env,
    role: 'worker',
    workerId,
    logger,
  });
  let worker: Worker | undefined;
  // the metrics read the host and the worker when scraped, both made just below
  const metrics = new WorkerMetrics({
    snapshots: () => modelHost.statsSnapshots(),
    ready: () =>
      modelHost.statuses().map((m) => ({ model: m.name, version: m.version, ready: m.state === 'ready' })),
    inFlight: () => worker?.inFlight ?? 0,
  });
  const membership = config.cluster
    ? new Membership({ cluster: config.cluster, logger, name: `worker:${workerId}` })
    : undefined;
  if (membership) registerClusterMetrics(metrics.registry, membership);
  // a worker-run pipeline's steps run on the models of this same host
  const backends = new Map(createBackends());
  // a coordinator may send a worker-run pipeline the moment this worker registers: its load
  // waits for the models this worker loads at start, its steps among them
  const stepsLoaded = deferred<void>();
  backends.set(
    'pipeline',
    createPipelineBackend({ host: () => modelHost, workerId, stepsLoaded: stepsLoaded.promise }),
  );
  const modelHost = new ModelHost(
    backends,
    logger,
    () => {
      worker?.modelsChanged();
      membership?.update({ models: [...new Set(modelHost.statuses().map((m) => m.name))].sort() });
      notifyParent({
        type: 'models',
        id: worker?.id ?? '',
        models: modelHost.statuses().map((m) => ({
          name: m.name,
          version: m.version,
          state: m.state,
          ...(m.error ? { error: m.error } : {}),
        })),
      });
    },
    (name, version) => metrics.observer(name, version),
  );
  worker = new Worker({
    id: workerId,
    host: modelHost,
    ...(port !== undefined ? { listen: { host, port } } : {}),
    coordinators,
    key: workerKeyFrom(config.auth, workerId),
    weight,
    pool: entry?.pool,
    metrics,
    tracing,
    runtimeLoads: runtimeLoadPolicy(config, baseDir),
    rpc: config.rpc,
    logger,
  });
  const running = worker;
  let unfollow: (() => void) | undefined;
  onShutdownSignal(async (signal) => {
    // out of the cluster first, then no new coordinator is dialed while draining
    unfollow?.();
    await membership?.stop();
    await running.drain(`received ${signal}`);
    await modelHost.unloadAll();
    // the last requests' spans, before the process exits
    await tracing.shutdown();
    logger.info({ worker: running.id, served: running.stats.requests }, 'worker stopped');
    return 0;
  });
  running.on('drain-requested', (reason) => {
    logger.info({ reason }, 'a coordinator asked this worker to drain');
    process.kill(process.pid, 'SIGTERM');
  });
  await running.start();
  if (membership) {
    const listen =
      port !== undefined && running.port !== undefined ? { host, port: running.port } : undefined;
    await membership.start(
      workerRecord(
        config,
        running.id,
        models.map((m) => m.name),
        listen,
      ),
    );
    unfollow = followCoordinators(membership, running, logger);
  }
  const metricsPort = portFlag(values['metrics-port'], '--metrics-port') ?? entry?.metricsPort;
  const metricsServer =
    metricsPort === undefined ? undefined : await serveMetrics(metrics, host, metricsPort, logger);
  notifyParent({
    type: 'ready',
    role: 'worker',
    id: running.id,
    port: running.port ?? null,
    metricsPort: metricsServer?.port ?? null,
  });
  if (models.length === 0) logger.warn({ worker: running.id }, 'no models placed on this worker');
  // pipelines come last (modelsForWorker): every other model has settled before the first
  for (const m of models) {
    if (m.backend === 'pipeline') stepsLoaded.resolve();
    await modelHost.load(m);
  }
  stepsLoaded.resolve();
}
