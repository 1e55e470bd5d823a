import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { ApiKeyAuth, createHttpServer, isLoopbackHost } from '../api/index.ts';
import { type ControlPlane, startSharedControl, stopSharedControl } from '../cluster/index.ts';
import { Membership, coordinatorRecord, coordinatorRpcHost } from '../cluster/index.ts';
import type { InfergridConfig, TlsListenerConfig } from '../config/index.ts';
import { Coordinator } from '../coordinator/index.ts';
import { InfergridError } from '../errors.ts';
import { GrpcFrontDoor } from '../grpc/index.ts';
import { type Logger, createTracing, registerClusterMetrics } from '../telemetry/index.ts';
import { INFERGRID_VERSION } from '../version.ts';

export interface RunningCoordinator {
  coordinator: Coordinator;
  app: FastifyInstance;
  httpPort: number;
  /** The admin listener's port, when coordinator.admin is set. */
  adminPort: number | undefined;
  rpcPort: number;
  /** The gRPC listener's port; undefined when coordinator.grpc.enabled is false. */
  grpcPort: number | undefined;
  /** The shared control plane, when `cluster` is configured. */
  control: ControlPlane | undefined;
  /** The cluster membership (announced as a coordinator, watching every role); undefined without a `cluster` section. */
  membership: Membership | undefined;
  /** Leaves the cluster, then stops taking HTTP and gRPC requests, closes worker connections and the RPC port, flushes spans. */
  close(): Promise<void>;
}

/**
 * An open HTTP API (no API keys) is allowed on loopback only; elsewhere it takes
 * auth.insecure (--insecure), and then it is said loudly. Throws CONFIG_INVALID otherwise.
 */
export function checkHttpExposure(config: Readonly<InfergridConfig>, logger: Logger): void {
  if (config.auth.apiKeys.length > 0) return;
  const hosts = [
    config.coordinator.host,
    ...(config.coordinator.admin ? [config.coordinator.admin.host] : []),
    ...(config.coordinator.grpc.enabled ? [grpcHost(config)] : []),
  ];
  const exposed = hosts.filter((h) => !isLoopbackHost(h));
  if (exposed.length === 0) return;
  if (!config.auth.insecure) {
    throw new InfergridError(
      'CONFIG_INVALID',
      `the HTTP or gRPC API would listen on ${exposed.join(', ')} with no API keys: anyone who reaches it could load models and read every request. Add auth.apiKeys (infergrid apikey makes one; see docs/security.md), listen on 127.0.0.1, or pass --insecure`,
    );
  }
  logger.warn(
    { hosts: exposed },
    'INSECURE: the HTTP API listens beyond loopback with no API keys; anyone who reaches it can load models, change routing and read requests (--insecure)',
  );
}

/** Where gRPC listens: coordinator.grpc.host, else the HTTP listener's host. */
function grpcHost(config: Readonly<InfergridConfig>): string {
  return config.coordinator.grpc.host ?? config.coordinator.host;
}

function tlsFiles(tls: TlsListenerConfig | undefined): { cert: Buffer; key: Buffer } | undefined {
  if (!tls) return undefined;
  try {
    return { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) };
  } catch (err) {
    throw new InfergridError('CONFIG_INVALID', `cannot read the HTTP TLS files: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function portOf(app: FastifyInstance, fallback: number): number {
  const address = app.server.address();
  return typeof address === 'object' && address ? address.port : fallback;
}

/**
 * Starts a coordinator's RPC side and HTTP side (and its admin listener, when configured) from
 * a loaded config; `baseDir` is the config file's folder (relative model paths of runtime loads
 * resolve against it), `env` is read for the OTEL_* tracing variables.
 */
export async function startCoordinator(
  config: Readonly<InfergridConfig>,
  logger: Logger,
  baseDir: string,
  env: Record<string, string | undefined> = process.env,
): Promise<RunningCoordinator> {
  checkHttpExposure(config, logger);
  // an RPC address workers could not dial is refused before anything listens
  if (config.cluster) coordinatorRpcHost(config);
  const { coordinator: http } = config;
  const mainTls = tlsFiles(http.tls);
  const adminTls = tlsFiles(http.admin?.tls);
  const tracing = await createTracing({ config: config.tracing, env, role: 'coordinator', logger });
  const coordinator = new Coordinator({ config, logger, tracing, baseDir });
  try {
    await coordinator.start();
  } catch (err) {
    // what it opened before failing (the cache's stores, a cluster Redis that keeps reconnecting)
    await coordinator.stop().catch(() => {});
    await tracing.shutdown();
    throw err;
  }
  let control: ControlPlane | undefined;
  try {
    // operators' changes shared through Redis; Redis being down does not fail the start
    if (config.cluster) control = await startSharedControl({ coordinator, cluster: config.cluster, logger });
  } catch (err) {
    await coordinator.stop();
    await tracing.shutdown();
    throw err;
  }
  // one set of credentials for both listeners: a key's rate limit is the same wherever it calls
  const auth = new ApiKeyAuth(config.auth.apiKeys, config.auth.anonymous);
  const membership = config.cluster
    ? new Membership({ cluster: config.cluster, logger, name: 'coordinator' })
    : undefined;
  if (membership) registerClusterMetrics(coordinator.metrics.registry, membership);
  const common = { coordinator, config, logger, serverVersion: INFERGRID_VERSION, auth, cluster: membership };
  const app = createHttpServer({ ...common, tls: mainTls });
  const admin = http.admin ? createHttpServer({ ...common, surface: 'admin', tls: adminTls }) : undefined;
  // the same credentials, limits and TLS files as the HTTP listener
  const grpc = http.grpc.enabled ? new GrpcFrontDoor({ ...common, tls: mainTls }) : undefined;
  let grpcPort: number | undefined;
  try {
    await app.listen({ host: http.host, port: http.port });
    if (admin && http.admin) await admin.listen({ host: http.admin.host, port: http.admin.port });
    if (grpc) grpcPort = await grpc.listen(grpcHost(config), http.grpc.port);
  } catch (err) {
    await app.close();
    await admin?.close();
    await grpc?.close();
    if (control) await stopSharedControl(coordinator, control);
    await coordinator.stop();
    await tracing.shutdown();
    throw err;
  }
  const httpPort = portOf(app, http.port);
  const adminPort = admin && http.admin ? portOf(admin, http.admin.port) : undefined;
  const scheme = mainTls ? 'https' : 'http';
  logger.info({ address: `${scheme}://${http.host}:${httpPort}` }, 'coordinator HTTP listening');
  if (grpcPort !== undefined) {
    logger.info(
      { address: `${grpcHost(config)}:${grpcPort}`, tls: mainTls !== undefined },
      'coordinator gRPC listening (inference.GRPCInferenceService)',
    );
  }
  if (adminPort !== undefined) {
    logger.info(
      { address: `${adminTls ? 'https' : 'http'}://${http.admin!.host}:${adminPort}` },
      'coordinator admin listener up (admin routes are served here only)',
    );
  }
  // announced once every listener is up: a worker that finds it can use it
  await membership?.start(coordinatorRecord(config, { rpcPort: coordinator.rpcPort!, httpPort }));
  return {
    coordinator,
    app,
    httpPort,
    adminPort,
    rpcPort: coordinator.rpcPort!,
    grpcPort,
    control,
    membership,
    async close() {
      // out of the cluster first: workers stop redialing a coordinator that is going away
      await membership?.stop();
      await grpc?.close();
      await app.close();
      await admin?.close();
      if (control) await stopSharedControl(coordinator, control);
      await coordinator.stop();
      await tracing.shutdown();
    },
  };
}
