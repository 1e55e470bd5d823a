/**
 * Every error leaves the HTTP API in one shape: KServe v2's `{ "error": message }`, plus the
 * stable `code` and any details. 503 and 429 carry Retry-After.
 */

import type { FastifyError, FastifyReply } from 'fastify';
import { InfergridError, toInfergridError } from '../errors.ts';

export const DEFAULT_RETRY_AFTER_SECONDS = 1;

/** Maps fastify's own errors (body parsing, limits) onto the catalog. */
export function fromFastifyError(err: FastifyError, bodyLimitBytes: number): InfergridError {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new InfergridError(
        'PAYLOAD_TOO_LARGE',
        `request body is larger than the limit of ${bodyLimitBytes} bytes (coordinator.bodyLimitBytes); send big tensors in several requests or raise the limit`,
        { details: { bodyLimitBytes } },
      );
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new InfergridError('UNSUPPORTED_MEDIA_TYPE', `unsupported content type; send application/json`);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new InfergridError('MALFORMED_REQUEST', 'request body is empty; expected a JSON object');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new InfergridError('MALFORMED_REQUEST', 'request body length does not match Content-Length');
    default:
      break;
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new InfergridError('MALFORMED_REQUEST', err.message);
  }
  return toInfergridError(err);
}

export function sendError(reply: FastifyReply, err: InfergridError): FastifyReply {
  const status = err.httpStatus;
  if (status === 503 || status === 429) {
    const retry = err.details?.retryAfterSeconds;
    reply.header('retry-after', String(typeof retry === 'number' ? retry : DEFAULT_RETRY_AFTER_SECONDS));
  }
  const body: Record<string, unknown> = { error: err.message, code: err.code };
  if (err.details !== undefined) body.details = err.details;
  return reply.code(status).type('application/json').send(body);
}
