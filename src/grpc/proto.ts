/**
 * The shipped proto (proto/grpc_service.proto) loaded with @grpc/proto-loader. The options are
 * part of the contract of contents.ts: field names as the proto spells them, 64-bit integers as
 * decimal strings (exact), enums as names, defaults filled, and each oneof's chosen field named.
 */

import { fileURLToPath } from 'node:url';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { type Options, loadSync } from '@grpc/proto-loader';

/** The proto file a client can generate stubs from (also served as is in the package). */
export const PROTO_FILE = fileURLToPath(new URL('../../proto/grpc_service.proto', import.meta.url));

export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const SERVICE_NAME = 'inference.GRPCInferenceService';

/** The service's definition, for grpc.Server#addService. */
export function inferenceServiceDefinition(): ServiceDefinition {
  return loadSync(PROTO_FILE, PROTO_LOADER_OPTIONS)[SERVICE_NAME] as ServiceDefinition;
}
