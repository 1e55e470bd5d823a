export { type HttpServerOptions, createHttpServer } from './http-server.ts';
export { TIMEOUT_HEADER, requestTimeoutMs } from './timeout.ts';
export {
  BINARY_CONTENT_TYPE,
  INFERENCE_HEADER_CONTENT_LENGTH,
  checkOutputTensor,
  encodeInferResponse,
  parseInferRequestBody,
  tensorFromInput,
} from './binary-tensors.ts';
export { ApiKeyAuth, type RouteScope, generateApiKey, hashApiKey, scopeOf } from './auth.ts';
export {
  SERVER_NAME,
  cacheParameters,
  inferenceRequestOf,
  malformedOutput,
  modelMetadata,
  parsedOrRefused,
} from './infer-entry.ts';
export { modelStatistics } from './stats.ts';
export { modelConfig, tritonModelConfig } from './repository.ts';
export { parseGenerateRequest } from './triton-generate-mapping.ts';
export { outputText } from './llm-fields.ts';
export { hostAllowed, isLoopbackHost } from './front-guard.ts';
export { MAX_PATH_PARAM_CHARS } from './errors.ts';
export type { ClusterStatusSource } from './cluster-admin.ts';
