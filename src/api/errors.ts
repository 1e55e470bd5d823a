/**
 * Every error leaves the HTTP API in one shape: KServe v2's `{ "error": message }`, plus the
 * stable `code` and any details; under /v1 (the OpenAI API), OpenAI's shape
 * `{ "error": { message, type, param, code } }`, so its clients raise their own error classes.
 * 503 and 429 carry Retry-After.
 */

import { STATUS_CODES, maxHeaderSize } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyReply } from 'fastify';
import { InfergridError, toInfergridError } from '../errors.ts';
import { openAiErrorBody } from './openai-mapping.ts';

/** Paths answered in OpenAI's error shape (the OpenAI API's). */
export function isOpenAiPath(url: string): boolean {
  return url === '/v1' || url.startsWith('/v1/') || url.startsWith('/v1?');
}

export const DEFAULT_RETRY_AFTER_SECONDS = 1;
/** Longest path parameter the router takes (fastify's maxParamLength), characters. */
export const MAX_PATH_PARAM_CHARS = 100;

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
    // the router's own refusals, before any route runs (fastify's frameworkErrors)
    case 'FST_ERR_BAD_URL':
      return new InfergridError(
        'MALFORMED_REQUEST',
        'the URL path has a %-escape that does not decode (not two hex digits, or not UTF-8); write a literal "%" as %25',
      );
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new InfergridError(
        'MALFORMED_REQUEST',
        `a path parameter (model name, version or request id) is longer than ${MAX_PATH_PARAM_CHARS} characters`,
        { details: { maxPathParamChars: MAX_PATH_PARAM_CHARS } },
      );
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
  if (isOpenAiPath(reply.request.url)) {
    return reply.code(status).type('application/json').send(openAiErrorBody(err));
  }
  return reply.code(status).type('application/json').send(kserveErrorBody(err));
}

/** An error in the KServe v2 shape: `{ error: message }`, with the stable `code` and any details. */
export function kserveErrorBody(err: InfergridError): Record<string, unknown> {
  const body: Record<string, unknown> = { error: err.message, code: err.code };
  if (err.details !== undefined) body.details = err.details;
  return body;
}

/** What node's HTTP parser refused, before any route could run, as a catalog error. */
function fromClientError(err: Error & { code?: string }): InfergridError {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new InfergridError(
        'REQUEST_TIMEOUT',
        'the request was not received in time (coordinator.headersTimeoutMs for its headers, bodyTimeoutMs for all of it)',
      );
    case 'HPE_HEADER_OVERFLOW':
      return new InfergridError(
        'HEADERS_TOO_LARGE',
        `the request line and headers are over ${maxHeaderSize} bytes; shorten the URL or the headers`,
        { details: { maxHeaderBytes: maxHeaderSize } },
      );
    default:
      return new InfergridError(
        'MALFORMED_REQUEST',
        `not a valid HTTP/1.1 request (${err.code ?? err.message})`,
      );
  }
}

/**
 * fastify's clientErrorHandler: answers a request node could not parse (or that came too slowly)
 * in the engine's error shape, then closes the connection, as fastify's own handler does.
 */
export function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  // a reset peer has nobody to answer
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const typed = fromClientError(err);
  const body = JSON.stringify({ error: typed.message, code: typed.code });
  const status = typed.httpStatus;
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
