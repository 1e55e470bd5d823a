export { type HostedModel, MAX_RETIRED_STATS, ModelHost } from './model-host.ts';
export {
  type LocalModels,
  PIPELINE_PLATFORM,
  type PipelineBackendOptions,
  createPipelineBackend,
} from './pipeline-backend.ts';
export { Worker, type WorkerEvents, type WorkerOptions, type WorkerStats } from './worker.ts';
