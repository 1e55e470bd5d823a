export {
  type IncomingRequest,
  RpcConnection,
  type RpcConnectionEvents,
  type RpcConnectionOptions,
  type RequestOptions,
} from './connection.ts';
export { dial } from './dial.ts';
export { type HandshakeIdentity, acceptHandshake, dialHandshake } from './handshake.ts';
export { Redialer, type RedialerOptions } from './redial.ts';
