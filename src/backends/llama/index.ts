export {
  DEFAULT_LLAMA_CONTEXT_SIZE,
  LLAMA_PLATFORM,
  createLlamaBackend,
  vocabularySizeOf,
} from './backend.ts';
export { NodeLlamaDecodeContext } from './decode-context.ts';
