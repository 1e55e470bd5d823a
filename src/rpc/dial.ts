import { connect } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { InfergridError } from '../errors.ts';
import { type HostPort, formatHostPort } from '../util/address.ts';
import { RpcConnection, type RpcConnectionOptions } from './connection.ts';
import type { RpcTls } from './tls.ts';

/** What to look at when a TLS peer's certificate was not accepted. */
function tlsHint(err: Error): string {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/CERT|SIGN|ALTNAME|ISSUER/.test(code)) return '';
  return " (the peer's certificate did not verify: rpc.tls.caFile must hold the CA that signed it, and it must name the host dialed or rpc.tls.serverName)";
}

/**
 * Opens a TCP connection (over TLS when `tls` is given, once the peer's certificate has been
 * verified) and wraps it; rejects with CONNECTION_LOST when the peer cannot be reached or its
 * certificate is not accepted.
 */
export function dial(
  address: HostPort,
  options: Omit<RpcConnectionOptions, 'side'>,
  connectTimeoutMs: number,
  tls?: RpcTls,
): Promise<RpcConnection> {
  return new Promise<RpcConnection>((resolve, reject) => {
    const socket = tls
      ? connectTls({
          host: address.host,
          port: address.port,
          ca: tls.ca,
          ...(tls.serverName ? { servername: tls.serverName } : {}),
        })
      : connect({ host: address.host, port: address.port });
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
          `could not connect to ${formatHostPort(address)}: ${err.message}${tlsHint(err)}`,
          { cause: err },
        ),
      );
    });
    socket.once(tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(new RpcConnection(socket, { ...options, side: 'dialer' }));
    });
  });
}
