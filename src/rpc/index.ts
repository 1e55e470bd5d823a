export {
  type IncomingRequest,
  PRE_HANDSHAKE_MAX_FRAME_BYTES,
  RpcConnection,
  type RpcConnectionEvents,
  type RpcConnectionOptions,
  type RequestOptions,
} from './connection.ts';
export {
  type RpcCredentials,
  clusterCredentials,
  deriveWorkerKey,
  parseWorkerKey,
  workerCredentials,
} from './credentials.ts';
export { dial } from './dial.ts';
export { type HandshakeIdentity, acceptHandshake, dialHandshake } from './handshake.ts';
export { Redialer, type RedialerOptions } from './redial.ts';
export {
  type RpcTls,
  type RpcTlsFiles,
  loadRpcTls,
  requireServerCertificate,
  secureAccepted,
} from './tls.ts';
export { AcceptGate, type AcceptGateOptions } from './accept-gate.ts';
