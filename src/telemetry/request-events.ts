/**
 * The stages of an inference request, published once on `node:diagnostics_channel` (as undici
 * publishes `undici:request:create` / `:headers` / `:error`), for metrics, traces and logs to
 * subscribe to instead of being called one by one from the request path.
 *
 * Trade-offs:
 * - Free when nobody listens: a publisher tests `channel.hasSubscribers` (a property read) before it
 *   builds a payload, so an unobserved stage allocates nothing.
 * - One object per stage, not two: a stage with a start and an end (a request, an attempt, a
 *   pipeline step) publishes at its end the very object it published at its start, completed.
 *   The publisher makes it with every field present (end fields zeroed), so it keeps one shape,
 *   and a subscriber can join start and end by identity (a WeakMap) without an id lookup.
 * - Subscribers run synchronously, inside `publish`, on the request path: they must be cheap, and
 *   must not throw (diagnostics_channel rethrows a subscriber's error as an uncaught exception on
 *   the next tick). They may write the fields marked "set by a subscriber" (the trace context a
 *   tracing subscriber hands back); nothing else.
 * - The named channels are process-wide (`diagnostics_channel.channel(name)` returns the same
 *   object for a name), which is what lets an outside tool subscribe. Two coordinators in one
 *   process would see each other's requests there: give each its own `isolatedRequestChannels()`.
 */

import diagnosticsChannel from 'node:diagnostics_channel';
import type { ErrorCode, InfergridError } from '../errors.ts';
import type { CoordinatorMetrics } from './metrics.ts';
import type { AttemptKind, TraceContext } from './span-names.ts';

/** The channel names. A name keeps its meaning and its payload's fields; a new stage gets a new name. */
export const REQUEST_EVENT_NAMES = {
  requestStart: 'infergrid:request:start',
  requestEnd: 'infergrid:request:end',
  asyncEnd: 'infergrid:request:asyncEnd',
  attemptStart: 'infergrid:attempt:start',
  attemptEnd: 'infergrid:attempt:end',
  cacheLookup: 'infergrid:cache:lookup',
  stepStart: 'infergrid:pipeline:step:start',
  stepEnd: 'infergrid:pipeline:step:end',
} as const;

/**
 * A model version as the registry holds it. Publishers pass the registry's entry object itself,
 * not a copy: the metrics keep their per-model label children keyed by its identity.
 */
export interface ModelRef {
  readonly name: string;
  readonly version: string;
}

/**
 * How a request met the response cache: the values of cache/'s CacheOutcome, written out because
 * cache/ imports telemetry/ (a value added there fails to compile where a publisher passes one).
 */
export type CacheOutcomeName = 'hit' | 'miss' | 'joined' | 'bypass' | 'refresh';

/** How a stage ended, filled in before its end is published. */
export interface StageOutcome {
  outcome: 'ok' | 'error';
  /** `OK`, or the error's code. */
  code: ErrorCode | 'OK';
  /** The error, when `outcome` is 'error'. */
  error: InfergridError | undefined;
  /** From the stage's start to its end, ms. */
  durationMs: number;
}

/** An inference request reached the coordinator's HTTP route (before anything is parsed). */
export interface RequestStartEvent {
  /** The HTTP request's id (Fastify's; the client's `x-request-id` when it sent one). */
  readonly requestId: string;
  readonly method: string;
  /** The route as registered (`/v2/models/:model/infer`). */
  readonly route: string;
  /** The URL path, without the query. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The model as the URL names it; it may not exist (then `entry` stays undefined). */
  readonly model: string;
  /** `performance.now()` at arrival, ms. */
  readonly startedAtMs: number;
  /** Set by a subscriber (tracing): the context the request's work is traced under. */
  traceContext: TraceContext | undefined;
}

/** The coordinator answered the request (published once, whatever the outcome). */
export interface RequestEndEvent extends RequestStartEvent, StageOutcome {
  /** The model version it resolved to; undefined when it did not resolve. */
  entry: ModelRef | undefined;
  /** The HTTP status answered. */
  statusCode: number;
  /** How it met the response cache; undefined when the model does not cache or it never got there. */
  cache: CacheOutcomeName | undefined;
  /** The worker whose answer it was; undefined for a cache hit, a pipeline, or no answer. */
  workerId: string | undefined;
  /**
   * Answered 202: an asynchronous request was accepted and runs on. Its outcome is published on
   * `asyncEnd` when the run settles; this end says only that the HTTP exchange is over.
   */
  asyncAccepted: boolean;
}

/**
 * An accepted asynchronous request's run settled (its result is stored for the client to fetch).
 * `durationMs` is the run's own time, from its start, not from the HTTP request's arrival.
 */
export interface AsyncEndEvent extends StageOutcome {
  /** The HTTP request that submitted it. */
  readonly requestId: string;
  readonly entry: ModelRef;
}

/** One dispatch attempt (first, retry or hedge) is sent to a worker. */
export interface AttemptStartEvent {
  readonly entry: ModelRef;
  readonly workerId: string;
  /** Attempts of this request so far, this one included (1, 2, …). */
  readonly attempt: number;
  readonly kind: AttemptKind;
  /** The context the attempt is traced under (its request's or pipeline step's). */
  readonly parent: TraceContext | undefined;
  readonly startedAtMs: number;
  /** Set by a subscriber (tracing): the W3C traceparent to send in the RPC meta. */
  traceparent: string | undefined;
}

/** The attempt's worker answered, failed, or the attempt was abandoned (a losing hedge: CANCELLED). */
export interface AttemptEndEvent extends AttemptStartEvent, StageOutcome {}

/**
 * The response cache answered a request or handed it on to be computed: published once, when
 * the outcome is known (`durationMs` is the lookup's time, not the computation's).
 */
export interface CacheLookupEvent extends StageOutcome {
  readonly entry: ModelRef;
  /** The request's cache mode: normal, or bypass / refresh as the client asked. */
  readonly mode: 'normal' | 'bypass' | 'refresh';
  /** Undefined when the lookup failed before an outcome (then `outcome` is 'error'). */
  readonly cache: CacheOutcomeName | undefined;
  readonly parent: TraceContext | undefined;
  readonly startedAtMs: number;
}

/** A pipeline starts one of its steps. */
export interface StepStartEvent {
  /** The pipeline's entry. */
  readonly pipeline: ModelRef;
  readonly step: string;
  /** The model the step runs. */
  readonly model: ModelRef;
  /** The context the step is traced under (the pipeline request's). */
  readonly parent: TraceContext | undefined;
  readonly startedAtMs: number;
  /** Set by a subscriber (tracing): the context the step's own work is traced under. */
  traceContext: TraceContext | undefined;
}

export interface StepEndEvent extends StepStartEvent, StageOutcome {
  /** The worker that ran it; undefined for a cache hit or no answer. */
  workerId: string | undefined;
}

/**
 * A diagnostics channel seen with the type of what it carries. The channels are
 * `diagnostics_channel.channel(...)` objects; this view only types `publish`.
 */
export interface EventChannel<T> {
  readonly name: string | symbol;
  /** Test before building a payload: false costs the publisher nothing more. */
  readonly hasSubscribers: boolean;
  publish(event: T): void;
}

export interface RequestChannels {
  readonly requestStart: EventChannel<RequestStartEvent>;
  readonly requestEnd: EventChannel<RequestEndEvent>;
  readonly asyncEnd: EventChannel<AsyncEndEvent>;
  readonly attemptStart: EventChannel<AttemptStartEvent>;
  readonly attemptEnd: EventChannel<AttemptEndEvent>;
  readonly cacheLookup: EventChannel<CacheLookupEvent>;
  readonly stepStart: EventChannel<StepStartEvent>;
  readonly stepEnd: EventChannel<StepEndEvent>;
}

function channelsNamed(name: (n: string) => string | symbol): RequestChannels {
  const c = (n: string) => diagnosticsChannel.channel(name(n));
  const n = REQUEST_EVENT_NAMES;
  return Object.freeze({
    requestStart: c(n.requestStart),
    requestEnd: c(n.requestEnd),
    asyncEnd: c(n.asyncEnd),
    attemptStart: c(n.attemptStart),
    attemptEnd: c(n.attemptEnd),
    cacheLookup: c(n.cacheLookup),
    stepStart: c(n.stepStart),
    stepEnd: c(n.stepEnd),
  });
}

/** The process-wide channels, by their names in REQUEST_EVENT_NAMES. */
export const REQUEST_CHANNELS: RequestChannels = channelsNamed((n) => n);

/**
 * Channels no one else can name (symbols described by the same names): for a coordinator that
 * shares its process with another, and for tests.
 */
export function isolatedRequestChannels(): RequestChannels {
  return channelsNamed((n) => Symbol(n));
}

/** Calls `onEvent` with each event published on `channel`; returns what unsubscribes it. */
export function subscribeEvent<T>(channel: EventChannel<T>, onEvent: (event: T) => void): () => void {
  const listener = (message: unknown): void => onEvent(message as T);
  diagnosticsChannel.subscribe(channel.name, listener);
  return () => {
    diagnosticsChannel.unsubscribe(channel.name, listener);
  };
}

/**
 * Feeds the coordinator's request metrics (`infergrid_requests_total`, and for successes
 * `infergrid_request_duration_seconds`) from request ends: a synchronous request is counted
 * when it is answered, an asynchronous one when its run settles (not at its 202), timed from the
 * run's start. Returns what unsubscribes.
 */
export function subscribeMetrics(
  channels: RequestChannels,
  metrics: Pick<CoordinatorMetrics, 'onRequest'>,
): () => void {
  const offEnd = subscribeEvent(channels.requestEnd, (e) => {
    if (e.asyncAccepted) return;
    metrics.onRequest(e.entry, e.outcome === 'ok' ? undefined : e.code, e.durationMs / 1000);
  });
  const offAsync = subscribeEvent(channels.asyncEnd, (e) => {
    metrics.onRequest(e.entry, e.outcome === 'ok' ? undefined : e.code, e.durationMs / 1000);
  });
  return () => {
    offEnd();
    offAsync();
  };
}
