export { type LogFormat, type LogLevel, type Logger, createLogger, silentLogger } from './logger.ts';
export {
  CoordinatorMetrics,
  type CoordinatorMetricsSource,
  DURATION_BUCKETS_S,
  PROMETHEUS_CONTENT_TYPE,
  WorkerMetrics,
  mergeExposition,
} from './metrics.ts';
export {
  DEFAULT_OTLP_TRACES_ENDPOINT,
  type TracingConfig,
  type TracingSettings,
  resolveTracingSettings,
} from './tracing-settings.ts';
export {
  type AttemptKind,
  type CreateTracingOptions,
  DEFAULT_TRACING_SHUTDOWN_TIMEOUT_MS,
  HttpRequestTrace,
  SPAN_NAMES,
  type TraceContext,
  Tracing,
  WorkerRequestTrace,
  createTracing,
  endSpan,
  noTracing,
  recordError,
  traceparentOf,
  tracingIfEnabled,
} from './tracing.ts';
