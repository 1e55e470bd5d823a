/**
 * Compressed answers (`Accept-Encoding`): an onSend hook that compresses a response's body in
 * the coding the client prefers (body-encoding.ts negotiateCoding) when it pays: a successful
 * text answer (JSON, Prometheus text, the dashboard's files) of at least
 * compression.responseMinBytes, from a route whose clients decode what they ask for.
 *
 * Trade-off: routes, not every answer. Triton's asyncio client sends aiohttp's default
 * `Accept-Encoding: gzip, deflate` on every call with decoding turned off, and decodes only infer
 * answers (the answers Triton's server compresses): a compressed metadata, statistics,
 * repository or config answer would reach it as gzip bytes. So inference answers (KServe infer,
 * generate, the OpenAI API), /metrics (Prometheus asks for gzip) and the dashboard (a browser)
 * are compressed; the rest of the KServe and admin API never is. Binary tensor bodies, event
 * streams (written directly, never through onSend) and error answers go out as they are.
 */

import type { FastifyInstance } from 'fastify';
import type { CoordinatorConfig } from '../config/index.ts';
import {
  compressBody,
  isCompressibleType,
  negotiateCoding,
  varyWithAcceptEncoding,
} from './body-encoding.ts';

/** Whether answers of a route (its pattern, as fastify names it) may be compressed. */
export function isCompressedRoute(route: string | undefined): boolean {
  if (route === undefined) return false;
  return (
    route.endsWith('/infer') ||
    route.endsWith('/generate') ||
    route.startsWith('/v1/') ||
    route === '/metrics' ||
    route === '/admin/overview' ||
    route.startsWith('/dashboard/')
  );
}

export function installResponseCompression(
  app: FastifyInstance,
  options: Readonly<Pick<CoordinatorConfig['compression'], 'responseMinBytes' | 'level'>>,
): void {
  const { responseMinBytes, level } = options;
  // a callback hook, not an async one: most answers leave at once, without a promise each
  app.addHook('onSend', (req, reply, payload, done) => {
    if (!isCompressedRoute(req.routeOptions.url) || !isCompressibleType(reply.getHeader('content-type'))) {
      done(null, payload);
      return;
    }
    // whether or not this answer is compressed, a bigger one from the route would be
    reply.header('vary', varyWithAcceptEncoding(reply.getHeader('vary')));
    const status = reply.statusCode;
    const coding = negotiateCoding(req.headers['accept-encoding']);
    if (
      coding === 'identity' ||
      status < 200 ||
      status >= 300 ||
      status === 204 ||
      reply.getHeader('content-encoding') !== undefined ||
      (typeof payload !== 'string' && !Buffer.isBuffer(payload)) ||
      Buffer.byteLength(payload) < responseMinBytes
    ) {
      done(null, payload);
      return;
    }
    compressBody(coding, payload, level).then((compressed) => {
      reply.header('content-encoding', coding);
      // set for the uncompressed body by whoever sent it; fastify counts the compressed one
      reply.removeHeader('content-length');
      done(null, compressed);
    }, done);
  });
}
