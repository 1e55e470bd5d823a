export {
  type ConfigOverrides,
  type LoadConfigOptions,
  type LoadedConfig,
  loadConfig,
  resolvePackagePath,
} from './load.ts';
export {
  type CoordinatorConfig,
  DEFAULT_BODY_LIMIT_BYTES,
  DEFAULT_HTTP_PORT,
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_RPC_PORT,
  type InfergridConfig,
  type ModelConfig,
  type ModelRoutingConfig,
  type OnnxOptions,
  type RoutingConfig,
  type RpcConfig,
  type SimOptions,
  type WorkerConfig,
  configSchema,
} from './schema.ts';
