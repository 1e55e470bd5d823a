export { type LogFormat, type LogLevel, type Logger, createLogger, silentLogger } from './logger.ts';
export {
  CoordinatorMetrics,
  type CoordinatorMetricsSource,
  DURATION_BUCKETS_S,
  PROMETHEUS_CONTENT_TYPE,
  WorkerMetrics,
  mergeExposition,
} from './metrics.ts';
export { type ControlPlaneMetricsSource, registerControlPlaneMetrics } from './control-plane-metrics.ts';
export { type ClusterMetricsSource, registerClusterMetrics } from './cluster-metrics.ts';
export {
  DEFAULT_OTLP_TRACES_ENDPOINT,
  type TracingConfig,
  type TracingSettings,
  resolveTracingSettings,
} from './tracing-settings.ts';
export { type CreateTracingOptions, createTracing } from './tracing-sdk.ts';
export {
  DEFAULT_TRACING_SHUTDOWN_TIMEOUT_MS,
  Tracing,
  noTracing,
  traceparentOf,
  tracingIfEnabled,
} from './tracing.ts';
export {
  type AttemptKind,
  SPAN_NAMES,
  type TraceContext,
  endSpan,
  recordError,
} from './span-names.ts';
export { HttpRequestTrace, WorkerRequestTrace } from './request-trace.ts';
export {
  REQUEST_END_CHANNEL,
  type RequestEndEvent,
  STAGE_END_CHANNEL,
  STAGE_START_CHANNEL,
  type StageEvent,
  countedModel,
  endStage,
  requestEnd,
  stageEnd,
  stageStart,
  startStage,
  subscribeMetrics,
  subscribeRequestEnd,
  subscribeRequestLog,
  subscribeTracing,
} from './request-events.ts';
export {
  type LlmStreamEndEvent,
  llmStreamEnd,
  subscribeLlmMetrics,
} from './llm-events.ts';
