/**
 * The RPC port's door on its own: a cap on connections waiting for their handshake, and
 * refusals logged at most once per interval with the count left out (a fake clock and logger).
 */

import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { test } from 'node:test';
import { AcceptGate } from '../../src/rpc/index.ts';
import { type Logger, silentLogger } from '../../src/telemetry/index.ts';

function recordingLogger(): { logger: Logger; lines: { fields: Record<string, unknown>; msg: string }[] } {
  const lines: { fields: Record<string, unknown>; msg: string }[] = [];
  const logger = Object.create(silentLogger()) as Logger;
  logger.warn = ((fields: Record<string, unknown>, msg: string) => {
    lines.push({ fields, msg });
  }) as Logger['warn'];
  return { logger, lines };
}

test('accept gate - at most maxPendingHandshakes wait; the next is destroyed until one is done', () => {
  const { logger } = recordingLogger();
  const gate = new AcceptGate({ maxPendingHandshakes: 2, logIntervalMs: 1000, logger });
  const sockets = [new Socket(), new Socket(), new Socket(), new Socket()];
  assert.equal(gate.admit(sockets[0]!), true);
  assert.equal(gate.admit(sockets[1]!), true);
  assert.equal(gate.admit(sockets[2]!), false);
  assert.equal(sockets[2]!.destroyed, true);
  assert.equal(gate.overflowed, 1);
  gate.done();
  assert.equal(gate.admit(sockets[3]!), true);
  assert.equal(gate.pending, 2);
  for (const s of sockets) s.destroy();
});

test('accept gate - refusals are logged at most once per interval, with how many were left out', () => {
  const { logger, lines } = recordingLogger();
  let now = 0;
  const gate = new AcceptGate({ maxPendingHandshakes: 1, logIntervalMs: 1000, logger, now: () => now });
  for (let i = 0; i < 20; i++) gate.refused({ peer: `p${i}` }, 'refused an RPC connection');
  assert.equal(lines.length, 1);
  now = 999;
  gate.refused({ peer: 'late' }, 'refused an RPC connection');
  assert.equal(lines.length, 1);
  now = 1000;
  gate.refused({ peer: 'next' }, 'refused an RPC connection');
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[1]!.fields, { peer: 'next', suppressedSinceLast: 20 });
  assert.throws(
    () => new AcceptGate({ maxPendingHandshakes: 0, logIntervalMs: 1, logger }),
    /positive integer/,
  );
});
