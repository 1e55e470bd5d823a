import { connect } from 'node:net';
import { InfergridError } from '../errors.ts';
import { type HostPort, formatHostPort } from '../util/address.ts';
import { RpcConnection, type RpcConnectionOptions } from './connection.ts';

/** Opens a TCP connection and wraps it; rejects with CONNECTION_LOST when the peer cannot be reached. */
export function dial(
  address: HostPort,
  options: Omit<RpcConnectionOptions, 'side'>,
  connectTimeoutMs: number,
): Promise<RpcConnection> {
  return new Promise<RpcConnection>((resolve, reject) => {
    const socket = connect({ host: address.host, port: address.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new InfergridError(
          'CONNECTION_LOST',
          `could not connect to ${formatHostPort(address)} within ${connectTimeoutMs} ms`,
        ),
      );
    }, connectTimeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(
        new InfergridError(
          'CONNECTION_LOST',
          `could not connect to ${formatHostPort(address)}: ${err.message}`,
          { cause: err },
        ),
      );
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(new RpcConnection(socket, { ...options, side: 'dialer' }));
    });
  });
}
