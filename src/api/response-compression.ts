/**
 * Compressed answers (`Accept-Encoding`): an onSend hook that compresses a response's body in
 * the coding the client prefers (body-encoding.ts negotiateCoding) when it pays: a successful
 * text answer (JSON, Prometheus text, the dashboard's files) of at least
 * compression.responseMinBytes. Binary tensor bodies, event streams (written directly, never
 * through onSend) and error answers go out as they are. Every text answer says
 * `Vary: Accept-Encoding`, whether or not this one was compressed, since a bigger one from the
 * same route would be.
 */

import type { FastifyInstance } from 'fastify';
import type { CoordinatorConfig } from '../config/index.ts';
import {
  compressBody,
  isCompressibleType,
  negotiateCoding,
  varyWithAcceptEncoding,
} from './body-encoding.ts';

export function installResponseCompression(
  app: FastifyInstance,
  options: Readonly<Pick<CoordinatorConfig['compression'], 'responseMinBytes' | 'level'>>,
): void {
  const { responseMinBytes, level } = options;
  app.addHook('onSend', async (req, reply, payload) => {
    if (!isCompressibleType(reply.getHeader('content-type'))) return payload;
    reply.header('vary', varyWithAcceptEncoding(reply.getHeader('vary')));
    const status = reply.statusCode;
    if (status < 200 || status >= 300 || status === 204) return payload;
    if (reply.getHeader('content-encoding') !== undefined) return payload;
    if (typeof payload !== 'string' && !Buffer.isBuffer(payload)) return payload;
    if (Buffer.byteLength(payload) < responseMinBytes) return payload;
    const coding = negotiateCoding(req.headers['accept-encoding']);
    if (coding === 'identity') return payload;
    const compressed = await compressBody(coding, payload, level);
    reply.header('content-encoding', coding);
    // set for the uncompressed body by whoever sent it; fastify counts the compressed one
    reply.removeHeader('content-length');
    return compressed;
  });
}
