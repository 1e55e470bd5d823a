/**
 * What a streamed request's metrics need, measured where the coordinator sees it: when each
 * partial answer arrived, and the token counts of the final one. Published once at the end
 * (telemetry/llm-events.ts); the first token is also an event on the request's span.
 */

import { trace } from '@opentelemetry/api';
import { LLM_RESULT_PARAMETERS } from '../llm/schema.ts';
import type { ModelEntry } from '../registry/index.ts';
import { type LlmStreamEndEvent, type TraceContext, llmStreamEnd } from '../telemetry/index.ts';
import type { InferResult } from './request.ts';

/** Gaps kept per request for the inter-token histogram; a longer stream's later gaps are dropped. */
const MAX_GAPS = 4096;

export class StreamTiming {
  readonly receivedAtMs: number;
  firstMs: number | undefined;
  readonly gapsMs: number[] = [];
  #lastMs: number | undefined;

  constructor(receivedAtMs: number) {
    this.receivedAtMs = receivedAtMs;
  }

  /** A partial answer arrived (taken by the consumer now). */
  partial(traceContext: TraceContext | undefined): void {
    const now = performance.now();
    if (this.#lastMs === undefined) {
      this.firstMs = now - this.receivedAtMs;
      if (traceContext) trace.getSpan(traceContext)?.addEvent('first_token');
    } else if (this.gapsMs.length < MAX_GAPS) this.gapsMs.push(now - this.#lastMs);
    this.#lastMs = now;
  }
}

function count(result: InferResult | undefined, name: string): number | undefined {
  const v = result?.meta.parameters?.[name];
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

export function publishStreamEnd(
  source: object,
  entry: ModelEntry,
  workerId: string | undefined,
  code: string | undefined,
  timing: StreamTiming,
  result: InferResult | undefined,
): void {
  if (!llmStreamEnd.hasSubscribers) return;
  llmStreamEnd.publish({
    source,
    model: entry.name,
    version: entry.version,
    workerId,
    code,
    firstTokenMs: timing.firstMs,
    interTokenMs: timing.gapsMs,
    endToEndMs: performance.now() - timing.receivedAtMs,
    promptTokens: count(result, LLM_RESULT_PARAMETERS.promptTokens),
    completionTokens: count(result, LLM_RESULT_PARAMETERS.completionTokens),
  } satisfies LlmStreamEndEvent);
}
