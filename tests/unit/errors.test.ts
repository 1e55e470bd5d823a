import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ERROR_CODES,
  type ErrorCode,
  InfergridError,
  codeForWireStatus,
  errorFromWire,
  isErrorCode,
  toInfergridError,
} from '../../src/errors.ts';

const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

test('errors - every code has its own wire status, and the status maps back to the code', () => {
  const statuses = CODES.map((code) => ERROR_CODES[code].wireStatus);
  assert.equal(new Set(statuses).size, CODES.length);
  for (const code of CODES) {
    const status = ERROR_CODES[code].wireStatus;
    assert.ok(Number.isInteger(status) && status > 0, `${code} wire status ${status}`);
    assert.equal(codeForWireStatus(status), code);
  }
  assert.equal(codeForWireStatus(0), undefined);
  assert.equal(codeForWireStatus(Math.max(...statuses) + 1), undefined);
});

test('errors - every code survives toWire then errorFromWire, with and without details', () => {
  for (const code of CODES) {
    const plain = new InfergridError(code, `plain ${code}`);
    const back = errorFromWire(plain.toWire());
    assert.ok(back instanceof InfergridError);
    assert.equal(back.code, code);
    assert.equal(back.message, `plain ${code}`);
    assert.equal(back.details, undefined);
    assert.equal(back.httpStatus, ERROR_CODES[code].httpStatus);
    assert.equal(back.wireStatus, ERROR_CODES[code].wireStatus);
    assert.equal(back.retryable, plain.retryable);
    assert.equal(back.isWorkerFault, plain.isWorkerFault);

    const detailed = new InfergridError(code, `detailed ${code}`, { details: { input: 'x', shape: [1, 2] } });
    // through JSON, as errors cross the process boundary and reach HTTP clients
    const wire = JSON.parse(JSON.stringify(detailed.toWire()));
    const again = errorFromWire(wire);
    assert.equal(again.code, code);
    assert.equal(again.message, `detailed ${code}`);
    assert.deepStrictEqual(again.details, { input: 'x', shape: [1, 2] });
    assert.deepStrictEqual(again.toWire(), wire);
  }
});

test('errors - toWire carries code, message and details only', () => {
  assert.deepStrictEqual(new InfergridError('OVERLOADED', 'queue full').toWire(), {
    code: 'OVERLOADED',
    message: 'queue full',
  });
  const withCause = new InfergridError('BACKEND_ERROR', 'boom', {
    cause: new Error('inner'),
    details: { a: 1 },
  });
  assert.deepStrictEqual(withCause.toWire(), { code: 'BACKEND_ERROR', message: 'boom', details: { a: 1 } });
  assert.ok(!('details' in new InfergridError('INTERNAL', 'x').toWire()));
});

test('errors - an unknown code from a peer becomes INTERNAL, keeping the peer code and details', () => {
  const err = errorFromWire({ code: 'GPU_ON_FIRE', message: 'too hot', details: { celsius: 120 } });
  assert.equal(err.code, 'INTERNAL');
  assert.equal(err.message, 'too hot');
  assert.deepStrictEqual(err.details, { celsius: 120, peerCode: 'GPU_ON_FIRE' });
  assert.equal(err.retryable, false);
  const bare = errorFromWire({ code: 42, message: 'numeric' });
  assert.equal(bare.code, 'INTERNAL');
  assert.deepStrictEqual(bare.details, { peerCode: 42 });
  // inherited names are not codes
  assert.equal(errorFromWire({ code: 'toString', message: 'm' }).code, 'INTERNAL');
  assert.equal(isErrorCode('toString'), false);
  assert.equal(isErrorCode('INVALID_ARGUMENT'), true);
});

test('errors - a peer error without a body or message is still an InfergridError', () => {
  for (const wire of [null, undefined, 'text', 7]) {
    const err = errorFromWire(wire);
    assert.equal(err.code, 'PROTOCOL_ERROR');
  }
  const noMessage = errorFromWire({ code: 'UNAVAILABLE' });
  assert.equal(noMessage.code, 'UNAVAILABLE');
  assert.equal(noMessage.message, 'peer sent an error without a message');
  const badDetails = errorFromWire({ code: 'UNAVAILABLE', message: 'm', details: 'not an object' });
  assert.equal(badDetails.details, undefined);
});

test('errors - INVALID_ARGUMENT is the client’s fault and never retried; CONNECTION_LOST is the reverse', () => {
  const client = new InfergridError('INVALID_ARGUMENT', 'bad input');
  assert.equal(client.retryable, false);
  assert.equal(client.isWorkerFault, false);
  assert.equal(client.httpStatus, 400);
  const lost = new InfergridError('CONNECTION_LOST', 'socket closed');
  assert.equal(lost.retryable, true);
  assert.equal(lost.isWorkerFault, true);
  assert.equal(lost.httpStatus, 503);
});

test('errors - no client-fault code is retryable or counts against a worker', () => {
  for (const code of CODES) {
    const err = new InfergridError(code, code);
    if (ERROR_CODES[code].fault === 'client') {
      assert.equal(err.retryable, false, `${code} is retryable`);
      assert.equal(err.isWorkerFault, false, `${code} counts against the worker`);
      assert.ok(err.httpStatus >= 400 && err.httpStatus < 500, `${code} is not a 4xx`);
    }
    assert.equal(err.isWorkerFault, ERROR_CODES[code].fault === 'worker', code);
  }
});

test('errors - an InfergridError is an Error with its name, code and cause', () => {
  const cause = new Error('disk');
  const err = new InfergridError('MODEL_LOAD_FAILED', 'cannot read model', { cause });
  assert.ok(err instanceof Error);
  assert.equal(err.name, 'InfergridError');
  assert.equal(err.code, 'MODEL_LOAD_FAILED');
  assert.equal(err.cause, cause);
  assert.ok(!('cause' in new InfergridError('INTERNAL', 'no cause')));
});

test('errors - toInfergridError keeps typed errors and wraps anything else with its cause', () => {
  const typed = new InfergridError('OVERLOADED', 'full');
  assert.equal(toInfergridError(typed), typed);
  const plain = new TypeError('nope');
  const wrapped = toInfergridError(plain);
  assert.equal(wrapped.code, 'INTERNAL');
  assert.equal(wrapped.message, 'nope');
  assert.equal(wrapped.cause, plain);
  const backend = toInfergridError('string thrown', 'BACKEND_ERROR');
  assert.equal(backend.code, 'BACKEND_ERROR');
  assert.equal(backend.message, 'string thrown');
});
