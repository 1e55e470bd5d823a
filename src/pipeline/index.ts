export {
  type PipelineEntry,
  type PipelineRequest,
  type PipelineResult,
  PipelineRunner,
  stepInputsMisfit,
  type PipelineRunnerOptions,
  type StepRequest,
  type StepResult,
  type StepTrace,
} from './runner.ts';
