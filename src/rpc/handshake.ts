/**
 * The handshake that opens every connection. The dialer sends HELLO (magic, protocol version,
 * role, id, token); the listener answers HELLO_ACK, or an ERROR frame and closes. Nothing
 * else is accepted on the connection until the handshake is done.
 */

import { timingSafeEqual } from 'node:crypto';
import { InfergridError, errorFromWire, toInfergridError } from '../errors.ts';
import {
  type HelloAckMeta,
  type HelloMeta,
  KIND_NAME,
  MESSAGE_KIND,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  type PeerRole,
  checkHello,
  checkHelloAck,
} from '../protocol/index.ts';
import type { RpcConnection } from './connection.ts';

function tokensMatch(expected: string, given: string | undefined): boolean {
  const a = Buffer.from(expected);
  const b = Buffer.from(given ?? '');
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface HandshakeIdentity {
  role: PeerRole;
  id: string;
  /** Shared secret; when set on the listener, a dialer must present the same one. */
  token?: string | undefined;
}

/** Dialer side: sends HELLO, waits for HELLO_ACK. Rejects with the listener's refusal. */
export async function dialHandshake(
  conn: RpcConnection,
  self: HandshakeIdentity,
  timeoutMs: number,
): Promise<HelloAckMeta> {
  const hello: HelloMeta = {
    magic: PROTOCOL_MAGIC,
    protocolVersion: PROTOCOL_VERSION,
    role: self.role,
    id: self.id,
    ...(self.token ? { token: self.token } : {}),
  };
  conn.send(MESSAGE_KIND.HELLO, hello);
  const frame = await conn.receive(timeoutMs, 'HELLO_ACK');
  if (frame.kind === MESSAGE_KIND.ERROR) {
    const err = errorFromWire(frame.meta);
    conn.close(err);
    throw err;
  }
  if (frame.kind !== MESSAGE_KIND.HELLO_ACK) {
    const err = new InfergridError('PROTOCOL_ERROR', `expected HELLO_ACK, got ${KIND_NAME[frame.kind]}`);
    conn.close(err, true);
    throw err;
  }
  let ack: HelloAckMeta;
  try {
    ack = checkHelloAck(frame.meta);
  } catch (err) {
    conn.close(toInfergridError(err, 'PROTOCOL_ERROR'), true);
    throw err;
  }
  conn.markReady();
  return ack;
}

/** Listener side: waits for HELLO, checks it, answers HELLO_ACK or refuses and closes. */
export async function acceptHandshake(
  conn: RpcConnection,
  self: HandshakeIdentity,
  timeoutMs: number,
): Promise<HelloMeta> {
  const frame = await conn.receive(timeoutMs, 'HELLO');
  const refuse = (err: InfergridError): never => {
    conn.close(err, true);
    throw err;
  };
  if (frame.kind !== MESSAGE_KIND.HELLO) {
    refuse(new InfergridError('PROTOCOL_ERROR', `expected HELLO, got ${KIND_NAME[frame.kind]}`));
  }
  let hello: HelloMeta;
  try {
    hello = checkHello(frame.meta);
  } catch (err) {
    return refuse(toInfergridError(err, 'PROTOCOL_ERROR'));
  }
  if (hello.protocolVersion !== PROTOCOL_VERSION) {
    refuse(
      new InfergridError(
        'VERSION_MISMATCH',
        `peer speaks protocol version ${hello.protocolVersion}, this ${self.role} speaks ${PROTOCOL_VERSION}`,
      ),
    );
  }
  if (self.token && !tokensMatch(self.token, hello.token)) {
    refuse(
      new InfergridError(
        'AUTH_FAILED',
        hello.token
          ? `${hello.role} "${hello.id}" presented a wrong auth token`
          : `${hello.role} "${hello.id}" presented no auth token`,
      ),
    );
  }
  const ack: HelloAckMeta = { protocolVersion: PROTOCOL_VERSION, role: self.role, id: self.id };
  conn.send(MESSAGE_KIND.HELLO_ACK, ack);
  conn.markReady();
  return hello;
}
