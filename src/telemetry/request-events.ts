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
import type { Span } from '@opentelemetry/api';
import type { CoordinatorMetrics } from './metrics.ts';
import type { Logger } from './logger.ts';
import { type AttemptKind, SPAN_ATTRIBUTES, SPAN_NAMES, type TraceContext, endSpan } from './span-names.ts';
import { type Tracing, traceparentOf } from './tracing.ts';

/** A request the coordinator answered (ok, failed, or accepted to run asynchronously). */
export interface RequestEndEvent {
  /** The coordinator that published it. */
  readonly source: object;
  /** The model name the client sent. */
  readonly model: string;
  /** The model version it resolved to; undefined when it could not be resolved. */
  readonly entry: { readonly name: string; readonly version: string } | undefined;
  /**
   * The model the request counts under, on /metrics (`model` label) and on the dashboard alike
   * (one rule, the coordinator's, {@link countedModel}): the name of the version it resolved to;
   * when it was refused before resolving (a body that does not parse, a version that does not
   * exist), the name the client sent if the coordinator serves that name; else "" (a name
   * nobody serves never becomes a label, so clients cannot grow the series with made-up names).
   */
  readonly countedModel: string;
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

/** A subscriber's own failure: written to stderr once per channel, never thrown into the request path. */
const reported = new Set<string>();
function reportSubscriberError(channel: string, err: unknown): void {
  if (reported.has(channel)) return;
  reported.add(channel);
  process.emitWarning(
    `a subscriber of ${channel} failed (further failures are not reported): ${String(err)}`,
  );
}

/**
 * The model a request counts under (see {@link RequestEndEvent.countedModel}): `served` says
 * whether the coordinator serves a name (has a version of it).
 */
export function countedModel(
  model: string,
  entry: { readonly name: string } | undefined,
  served: (name: string) => boolean,
): string {
  if (entry) return entry.name;
  return served(model) ? model : '';
}

/** Published by the coordinator's entry point once per request outcome. */
export const requestEnd = diagnosticsChannel.channel(REQUEST_END_CHANNEL);

/**
 * Calls `onEnd` for each request end published by `source`; returns the unsubscribe. A
 * subscriber that throws is contained here: diagnostics_channel would rethrow it on the next
 * tick, as an uncaught exception that ends the process.
 */
export function subscribeRequestEnd(source: object, onEnd: (event: RequestEndEvent) => void): () => void {
  const listener = (message: unknown): void => {
    const event = message as RequestEndEvent;
    if (event.source !== source) return;
    try {
      onEnd(event);
    } catch (err) {
      reportSubscriberError(REQUEST_END_CHANNEL, err);
    }
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
    metrics.onRequest(e.entry, e.countedModel, e.code, e.code === undefined ? e.durationMs / 1000 : 0);
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

/**
 * One traced stage of a request inside the coordinator: published on `stageStart` when it
 * begins and the same object on `stageEnd` when it ends, filled in. Published only when a
 * subscriber listens and the request has a trace context. The tracing subscriber keeps its
 * span in `handle` and writes what the request path needs back: `traceparent` (an attempt's,
 * for the worker) and `context` (a step's, for the step's own work).
 */
export interface StageEvent {
  readonly source: object;
  readonly stage: 'validate' | 'cache' | 'route' | 'attempt' | 'step';
  /** The span the stage goes under. */
  readonly parent: TraceContext;
  readonly model: string;
  /** route, attempt: the attempt's number (1 first). */
  readonly attempt?: number;
  /** attempt: why it was started. */
  readonly kind?: AttemptKind;
  /** step: the pipeline and step names. */
  readonly pipeline?: string;
  readonly step?: string;
  /** route: the replica picked (undefined: none); attempt: the replica sent to; step: who answered. */
  workerId?: string | undefined;
  /** cache: how the request met the cache. */
  outcome?: string;
  /** Set when the stage failed. */
  error?: unknown;
  /** Written by a tracing subscriber at start. */
  traceparent?: string;
  context?: TraceContext;
  handle?: unknown;
}

export const STAGE_START_CHANNEL = 'infergrid:stage:start';
export const STAGE_END_CHANNEL = 'infergrid:stage:end';
export const stageStart = diagnosticsChannel.channel(STAGE_START_CHANNEL);
export const stageEnd = diagnosticsChannel.channel(STAGE_END_CHANNEL);

/**
 * Starts a traced stage: published only when tracing listens and the request is traced, so an
 * untraced request builds nothing. The same object is published again by `endStage`.
 */
export function startStage(
  source: object,
  stage: StageEvent['stage'],
  parent: TraceContext | undefined,
  model: string,
  attempt?: number,
  kind?: AttemptKind,
  workerId?: string,
  pipeline?: string,
  step?: string,
): StageEvent | undefined {
  if (parent === undefined || !stageStart.hasSubscribers) return undefined;
  const event: StageEvent = { source, stage, parent, model, attempt, kind, workerId, pipeline, step };
  stageStart.publish(event);
  return event;
}

/** Ends a stage started by `startStage` (once; later calls do nothing). */
export function endStage(event: StageEvent | undefined, error?: unknown): void {
  if (event === undefined || event.handle === undefined) return;
  if (error !== undefined) event.error = error;
  stageEnd.publish(event);
}

/**
 * Spans from stage events: validate, cache lookup, route, the RPC client span of each attempt
 * (its traceparent written back for the worker's span), and one per pipeline step (its context
 * written back for the step's own work). Returns the unsubscribe.
 */
export function subscribeTracing(source: object, tracing: Tracing): () => void {
  const onStart = (message: unknown): void => {
    const e = message as StageEvent;
    if (e.source !== source) return;
    try {
      startSpanFor(e, tracing);
    } catch (err) {
      reportSubscriberError(STAGE_START_CHANNEL, err);
    }
  };
  const onEnd = (message: unknown): void => {
    const e = message as StageEvent;
    if (e.source !== source || e.handle === undefined) return;
    try {
      endSpanFor(e, tracing);
    } catch (err) {
      reportSubscriberError(STAGE_END_CHANNEL, err);
    }
  };
  diagnosticsChannel.subscribe(STAGE_START_CHANNEL, onStart);
  diagnosticsChannel.subscribe(STAGE_END_CHANNEL, onEnd);
  return () => {
    diagnosticsChannel.unsubscribe(STAGE_START_CHANNEL, onStart);
    diagnosticsChannel.unsubscribe(STAGE_END_CHANNEL, onEnd);
  };
}

function startSpanFor(e: StageEvent, tracing: Tracing): void {
  let span: Span;
  switch (e.stage) {
    case 'validate':
      span = tracing.startSpan(SPAN_NAMES.validate, e.parent);
      break;
    case 'cache':
      span = tracing.startCacheLookup(e.parent, e.model);
      break;
    case 'route':
      span = tracing.startRoute(e.parent, e.model, e.attempt ?? 1);
      break;
    case 'attempt':
      span = tracing.startAttempt(e.parent, e.model, e.workerId ?? '', e.attempt ?? 1, e.kind ?? 'first');
      e.traceparent = traceparentOf(span);
      break;
    case 'step':
      span = tracing.startStep(e.parent, e.pipeline ?? '', e.step ?? '', e.model);
      e.context = tracing.contextWith(span, e.parent);
      break;
  }
  e.handle = span;
}

function endSpanFor(e: StageEvent, tracing: Tracing): void {
  const span = e.handle as Span;
  e.handle = undefined;
  if (e.stage === 'route' && e.error === undefined) {
    tracing.endRoute(span, e.workerId);
    return;
  }
  if (e.stage === 'cache' && e.outcome !== undefined)
    span.setAttribute(SPAN_ATTRIBUTES.cacheOutcome, e.outcome);
  if (e.stage === 'step' && e.workerId !== undefined) span.setAttribute(SPAN_ATTRIBUTES.workerId, e.workerId);
  endSpan(span, e.error);
}
