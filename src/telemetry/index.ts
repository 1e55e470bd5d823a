export { type LogLevel, type Logger, createLogger, silentLogger } from './logger.ts';
export {
  CoordinatorMetrics,
  type CoordinatorMetricsSource,
  DURATION_BUCKETS_S,
  PROMETHEUS_CONTENT_TYPE,
  WorkerMetrics,
  mergeExposition,
} from './metrics.ts';
