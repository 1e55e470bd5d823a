import type { FastifyInstance } from 'fastify';
import { createHttpServer } from '../api/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { Coordinator } from '../coordinator/index.ts';
import { type Logger, createTracing } from '../telemetry/index.ts';
import { INFERGRID_VERSION } from '../version.ts';

export interface RunningCoordinator {
  coordinator: Coordinator;
  app: FastifyInstance;
  httpPort: number;
  rpcPort: number;
  /** Stops taking HTTP requests, closes worker connections and the RPC port, flushes spans. */
  close(): Promise<void>;
}

/**
 * Starts a coordinator's RPC side and HTTP side from a loaded config; `baseDir` is the config
 * file's folder (relative model paths of runtime loads resolve against it), `env` is read for
 * the OTEL_* tracing variables.
 */
export async function startCoordinator(
  config: Readonly<InfergridConfig>,
  logger: Logger,
  baseDir: string,
  env: Record<string, string | undefined> = process.env,
): Promise<RunningCoordinator> {
  const tracing = await createTracing({ config: config.tracing, env, role: 'coordinator', logger });
  const coordinator = new Coordinator({ config, logger, tracing, baseDir });
  try {
    await coordinator.start();
  } catch (err) {
    await tracing.shutdown();
    throw err;
  }
  const app = createHttpServer({ coordinator, config, logger, serverVersion: INFERGRID_VERSION });
  try {
    await app.listen({ host: config.coordinator.host, port: config.coordinator.port });
  } catch (err) {
    await coordinator.stop();
    await tracing.shutdown();
    throw err;
  }
  const address = app.server.address();
  const httpPort = typeof address === 'object' && address ? address.port : config.coordinator.port;
  logger.info({ address: `http://${config.coordinator.host}:${httpPort}` }, 'coordinator HTTP listening');
  return {
    coordinator,
    app,
    httpPort,
    rpcPort: coordinator.rpcPort!,
    async close() {
      await app.close();
      await coordinator.stop();
      await tracing.shutdown();
    },
  };
}
