import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { deriveWorkerKey } from '../rpc/index.ts';
import { Supervisor } from '../serve/index.ts';
import { createLogger } from '../telemetry/index.ts';
import { parseCommandArgs, portFlag } from './args.ts';
import { exitOnFatal, notifyParent, onShutdownSignal } from './process.ts';
import { startCoordinator } from './start-coordinator.ts';

export const SERVE_HELP = `Usage: infergrid serve --config <file> [options]

The embedded default: a coordinator in this process plus the config's local workers
(config.workers) as child processes, started, supervised (a crashed worker is restarted with
backoff) and stopped together. The coordinator gets a fresh random cluster secret unless one
is configured (auth.token / INFERGRID_TOKEN); each worker gets only its own key, derived from it
(INFERGRID_WORKER_KEY), so no worker can pose as another.

Options:
  -c, --config <file>      YAML config                      (required)
      --host <addr>        HTTP listen address              (default 127.0.0.1)
  -p, --port <port>        HTTP port, 0 for any free one    (default 8000)
      --rpc-port <port>    RPC port, 0 for any free one     (default 9000)
      --grpc-port <port>   KServe v2 gRPC port, 0 for any free one (default 8001;
                           coordinator.grpc.enabled: false turns it off; docs/grpc.md)
      --log-level <level>  fatal|error|warn|info|debug|trace|silent
      --insecure           allow an HTTP API without API keys beyond loopback
                           (said loudly at start-up; see docs/security.md)
  -h, --help               show this help

Environment: INFERGRID_HEAP_GROWING_PERCENT (V8 heap growth before a full collection, default
200; the workers it starts inherit the variable; 0 for V8's own; see docs/configuration.md).`;

const BIN = fileURLToPath(new URL('../../bin/infergrid.js', import.meta.url));

/** `chatModel`: a language model (backend llama) to show a chat completion with, if any. */
function banner(
  httpUrl: string,
  models: string[],
  ready: boolean,
  chatModel: string | undefined,
  grpcAddress: string | undefined,
): string {
  const first = models[0] ?? 'MODEL';
  const chat = chatModel
    ? [
        `  curl ${httpUrl}/v1/chat/completions -H 'content-type: application/json' \\`,
        `    -d '{"model":"${chatModel}","messages":[{"role":"user","content":"Who made the heaven and the earth?"}],"max_tokens":48}'`,
      ]
    : [];
  return [
    '',
    `infergrid is serving at ${httpUrl}${ready ? '' : ' (some models are still loading)'}`,
    ...(grpcAddress ? [`  gRPC (KServe v2, Triton's clients): ${grpcAddress}`] : []),
    `  models: ${models.join(', ') || '(none)'}`,
    '',
    'Try:',
    `  curl ${httpUrl}/v2/models/${first}`,
    `  npm run client -- examples/images/hello-world.png --url ${httpUrl}`,
    ...chat,
    '',
  ].join('\n');
}

function withoutClusterSecret(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { INFERGRID_TOKEN: _secret, ...rest } = env;
  return rest;
}

export async function runServeCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('serve', argv, {
    config: { type: 'string', short: 'c' },
    host: { type: 'string' },
    port: { type: 'string', short: 'p' },
    'rpc-port': { type: 'string' },
    'grpc-port': { type: 'string' },
    'log-level': { type: 'string' },
    insecure: { type: 'boolean' },
  });
  if (values.help) {
    console.log(SERVE_HELP);
    return;
  }
  if (!values.config)
    throw new InfergridError('CONFIG_INVALID', '--config <file> is required; see infergrid serve --help');
  const loaded = loadConfig({
    file: values.config as string,
    env: process.env,
    overrides: {
      host: values.host as string | undefined,
      port: portFlag(values.port, '--port'),
      rpcPort: portFlag(values['rpc-port'], '--rpc-port'),
      grpcPort: portFlag(values['grpc-port'], '--grpc-port'),
      logLevel: values['log-level'] as string | undefined,
      insecure: values.insecure as boolean | undefined,
    },
  });
  const token = loaded.config.auth.token ?? randomBytes(24).toString('hex');
  const config = { ...loaded.config, auth: { ...loaded.config.auth, token } };
  const logger = createLogger({ level: config.logging.level, format: config.logging.format, name: 'serve' });
  exitOnFatal((err, what) => logger.fatal({ err }, what));

  const running = await startCoordinator(config, logger, loaded.baseDir);
  const rpcHost = ['0.0.0.0', '::', ''].includes(config.coordinator.rpcHost)
    ? '127.0.0.1'
    : config.coordinator.rpcHost;
  const supervisor = new Supervisor({ ...config.serve, logger });
  const workers =
    config.workers.length > 0 ? config.workers : [{ id: 'worker-1', host: '127.0.0.1', port: 0 }];
  for (const w of workers) {
    supervisor.start({
      id: w.id,
      command: process.execPath,
      args: [
        BIN,
        'worker',
        '--config',
        loaded.file!,
        '--id',
        w.id,
        '--coordinator',
        `${rpcHost}:${running.rpcPort}`,
        '--log-level',
        config.logging.level,
      ],
      // its own key and not the cluster secret (which would let it derive any worker's)
      env: {
        ...withoutClusterSecret(process.env),
        INFERGRID_WORKER_KEY: deriveWorkerKey(token, w.id).toString('hex'),
      },
    });
  }

  let stopping = false;
  onShutdownSignal(async (signal) => {
    stopping = true;
    logger.info({ signal }, 'stopping workers and coordinator');
    await supervisor.stop(config.serve.stopTimeoutMs);
    await running.close();
    return 0;
  });

  const { registry } = running.coordinator;
  const ready = registry.allReady()
    ? true
    : await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          registry.off('changed', check);
          resolve(false);
        }, config.serve.readyTimeoutMs);
        function check(): void {
          if (!registry.allReady()) return;
          clearTimeout(timer);
          registry.off('changed', check);
          resolve(true);
        }
        registry.on('changed', check);
      });
  if (stopping) return;
  const host = ['0.0.0.0', '::', ''].includes(config.coordinator.host)
    ? '127.0.0.1'
    : config.coordinator.host;
  const models = [...new Set([...registry.entries()].map((e) => e.name))];
  const scheme = config.coordinator.tls ? 'https' : 'http';
  const chatModel = config.models.find((m) => m.backend === 'llama')?.name;
  const grpcAddress = running.grpcPort !== undefined ? `${host}:${running.grpcPort}` : undefined;
  console.log(banner(`${scheme}://${host}:${running.httpPort}`, models, ready, chatModel, grpcAddress));
  notifyParent({
    type: 'ready',
    role: 'coordinator',
    httpPort: running.httpPort,
    rpcPort: running.rpcPort,
    ...(running.grpcPort !== undefined ? { grpcPort: running.grpcPort } : {}),
  });
}
