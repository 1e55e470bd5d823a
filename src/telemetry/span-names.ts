/**
 * The span vocabulary: what each span is called, which attributes it carries, and how a failure
 * is written on one. docs/tracing.md shows the tree these spans form; a name or attribute changed
 * here changes what users' dashboards and queries match, so change both together.
 *
 * Attribute sets are built by one function per span kind, with the keys written out literally:
 * a literal object with constant keys is the cheapest for V8 to make (one allocation, one shape),
 * and these are made only for a request that is traced.
 */

import { type Attributes, type Context, type Span, SpanStatusCode } from '@opentelemetry/api';
import { toInfergridError } from '../errors.ts';

/** A span's place in a trace, as passed from a request to the work done for it. */
export type TraceContext = Context;

/** Span names (the tree is in docs/tracing.md). */
export const SPAN_NAMES = {
  validate: 'validate',
  cacheLookup: 'cache lookup',
  route: 'route',
  /** Both sides of an INFER_REQUEST: the coordinator's client span and the worker's server span. */
  rpcInfer: 'infergrid.Worker/Infer',
  queueWait: 'queue wait',
  batch: 'batch execute',
} as const;

/** Attributes set on a span after it has started. */
export const SPAN_ATTRIBUTES = {
  /** The error's code (`INVALID_ARGUMENT`, `UNAVAILABLE`, …) on a failed span. */
  errorType: 'error.type',
  /** The error's message, cut at MAX_ERROR_MESSAGE_CHARS. */
  errorMessage: 'infergrid.error.message',
  httpStatusCode: 'http.response.status_code',
  workerId: 'infergrid.worker.id',
  /** How a request met the response cache: hit, miss, joined, bypass, refresh. */
  cacheOutcome: 'infergrid.cache.outcome',
} as const;

/** Longest error message put on a span, characters; a longer one is cut and ends with `…`. */
export const MAX_ERROR_MESSAGE_CHARS = 500;

/** How a dispatch attempt came about. */
export type AttemptKind = 'first' | 'retry' | 'hedge';

/** An HTTP route in OpenTelemetry's form: Fastify's `/v2/models/:model` is `/v2/models/{model}`. */
export function httpRoute(fastifyRoute: string): string {
  return fastifyRoute.replace(/:(\w+)/g, '{$1}');
}

/** The coordinator's HTTP server span: method and route (`{model}`, not the name, keeps names few). */
export function httpSpanName(method: string, route: string): string {
  return `${method} ${route}`;
}

export function httpAttributes(method: string, route: string, path: string, model: string): Attributes {
  return {
    'http.request.method': method,
    'http.route': route,
    'url.path': path,
    'infergrid.model': model,
  };
}

/** One routing decision (a pick among the replicas); `attempt` counts from 1. */
export function routeAttributes(model: string, attempt: number): Attributes {
  return { 'infergrid.model': model, 'infergrid.attempt': attempt };
}

/** The coordinator's client span of one RPC attempt (SPAN_NAMES.rpcInfer). */
export function rpcClientAttributes(
  model: string,
  workerId: string,
  attempt: number,
  kind: AttemptKind,
): Attributes {
  return {
    'rpc.system': 'infergrid',
    'rpc.service': 'infergrid.Worker',
    'rpc.method': 'Infer',
    'infergrid.model': model,
    'infergrid.worker.id': workerId,
    'infergrid.attempt': attempt,
    'infergrid.attempt.kind': kind,
  };
}

/** The worker's server span of one INFER_REQUEST (SPAN_NAMES.rpcInfer). */
export function rpcServerAttributes(model: string, version: string, workerId: string): Attributes {
  return {
    'rpc.system': 'infergrid',
    'rpc.service': 'infergrid.Worker',
    'rpc.method': 'Infer',
    'infergrid.model': model,
    'infergrid.model.version': version,
    'infergrid.worker.id': workerId,
  };
}

export function cacheLookupAttributes(model: string): Attributes {
  return { 'infergrid.model': model };
}

/** One pipeline step: `step <name>`. */
export function stepSpanName(step: string): string {
  return `step ${step}`;
}

export function stepAttributes(pipeline: string, step: string, model: string): Attributes {
  return {
    'infergrid.pipeline': pipeline,
    'infergrid.pipeline.step': step,
    'infergrid.model': model,
  };
}

/** One model execution on a worker: `rows` run, for `requests` requests. */
export function batchAttributes(model: string, rows: number, requests: number): Attributes {
  return {
    'infergrid.model': model,
    'infergrid.batch.rows': rows,
    'infergrid.batch.requests': requests,
  };
}

/** Marks a span failed with the error's code (status and `error.type`); a string is a code. */
export function recordError(span: Span, error: unknown): void {
  const e = typeof error === 'string' ? { code: error, message: error } : toInfergridError(error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.code });
  span.setAttribute(SPAN_ATTRIBUTES.errorType, e.code);
  const { message } = e;
  span.setAttribute(
    SPAN_ATTRIBUTES.errorMessage,
    message.length > MAX_ERROR_MESSAGE_CHARS ? `${message.slice(0, MAX_ERROR_MESSAGE_CHARS)}…` : message,
  );
}

/** Ends a span, failed when `error` is given. */
export function endSpan(span: Span, error?: unknown): void {
  if (error !== undefined) recordError(span, error);
  span.end();
}
