/**
 * The gRPC messages that are not tensors: ModelConfig (a subset of Triton's, with the engine's
 * whole configuration as JSON in a parameter) and the repository RPCs' parameters.
 */

import { InfergridError } from '../errors.ts';

/** Parameter of ModelConfig holding the engine's configuration of the model, as GET .../config answers it (JSON). */
export const CONFIG_JSON_PARAMETER = 'infergrid_config';

interface TensorSpecLike {
  name: string;
  datatype: string;
  shape: readonly number[];
}

/** What modelConfig (src/api/repository.ts) answers, as far as this reads it. */
export interface ModelConfigLike {
  name: string;
  platform: string | null;
  backend: string | null;
  max_batch_size: number | null;
  inputs: readonly TensorSpecLike[];
  outputs: readonly TensorSpecLike[];
}

/** Triton's DataType names: BYTES is TYPE_STRING, the others TYPE_ and the datatype. */
export function tritonDataType(datatype: string): string {
  return datatype === 'BYTES' ? 'TYPE_STRING' : `TYPE_${datatype}`;
}

/** The ModelConfig message for the engine's model configuration. */
export function modelConfigMessage(config: ModelConfigLike) {
  const tensor = (t: TensorSpecLike) => ({
    name: t.name,
    data_type: tritonDataType(t.datatype),
    dims: [...t.shape],
  });
  return {
    name: config.name,
    platform: config.platform ?? '',
    backend: config.backend ?? '',
    max_batch_size: config.max_batch_size ?? 0,
    input: config.inputs.map(tensor),
    output: config.outputs.map(tensor),
    parameters: { [CONFIG_JSON_PARAMETER]: { string_value: JSON.stringify(config) } },
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
