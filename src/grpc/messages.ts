/**
 * The gRPC messages that are not tensors: ModelConfig (Triton's shape, with the engine's
 * whole configuration as JSON in a parameter) and the repository RPCs' parameters.
 */

import { InfergridError } from '../errors.ts';

/** Parameter of ModelConfig holding the engine's configuration of the model, as GET .../config?format=infergrid answers it (JSON). */
export const CONFIG_JSON_PARAMETER = 'infergrid_config';

/** GET .../config's answer in Triton's shape (tritonModelConfig in src/api/repository.ts), as far as this reads it. */
export interface TritonConfigLike {
  name: string;
  version_policy:
    | { all: object }
    | { latest: { num_versions: number } }
    | { specific: { versions: (number | string)[] } };
  [field: string]: unknown;
}

/**
 * The ModelConfig message: Triton's shape of the model's config, as GET .../config answers it,
 * and the engine's own configuration of the model as JSON in parameters["infergrid_config"].
 * A specific version policy lists only numeric versions (the message's versions are int64).
 */
export function modelConfigMessage<T extends TritonConfigLike>(triton: T, engine: object) {
  const policy = triton.version_policy;
  return {
    ...triton,
    version_policy:
      'specific' in policy
        ? { specific: { versions: policy.specific.versions.filter((v) => typeof v === 'number') } }
        : policy,
    parameters: { [CONFIG_JSON_PARAMETER]: { string_value: JSON.stringify(engine) } },
  };
}

export interface RepositoryParameter {
  parameter_choice?: string;
  bool_param?: boolean;
  int64_param?: string;
  string_param?: string;
  bytes_param?: Uint8Array;
}

/** Parameters each repository RPC takes: load's `config` (JSON); unload's `unload_dependents` (no dependents here: a no-op). */
const ACCEPTED = { load: ['config'], unload: ['unload_dependents'] } as const;

/**
 * The `config` parameter of RepositoryModelLoad as text (a string or UTF-8 bytes), as HTTP's
 * `parameters.config`; undefined when not given. A parameter the RPC does not take is refused
 * by name, as Triton's file overrides (`file:...`) would be silently wrong here.
 */
export function repositoryConfigParameter(
  parameters: Record<string, RepositoryParameter> | undefined,
  rpc: 'load' | 'unload',
): string | undefined {
  const accepted: readonly string[] = ACCEPTED[rpc];
  const unknown = Object.keys(parameters ?? {}).filter((k) => !accepted.includes(k));
  if (unknown.length > 0)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `RepositoryModel${rpc === 'load' ? 'Load' : 'Unload'} takes ${accepted.map((k) => `"${k}"`).join(', ')} as parameters, got ${unknown.map((k) => `"${k}"`).join(', ')}`,
    );
  const config = parameters?.config;
  if (config === undefined) return undefined;
  if (config.parameter_choice === 'string_param') return config.string_param!;
  if (config.parameter_choice === 'bytes_param') return Buffer.from(config.bytes_param!).toString('utf8');
  throw new InfergridError(
    'INVALID_ARGUMENT',
    'parameter "config" must be the model configuration as JSON, in string_param or bytes_param',
  );
}
