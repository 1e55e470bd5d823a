export { LatencyHistogram, type LatencySummary } from './histogram.ts';
export { type HttpBody, type RequestSender, type SendOutcome, createHttpSender } from './http-sender.ts';
export {
  type BenchOptions,
  DEFAULT_DURATION_MS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_TIMEOUT_MS,
  DEFAULT_URL,
  type LoadMode,
  parseBenchOptions,
  parseDurationMs,
} from './options.ts';
export { startProgressBar } from './progress.ts';
export { type BenchReport, benchReport, formatReport } from './report.ts';
export { type BodyDescription, type PreparedBody, prepareRequestBody } from './request-body.ts';
export { BenchRun, LATE_AFTER_MS, type RunHooks, type RunPlan, type RunResult } from './runner.ts';
export { type ModelMetadata, fetchModelMetadata, modelPath } from './target.ts';
