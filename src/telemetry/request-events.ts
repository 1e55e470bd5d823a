/**
 * Request stages published once, through node:diagnostics_channel (as undici publishes
 * `undici:request:*`): the coordinator's entry point says when a request ends, and metrics,
 * the debug log line and the dashboard's counts subscribe, instead of being called from the
 * request code. Trade-off: a channel is process-wide, so every event names its `source` (the
 * coordinator that published it) and a subscriber keeps to its own source; several
 * coordinators in one process (tests) never count each other's requests. Publishing costs
 * one object per request, and nothing when nobody subscribes (`hasSubscribers`).
 */

import diagnosticsChannel from 'node:diagnostics_channel';
import type { CoordinatorMetrics } from './metrics.ts';
import type { Logger } from './logger.ts';

/** A request the coordinator answered (ok, failed, or accepted to run asynchronously). */
export interface RequestEndEvent {
  /** The coordinator that published it. */
  readonly source: object;
  /** The model name the client sent. */
  readonly model: string;
  /** The model version it resolved to; undefined when it could not be resolved. */
  readonly entry: { readonly name: string; readonly version: string } | undefined;
  /** The error code; undefined for success. */
  readonly code: string | undefined;
  /** 'answered': a response (or error) was given; 'accepted': an asynchronous request was taken; 'finished': an asynchronous request ran to its end. */
  readonly phase: 'answered' | 'accepted' | 'finished';
  /** From the request's receipt (or the async run's start) to its outcome, ms. */
  readonly durationMs: number;
  readonly workerId: string | undefined;
  /** How the request met the cache, when the model caches. */
  readonly cache: string | undefined;
  /** The front door's id for the request (x-request-id), for logs. */
  readonly requestId: string | undefined;
  /** The W3C traceparent the client sent, for logs. */
  readonly traceparent: string | undefined;
}

export const REQUEST_END_CHANNEL = 'infergrid:request:end';

/** Published by the coordinator's entry point once per request outcome. */
export const requestEnd = diagnosticsChannel.channel(REQUEST_END_CHANNEL);

/** Calls `onEnd` for each request end published by `source`; returns the unsubscribe. */
export function subscribeRequestEnd(source: object, onEnd: (event: RequestEndEvent) => void): () => void {
  const listener = (message: unknown): void => {
    const event = message as RequestEndEvent;
    if (event.source === source) onEnd(event);
  };
  diagnosticsChannel.subscribe(REQUEST_END_CHANNEL, listener);
  return () => diagnosticsChannel.unsubscribe(REQUEST_END_CHANNEL, listener);
}

/**
 * Prometheus: an answered or finished request counts under its model version and outcome;
 * an accepted one counts when it finishes. Only successes observe a duration.
 */
export function subscribeMetrics(source: object, metrics: CoordinatorMetrics): () => void {
  return subscribeRequestEnd(source, (e) => {
    if (e.phase === 'accepted') return;
    metrics.onRequest(e.entry, e.code, e.code === undefined ? e.durationMs / 1000 : 0);
  });
}

/** At debug level, one line per answered request: ids, model, worker, cache, outcome and time. */
export function subscribeRequestLog(source: object, logger: Logger): () => void {
  return subscribeRequestEnd(source, (e) => {
    if (e.phase === 'finished' || !logger.isLevelEnabled('debug')) return;
    logger.debug(
      {
        reqId: e.requestId,
        ...(e.traceparent !== undefined ? { traceId: e.traceparent.split('-')[1] } : {}),
        model: e.entry?.name ?? e.model,
        version: e.entry?.version,
        worker: e.workerId,
        cache: e.cache,
        code: e.phase === 'accepted' ? 'ACCEPTED' : (e.code ?? 'OK'),
        ms: Math.round(e.durationMs * 1000) / 1000,
      },
      'inference request',
    );
  });
}
