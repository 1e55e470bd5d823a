import type { Backend } from './types.ts';
import { createJsBackend } from './js.ts';
import { createLlamaBackend } from './llama/index.ts';
import { createOnnxBackend } from './onnx.ts';
import { createSimBackend } from './sim.ts';

export type { JsModel } from './js.ts';
export {
  DEFAULT_LLAMA_CONTEXT_SIZE,
  LLAMA_PLATFORM,
  NodeLlamaDecodeContext,
  createLlamaBackend,
  vocabularySizeOf,
} from './llama/index.ts';
export { createOnnxBackend } from './onnx.ts';
export { reconcileSpecs, selectOutputs } from './schema-check.ts';
export { createSimBackend, seededRandom } from './sim.ts';
export type {
  Backend,
  InferContext,
  LlmInfo,
  LlmLoopStats,
  LoadContext,
  LoadedModel,
  ModelInfo,
  StreamContext,
  StreamResult,
} from './types.ts';

/** Every built-in backend, by name. */
export function createBackends(): ReadonlyMap<string, Backend> {
  return new Map<string, Backend>(
    [createOnnxBackend(), createSimBackend(), createJsBackend(), createLlamaBackend()].map((b) => [
      b.name,
      b,
    ]),
  );
}
