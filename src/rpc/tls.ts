/**
 * TLS for RPC connections (rpc.tls). A listener presents its certificate (certFile, keyFile);
 * a dialer checks the peer's against caFile for serverName (default: the host it dials).
 * Authentication stays with the handshake (HMAC challenge-response, per worker), so TLS adds
 * confidentiality and integrity only and mutual TLS is not needed. A listener wraps the TCP
 * socket it accepted, so the accept gate and the handshake deadline cover the TLS handshake too.
 */

import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { type SecureContext, TLSSocket, createSecureContext } from 'node:tls';
import { InfergridError } from '../errors.ts';

/** rpc.tls as configured: absolute paths. */
export interface RpcTlsFiles {
  certFile?: string | undefined;
  keyFile?: string | undefined;
  caFile?: string | undefined;
  serverName?: string | undefined;
}

/** rpc.tls loaded: what listeners and dialers hand node:tls. */
export interface RpcTls {
  /** The certificate and key a listener presents; undefined when none is configured. */
  server: SecureContext | undefined;
  /** CA certificates a dialed peer must chain to; undefined: the system's trusted CAs. */
  ca: Buffer | undefined;
  /** Name the dialed peer's certificate must carry; undefined: the host dialed. */
  serverName: string | undefined;
}

function readPem(path: string, key: keyof RpcTlsFiles): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new InfergridError(
      'CONFIG_INVALID',
      `rpc.tls.${key}: cannot read ${path}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/** Reads rpc.tls's files; CONFIG_INVALID names the file that cannot be read or used. None configured: plain TCP. */
export function loadRpcTls(files: RpcTlsFiles | undefined): RpcTls | undefined {
  if (!files) return undefined;
  let server: SecureContext | undefined;
  if (files.certFile && files.keyFile) {
    const cert = readPem(files.certFile, 'certFile');
    const key = readPem(files.keyFile, 'keyFile');
    try {
      server = createSecureContext({ cert, key });
    } catch (err) {
      throw new InfergridError(
        'CONFIG_INVALID',
        `rpc.tls: ${files.certFile} and ${files.keyFile} are not a usable certificate and key: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
  return {
    server,
    ca: files.caFile ? readPem(files.caFile, 'caFile') : undefined,
    serverName: files.serverName,
  };
}

/** Throws CONFIG_INVALID when a side that listens (`who`) has TLS on but no certificate. */
export function requireServerCertificate(tls: RpcTls | undefined, who: string): void {
  if (tls && !tls.server)
    throw new InfergridError(
      'CONFIG_INVALID',
      `rpc.tls: ${who} listens for RPC connections, so it needs rpc.tls.certFile and rpc.tls.keyFile`,
    );
}

/** An accepted TCP socket as the server end of a TLS connection (or as is, without TLS). */
export function secureAccepted(socket: Socket, tls: RpcTls | undefined): Socket {
  if (!tls) return socket;
  return new TLSSocket(socket, { isServer: true, secureContext: tls.server! });
}
