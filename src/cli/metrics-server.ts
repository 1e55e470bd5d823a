/** A worker's own `GET /metrics` (Prometheus text), on a port of its own. */

import { type Server, createServer } from 'node:http';
import { PROMETHEUS_CONTENT_TYPE, type Logger, type WorkerMetrics } from '../telemetry/index.ts';

export async function serveMetrics(
  metrics: WorkerMetrics,
  host: string,
  port: number,
  logger: Logger,
): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  logger.info({ address: `http://${host}:${bound}/metrics` }, 'worker metrics listening');
  return { server, port: bound };
}
