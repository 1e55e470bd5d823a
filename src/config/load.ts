/**
 * Config loading: file -> environment -> flags -> validate -> freeze. Every problem is
 * reported at once, each with its path, in one CONFIG_INVALID error.
 */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { InfergridError } from '../errors.ts';
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
  workers?: string[] | undefined;
  token?: string | undefined;
  /** --insecure: RPC without authentication when no secret or key is set. */
  insecure?: boolean | undefined;
  logLevel?: string | undefined;
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
  if (env.INFERGRID_TOKEN) section(raw, 'auth').token = env.INFERGRID_TOKEN;
  if (env.INFERGRID_WORKER_KEY) section(raw, 'auth').workerKey = env.INFERGRID_WORKER_KEY;
  if (env.INFERGRID_LOG_LEVEL) section(raw, 'logging').level = env.INFERGRID_LOG_LEVEL;
}

function applyOverrides(raw: Raw, o: ConfigOverrides): void {
  const coordinator = section(raw, 'coordinator');
  if (o.host !== undefined) coordinator.host = o.host;
  if (o.port !== undefined) coordinator.port = o.port;
  if (o.rpcHost !== undefined) coordinator.rpcHost = o.rpcHost;
  if (o.rpcPort !== undefined) coordinator.rpcPort = o.rpcPort;
  if (o.workers?.length) {
    const existing = Array.isArray(coordinator.workers) ? coordinator.workers : [];
    coordinator.workers = [...existing, ...o.workers];
  }
  if (o.token !== undefined) section(raw, 'auth').token = o.token;
  if (o.insecure) section(raw, 'auth').insecure = true;
  if (o.logLevel !== undefined) section(raw, 'logging').level = o.logLevel;
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

/** Finds `<package>/<file>` in a node_modules folder above `from` (or above infergrid itself). */
export function resolvePackagePath(spec: string, from: string): string | undefined {
  const m = /^((?:@[^/]+\/)?[^/]+)\/(.+)$/.exec(spec);
  if (!m) return undefined;
  const starts = [from, dirname(fileURLToPath(import.meta.url))];
  for (const start of starts) {
    for (let dir = resolve(start); ; dir = dirname(dir)) {
      const candidate = join(dir, 'node_modules', m[1]!, m[2]!);
      if (existsSync(candidate)) return candidate;
      if (dirname(dir) === dir) break;
    }
  }
  return undefined;
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

/** Checks that span fields: uniqueness, per-backend requirements, paths on disk, worker references. */
function crossCheck(
  models: Indexed<ModelConfig>[],
  workers: Indexed<WorkerConfig>[],
  baseDir: string,
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
    if ((m.backend === 'onnx' || m.backend === 'js') && !m.path) {
      issues.push(`${where}.path: required for backend "${m.backend}"`);
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
    if (m.backend === 'sim' && (!m.inputs?.length || !m.outputs?.length)) {
      issues.push(`${where}: backend "sim" needs inputs and outputs declared`);
    }
    if (m.path) {
      const resolved = resolveModelPath(m.path, baseDir);
      if (resolved === undefined)
        issues.push(`${where}.path: package file "${m.path}" not found in any node_modules`);
      else if (!existsSync(resolved)) issues.push(`${where}.path: ${resolved} does not exist`);
      else m.path = resolved;
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

/** A model path as a file: `pkg:` found in node_modules, relative ones against `baseDir`. */
export function resolveModelPath(path: string, baseDir: string): string | undefined {
  if (path.startsWith('pkg:')) return resolvePackagePath(path.slice(4), baseDir);
  return isAbsolute(path) ? path : resolve(baseDir, path);
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
    expandPools(result.data, issues);
    const { models, workers } = result.data;
    const index = <T>(list: T[]): Indexed<T>[] => list.map((value, i) => ({ index: i, value }));
    crossCheck(index(models), index(workers), baseDir, issues);
  } else {
    for (const issue of result.error.issues) issues.push(`${formatPath(issue.path)}: ${issue.message}`);
    crossCheck(parseEach(raw.models, modelSchema), parseEach(raw.workers, workerSchema), baseDir, issues);
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
