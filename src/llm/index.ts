export {
  ChatTemplate,
  type ChatMessage,
  type ChatTemplateTokens,
  MAX_CHAT_MESSAGES,
  contentText,
  parseChatMessages,
} from './chat-template.ts';
export {
  DEFAULT_GGUF_ALIGNMENT,
  GGML_TYPE,
  GGUF_MAGIC,
  GGUF_TYPE,
  GGUF_VERSION,
  type GgmlType,
  type GgufArraySummary,
  type GgufHeader,
  type GgufKv,
  type GgufTensor,
  type GgufType,
  ggufKv,
  readGgufMetadata,
  writeGguf,
} from './gguf.ts';
export {
  DEFAULT_SAMPLING,
  type GenerationLimits,
  type GenerationOptions,
  MAX_STOP_STRING_CHARS,
  MAX_STOP_STRINGS,
  parseGenerationOptions,
  type SamplingOptions,
} from './request-options.ts';
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
  type GenerationOutcome,
  REPEAT_PENALTY_WINDOW,
  type StepItem,
  StepLoop,
  type StepLoopOptions,
  type StepLoopStats,
  type StepSampling,
  type Token,
} from './step-loop.ts';
export { StopStringMatcher, type StopPush } from './stop-strings.ts';
export { type Detokenize, StreamDetokenizer } from './stream-detokenizer.ts';
export { DEFAULT_EMIT_QUEUE_TOKENS, TextStream, type TextStreamOptions } from './text-stream.ts';
