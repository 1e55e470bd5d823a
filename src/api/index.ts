export { type HttpServerOptions, createHttpServer } from './http-server.ts';
export { TIMEOUT_HEADER } from './timeout.ts';
export {
  BINARY_CONTENT_TYPE,
  INFERENCE_HEADER_CONTENT_LENGTH,
  encodeInferResponse,
  parseInferRequestBody,
} from './binary-tensors.ts';
export { ApiKeyAuth, generateApiKey, hashApiKey, scopeOf } from './auth.ts';
export { hostAllowed, isLoopbackHost } from './front-guard.ts';
