export { GrpcFrontDoor, type GrpcServerOptions, FINAL_RESPONSE_PARAMETER } from './server.ts';
export { PROTO_FILE, PROTO_LOADER_OPTIONS, SERVICE_NAME } from './proto.ts';
export { ERROR_CODE_METADATA, GRPC_STATUS, grpcErrorOf } from './status.ts';
