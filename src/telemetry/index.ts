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
  type AttemptKind,
  type CreateTracingOptions,
  DEFAULT_OTLP_TRACES_ENDPOINT,
  DEFAULT_TRACING_SHUTDOWN_TIMEOUT_MS,
  HttpRequestTrace,
  SPAN_NAMES,
  type TraceContext,
  Tracing,
  type TracingConfig,
  type TracingSettings,
  WorkerRequestTrace,
  createTracing,
  endSpan,
  noTracing,
  recordError,
  resolveTracingSettings,
  traceparentOf,
  tracingIfEnabled,
} from './tracing.ts';
export {
  REQUEST_END_CHANNEL,
  type RequestEndEvent,
  requestEnd,
  subscribeMetrics,
  subscribeRequestEnd,
  subscribeRequestLog,
} from './request-events.ts';
