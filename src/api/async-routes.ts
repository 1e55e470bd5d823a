/**
 * Asynchronous inference over HTTP:
 *   POST   /v2/models/{m}/infer  with `parameters.async: true` or `Prefer: respond-async`:
 *                               202 { id, status: "pending" }, Location: /v2/requests/{id}
 *                               (the infer route calls wantsAsync, then replyAccepted)
 *   GET    /v2/requests/{id}     200 { id, status: "pending" | "done" | "failed", ... }
 *   DELETE /v2/requests/{id}     cancels a pending request (200 cancelled, or 202 cancelling while
 *                               the coordinator running it has not confirmed), or forgets a finished one
 */

import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AsyncRecord, AsyncRequests } from '../async/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { ASYNC_PARAMETER, type Parameters } from '../protocol/index.ts';
import { sendError } from './errors.ts';

/** The RFC 7240 preference that asks for an asynchronous answer. */
export const RESPOND_ASYNC = 'respond-async';
export const ASYNC_REQUESTS_PATH = '/v2/requests';

type Headers = Readonly<Record<string, string | string[] | undefined>>;

/** Whether a `Prefer` header (several headers, or a comma-separated list) holds respond-async, in any case. */
export function prefersRespondAsync(headers: Headers): boolean {
  const prefer = headers.prefer;
  if (prefer === undefined) return false;
  const values = Array.isArray(prefer) ? prefer : [prefer];
  return values.some((value) =>
    value.split(',').some((preference) => {
      // a preference is `token [= value] *( ";" parameter )`
      const token = preference.split(';', 1)[0]!.split('=', 1)[0]!.trim();
      return token.toLowerCase() === RESPOND_ASYNC;
    }),
  );
}

/**
 * Whether the request asks to be answered asynchronously: `parameters.async` true (or "true"),
 * or a `Prefer: respond-async` header; either is enough. Throws INVALID_ARGUMENT for an `async`
 * parameter that is neither true nor false.
 */
export function wantsAsync(
  headers: Headers,
  parameters: Readonly<Record<string, unknown>> | undefined,
): boolean {
  const value = parameters?.[ASYNC_PARAMETER];
  let asked: boolean;
  if (value === undefined || value === false || value === 'false') asked = false;
  else if (value === true || value === 'true') asked = true;
  else {
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `parameter "${ASYNC_PARAMETER}" must be true or false, got ${JSON.stringify(value)}`,
    );
  }
  return asked || prefersRespondAsync(headers);
}

/** The parameters without `async`, which is the engine's, never the model's (a new object). */
export function stripAsyncParameter(parameters: Readonly<Parameters>): Parameters {
  // the common case, no `async`: the same object, no copy per request
  if (!(ASYNC_PARAMETER in parameters)) return parameters as Parameters;
  const { [ASYNC_PARAMETER]: _async, ...rest } = parameters;
  return rest;
}

export function asyncRequestLocation(id: string): string {
  return `${ASYNC_REQUESTS_PATH}/${id}`;
}

/** Answers 202 Accepted with the request's id and where to poll (and Preference-Applied when the header asked). */
export function replyAccepted(reply: FastifyReply, id: string, viaPreferHeader: boolean): FastifyReply {
  reply.header('location', asyncRequestLocation(id));
  if (viaPreferHeader) reply.header('preference-applied', RESPOND_ASYNC);
  return reply.code(202).type('application/json').send({ id, status: 'pending' });
}

/** The JSON body of GET /v2/requests/{id}. Times are ISO 8601. */
export function asyncRecordBody(record: AsyncRecord): Record<string, unknown> {
  const base = {
    id: record.id,
    status: record.status,
    submitted_at: new Date(record.submittedAtMs).toISOString(),
  };
  switch (record.status) {
    case 'pending':
      return base;
    case 'done':
      return { ...base, finished_at: new Date(record.finishedAtMs).toISOString(), response: record.response };
    case 'failed':
      return {
        ...base,
        finished_at: new Date(record.finishedAtMs).toISOString(),
        error: record.error,
        http_status: record.httpStatus,
      };
  }
}

function notFound(id: string, resultTtlMs: number): InfergridError {
  return new InfergridError(
    'NOT_FOUND',
    `asynchronous request ${JSON.stringify(id)} is unknown or expired: outcomes are kept for ${resultTtlMs} ms after they finish (async.resultTtlMs); submit the request again`,
    { details: { id, resultTtlMs } },
  );
}

export function registerAsyncRoutes(app: FastifyInstance, requests: AsyncRequests | undefined): void {
  if (!requests) return;
  app.get<{ Params: { id: string } }>(`${ASYNC_REQUESTS_PATH}/:id`, async (req, reply) => {
    const { id } = req.params;
    // another key's request answers 404, like an unknown one
    const record = await requests.get(id, req.principal?.name);
    if (record === undefined) return sendError(reply, notFound(id, requests.resultTtlMs));
    return reply.code(200).send(asyncRecordBody(record));
  });

  app.delete<{ Params: { id: string } }>(`${ASYNC_REQUESTS_PATH}/:id`, async (req, reply) => {
    const { id } = req.params;
    try {
      const outcome = await requests.delete(id, req.principal?.name);
      if (outcome === undefined) return sendError(reply, notFound(id, requests.resultTtlMs));
      // cancelling: accepted and recorded, the coordinator running it has not confirmed yet
      return reply.code(outcome === 'cancelling' ? 202 : 200).send({ id, action: outcome });
    } catch (err) {
      return sendError(reply, toInfergridError(err));
    }
  });
}
