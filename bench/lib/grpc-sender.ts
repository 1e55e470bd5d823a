/**
 * A lean gRPC unary sender for the load engine: one HTTP/2 session (node:http2), the request
 * message serialized once (the proto's own serializer) and framed once, then sent as it is on a
 * new stream per call, the answer's bytes read and dropped, the call's outcome read from
 * `grpc-status`. It measures the server as the HTTP side's raw sender does, without a client
 * library's per-call cost (grpc-js spends several times the server's CPU per call here).
 */

import { type ClientHttp2Session, connect, constants } from 'node:http2';
import type { RequestSender, SendOutcome } from '../../src/cli/bench/index.ts';

const OK: SendOutcome = { ok: true };

/** The five-byte gRPC message prefix (not compressed, length) and the message. */
export function grpcFrame(message: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(5 + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  message.copy(frame, 5);
  return frame;
}

/** The outcome a call's headers or trailers give, once they carry grpc-status. */
function outcomeOf(headers: Record<string, unknown>): SendOutcome | undefined {
  const status = headers['grpc-status'];
  if (status === undefined) return undefined;
  if (status === '0') return OK;
  const message =
    typeof headers['grpc-message'] === 'string' ? decodeURIComponent(headers['grpc-message']) : '';
  return { ok: false, kind: `grpc ${status}`, message };
}

/** Sends `message` (a serialized request) to `path` (`/package.Service/Method`) at `address` on one session. */
export function leanGrpcSender(address: string, path: string, message: Buffer): RequestSender {
  const frame = grpcFrame(message);
  const headers = {
    [constants.HTTP2_HEADER_METHOD]: 'POST',
    [constants.HTTP2_HEADER_PATH]: path,
    'content-type': 'application/grpc',
    te: 'trailers',
  };
  let session: ClientHttp2Session | undefined;
  const open = (): ClientHttp2Session => {
    if (session && !session.closed && !session.destroyed) return session;
    session = connect(`http://${address}`);
    session.on('error', () => {});
    return session;
  };
  return {
    send: () =>
      new Promise<SendOutcome>((resolve) => {
        let outcome: SendOutcome | undefined;
        const stream = open().request(headers);
        stream.on('response', (h) => {
          const status = h[constants.HTTP2_HEADER_STATUS];
          if (Number(status) !== 200)
            outcome = { ok: false, kind: `http ${status}`, message: 'not a gRPC answer' };
          else outcome = outcomeOf(h);
        });
        stream.on('trailers', (t) => {
          outcome ??= outcomeOf(t);
        });
        stream.on('data', () => {});
        stream.on('close', () =>
          resolve(
            outcome ?? { ok: false, kind: 'grpc no status', message: 'the call ended without grpc-status' },
          ),
        );
        stream.on('error', (err) => {
          outcome ??= { ok: false, kind: 'grpc stream', message: err.message };
        });
        stream.end(frame);
      }),
    close: () => session?.close(),
  };
}
