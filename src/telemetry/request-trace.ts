/**
 * One request's spans, from start to end: on the coordinator the HTTP server span (its stages
 * are stage events), on a worker the INFER_REQUEST span, its queue wait and the batch it ran in.
 *
 * These objects are made only for a traced request (callers keep no `Tracing` when it is off),
 * and hold their open child span in a field rather than in a closure; the one closure is the
 * end of a batch with a recorded request in it (a batch without one gets a shared no-op). They
 * start spans through the narrow `SpanStarter` (which `Tracing` is), so this file imports
 * neither the `Tracing` facade nor the SDK, and a test can hand them a fake.
 */

import { type Attributes, type Link, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { InfergridError } from '../errors.ts';
import {
  SPAN_ATTRIBUTES,
  SPAN_NAMES,
  type TraceContext,
  batchAttributes,
  endSpan,
  recordError,
  rpcServerAttributes,
} from './span-names.ts';

/** What the per-request traces need of `Tracing`: a span under a parent (see `Tracing.startSpan`). */
export interface SpanStarter {
  startSpan(
    name: string,
    parent: TraceContext | undefined,
    kind?: SpanKind,
    attributes?: Attributes,
    links?: Link[],
  ): Span;
}

/**
 * One HTTP inference request's server span on the coordinator. `context` is the parent for the
 * work done for the request (its stages' spans come from the stage events, request-events.ts).
 */
export class HttpRequestTrace {
  readonly span: Span;
  readonly context: TraceContext;

  constructor(span: Span, context: TraceContext) {
    this.span = span;
    this.context = context;
  }

  /** Ends the request with the status it was answered with. */
  end(statusCode: number, error?: unknown): void {
    this.span.setAttribute(SPAN_ATTRIBUTES.httpStatusCode, statusCode);
    if (error !== undefined) recordError(this.span, error);
    else if (statusCode >= 500)
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: String(statusCode) });
    this.span.end();
  }
}

/** The end of a batch none of whose requests is recorded. */
const NO_BATCH_SPAN = (): void => {};

/**
 * One INFER_REQUEST on a worker: the server span continuing the coordinator's attempt span,
 * the queue wait under it, and (through the batcher's hooks) the batch it ran in. Shaped as
 * the batcher's `SubmitTrace`; the batcher knows no tracing library.
 */
export class WorkerRequestTrace {
  readonly span: Span;
  readonly context: TraceContext;
  readonly #tracing: SpanStarter;
  readonly #model: string;
  #queue: Span | undefined;

  /** Made by `Tracing.startWorkerRequest`. */
  constructor(
    tracing: SpanStarter,
    parent: TraceContext,
    meta: { model: string; version: string },
    workerId: string,
  ) {
    this.#tracing = tracing;
    this.#model = meta.model;
    this.span = tracing.startSpan(
      SPAN_NAMES.rpcInfer,
      parent,
      SpanKind.SERVER,
      rpcServerAttributes(meta.model, meta.version, workerId),
    );
    this.context = trace.setSpan(parent, this.span);
  }

  /** The request is handed to the model's queue. */
  enqueued(): void {
    this.#queue = this.#tracing.startSpan(SPAN_NAMES.queueWait, this.context);
  }

  /** It left the queue for a batch. */
  dequeued(): void {
    this.#queue?.end();
    this.#queue = undefined;
  }

  /**
   * A batch starts with this request first among its traced ones: a span under the first
   * recorded request of the batch, linked to every recorded request in it. Returns what ends it.
   */
  batchStarted(members: readonly unknown[], rows: number): (error?: InfergridError) => void {
    const links: Link[] = [];
    let parent: WorkerRequestTrace | undefined;
    for (const m of members) {
      if (!(m instanceof WorkerRequestTrace) || !m.span.isRecording()) continue;
      links.push({ context: m.span.spanContext() });
      parent ??= m;
    }
    if (!parent) return NO_BATCH_SPAN;
    const span = this.#tracing.startSpan(
      SPAN_NAMES.batch,
      parent.context,
      SpanKind.INTERNAL,
      batchAttributes(this.#model, rows, members.length),
      links,
    );
    return (error) => endSpan(span, error);
  }

  /** The request was answered (or failed: the queue wait too, if it never left the queue). */
  end(error?: unknown): void {
    if (this.#queue) {
      endSpan(this.#queue, error);
      this.#queue = undefined;
    }
    endSpan(this.span, error);
  }
}
