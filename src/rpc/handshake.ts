/**
 * The handshake that opens every connection: mutual authentication by HMAC-SHA256
 * challenge-response, so the key itself never crosses the wire.
 *
 *   dialer   HELLO      { magic, protocolVersion, role, id, nonceD }
 *   listener CHALLENGE  { protocolVersion, role, id, nonceL, proof = HMAC(K, LISTENER | transcript) }
 *   dialer   PROOF      { proof = HMAC(K, DIALER | transcript) }
 *   listener HELLO_ACK  { protocolVersion, role, id }
 *
 * K is the key of the worker side's id (credentials.ts); the transcript is the protocol
 * version, both roles and ids and both fresh nonces, so a proof is good for one connection
 * only (a recorded one fails against a fresh nonce) and, with a label per direction, cannot be
 * reflected back. A refusal is an ERROR frame (AUTH_FAILED, VERSION_MISMATCH, PROTOCOL_ERROR),
 * then close. Nothing else is accepted on the connection until the handshake is done.
 *
 * A side without credentials (run with --insecure) proves nothing and checks nothing; a side
 * with credentials refuses a peer that proves nothing. The trade-off: both sides must be
 * configured alike, and in exchange no credential-holding side ever trusts an unproven one.
 */

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { InfergridError, errorFromWire, toInfergridError } from '../errors.ts';
import {
  type ChallengeMeta,
  type Frame,
  type HelloAckMeta,
  type HelloMeta,
  KIND_NAME,
  MESSAGE_KIND,
  NONCE_BYTES,
  PROTOCOL_MAGIC,
  PROTOCOL_VERSION,
  type PeerRole,
  checkChallenge,
  checkHello,
  checkHelloAck,
  checkProof,
  peerProtocolVersion,
} from '../protocol/index.ts';
import type { RpcConnection } from './connection.ts';
import type { RpcCredentials } from './credentials.ts';

/** The labels that keep a listener's proof and a dialer's proof apart. */
const LISTENER_LABEL = 'infergrid-rpc listener';
const DIALER_LABEL = 'infergrid-rpc dialer';

export interface HandshakeIdentity {
  role: PeerRole;
  id: string;
  /** What this side proves and checks; none (insecure) accepts any peer and proves nothing. */
  credentials?: RpcCredentials | undefined;
}

export interface Party {
  role: PeerRole;
  id: string;
  nonce: Uint8Array;
}

export interface Transcript {
  dialer: Party;
  listener: Party;
}

/** A side's proof of `key` for one connection's transcript (exported for tests that speak raw frames). */
export function handshakeProof(key: Buffer, side: 'dialer' | 'listener', t: Transcript): Buffer {
  return proofOf(key, side === 'dialer' ? DIALER_LABEL : LISTENER_LABEL, t);
}

function proofOf(key: Buffer, label: string, t: Transcript): Buffer {
  const hmac = createHmac('sha256', key);
  const length = Buffer.alloc(4);
  // every variable-length part is length-prefixed, so no two transcripts hash alike
  for (const part of [
    label,
    String(PROTOCOL_VERSION),
    t.dialer.role,
    t.dialer.id,
    t.listener.role,
    t.listener.id,
  ]) {
    const bytes = Buffer.from(part, 'utf8');
    length.writeUInt32BE(bytes.byteLength);
    hmac.update(length).update(bytes);
  }
  return hmac.update(t.dialer.nonce).update(t.listener.nonce).digest();
}

function proofMatches(expected: Buffer, given: Uint8Array | undefined): boolean {
  return given !== undefined && given.byteLength === expected.byteLength && timingSafeEqual(expected, given);
}

const otherRole = (role: PeerRole): PeerRole => (role === 'worker' ? 'coordinator' : 'worker');

/**
 * The refusal of a peer whose proof did not match (or which sent none), saying what its
 * operator should look at; never the key or a proof. Which side holds the wrong key cannot be
 * told apart, so both are named.
 */
function badProof(
  self: HandshakeIdentity,
  peer: { role: PeerRole; id: string },
  remote: string,
  given: Uint8Array | undefined,
): InfergridError {
  const who = `${peer.role} "${peer.id}" at ${remote}`;
  const workerId = self.role === 'worker' ? self.id : peer.id;
  if (!given)
    return new InfergridError(
      'AUTH_FAILED',
      `${who} presented no credentials (it runs with --insecure, or has no key configured); give the worker its key (INFERGRID_WORKER_KEY) or the cluster secret (INFERGRID_TOKEN), and the coordinator the cluster secret`,
    );
  return new InfergridError(
    'AUTH_FAILED',
    `${who} proved a different key for worker "${workerId}" than this ${self.role} holds: the worker's key (auth.workerKey / INFERGRID_WORKER_KEY) must be what \`infergrid credential --worker ${workerId}\` prints for the coordinator's cluster secret (auth.token / INFERGRID_TOKEN)`,
  );
}

/** The key of this connection, or AUTH_FAILED when this side has credentials but none for this worker id. */
function connectionKey(self: HandshakeIdentity, peer: { role: PeerRole; id: string }): Buffer | undefined {
  if (!self.credentials) return undefined;
  const workerId = self.role === 'worker' ? self.id : peer.id;
  const key = self.credentials.keyFor(workerId);
  if (!key)
    throw new InfergridError('AUTH_FAILED', `this ${self.role} holds no key for worker "${workerId}"`);
  return key;
}

/** Refuses a peer whose role cannot be on the other end of this side's connections. */
function checkRoles(self: HandshakeIdentity, peer: { role: PeerRole; id: string }): void {
  if (peer.role !== otherRole(self.role))
    throw new InfergridError(
      'PROTOCOL_ERROR',
      `a ${self.role} talks to ${otherRole(self.role)}s only; ${peer.role} "${peer.id}" connected`,
    );
}

function checkVersion(self: HandshakeIdentity, what: 'HELLO' | 'CHALLENGE', meta: unknown): void {
  const version = peerProtocolVersion(what, meta);
  if (version === PROTOCOL_VERSION) return;
  const peerRole = (meta as { role?: unknown }).role;
  const peer = peerRole === 'worker' || peerRole === 'coordinator' ? peerRole : 'peer';
  throw new InfergridError(
    'VERSION_MISMATCH',
    `peer speaks protocol version ${version}, this ${self.role} speaks ${PROTOCOL_VERSION}; upgrade the ${version < PROTOCOL_VERSION ? peer : self.role}`,
  );
}

/**
 * The next handshake frame, which must be `kind`: the peer's ERROR frame is its refusal
 * (rethrown), anything else a PROTOCOL_ERROR.
 */
async function expectFrame(conn: RpcConnection, kind: number, timeoutMs: number): Promise<Frame> {
  const frame = await conn.receive(timeoutMs, KIND_NAME[kind]!);
  if (frame.kind === MESSAGE_KIND.ERROR) {
    const err = errorFromWire(frame.meta);
    conn.close(err);
    throw err;
  }
  if (frame.kind !== kind) {
    throw new InfergridError('PROTOCOL_ERROR', `expected ${KIND_NAME[kind]}, got ${KIND_NAME[frame.kind]}`);
  }
  return frame;
}

/** Time left of the handshake's budget, ms (at least 1). */
function leftOf(deadline: number): number {
  return Math.max(1, Math.round(deadline - performance.now()));
}

/**
 * Runs one side's steps; any failure closes the connection (telling the peer, unless it was
 * the peer's own refusal or the connection is already gone) and is rethrown.
 */
async function guarded<T>(conn: RpcConnection, steps: () => Promise<T>): Promise<T> {
  try {
    return await steps();
  } catch (err) {
    const e = toInfergridError(err, 'PROTOCOL_ERROR');
    conn.close(e, true);
    throw e;
  }
}

/** Dialer side: HELLO, check the CHALLENGE, PROOF, wait for HELLO_ACK. Rejects with the refusal. */
export function dialHandshake(
  conn: RpcConnection,
  self: HandshakeIdentity,
  timeoutMs: number,
): Promise<HelloAckMeta> {
  const deadline = performance.now() + timeoutMs;
  return guarded(conn, async () => {
    const nonce = randomBytes(NONCE_BYTES);
    const hello: HelloMeta = {
      magic: PROTOCOL_MAGIC,
      protocolVersion: PROTOCOL_VERSION,
      role: self.role,
      id: self.id,
      nonce,
    };
    conn.send(MESSAGE_KIND.HELLO, hello);
    const frame = await expectFrame(conn, MESSAGE_KIND.CHALLENGE, leftOf(deadline));
    checkVersion(self, 'CHALLENGE', frame.meta);
    const challenge: ChallengeMeta = checkChallenge(frame.meta);
    checkRoles(self, challenge);
    const transcript: Transcript = {
      dialer: { role: self.role, id: self.id, nonce },
      listener: { role: challenge.role, id: challenge.id, nonce: challenge.nonce },
    };
    const key = connectionKey(self, challenge);
    if (key && !proofMatches(proofOf(key, LISTENER_LABEL, transcript), challenge.proof))
      throw badProof(self, challenge, conn.remoteAddress, challenge.proof);
    conn.send(MESSAGE_KIND.PROOF, key ? { proof: proofOf(key, DIALER_LABEL, transcript) } : {});
    const ack = checkHelloAck((await expectFrame(conn, MESSAGE_KIND.HELLO_ACK, leftOf(deadline))).meta);
    conn.markReady();
    return ack;
  });
}

/** Listener side: HELLO, CHALLENGE, check the PROOF, HELLO_ACK; or refuses and closes. */
export function acceptHandshake(
  conn: RpcConnection,
  self: HandshakeIdentity,
  timeoutMs: number,
): Promise<HelloMeta> {
  const deadline = performance.now() + timeoutMs;
  return guarded(conn, async () => {
    const frame = await expectFrame(conn, MESSAGE_KIND.HELLO, timeoutMs);
    checkVersion(self, 'HELLO', frame.meta);
    const hello = checkHello(frame.meta);
    checkRoles(self, hello);
    const key = connectionKey(self, hello);
    const nonce = randomBytes(NONCE_BYTES);
    const transcript: Transcript = {
      dialer: { role: hello.role, id: hello.id, nonce: hello.nonce },
      listener: { role: self.role, id: self.id, nonce },
    };
    const challenge: ChallengeMeta = {
      protocolVersion: PROTOCOL_VERSION,
      role: self.role,
      id: self.id,
      nonce,
      ...(key ? { proof: proofOf(key, LISTENER_LABEL, transcript) } : {}),
    };
    conn.send(MESSAGE_KIND.CHALLENGE, challenge);
    const { proof } = checkProof((await expectFrame(conn, MESSAGE_KIND.PROOF, leftOf(deadline))).meta);
    if (key && !proofMatches(proofOf(key, DIALER_LABEL, transcript), proof))
      throw badProof(self, hello, conn.remoteAddress, proof);
    const ack: HelloAckMeta = { protocolVersion: PROTOCOL_VERSION, role: self.role, id: self.id };
    conn.send(MESSAGE_KIND.HELLO_ACK, ack);
    conn.markReady();
    return hello;
  });
}
