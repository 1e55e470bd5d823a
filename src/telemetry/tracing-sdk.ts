/**
 * Setting up the OpenTelemetry SDK for a process: a tracer provider with the configured sampler,
 * a BatchSpanProcessor per exporter (OTLP/HTTP JSON or the console), and the W3C propagator.
 *
 * Trade-off: the SDK, the exporter and their dependencies take ~60 ms to load, so they are
 * imported here, dynamically, and only when the settings switch tracing on; a process with
 * tracing off loads only the small API package (through tracing.ts). Failed exports are logged
 * here rather than left to OTel's diag channel, where nobody would see them.
 */

import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, Sampler, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { INFERGRID_VERSION } from '../version.ts';
import type { Logger } from './logger.ts';
import {
  DEFAULT_TRACING_CONFIG,
  type Env,
  type TracingConfig,
  type TracingRole,
  type TracingSettings,
  resolveTracingSettings,
} from './tracing-settings.ts';
import { Tracing, noTracing } from './tracing.ts';

function buildSampler(
  sdk: typeof import('@opentelemetry/sdk-trace-base'),
  { name, ratio }: TracingSettings['sampler'],
): Sampler {
  const root = name.endsWith('always_on')
    ? new sdk.AlwaysOnSampler()
    : name.endsWith('always_off')
      ? new sdk.AlwaysOffSampler()
      : new sdk.TraceIdRatioBasedSampler(ratio);
  return name.startsWith('parentbased_') ? new sdk.ParentBasedSampler({ root }) : root;
}

/** ExportResultCode.SUCCESS (@opentelemetry/core, not loaded when tracing is off). */
const EXPORT_SUCCESS = 0;

/**
 * Logs failed exports instead of letting them vanish into OTel's diag channel: the first
 * failure, then at most one line a minute with the count of spans lost since.
 */
class LoggedExporter implements SpanExporter {
  readonly #inner: SpanExporter;
  readonly #logger: Logger;
  readonly #endpoint: string;
  #lostSpans = 0;
  #loggedAt = Number.NEGATIVE_INFINITY;

  constructor(inner: SpanExporter, logger: Logger, endpoint: string) {
    this.#inner = inner;
    this.#logger = logger;
    this.#endpoint = endpoint;
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.#inner.export(spans, (result) => {
      if (result.code !== EXPORT_SUCCESS) {
        this.#lostSpans += spans.length;
        const now = Date.now();
        if (now - this.#loggedAt >= 60_000) {
          this.#loggedAt = now;
          this.#logger.warn(
            { endpoint: this.#endpoint, lostSpans: this.#lostSpans, err: result.error?.message },
            'trace export failed; spans were dropped',
          );
          this.#lostSpans = 0;
        }
      }
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush?.() ?? Promise.resolve();
  }
}

export interface CreateTracingOptions {
  config?: Readonly<TracingConfig> | undefined;
  /** Read for OTEL_*; default none. */
  env?: Env;
  role: TracingRole;
  /** A worker's id (resource attribute `service.instance.id`). */
  workerId?: string | undefined;
  logger: Logger;
}

/** The process's tracing from its config and environment; `noTracing()` when it is off. */
export async function createTracing(options: CreateTracingOptions): Promise<Tracing> {
  const settings = resolveTracingSettings(
    options.config ?? DEFAULT_TRACING_CONFIG,
    options.env ?? {},
    options.role,
  );
  if (!settings.enabled) return noTracing();
  const [sdk, core, resources, otlp] = await Promise.all([
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/exporter-trace-otlp-http'),
  ]);
  const resource = resources.resourceFromAttributes({
    'service.name': settings.serviceName,
    'service.version': INFERGRID_VERSION,
    'infergrid.role': options.role,
    'process.pid': process.pid,
    ...(options.workerId !== undefined
      ? { 'service.instance.id': options.workerId, 'infergrid.worker.id': options.workerId }
      : {}),
  });
  const spanProcessors = settings.exporters.map((name) => {
    const exporter =
      name === 'console'
        ? new sdk.ConsoleSpanExporter()
        : new otlp.OTLPTraceExporter({ url: settings.endpoint });
    return new sdk.BatchSpanProcessor(new LoggedExporter(exporter, options.logger, settings.endpoint));
  });
  const provider = new sdk.BasicTracerProvider({
    resource,
    sampler: buildSampler(sdk, settings.sampler),
    spanProcessors,
  });
  options.logger.info(
    {
      exporters: settings.exporters,
      ...(settings.exporters.includes('otlp') ? { endpoint: settings.endpoint } : {}),
      sampler: settings.sampler.name,
      ratio: settings.sampler.ratio,
      serviceName: settings.serviceName,
    },
    'tracing on',
  );
  return new Tracing(provider.getTracer('infergrid', INFERGRID_VERSION), {
    provider,
    propagator: new core.W3CTraceContextPropagator(),
    settings,
  });
}
