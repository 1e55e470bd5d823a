/**
 * The floor under one more process hop, measured against echo-server.ts over one bare socket
 * (no framing, no parsing): what two processes on this machine cost to talk at all.
 */

import { createConnection, type Socket } from 'node:net';
import { processCpuSeconds } from './cpu.ts';
import { type Percentiles, summarize } from './load.ts';

type OnData = (socket: Socket, chunk: Buffer, done: () => void) => void;

/** Connects to the echo server (`onData` first sees an empty chunk); resolves once `done` is called. */
function connect(port: number, onData: OnData): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    const done = (): void => {
      resolve();
      socket.destroy();
    };
    socket.on('connect', () => onData(socket, Buffer.alloc(0), done));
    socket.on('data', (chunk: Buffer) => onData(socket, chunk, done));
    socket.on('error', reject);
    // the server went away before the run ended: fail now rather than wait for the suite's limit
    socket.on('close', () => reject(new Error('the echo server closed the connection before the run ended')));
  });
}

/**
 * One connection to a plain echo server: sends `bytes` bytes, waits until all of them are back,
 * and again, for `durationMs`: the round trip between two processes (two socket writes, two
 * reads, two wake-ups), which is what a coordinator -> worker hop costs before any engine code.
 */
export async function pingPong(
  port: number,
  durationMs: number,
  bytes = 256,
): Promise<{ roundTrips: number; latencyMs: Percentiles }> {
  const message = Buffer.alloc(bytes, 0x2a);
  const samples: number[] = [];
  let received = 0;
  let sentAt = 0;
  let endAt = 0;
  await connect(port, (socket, chunk, done) => {
    if (endAt === 0) endAt = performance.now() + durationMs;
    else {
      received += chunk.byteLength;
      if (received < bytes) return;
      const now = performance.now();
      samples.push(now - sentAt);
      if (now >= endAt) return done();
    }
    received = 0;
    sentAt = performance.now();
    socket.write(message);
  });
  return { roundTrips: samples.length, latencyMs: summarize(samples) };
}

export interface TransferFloor {
  roundTrips: number;
  perS: number;
  /** CPU per round trip: the server sends the reply, this side receives it, ms. */
  cpuMsPerRoundTrip: { sender: number | null; receiver: number | null };
}

/**
 * One connection to an echo server started with --request-bytes/--reply-bytes: sends a request of
 * `requestBytes`, waits for the whole `replyBytes` answer, and again, for `durationMs`; with the
 * CPU both ends spent on each (this process's from process.cpuUsage, the server's from /proc):
 * the cost of moving those bytes over one socket with nothing else done.
 */
export async function transferRoundTrips(
  server: { port: number; pid: number | undefined },
  requestBytes: number,
  replyBytes: number,
  durationMs: number,
): Promise<TransferFloor> {
  const request = Buffer.alloc(requestBytes, 0x2a);
  let received = 0;
  let roundTrips = 0;
  let started = 0;
  let ownBefore = process.cpuUsage();
  let serverBefore: number | undefined;
  let floor: TransferFloor | undefined;
  await connect(server.port, (socket, chunk, done) => {
    if (started === 0) {
      started = performance.now();
      ownBefore = process.cpuUsage();
      serverBefore = processCpuSeconds(server.pid);
      socket.write(request);
      return;
    }
    received += chunk.byteLength;
    if (received < replyBytes) return;
    received -= replyBytes;
    roundTrips++;
    const elapsed = performance.now() - started;
    if (elapsed < durationMs) {
      socket.write(request);
      return;
    }
    const own = process.cpuUsage(ownBefore);
    const serverAfter = processCpuSeconds(server.pid);
    const perTrip = (seconds: number | undefined): number | null =>
      seconds === undefined ? null : Math.round((seconds * 1e6) / roundTrips) / 1000;
    floor = {
      roundTrips,
      perS: Math.round((roundTrips * 1000) / elapsed),
      cpuMsPerRoundTrip: {
        sender: perTrip(
          serverBefore === undefined || serverAfter === undefined ? undefined : serverAfter - serverBefore,
        ),
        receiver: perTrip((own.user + own.system) / 1e6),
      },
    };
    done();
  });
  return floor!;
}
