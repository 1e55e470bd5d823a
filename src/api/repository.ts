/**
 * The model repository extension (Triton's) and model configuration:
 *   POST /v2/repository/index                       every model version with its state
 *                                                  ({"ready": true} lists only ready ones)
 *   POST /v2/repository/models/{m}/load             load (or reload) a model on its workers;
 *                                                  {"parameters": {"config": {...} | "<json>"}}
 *                                                  defines a new model or replaces its settings;
 *                                                  the config is the engine's or Triton's shape
 *   POST /v2/repository/models/{m}/unload           stop serving it and unload it everywhere
 *   GET  /v2/models/{m}[/versions/{v}]/config       the model's configuration as served, in
 *                                                  Triton's shape (what tritonclient reads);
 *                                                  ?format=infergrid: the engine's own (backend,
 *                                                  batching, placement, version policy, traffic
 *                                                  split, pipeline steps, replicas)
 *   GET|PUT /admin/models/{m}/traffic               the split of unversioned requests between
 *                                                  versions ({"1": 90, "2": 10}; {} clears it)
 */

import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';
import { runsOnCoordinator, toTritonConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';

interface ModelParams {
  model: string;
  version?: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The model as served (GET /v2/models/{m}[/versions/{v}]/config and gRPC's ModelConfig):
 * backend, schema, batching, placement, version policy, traffic split, replicas.
 */
export function modelConfig(coordinator: Coordinator, model: string, version?: string) {
  const { registry } = coordinator;
  const entry = coordinator.resolve(model, version);
  const c = entry.config;
  const spec = entry.spec;
  return {
    name: entry.name,
    version: entry.version,
    versions: registry.versions(entry.name),
    version_policy: registry.policy(entry.name),
    traffic: registry.traffic(entry.name),
    backend: c?.backend ?? null,
    platform: spec?.platform ?? null,
    ready: registry.isReady(entry),
    batchable: spec?.batchable ?? c?.batchable ?? null,
    max_batch_size: spec?.maxBatchSize ?? c?.maxBatchSize ?? null,
    quantized: c?.quantized ?? false,
    inputs: spec?.inputs ?? c?.inputs ?? [],
    outputs: spec?.outputs ?? c?.outputs ?? [],
    placement: runsOnCoordinator(c) ? 'coordinator' : (c?.workers ?? 'all workers'),
    replicas: [...entry.replicas].map(([worker, r]) => ({
      worker,
      pool: coordinator.pool.get(worker)?.pool ?? null,
      state: r.state,
      ...(r.error ? { error: r.error } : {}),
    })),
    ...(c?.pipeline ? { pipeline: c.pipeline } : {}),
    ...(c ? { batching: c.batching, cache: c.cache, routing: c.routing } : {}),
  };
}

/**
 * The model in Triton's shape (model_config.proto's fields: name, platform, backend,
 * version_policy, max_batch_size, input, output, dynamic_batching, instance_group,
 * response_cache): what GET /v2/models/{m}/config answers by default, and gRPC's ModelConfig.
 */
export function tritonModelConfig(coordinator: Coordinator, model: string, version?: string) {
  const { registry } = coordinator;
  const entry = coordinator.resolve(model, version);
  const c = entry.config;
  const spec = entry.spec;
  return toTritonConfig({
    name: entry.name,
    config: c,
    inputs: spec?.inputs ?? c?.inputs ?? [],
    outputs: spec?.outputs ?? c?.outputs ?? [],
    batchable: spec?.batchable ?? c?.batchable ?? false,
    maxBatchSize: spec?.maxBatchSize ?? c?.maxBatchSize ?? 0,
    platform: spec?.platform,
    versionPolicy: registry.policy(entry.name),
  });
}

/** `?format=` of GET .../config: Triton's shape (the default, what Triton's clients read) or the engine's own. */
const CONFIG_FORMATS = ['triton', 'infergrid'] as const;

export function registerRepositoryRoutes(app: FastifyInstance, coordinator: Coordinator): void {
  const { registry, repository } = coordinator;

  app.post('/v2/repository/index', async (req) => {
    const body = req.body;
    const readyOnly = isRecord(body) && body.ready === true;
    const index = repository.index();
    return readyOnly ? index.filter((e) => e.state === 'READY') : index;
  });

  app.post('/v2/repository/models/:model/load', async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const body = req.body;
    if (body !== undefined && !isRecord(body))
      throw new InfergridError('INVALID_ARGUMENT', 'the load body must be a JSON object (or empty)');
    const parameters = body?.parameters;
    if (parameters !== undefined && !isRecord(parameters))
      throw new InfergridError('INVALID_ARGUMENT', '"parameters" must be an object');
    const models = await repository.load(req.params.model, parameters?.config);
    return { models };
  });

  app.post('/v2/repository/models/:model/unload', async (req: FastifyRequest<{ Params: ModelParams }>) => {
    await repository.unload(req.params.model);
    return { models: repository.index().filter((e) => e.name === req.params.model) };
  });

  const config = async (req: FastifyRequest<{ Params: ModelParams; Querystring: { format?: unknown } }>) => {
    const format = req.query.format ?? 'triton';
    if (!CONFIG_FORMATS.includes(format as (typeof CONFIG_FORMATS)[number]))
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `format must be "triton" (Triton's model config, the default) or "infergrid" (the engine's own), got ${JSON.stringify(format)}`,
      );
    return format === 'triton'
      ? tritonModelConfig(coordinator, req.params.model, req.params.version)
      : modelConfig(coordinator, req.params.model, req.params.version);
  };
  app.get('/v2/models/:model/config', config);
  app.get('/v2/models/:model/versions/:version/config', config);

  app.get('/admin/models/:model/traffic', async (req: FastifyRequest<{ Params: ModelParams }>) => {
    coordinator.resolve(req.params.model);
    return {
      model: req.params.model,
      versions: registry.versions(req.params.model),
      traffic: registry.traffic(req.params.model),
    };
  });
  app.put('/admin/models/:model/traffic', async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const body = req.body;
    const split = isRecord(body) && isRecord(body.traffic) ? body.traffic : body;
    if (!isRecord(split))
      throw new InfergridError(
        'INVALID_ARGUMENT',
        'expected a JSON object of version -> share in percent, e.g. {"1": 90, "2": 10} ({} clears the split)',
      );
    repository.setTraffic(req.params.model, split as Record<string, number>);
    return { model: req.params.model, traffic: registry.traffic(req.params.model) };
  });
}
