/**
 * Config loading: file -> environment -> flags -> validate -> freeze. Every problem is
 * reported at once, each with its path, in one CONFIG_INVALID error.
 */

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseDocument } from 'yaml';
import { InfergridError } from '../errors.ts';
import { ModelPaths, realPathOf } from './model-paths.ts';
import { checkPipeline } from './pipeline.ts';
import {
  type InfergridConfig,
  type ModelConfig,
  type WorkerConfig,
  configSchema,
  modelSchema,
  workerSchema,
} from './schema.ts';

/** Settings given on the command line; they win over the file and the environment. */
export interface ConfigOverrides {
  host?: string | undefined;
  port?: number | undefined;
  rpcHost?: string | undefined;
  rpcPort?: number | undefined;
  grpcPort?: number | undefined;
  workers?: string[] | undefined;
  token?: string | undefined;
  logLevel?: string | undefined;
  /** --insecure: run without credentials where they are otherwise required (RPC, an open HTTP API beyond loopback). */
  insecure?: boolean | undefined;
  /** --cluster-redis: cluster.redis.url (the `cluster` section is created when absent). */
  clusterRedis?: string | undefined;
  /** --advertise-host: cluster.advertiseHost. */
  advertiseHost?: string | undefined;
}

export interface LoadConfigOptions {
  /** YAML file; defaults only when absent. */
  file?: string | undefined;
  /** Environment to read INFERGRID_* from. Default: none. */
  env?: Record<string, string | undefined>;
  overrides?: ConfigOverrides;
}

export interface LoadedConfig {
  config: Readonly<InfergridConfig>;
  /** Folder relative model paths were resolved against. */
  baseDir: string;
  file: string | undefined;
}

type Raw = Record<string, unknown>;

function section(raw: Raw, key: string): Raw {
  const value = raw[key];
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Raw;
  const created: Raw = {};
  if (value === undefined) raw[key] = created;
  return value === undefined ? created : {};
}

function numberFrom(text: string, issues: string[], where: string): number | undefined {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) {
    issues.push(`${where}: "${text}" is not a number`);
    return undefined;
  }
  return n;
}

function applyEnv(raw: Raw, env: Record<string, string | undefined>, issues: string[]): void {
  const coordinator = section(raw, 'coordinator');
  if (env.INFERGRID_HOST) coordinator.host = env.INFERGRID_HOST;
  if (env.INFERGRID_PORT) coordinator.port = numberFrom(env.INFERGRID_PORT, issues, 'INFERGRID_PORT');
  if (env.INFERGRID_RPC_PORT)
    coordinator.rpcPort = numberFrom(env.INFERGRID_RPC_PORT, issues, 'INFERGRID_RPC_PORT');
  if (env.INFERGRID_GRPC_PORT)
    section(coordinator, 'grpc').port = numberFrom(env.INFERGRID_GRPC_PORT, issues, 'INFERGRID_GRPC_PORT');
  if (env.INFERGRID_TOKEN) section(raw, 'auth').token = env.INFERGRID_TOKEN;
  if (env.INFERGRID_WORKER_KEY) section(raw, 'auth').workerKey = env.INFERGRID_WORKER_KEY;
  if (env.INFERGRID_LOG_LEVEL) section(raw, 'logging').level = env.INFERGRID_LOG_LEVEL;
  if (env.INFERGRID_API_KEYS) {
    const auth = section(raw, 'auth');
    const listed = Array.isArray(auth.apiKeys) ? auth.apiKeys : [];
    auth.apiKeys = [...listed, ...apiKeysFromEnv(env.INFERGRID_API_KEYS, issues)];
  }
}

/**
 * INFERGRID_API_KEYS: entries `name:scope[+scope]:sha256hex`, separated by commas or white
 * space, e.g. `ci:infer:9f86d0...,ops:admin:60303a...` (`infergrid apikey` prints one).
 */
export function apiKeysFromEnv(text: string, issues: string[]): Raw[] {
  const out: Raw[] = [];
  for (const entry of text.split(/[\s,]+/).filter(Boolean)) {
    const parts = entry.split(':');
    if (parts.length !== 3) {
      issues.push(
        `INFERGRID_API_KEYS: "${entry.slice(0, 40)}" is not name:scope[+scope]:sha256 (infergrid apikey prints one)`,
      );
      continue;
    }
    out.push({ name: parts[0], scopes: parts[1]!.split('+'), sha256: parts[2] });
  }
  return out;
}

function applyOverrides(raw: Raw, o: ConfigOverrides): void {
  const coordinator = section(raw, 'coordinator');
  if (o.host !== undefined) coordinator.host = o.host;
  if (o.port !== undefined) coordinator.port = o.port;
  if (o.rpcHost !== undefined) coordinator.rpcHost = o.rpcHost;
  if (o.rpcPort !== undefined) coordinator.rpcPort = o.rpcPort;
  if (o.grpcPort !== undefined) section(coordinator, 'grpc').port = o.grpcPort;
  if (o.workers?.length) {
    const existing = Array.isArray(coordinator.workers) ? coordinator.workers : [];
    coordinator.workers = [...existing, ...o.workers];
  }
  if (o.token !== undefined) section(raw, 'auth').token = o.token;
  if (o.logLevel !== undefined) section(raw, 'logging').level = o.logLevel;
  if (o.insecure) section(raw, 'auth').insecure = true;
  if (o.clusterRedis !== undefined) section(section(raw, 'cluster'), 'redis').url = o.clusterRedis;
  if (o.advertiseHost !== undefined) section(raw, 'cluster').advertiseHost = o.advertiseHost;
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

interface Indexed<T> {
  index: number;
  value: T;
}

/** The elements of a raw list that parse on their own, so cross-checks can run even when others do not. */
function parseEach<T>(
  raw: unknown,
  schema: { safeParse(v: unknown): { success: boolean; data?: T } },
): Indexed<T>[] {
  if (!Array.isArray(raw)) return [];
  const out: Indexed<T>[] = [];
  raw.forEach((item, index) => {
    const parsed = schema.safeParse(item);
    if (parsed.success) out.push({ index, value: parsed.data as T });
  });
  return out;
}

/**
 * Checks that span fields: uniqueness, per-backend requirements, paths on disk and inside the
 * repository roots (each replaced by its real path), worker references.
 */
function crossCheck(
  models: Indexed<ModelConfig>[],
  workers: Indexed<WorkerConfig>[],
  paths: ModelPaths,
  issues: string[],
): void {
  const workerIds = new Set<string>();
  for (const { index, value: w } of workers) {
    if (workerIds.has(w.id)) issues.push(`workers[${index}].id: "${w.id}" is used twice`);
    workerIds.add(w.id);
  }
  const modelKeys = new Set<string>();
  for (const { index, value: m } of models) {
    const where = `models[${index}]`;
    const key = `${m.name}@${m.version}`;
    if (modelKeys.has(key))
      issues.push(`${where}: model "${m.name}" version "${m.version}" is defined twice`);
    modelKeys.add(key);
    if (m.backend === 'pipeline') {
      issues.push(
        ...checkPipeline(
          where,
          m,
          models.map((x) => x.value),
        ),
      );
    } else if (m.pipeline) {
      issues.push(`${where}.pipeline: only for backend "pipeline"`);
    }
    if (m.versionPolicy !== undefined) {
      const first = models.find((x) => x.value.name === m.name && x.value.versionPolicy !== undefined)!;
      if (JSON.stringify(first.value.versionPolicy) !== JSON.stringify(m.versionPolicy))
        issues.push(
          `${where}.versionPolicy: differs from models[${first.index}]'s for "${m.name}"; state it once per name`,
        );
      if (typeof m.versionPolicy === 'object' && 'specific' in m.versionPolicy) {
        for (const v of m.versionPolicy.specific) {
          if (!models.some((x) => x.value.name === m.name && x.value.version === v))
            issues.push(`${where}.versionPolicy.specific: model "${m.name}" has no version "${v}"`);
        }
      }
    }
    if ((m.backend === 'onnx' || m.backend === 'js' || m.backend === 'llama') && !m.path) {
      issues.push(`${where}.path: required for backend "${m.backend}"`);
    }
    if (m.backend === 'llama') {
      const { sequences, stepTokens, prefillChunk, contextSize, maxTokens } = m.llama;
      if (stepTokens < sequences)
        issues.push(
          `${where}.llama.stepTokens: ${stepTokens} is below sequences ${sequences} (every decoding sequence puts one token in each step)`,
        );
      if (prefillChunk !== undefined && prefillChunk > stepTokens)
        issues.push(`${where}.llama.prefillChunk: ${prefillChunk} is above stepTokens ${stepTokens}`);
      if (contextSize !== undefined && maxTokens !== undefined && maxTokens >= contextSize)
        issues.push(
          `${where}.llama.maxTokens: ${maxTokens} leaves no room for a prompt in contextSize ${contextSize}`,
        );
    }
    if (m.batching.enabled && (!m.batchable || m.maxBatchSize < 2)) {
      issues.push(
        `${where}.batching.enabled: needs batchable: true and maxBatchSize of 2 or more (it is ${m.batchable ? m.maxBatchSize : 'not batchable'})`,
      );
    }
    if (m.batching.defaultPriorityLevel > m.batching.priorityLevels) {
      issues.push(
        `${where}.batching.defaultPriorityLevel: ${m.batching.defaultPriorityLevel} is above priorityLevels ${m.batching.priorityLevels}`,
      );
    }
    for (const size of m.batching.preferredBatchSizes) {
      if (m.maxBatchSize > 0 && size > m.maxBatchSize)
        issues.push(`${where}.batching.preferredBatchSizes: ${size} is above maxBatchSize ${m.maxBatchSize}`);
    }
    if (m.backend === 'sim' && !m.sim.generate && (!m.inputs?.length || !m.outputs?.length)) {
      issues.push(`${where}: backend "sim" needs inputs and outputs declared`);
    }
    if (m.path) {
      const located = paths.locate(m.path);
      if (located.state === 'found') m.path = located.path;
      else if (located.state === 'missing') issues.push(`${where}.path: ${located.path} does not exist`);
      else if (located.state === 'package-missing')
        issues.push(`${where}.path: package file "${m.path}" not found in any node_modules`);
      else if (m.path.startsWith('pkg:'))
        issues.push(
          `${where}.path: model "${m.name}": "${m.path}" is not a file inside an installed package (pkg:<package>/<file>, inside the package's folder)`,
        );
      else
        issues.push(
          `${where}.path: model "${m.name}": ${resolve(paths.baseDir, m.path)} is outside the repository roots (${paths.roots.join(', ')}); move it into one, or add its folder to repository.roots`,
        );
    }
    if (m.workers && workerIds.size > 0) {
      for (const id of m.workers) {
        if (!workerIds.has(id))
          issues.push(`${where}.workers: no worker "${id}" in workers (have: ${[...workerIds].join(', ')})`);
      }
    }
  }
}

/**
 * Turns `pools` into workers (`<pool>-1` .. `<pool>-<processes>`) and a model's `pool` into
 * worker ids, so everything downstream places models by worker id alone.
 */
function expandPools(config: InfergridConfig, issues: string[]): void {
  const names = new Set<string>();
  config.pools.forEach((pool, i) => {
    if (names.has(pool.name)) {
      issues.push(`pools[${i}].name: pool "${pool.name}" is defined twice`);
      return;
    }
    names.add(pool.name);
    for (let n = 1; n <= pool.processes; n++) {
      const id = `${pool.name}-${n}`;
      if (config.workers.some((w) => w.id === id)) {
        issues.push(`pools[${i}]: pool "${pool.name}" makes worker "${id}", which workers already defines`);
        continue;
      }
      config.workers.push({ id, weight: pool.weight, host: pool.host, port: 0, pool: pool.name });
    }
  });
  config.models.forEach((m, i) => {
    if (m.pool === undefined) return;
    const ids = config.workers.filter((w) => w.pool === m.pool).map((w) => w.id);
    if (ids.length === 0) {
      issues.push(
        `models[${i}].pool: no pool "${m.pool}" (pools: ${config.pools.map((p) => p.name).join(', ') || 'none'})`,
      );
      return;
    }
    m.workers = [...new Set([...(m.workers ?? []), ...ids])];
  });
}

/** Key names and hashes are each used once: a log line or an async request names one holder. */
function checkApiKeys(config: InfergridConfig, issues: string[]): void {
  const names = new Set<string>();
  const hashes = new Set<string>();
  config.auth.apiKeys.forEach((key, i) => {
    if (names.has(key.name)) issues.push(`auth.apiKeys[${i}].name: "${key.name}" is used twice`);
    if (hashes.has(key.sha256)) issues.push(`auth.apiKeys[${i}].sha256: the same key is listed twice`);
    names.add(key.name);
    hashes.add(key.sha256);
  });
}

/**
 * `repository.roots` as real absolute paths (relative ones against `baseDir`); a root that does
 * not exist is a problem. `raw` is the parsed section, or the file's own when parsing failed.
 */
function resolveRoots(raw: unknown, baseDir: string, issues: string[]): string[] {
  const given =
    Array.isArray(raw) && raw.length > 0 && raw.every((r) => typeof r === 'string' && r !== '')
      ? (raw as string[])
      : ['.'];
  return given.map((root, i) => {
    const { real, exists } = realPathOf(resolve(baseDir, root));
    if (!exists) issues.push(`repository.roots[${i}]: ${real} does not exist`);
    return real;
  });
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

export function loadConfig(options: LoadConfigOptions = {}): LoadedConfig {
  const issues: string[] = [];
  let raw: Raw = {};
  const file = options.file ? resolve(options.file) : undefined;
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new InfergridError(
        'CONFIG_INVALID',
        `cannot read config file ${file}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const doc = parseDocument(text, { prettyErrors: true });
    if (doc.errors.length > 0) {
      const lines = doc.errors.map((e) => `  - ${e.message.split('\n')[0]}`);
      throw new InfergridError(
        'CONFIG_INVALID',
        `config file ${file} is not valid YAML:\n${lines.join('\n')}`,
      );
    }
    const parsed: unknown = doc.toJS();
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new InfergridError(
          'CONFIG_INVALID',
          `config file ${file} must hold a mapping at the top level`,
        );
      }
      raw = parsed as Raw;
    }
  }
  applyEnv(raw, options.env ?? {}, issues);
  applyOverrides(raw, options.overrides ?? {});
  const baseDir = file ? dirname(file) : process.cwd();
  const result = configSchema.safeParse(raw);
  if (result.success && result.data.cache.sqlite && !isAbsolute(result.data.cache.sqlite.path)) {
    result.data.cache.sqlite.path = resolve(baseDir, result.data.cache.sqlite.path);
  }
  const tls = result.success ? result.data.rpc.tls : undefined;
  if (tls) {
    for (const key of ['certFile', 'keyFile', 'caFile'] as const) {
      const path = tls[key];
      if (path !== undefined) tls[key] = resolve(baseDir, path);
    }
  }
  if (result.success) {
    const { coordinator } = result.data;
    for (const tls of [coordinator.tls, coordinator.admin?.tls]) {
      if (!tls) continue;
      tls.certFile = resolve(baseDir, tls.certFile);
      tls.keyFile = resolve(baseDir, tls.keyFile);
    }
    checkApiKeys(result.data, issues);
    expandPools(result.data, issues);
    const { models, workers, repository } = result.data;
    repository.roots = resolveRoots(repository.roots, baseDir, issues);
    const paths = new ModelPaths({ roots: repository.roots, baseDir });
    const index = <T>(list: T[]): Indexed<T>[] => list.map((value, i) => ({ index: i, value }));
    crossCheck(index(models), index(workers), paths, issues);
  } else {
    for (const issue of result.error.issues) issues.push(`${formatPath(issue.path)}: ${issue.message}`);
    const rawRepository = raw.repository as Raw | undefined;
    const roots = resolveRoots(rawRepository?.roots, baseDir, []);
    const paths = new ModelPaths({ roots, baseDir });
    crossCheck(parseEach(raw.models, modelSchema), parseEach(raw.workers, workerSchema), paths, issues);
  }
  if (issues.length > 0) {
    const where = file ? `config file ${file}` : 'configuration';
    throw new InfergridError(
      'CONFIG_INVALID',
      `${where} has ${issues.length} problem${issues.length === 1 ? '' : 's'}:\n${issues.map((i) => `  - ${i}`).join('\n')}`,
      { details: { issues } },
    );
  }
  return { config: deepFreeze(result.data!), baseDir, file };
}
