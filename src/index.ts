/**
 * infergrid as a library: the pieces a program embeds or talks to. (The CLI, `infergrid
 * serve | coordinator | worker`, is the usual way to run it.)
 */

export {
  type CacheStore,
  type KvApi,
  MemoryStore,
  RedisStore,
  ResponseCache,
  SqliteStore,
  type StoreStats,
  TieredStore,
  cacheKey,
  kvApi,
} from './cache/index.ts';
export {
  type ClientTensor,
  InferenceClient,
  InferenceClientError,
  type InferResponse,
} from './client/index.ts';
export { type InfergridConfig, type ModelConfig, loadConfig } from './config/index.ts';
export { Coordinator } from './coordinator/index.ts';
export { ERROR_CODES, type ErrorCode, InfergridError } from './errors.ts';
export type { Tensor, TensorSpec } from './tensor/index.ts';
export { ModelHost, Worker } from './worker/index.ts';
export { INFERGRID_VERSION } from './version.ts';
