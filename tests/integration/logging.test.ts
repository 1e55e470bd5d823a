/**
 * Logs: JSON lines when not on a terminal; at debug level one line per inference request with
 * the request id (a client's x-request-id kept), the trace id of its traceparent, model,
 * version, worker and outcome; at info level no per-request line at all.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const CONFIG = `
models:
  - name: m
    backend: sim
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: x, datatype: FP32, shape: [-1] }]
`;
const BODY = JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }] });
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';

function requestLines(output: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === 'inference request');
}

test('logging - debug level logs each request with its ids; info level does not', {
  timeout: 60_000,
}, async (t) => {
  const file = writeConfig(t, CONFIG);
  const debug = await startCoordinator(t, file, [], { ...process.env, INFERGRID_LOG_LEVEL: 'debug' });
  const info = await startCoordinator(t, file, [], { ...process.env, INFERGRID_LOG_LEVEL: 'info' });
  await startWorker(t, file, 'lw', { coordinator: debug.rpcAddress });
  await startWorker(t, file, 'lw2', { coordinator: info.rpcAddress });
  await waitForWorkers(debug.url, 1, ['m']);
  await waitForWorkers(info.url, 1, ['m']);

  const headers = {
    'content-type': 'application/json',
    'x-request-id': 'client-req-7',
    traceparent: `00-${TRACE_ID}-00f067aa0ba902b7-01`,
  };
  assert.equal((await post(`${debug.url}/v2/models/m/infer`, BODY, headers)).status, 200);
  assert.equal((await post(`${debug.url}/v2/models/nope/infer`, BODY)).status, 404);
  const lines = await waitFor('two request lines', () => {
    const found = requestLines(debug.output());
    return found.length >= 2 ? found : undefined;
  });
  const ok = lines.find((l) => l.reqId === 'client-req-7');
  assert.ok(ok, JSON.stringify(lines));
  assert.equal(ok.traceId, TRACE_ID);
  assert.equal(ok.model, 'm');
  assert.equal(ok.version, '1');
  assert.equal(ok.worker, 'lw');
  assert.equal(ok.code, 'OK');
  assert.equal(ok.level, 20, 'debug');
  assert.equal(typeof ok.ms, 'number');
  const missing = lines.find((l) => l.code === 'MODEL_NOT_FOUND');
  assert.ok(missing, 'a refused request is logged with its code');
  assert.equal(missing.model, 'nope');

  for (let i = 0; i < 5; i++) assert.equal((await post(`${info.url}/v2/models/m/infer`, BODY)).status, 200);
  // the info coordinator logged its start (JSON lines), but no request
  assert.ok(info.output().includes('"msg":"coordinator HTTP listening"'), info.output());
  assert.equal(requestLines(info.output()).length, 0);
});
