import { loadConfig } from '../config/index.ts';
import { createLogger } from '../telemetry/index.ts';
import { parseCommandArgs, portFlag } from './args.ts';
import { exitOnFatal, notifyParent, onShutdownSignal } from './process.ts';
import { requireRpcCredentials } from './rpc-credentials.ts';
import { startCoordinator } from './start-coordinator.ts';

export const COORDINATOR_HELP = `Usage: infergrid coordinator [options]

Runs the HTTP front door (KServe v2, OpenAI) and the KServe v2 gRPC one, and takes workers on
its RPC port.

Options:
  -c, --config <file>      YAML config (models, limits, auth); optional
      --host <addr>        HTTP listen address            (default 127.0.0.1)
  -p, --port <port>        HTTP port, 0 for any free one  (default 8000)
      --rpc-host <addr>    RPC listen address for workers (default 127.0.0.1)
      --rpc-port <port>    RPC port, 0 for any free one   (default 9000)
      --grpc-port <port>   KServe v2 gRPC port, 0 for any free one (default 8001;
                           coordinator.grpc.enabled: false turns it off; docs/grpc.md)
  -w, --worker <host:port> dial a static worker; repeatable
      --cluster-redis <url>  join a cluster through Redis (cluster.redis.url): announce this
                           coordinator there and see the other members; workers given the
                           same URL find and dial it (docs/cluster.md)
      --advertise-host <host>  the host other machines reach this coordinator at (announced
                           with its RPC port; required when --rpc-host is 0.0.0.0 or ::)
      --log-level <level>  fatal|error|warn|info|debug|trace|silent
      --insecure           run without credentials, said loudly at start-up: RPC without a
                           cluster secret (anyone who reaches the RPC port can join as a
                           worker), and an HTTP API without API keys beyond loopback
  -h, --help               show this help

Workers prove their key on the RPC port (HMAC challenge-response; the secret never crosses
the wire). Without a cluster secret the coordinator refuses to start unless --insecure.
rpc.tls in the config adds TLS (docs/rpc-security.md).

Environment: INFERGRID_TOKEN (the cluster secret that workers' keys derive from), INFERGRID_PORT, INFERGRID_RPC_PORT, INFERGRID_GRPC_PORT,
INFERGRID_HOST, INFERGRID_LOG_LEVEL, INFERGRID_HEAP_GROWING_PERCENT (V8 heap growth before a
full collection, default 200; 0 for V8's own; see docs/configuration.md).`;

export async function runCoordinatorCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('coordinator', argv, {
    config: { type: 'string', short: 'c' },
    host: { type: 'string' },
    port: { type: 'string', short: 'p' },
    'rpc-host': { type: 'string' },
    'rpc-port': { type: 'string' },
    'grpc-port': { type: 'string' },
    worker: { type: 'string', short: 'w', multiple: true },
    'cluster-redis': { type: 'string' },
    'advertise-host': { type: 'string' },
    'log-level': { type: 'string' },
    insecure: { type: 'boolean' },
  });
  if (values.help) {
    console.log(COORDINATOR_HELP);
    return;
  }
  const { config, baseDir } = loadConfig({
    file: values.config as string | undefined,
    env: process.env,
    overrides: {
      host: values.host as string | undefined,
      port: portFlag(values.port, '--port'),
      rpcHost: values['rpc-host'] as string | undefined,
      rpcPort: portFlag(values['rpc-port'], '--rpc-port'),
      grpcPort: portFlag(values['grpc-port'], '--grpc-port'),
      workers: values.worker as string[] | undefined,
      logLevel: values['log-level'] as string | undefined,
      insecure: values.insecure as boolean | undefined,
      clusterRedis: values['cluster-redis'] as string | undefined,
      advertiseHost: values['advertise-host'] as string | undefined,
    },
  });
  const logger = createLogger({
    level: config.logging.level,
    format: config.logging.format,
    name: 'coordinator',
  });
  exitOnFatal((err, what) => logger.fatal({ err }, what));
  requireRpcCredentials('coordinator', config.auth, logger);
  const running = await startCoordinator(config, logger, baseDir);
  notifyParent({
    type: 'ready',
    role: 'coordinator',
    httpPort: running.httpPort,
    rpcPort: running.rpcPort,
    ...(running.grpcPort !== undefined ? { grpcPort: running.grpcPort } : {}),
    ...(running.adminPort !== undefined ? { adminPort: running.adminPort } : {}),
  });
  onShutdownSignal(async (signal) => {
    logger.info({ signal }, 'coordinator stopping');
    await running.close();
    return 0;
  });
}
