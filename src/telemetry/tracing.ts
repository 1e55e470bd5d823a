/**
 * OpenTelemetry tracing, one `Tracing` per process, off by default: the facade the engine holds
 * and starts its spans through. Settings are in tracing-settings.ts, the SDK set-up (which makes
 * a `Tracing`) in tracing-sdk.ts, span names and attributes in span-names.ts, and one request's
 * spans in request-trace.ts.
 *
 * Trade-offs: contexts are passed explicitly (a request carries its parent `Context` through
 * the coordinator, the RPC meta's `traceparent` to the worker) rather than through a global
 * context manager, so nothing is registered globally and nothing async_hooks-based runs per
 * request. When tracing is off, callers hold no `Tracing` at all and test one value before any
 * span work, so an untraced request allocates no attributes, spans or closures for it. This file
 * imports only the OpenTelemetry API (the SDK's types are erased). A request that is not sampled
 * makes no child spans: its unrecorded span stands in for them, and the worker, seeing "not
 * sampled" in the traceparent, makes none at all.
 *
 * Span names and the tree they form are listed in docs/tracing.md.
 */

import {
  type Attributes,
  type Link,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapPropagator,
  TraceFlags,
  type Tracer,
  defaultTextMapGetter,
  trace,
} from '@opentelemetry/api';
import type { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { HttpRequestTrace, type SpanStarter, WorkerRequestTrace } from './request-trace.ts';
import {
  type AttemptKind,
  SPAN_ATTRIBUTES,
  SPAN_NAMES,
  type TraceContext,
  cacheLookupAttributes,
  httpAttributes,
  httpRoute,
  httpSpanName,
  routeAttributes,
  rpcClientAttributes,
  stepAttributes,
  stepSpanName,
} from './span-names.ts';
import type { TracingSettings } from './tracing-settings.ts';

/** Longest a shutdown waits for the last spans to be exported, ms. */
export const DEFAULT_TRACING_SHUTDOWN_TIMEOUT_MS = 5000;

/**
 * A process's tracing. Code that traces keeps a `Tracing` only when `enabled` is true (see
 * `tracingIfEnabled`), so "is this request traced" is one check of a field.
 */
export class Tracing implements SpanStarter {
  readonly enabled: boolean;
  readonly tracer: Tracer;
  readonly settings: TracingSettings | undefined;
  readonly #provider: BasicTracerProvider | undefined;
  readonly #propagator: TextMapPropagator | undefined;
  /** Fastify route -> OTel route (`:model` -> `{model}`); there are a handful. */
  readonly #routes = new Map<string, string>();
  #shutdown: Promise<void> | undefined;

  constructor(
    tracer: Tracer,
    on?: { provider: BasicTracerProvider; propagator: TextMapPropagator; settings: TracingSettings },
  ) {
    this.enabled = on !== undefined;
    this.tracer = tracer;
    this.#provider = on?.provider;
    this.#propagator = on?.propagator;
    this.settings = on?.settings;
  }

  /**
   * A span under `parent`; the parent itself when that is a local span not being recorded (a
   * request that was not sampled): its children would not be recorded either, and skipping the
   * SDK for them is most of what an unsampled request would cost. Ending or annotating that
   * stand-in does nothing, and a `traceparent` made from it carries the not-sampled decision on.
   */
  startSpan(
    name: string,
    parent: TraceContext | undefined,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes?: Attributes,
    links?: Link[],
  ): Span {
    return (
      this.#unrecorded(parent) ??
      this.tracer.startSpan(
        name,
        { kind, ...(attributes ? { attributes } : {}), ...(links ? { links } : {}) },
        parent ?? ROOT_CONTEXT,
      )
    );
  }

  #unrecorded(parent: TraceContext | undefined): Span | undefined {
    const span = parent && trace.getSpan(parent);
    return span && !span.isRecording() && !span.spanContext().isRemote ? span : undefined;
  }

  /** A context whose current span is `span`, under `parent`. */
  contextWith(span: Span, parent: TraceContext | undefined): TraceContext {
    return trace.setSpan(parent ?? ROOT_CONTEXT, span);
  }

  /** The context W3C trace headers name (a remote parent); the root context when absent or invalid. */
  extract(headers: Record<string, string | string[] | undefined>): TraceContext {
    return this.#propagator?.extract(ROOT_CONTEXT, headers, defaultTextMapGetter) ?? ROOT_CONTEXT;
  }

  /** Starts the coordinator's server span for an HTTP request, continuing an incoming `traceparent`. */
  startHttp(request: {
    method: string;
    route: string;
    path: string;
    headers: Record<string, string | string[] | undefined>;
    model: string;
  }): HttpRequestTrace {
    const parent = this.extract(request.headers);
    // `{model}` rather than the name: span names stay few (a backend groups by them)
    let route = this.#routes.get(request.route);
    if (route === undefined) {
      route = httpRoute(request.route);
      this.#routes.set(request.route, route);
    }
    const span = this.startSpan(
      httpSpanName(request.method, route),
      parent,
      SpanKind.SERVER,
      httpAttributes(request.method, route, request.path, request.model),
    );
    return new HttpRequestTrace(span, trace.setSpan(parent, span));
  }

  /** A span around one routing decision (a pick among the replicas); end it with `endRoute`. */
  startRoute(parent: TraceContext, model: string, attempt: number): Span {
    return (
      this.#unrecorded(parent) ??
      this.startSpan(SPAN_NAMES.route, parent, SpanKind.INTERNAL, routeAttributes(model, attempt))
    );
  }

  endRoute(span: Span, workerId: string | undefined): void {
    if (workerId === undefined) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: 'UNAVAILABLE' });
      span.setAttribute(SPAN_ATTRIBUTES.errorType, 'UNAVAILABLE');
    } else span.setAttribute(SPAN_ATTRIBUTES.workerId, workerId);
    span.end();
  }

  /** The client span of one RPC attempt; its `traceparent` goes in the request's meta. */
  startAttempt(
    parent: TraceContext,
    model: string,
    workerId: string,
    attempt: number,
    kind: AttemptKind,
  ): Span {
    return (
      this.#unrecorded(parent) ??
      this.startSpan(
        SPAN_NAMES.rpcInfer,
        parent,
        SpanKind.CLIENT,
        rpcClientAttributes(model, workerId, attempt, kind),
      )
    );
  }

  startCacheLookup(parent: TraceContext, model: string): Span {
    return (
      this.#unrecorded(parent) ??
      this.startSpan(SPAN_NAMES.cacheLookup, parent, SpanKind.INTERNAL, cacheLookupAttributes(model))
    );
  }

  startStep(parent: TraceContext | undefined, pipeline: string, step: string, model: string): Span {
    return (
      this.#unrecorded(parent) ??
      this.startSpan(stepSpanName(step), parent, SpanKind.INTERNAL, stepAttributes(pipeline, step, model))
    );
  }

  /**
   * The spans of one INFER_REQUEST on a worker, continuing the `traceparent` in its meta; none
   * when that parent was not sampled (the worker follows the coordinator's decision).
   */
  startWorkerRequest(
    meta: { model: string; version: string; traceparent?: string | undefined },
    workerId: string,
  ): WorkerRequestTrace | undefined {
    const parent = meta.traceparent ? this.extract({ traceparent: meta.traceparent }) : ROOT_CONTEXT;
    const from = trace.getSpanContext(parent);
    if (from && (from.traceFlags & TraceFlags.SAMPLED) === 0) return undefined;
    return new WorkerRequestTrace(this, parent, meta, workerId);
  }

  /**
   * Exports what is buffered and stops; later spans are dropped. Waits at most `timeoutMs` (a
   * collector that is down must not hold up a shutdown). Safe to call more than once.
   */
  shutdown(timeoutMs = DEFAULT_TRACING_SHUTDOWN_TIMEOUT_MS): Promise<void> {
    const provider = this.#provider;
    if (!provider) return Promise.resolve();
    this.#shutdown ??= new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      provider.shutdown().then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        () => {
          // export failures were already logged by LoggedExporter
          clearTimeout(timer);
          resolve();
        },
      );
    });
    return this.#shutdown;
  }
}

/** Tracing that is off: the API's no-op tracer and nothing to flush. */
export function noTracing(): Tracing {
  return new Tracing(new ProxyTracerProvider().getTracer('infergrid'));
}

/** `tracing` when it is on, else undefined: what a class keeps to test with one check. */
export function tracingIfEnabled(tracing: Tracing | undefined): Tracing | undefined {
  return tracing?.enabled ? tracing : undefined;
}

/** The W3C `traceparent` naming `span` as the parent (for the RPC meta). */
export function traceparentOf(span: Span): string {
  const { traceId, spanId, traceFlags } = span.spanContext();
  return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}
