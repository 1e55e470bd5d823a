export {
  ChatTemplate,
  contentText,
  parseChatMessages,
} from './chat-template.ts';
export {
  GGML_TYPE,
  type GgufArraySummary,
  type GgufKv,
  type GgufTensor,
  ggufKv,
  readGgufMetadata,
  writeGguf,
} from './gguf.ts';
export { parseGenerationOptions, type SamplingOptions } from './request-options.ts';
export {
  type FinishReason,
  LLM_INPUT,
  LLM_EMBEDDING_OUTPUT,
  LLM_OUTPUT,
  LLM_PARAMETERS,
  LLM_RESULT_PARAMETERS,
} from './schema.ts';
export {
  type DecodeContext,
  type GenerationJob,
  type StepItem,
  StepLoop,
  type StepLoopOptions,
  type StepSampling,
  type Token,
} from './step-loop.ts';
export { StopStringMatcher } from './stop-strings.ts';
export { type Detokenize, StreamDetokenizer } from './stream-detokenizer.ts';
export { TextStream } from './text-stream.ts';
