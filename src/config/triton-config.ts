/**
 * Triton's model configuration (the JSON form of config.pbtxt, field names of model_config.proto)
 * translated to and from the engine's own model config, for the repository load API and for
 * GET /v2/models/{m}/config (and gRPC's ModelConfig).
 *
 * Trade-off: only fields with a faithful meaning here are taken; any other field that carries a
 * value is refused, all of them listed in one error, rather than accepted and silently ignored
 * (a user who sets `KIND_GPU` or `reshape` must learn it does nothing here). Fields left at
 * their empty or default value (what a GET of a Triton config shows for features not in use)
 * are accepted, so a config read back from GET can be sent to load again.
 */

import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InfergridError } from '../errors.ts';
import type { Datatype, TensorSpec } from '../tensor/index.ts';
import type { ModelConfig, VersionPolicy } from './schema.ts';

/** Keys that only Triton's shape has: a config with any of them (or a backend not ours) is read as Triton's. */
export const TRITON_ONLY_KEYS = [
  'platform',
  'max_batch_size',
  'input',
  'output',
  'dynamic_batching',
  'instance_group',
  'version_policy',
  'default_model_filename',
] as const;

const ENGINE_BACKENDS: ReadonlySet<unknown> = new Set(['onnx', 'sim', 'js', 'pipeline', 'llama']);

/** A model name (the schema's rule); it names a folder in Triton's layout. */
const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The model file a Triton-layout version folder holds when the config names none (Triton's for ONNX). */
export const DEFAULT_TRITON_MODEL_FILENAME = 'model.onnx';

const TRITON_TYPES: Readonly<Record<string, Datatype>> = {
  TYPE_BOOL: 'BOOL',
  TYPE_UINT8: 'UINT8',
  TYPE_UINT16: 'UINT16',
  TYPE_UINT32: 'UINT32',
  TYPE_UINT64: 'UINT64',
  TYPE_INT8: 'INT8',
  TYPE_INT16: 'INT16',
  TYPE_INT32: 'INT32',
  TYPE_INT64: 'INT64',
  TYPE_FP16: 'FP16',
  TYPE_FP32: 'FP32',
  TYPE_FP64: 'FP64',
  TYPE_STRING: 'BYTES',
};

/** Triton's data_type for a KServe datatype (TYPE_STRING for BYTES). */
export function tritonDataType(datatype: Datatype): string {
  return datatype === 'BYTES' ? 'TYPE_STRING' : `TYPE_${datatype}`;
}

/** Whether a load body's config is Triton's shape rather than the engine's (docs/repository.md). */
export function isTritonConfig(raw: unknown): raw is Record<string, unknown> {
  if (!isRecord(raw)) return false;
  if (TRITON_ONLY_KEYS.some((k) => Object.hasOwn(raw, k))) return true;
  return raw.backend !== undefined && !ENGINE_BACKENDS.has(raw.backend);
}

/** A Triton config translated: the engine's config without path and version, and where its files are named. */
export interface TritonTranslation {
  /** An engine model config (before schema parsing), with neither `path` nor `version`. */
  model: Record<string, unknown>;
  /** The file each version folder holds: default_model_filename, else model.onnx. */
  modelFilename: string;
  /** Output -> label_filename as given (relative to the model's folder). */
  labelFiles: Record<string, string>;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A value Triton shows for a feature not in use: nothing, "", 0, false, [], or an object of such. */
function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null || v === '' || v === 0 || v === false || v === '0') return true;
  if (Array.isArray(v)) return v.length === 0;
  if (isRecord(v)) return Object.values(v).every(isEmpty);
  return false;
}

/** Collects every problem of one translation, each with its path. */
class Issues {
  readonly list: string[] = [];
  add(path: string, message: string): void {
    this.list.push(`${path}: ${message}`);
  }
  /** Fields of `obj` that are neither handled nor empty. */
  rest(
    obj: Record<string, unknown>,
    path: string,
    handled: readonly string[],
    known: readonly string[],
  ): void {
    for (const [k, v] of Object.entries(obj)) {
      if (handled.includes(k)) continue;
      if (!known.includes(k)) this.add(`${path}${k}`, 'unknown field');
      else if (!isEmpty(v)) this.add(`${path}${k}`, 'not supported by this engine');
    }
  }
}

/** An int64 field: protobuf's JSON may write it as a string. */
function int64(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  if (typeof v === 'string' && /^-?\d{1,15}$/.test(v)) return Number(v);
  return undefined;
}

const MODEL_FIELDS = [
  'name',
  'platform',
  'backend',
  'runtime',
  'version_policy',
  'max_batch_size',
  'input',
  'output',
  'batch_input',
  'batch_output',
  'optimization',
  'dynamic_batching',
  'sequence_batching',
  'ensemble_scheduling',
  'instance_group',
  'default_model_filename',
  'cc_model_filenames',
  'metric_tags',
  'parameters',
  'model_warmup',
  'model_operations',
  'model_transaction_policy',
  'model_repository_agents',
  'response_cache',
] as const;
const IO_FIELDS = [
  'name',
  'data_type',
  'format',
  'dims',
  'reshape',
  'is_shape_tensor',
  'allow_ragged_batch',
  'optional',
  'is_non_linear_format_io',
  'label_filename',
] as const;
const BATCHING_FIELDS = [
  'preferred_batch_size',
  'max_queue_delay_microseconds',
  'preserve_ordering',
  'priority_levels',
  'default_priority_level',
  'default_queue_policy',
  'priority_queue_policy',
] as const;
const INSTANCE_FIELDS = [
  'name',
  'kind',
  'count',
  'rate_limiter',
  'gpus',
  'secondary_devices',
  'profile',
  'passive',
  'host_policy',
] as const;

/**
 * Translates Triton's model config to the engine's. Throws INVALID_ARGUMENT listing every field
 * that is unknown, unsupported or wrong, at once.
 */
export function fromTritonConfig(raw: Record<string, unknown>, name: string): TritonTranslation {
  const issues = new Issues();
  const model: Record<string, unknown> = { name, backend: 'onnx' };
  // the name becomes a folder to look in: never "..", never a path
  if (!MODEL_NAME.test(name))
    issues.add(
      'name',
      `"${name}" is not a model name: letters, digits, "_", "." and "-", starting with a letter or digit`,
    );

  if (raw.name !== undefined && raw.name !== '' && raw.name !== name)
    issues.add('name', `names model ${JSON.stringify(raw.name)} but the URL loads "${name}"`);
  if (raw.platform !== undefined && raw.platform !== '' && raw.platform !== 'onnxruntime_onnx')
    issues.add(
      'platform',
      `${JSON.stringify(raw.platform)} is not served here; this engine runs ONNX models (platform "onnxruntime_onnx", backend "onnxruntime")`,
    );
  if (raw.backend !== undefined && raw.backend !== '' && raw.backend !== 'onnxruntime')
    issues.add(
      'backend',
      `${JSON.stringify(raw.backend)} is not served here; this engine runs ONNX models (backend "onnxruntime")`,
    );

  const maxBatchSize = raw.max_batch_size === undefined ? 0 : int64(raw.max_batch_size);
  if (maxBatchSize === undefined || maxBatchSize < 0) {
    issues.add('max_batch_size', `must be a non-negative integer, got ${JSON.stringify(raw.max_batch_size)}`);
  } else {
    model.batchable = maxBatchSize > 0;
    model.maxBatchSize = maxBatchSize;
  }
  const batched = (maxBatchSize ?? 0) > 0;

  const labelFiles: Record<string, string> = {};
  const tensors = (key: 'input' | 'output'): TensorSpec[] | undefined => {
    const list = raw[key];
    if (list === undefined) return undefined;
    if (!Array.isArray(list)) {
      issues.add(key, 'must be a list of tensors');
      return undefined;
    }
    const out: TensorSpec[] = [];
    for (const [i, t] of list.entries()) {
      const path = `${key}[${i}]`;
      if (!isRecord(t)) {
        issues.add(path, 'must be an object with name, data_type and dims');
        continue;
      }
      const handled = ['name', 'data_type', 'dims', ...(key === 'output' ? ['label_filename'] : [])];
      // FORMAT_NONE is Triton's default for "no layout"
      if (t.format === 'FORMAT_NONE') handled.push('format');
      issues.rest(t, `${path}.`, handled, IO_FIELDS);
      if (typeof t.name !== 'string' || t.name === '')
        issues.add(`${path}.name`, 'must be a non-empty string');
      const datatype = typeof t.data_type === 'string' ? TRITON_TYPES[t.data_type] : undefined;
      if (!datatype)
        issues.add(
          `${path}.data_type`,
          `${JSON.stringify(t.data_type)} is not supported; one of ${Object.keys(TRITON_TYPES).join(', ')}`,
        );
      const dims = Array.isArray(t.dims) ? t.dims.map(int64) : undefined;
      if (!dims || dims.some((d) => d === undefined || d < -1))
        issues.add(
          `${path}.dims`,
          `must be a list of integers (-1 for a variable size), got ${JSON.stringify(t.dims)}`,
        );
      if (typeof t.label_filename === 'string' && t.label_filename !== '' && typeof t.name === 'string')
        labelFiles[t.name] = t.label_filename;
      if (typeof t.name === 'string' && datatype && dims?.every((d) => d !== undefined && d >= -1))
        out.push({
          name: t.name,
          datatype,
          shape: batched ? [-1, ...(dims as number[])] : (dims as number[]),
        });
    }
    return out;
  };
  const inputs = tensors('input');
  const outputs = tensors('output');
  if (inputs?.length) model.inputs = inputs;
  if (outputs?.length) model.outputs = outputs;
  if (Object.keys(labelFiles).length) model.labels = labelFiles;

  const batching: Record<string, unknown> = {};
  const dyn = raw.dynamic_batching;
  if (dyn !== undefined && dyn !== null) {
    if (!isRecord(dyn)) issues.add('dynamic_batching', 'must be an object');
    else {
      if (!batched) issues.add('dynamic_batching', 'needs max_batch_size > 0 (a model that batches)');
      issues.rest(
        dyn,
        'dynamic_batching.',
        ['preferred_batch_size', 'max_queue_delay_microseconds', 'priority_levels', 'default_priority_level'],
        BATCHING_FIELDS,
      );
      batching.enabled = true;
      if (dyn.preferred_batch_size !== undefined) {
        const sizes = Array.isArray(dyn.preferred_batch_size) ? dyn.preferred_batch_size.map(int64) : [];
        if (!Array.isArray(dyn.preferred_batch_size) || sizes.some((s) => s === undefined || s < 1))
          issues.add('dynamic_batching.preferred_batch_size', 'must be a list of positive integers');
        else batching.preferredBatchSizes = sizes;
      }
      if (dyn.max_queue_delay_microseconds !== undefined) {
        const us = int64(dyn.max_queue_delay_microseconds);
        if (us === undefined || us < 0 || us > 60_000_000)
          issues.add(
            'dynamic_batching.max_queue_delay_microseconds',
            'must be an integer from 0 to 60000000 (60 s)',
          );
        else batching.maxQueueDelayMs = us / 1000;
      }
      // Triton's 0 means "not set"
      const levels = int64(dyn.priority_levels ?? 0);
      if (levels === undefined || levels < 0 || levels > 16)
        issues.add('dynamic_batching.priority_levels', 'must be an integer from 0 (not set) to 16');
      else if (levels > 0) batching.priorityLevels = levels;
      const level = int64(dyn.default_priority_level ?? 0);
      if (level === undefined || level < 0)
        issues.add('dynamic_batching.default_priority_level', 'must be a non-negative integer');
      else if (level > 0) batching.defaultPriorityLevel = level;
    }
  }

  const groups = raw.instance_group;
  if (groups !== undefined) {
    if (!Array.isArray(groups)) issues.add('instance_group', 'must be a list of instance groups');
    else {
      let instances = 0;
      for (const [i, g] of groups.entries()) {
        const path = `instance_group[${i}]`;
        if (!isRecord(g)) {
          issues.add(path, 'must be an object with kind and count');
          continue;
        }
        issues.rest(g, `${path}.`, ['name', 'kind', 'count'], INSTANCE_FIELDS);
        if (g.kind !== undefined && g.kind !== 'KIND_CPU' && g.kind !== 'KIND_AUTO')
          issues.add(
            `${path}.kind`,
            `${JSON.stringify(g.kind)} is not supported: models run on the workers' CPUs here; use KIND_CPU (or KIND_AUTO)`,
          );
        const count = g.count === undefined ? 1 : int64(g.count);
        if (count === undefined || count < 1) issues.add(`${path}.count`, 'must be a positive integer');
        else instances += count;
      }
      if (instances > 64)
        issues.add('instance_group', `${instances} instances in all; at most 64 per worker`);
      else if (instances > 0) batching.instances = instances;
    }
  }
  if (Object.keys(batching).length) model.batching = batching;

  model.versionPolicy = versionPolicyOf(raw.version_policy, issues);

  let modelFilename = DEFAULT_TRITON_MODEL_FILENAME;
  const file = raw.default_model_filename;
  if (file !== undefined && file !== '') {
    if (typeof file !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(file))
      issues.add(
        'default_model_filename',
        'must be a file name (letters, digits, "_", "." and "-"), no folders',
      );
    else modelFilename = file;
  }

  const cache = raw.response_cache;
  if (cache !== undefined) {
    if (!isRecord(cache)) issues.add('response_cache', 'must be an object such as {"enable": true}');
    else {
      issues.rest(cache, 'response_cache.', ['enable'], ['enable']);
      if (cache.enable !== undefined && typeof cache.enable !== 'boolean')
        issues.add('response_cache.enable', 'must be true or false');
      else model.cache = { enabled: cache.enable === true };
    }
  }

  issues.rest(
    raw,
    '',
    [
      'name',
      'platform',
      'backend',
      'max_batch_size',
      'input',
      'output',
      'dynamic_batching',
      'instance_group',
      'version_policy',
      'default_model_filename',
      'response_cache',
    ],
    MODEL_FIELDS,
  );
  if (issues.list.length > 0)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `parameters.config (a Triton model config) has ${issues.list.length} field${issues.list.length > 1 ? 's' : ''} this engine cannot take: ${issues.list.join('; ')}`,
      { details: { fields: issues.list } },
    );
  return { model, modelFilename, labelFiles };
}

/** Triton's version_policy; absent means Triton's default, the latest one. */
function versionPolicyOf(raw: unknown, issues: Issues): VersionPolicy {
  if (raw === undefined) return { latest: 1 };
  const bad = () => {
    issues.add(
      'version_policy',
      'must be {"latest": {"num_versions": N}}, {"all": {}} or {"specific": {"versions": [...]}}',
    );
    return 'all' as const;
  };
  if (!isRecord(raw) || Object.keys(raw).length !== 1) return bad();
  if (isRecord(raw.all)) return 'all';
  if (isRecord(raw.latest)) {
    const n = int64(raw.latest.num_versions ?? 1);
    return n !== undefined && n >= 1 ? { latest: n } : bad();
  }
  if (isRecord(raw.specific) && Array.isArray(raw.specific.versions)) {
    const versions = raw.specific.versions.map(int64);
    if (versions.length === 0 || versions.some((v) => v === undefined || v < 0)) return bad();
    return { specific: versions.map(String) };
  }
  return bad();
}

/**
 * The versions of a model laid out as Triton's repository is: `<root>/<name>/<version>/<file>`,
 * in the first root that has a `<name>` folder. Versions are the folders named by a number that
 * hold the file. Undefined when no root has the folder.
 */
export function findTritonVersions(
  roots: readonly string[],
  name: string,
  modelFilename: string,
): { dir: string; versions: { version: string; path: string }[] } | undefined {
  if (!MODEL_NAME.test(name) || !MODEL_NAME.test(modelFilename)) return undefined;
  for (const root of roots) {
    const dir = join(root, name);
    let entries: string[];
    try {
      if (!statSync(dir).isDirectory()) continue;
      entries = readdirSync(dir);
    } catch {
      continue;
    }
    const versions = entries
      .filter((e) => /^\d{1,18}$/.test(e))
      .map((version) => ({ version, path: join(dir, version, modelFilename) }))
      .filter((v) => {
        try {
          return statSync(v.path).isFile();
        } catch {
          return false;
        }
      })
      .sort((a, b) => Number(a.version) - Number(b.version));
    return { dir, versions };
  }
  return undefined;
}

/** What the Triton shape of a served model is made of. */
export interface TritonConfigSource {
  name: string;
  /** The declared config while served; undefined for a model known only from a worker's report. */
  config: ModelConfig | undefined;
  /** The schema as served (the backend's, else the declared one). */
  inputs: readonly TensorSpec[];
  outputs: readonly TensorSpec[];
  batchable: boolean;
  maxBatchSize: number;
  platform: string | undefined;
  versionPolicy: VersionPolicy;
}

/**
 * The model in Triton's shape. The batch dimension leaves `dims` when the model batches on a
 * first dimension every tensor has (-1) with a limit (Triton's max_batch_size > 0); otherwise
 * max_batch_size is 0 and dims are whole shapes.
 */
export function toTritonConfig(source: TritonConfigSource) {
  const c = source.config;
  const all = [...source.inputs, ...source.outputs];
  const batched =
    source.batchable && source.maxBatchSize > 0 && all.length > 0 && all.every((t) => t.shape[0] === -1);
  const dims = (t: TensorSpec) => (batched ? t.shape.slice(1) : [...t.shape]);
  const backend = c?.backend;
  const policy = source.versionPolicy;
  const batching = c?.batching;
  return {
    name: source.name,
    platform:
      backend === 'pipeline' ? 'ensemble' : backend === 'onnx' ? 'onnxruntime_onnx' : (source.platform ?? ''),
    backend: backend === 'onnx' ? 'onnxruntime' : backend === 'pipeline' ? '' : (backend ?? ''),
    version_policy:
      policy === 'all'
        ? { all: {} }
        : 'latest' in policy
          ? { latest: { num_versions: policy.latest } }
          : {
              specific: {
                versions: policy.specific.map((v) => (/^\d{1,15}$/.test(v) ? Number(v) : v)),
              },
            },
    max_batch_size: batched ? source.maxBatchSize : 0,
    input: source.inputs.map((t) => ({
      name: t.name,
      data_type: tritonDataType(t.datatype),
      format: 'FORMAT_NONE',
      dims: dims(t),
    })),
    output: source.outputs.map((t) => ({
      name: t.name,
      data_type: tritonDataType(t.datatype),
      dims: dims(t),
      label_filename: c?.labels?.[t.name] ?? '',
    })),
    ...(batching?.enabled && batched
      ? {
          dynamic_batching: {
            preferred_batch_size: batching.preferredBatchSizes,
            max_queue_delay_microseconds: Math.round(batching.maxQueueDelayMs * 1000),
            priority_levels: batching.priorityLevels,
            default_priority_level: batching.defaultPriorityLevel,
          },
        }
      : {}),
    instance_group:
      backend === 'pipeline' || !batching
        ? []
        : [{ name: source.name, kind: 'KIND_CPU', count: batching.instances }],
    response_cache: { enable: c?.cache.enabled ?? false },
  };
}
