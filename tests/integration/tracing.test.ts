/**
 * OpenTelemetry tracing with real processes: a coordinator and a worker export OTLP/HTTP JSON to
 * a collector in this test, and one request's spans form one trace across both processes,
 * continuing the client's `traceparent`. Also: two requests batched together give one batch span
 * linked to both, pipeline steps get a span each, and spans still buffered are flushed on a
 * graceful shutdown.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type Server, createServer } from 'node:http';
import { type TestContext, test } from 'node:test';
import {
  adminWorkers,
  post,
  startCoordinator,
  startWorker,
  waitFor,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

/** One span as the collector keeps it: OTLP JSON plus its resource's service name. */
interface CollectedSpan {
  service: string;
  resource: Record<string, unknown>;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status: { code?: number; message?: string };
  links: { traceId: string; spanId: string }[];
}

interface OtlpAttribute {
  key: string;
  value: Record<string, unknown>;
}

const SERVER = 2;
const CLIENT = 3;
const STATUS_ERROR = 2;

function attributes(list: OtlpAttribute[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list ?? []) {
    const v = Object.values(value)[0];
    out[key] = typeof v === 'string' && 'intValue' in value ? Number(v) : v;
  }
  return out;
}

/** An OTLP/HTTP JSON receiver on port 0 that keeps every span it is sent. */
async function startCollector(t: TestContext): Promise<{ url: string; spans: CollectedSpan[] }> {
  const spans: CollectedSpan[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d;
    });
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      const payload = JSON.parse(body) as {
        resourceSpans: {
          resource: { attributes: OtlpAttribute[] };
          scopeSpans: {
            spans: (Omit<CollectedSpan, 'service' | 'resource' | 'attributes' | 'links'> & {
              attributes?: OtlpAttribute[];
              links?: { traceId: string; spanId: string }[];
            })[];
          }[];
        }[];
      };
      for (const rs of payload.resourceSpans) {
        const resource = attributes(rs.resource.attributes);
        for (const ss of rs.scopeSpans) {
          for (const s of ss.spans) {
            spans.push({
              service: String(resource['service.name']),
              resource,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId || undefined,
              name: s.name,
              kind: s.kind,
              attributes: attributes(s.attributes),
              status: s.status ?? {},
              links: (s.links ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId })),
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, spans };
}

/** A sampled W3C traceparent with fresh ids. */
function newTraceparent(): { header: string; traceId: string; spanId: string } {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { header: `00-${traceId}-${spanId}-01`, traceId, spanId };
}

const IO = `
    inputs: [{ name: x, datatype: FP32, shape: [-1, 4] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1, 4] }]`;

const MODELS = `
models:
  - name: echo
    backend: sim
    maxBatchSize: 4
    batching: { enabled: true }${IO}
  - name: echo2
    backend: sim${IO}
  - name: slow
    backend: sim
    sim: { latencyMs: 1500 }
    maxBatchSize: 4
    batching: { enabled: true }${IO}
  - name: two-steps
    backend: pipeline${IO}
    pipeline:
      steps:
        - { name: first, model: echo, inputs: { x: $x } }
        - { name: second, model: echo2, inputs: { x: first.y } }
      outputs: { y: second.y }
`;

const body = (v: number) =>
  JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: [v, v, v, v] }] });

function infer(url: string, model: string, traceparent: string, v = 1) {
  return post(`${url}/v2/models/${model}/infer`, body(v), {
    'content-type': 'application/json',
    traceparent,
  });
}

function one(spans: CollectedSpan[], what: string, match: (s: CollectedSpan) => boolean): CollectedSpan {
  const found = spans.filter(match);
  assert.equal(
    found.length,
    1,
    `expected one ${what}, found ${found.length} among ${spans.map((s) => `${s.service}:${s.name}`).join(', ')}`,
  );
  return found[0]!;
}

/** Waits until the trace has spans with all of `names` (from either process). */
function traceWith(spans: CollectedSpan[], traceId: string, names: string[]): Promise<CollectedSpan[]> {
  return waitFor(`spans ${names.join(', ')} of trace ${traceId}`, () => {
    const trace = spans.filter((s) => s.traceId === traceId);
    return names.every((n) => trace.some((s) => s.name === n)) && trace;
  });
}

const HTTP_SPAN = 'POST /v2/models/{model}/infer';
const RPC = 'infergrid.Worker/Infer';

test('tracing - one trace across coordinator and worker, batches linked, pipeline steps', {
  timeout: 60_000,
}, async (t) => {
  const collector = await startCollector(t);
  const config = writeConfig(t, `rpc: { heartbeatIntervalMs: 100 }\n${MODELS}`);
  // switched on by the environment alone; exported every 100 ms
  const env = {
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
    OTEL_BSP_SCHEDULE_DELAY: '100',
  };
  const coordinator = await startCoordinator(t, config, [], env);
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress, env });
  await waitForWorkers(coordinator.url, 1, ['echo', 'echo2', 'slow']);
  const { url } = coordinator;

  await t.test(
    'a request: HTTP -> validate, route, attempt -> worker request -> queue wait, batch',
    async () => {
      const parent = newTraceparent();
      const res = await infer(url, 'echo', parent.header, 3);
      assert.equal(res.status, 200, res.text);
      const spans = await traceWith(collector.spans, parent.traceId, [
        HTTP_SPAN,
        'validate',
        'route',
        RPC,
        'queue wait',
        'batch execute',
      ]);
      const http = one(spans, 'HTTP span', (s) => s.name === HTTP_SPAN);
      assert.equal(http.service, 'infergrid-coordinator');
      assert.equal(http.kind, SERVER);
      assert.equal(http.parentSpanId, parent.spanId, "the HTTP span continues the client's traceparent");
      assert.equal(http.attributes['http.response.status_code'], 200);
      assert.equal(http.attributes['infergrid.model'], 'echo');
      const validate = one(spans, 'validate span', (s) => s.name === 'validate');
      const route = one(spans, 'route span', (s) => s.name === 'route');
      const attempt = one(spans, 'attempt span', (s) => s.name === RPC && s.kind === CLIENT);
      for (const s of [validate, route, attempt]) {
        assert.equal(s.service, 'infergrid-coordinator');
        assert.equal(s.parentSpanId, http.spanId, `${s.name} is under the HTTP span`);
      }
      assert.equal(route.attributes['infergrid.worker.id'], 'w1');
      assert.equal(attempt.attributes['infergrid.worker.id'], 'w1');
      assert.equal(attempt.attributes['infergrid.attempt'], 1);
      assert.equal(attempt.attributes['infergrid.attempt.kind'], 'first');

      const request = one(spans, 'worker request span', (s) => s.name === RPC && s.kind === SERVER);
      assert.equal(request.service, 'infergrid-worker', 'the worker names itself differently');
      assert.equal(request.resource['service.instance.id'], 'w1');
      assert.equal(request.parentSpanId, attempt.spanId, 'the worker continues the attempt span');
      const queue = one(spans, 'queue wait span', (s) => s.name === 'queue wait');
      const batch = one(spans, 'batch span', (s) => s.name === 'batch execute');
      assert.equal(queue.parentSpanId, request.spanId);
      assert.equal(batch.parentSpanId, request.spanId);
      assert.deepEqual(batch.links, [{ traceId: parent.traceId, spanId: request.spanId }]);
      assert.equal(batch.attributes['infergrid.batch.requests'], 1);
      assert.ok(
        spans.every((s) => s.status.code !== STATUS_ERROR),
        'nothing failed',
      );
    },
  );

  await t.test('two requests batched together: one batch span linked to both request spans', async () => {
    // the blocker holds the model's only instance; the two queue behind it and run as one batch
    const blocker = infer(url, 'slow', newTraceparent().header, 0);
    await waitFor('the blocker to reach the worker', async () =>
      (await adminWorkers(url)).some((w) => w.inFlight > 0),
    );
    const a = newTraceparent();
    const b = newTraceparent();
    const [ra, rb] = await Promise.all([infer(url, 'slow', a.header, 1), infer(url, 'slow', b.header, 2)]);
    assert.equal(ra.status, 200, ra.text);
    assert.equal(rb.status, 200, rb.text);
    assert.equal((await blocker).status, 200);
    const [spansA, spansB] = await Promise.all([
      traceWith(collector.spans, a.traceId, [HTTP_SPAN, RPC]),
      traceWith(collector.spans, b.traceId, [HTTP_SPAN, RPC]),
    ]);
    const requestA = one(spansA, 'worker span of A', (s) => s.name === RPC && s.kind === SERVER);
    const requestB = one(spansB, 'worker span of B', (s) => s.name === RPC && s.kind === SERVER);
    const batches = await waitFor('the shared batch span', () => {
      const found = collector.spans.filter(
        (s) => s.name === 'batch execute' && s.links.some((l) => l.spanId === requestA.spanId),
      );
      return found.length > 0 && found;
    });
    assert.equal(batches.length, 1, 'one batch ran both');
    const batch = batches[0]!;
    assert.deepEqual(
      new Set(batch.links.map((l) => `${l.traceId}/${l.spanId}`)),
      new Set([`${a.traceId}/${requestA.spanId}`, `${b.traceId}/${requestB.spanId}`]),
    );
    assert.equal(batch.attributes['infergrid.batch.requests'], 2);
    assert.equal(batch.attributes['infergrid.batch.rows'], 2);
    assert.ok([requestA.spanId, requestB.spanId].includes(batch.parentSpanId!), 'under one of them');
    // each request waited in the queue in its own trace
    one(spansA, 'queue wait of A', (s) => s.name === 'queue wait' && s.parentSpanId === requestA.spanId);
    one(spansB, 'queue wait of B', (s) => s.name === 'queue wait' && s.parentSpanId === requestB.spanId);
  });

  await t.test('a pipeline: one span per step under the HTTP span, each with its attempt', async () => {
    await waitFor('the pipeline to be ready', () => coordinator.client.modelReady('two-steps'));
    const parent = newTraceparent();
    const res = await infer(url, 'two-steps', parent.header, 5);
    assert.equal(res.status, 200, res.text);
    const spans = await traceWith(collector.spans, parent.traceId, [HTTP_SPAN, 'step first', 'step second']);
    await waitFor('both worker spans', () => {
      const trace = collector.spans.filter((s) => s.traceId === parent.traceId);
      return trace.filter((s) => s.name === RPC && s.kind === SERVER).length === 2;
    });
    const trace = collector.spans.filter((s) => s.traceId === parent.traceId);
    const http = one(spans, 'HTTP span', (s) => s.name === HTTP_SPAN);
    assert.equal(http.parentSpanId, parent.spanId);
    for (const [name, model] of [
      ['first', 'echo'],
      ['second', 'echo2'],
    ] as const) {
      const step = one(trace, `step ${name}`, (s) => s.name === `step ${name}`);
      assert.equal(step.parentSpanId, http.spanId);
      assert.equal(step.attributes['infergrid.model'], model);
      const attempt = one(
        trace,
        `attempt of ${name}`,
        (s) => s.kind === CLIENT && s.parentSpanId === step.spanId,
      );
      assert.equal(attempt.attributes['infergrid.model'], model);
      one(trace, `worker span of ${name}`, (s) => s.kind === SERVER && s.parentSpanId === attempt.spanId);
    }
  });

  await t.test("a client's not-sampled traceparent is honoured by both processes", async () => {
    const workerSpans = () => collector.spans.filter((s) => s.name === RPC && s.kind === SERVER).length;
    const before = workerSpans();
    const unsampled = newTraceparent();
    const res = await infer(url, 'echo', unsampled.header.replace(/-01$/, '-00'));
    assert.equal(res.status, 200, res.text);
    // a sampled request after it: once its worker spans are in, the first one's would be too
    const after = newTraceparent();
    assert.equal((await infer(url, 'echo', after.header)).status, 200);
    await traceWith(collector.spans, after.traceId, [HTTP_SPAN, 'batch execute']);
    assert.deepEqual(
      collector.spans.filter((s) => s.traceId === unsampled.traceId),
      [],
    );
    assert.equal(workerSpans() - before, 1, 'the worker did not start a trace of its own either');
  });

  await t.test('an error sets the span status to its code', async () => {
    const parent = newTraceparent();
    const res = await post(
      `${url}/v2/models/echo/infer`,
      JSON.stringify({ inputs: [{ name: 'x', datatype: 'INT64', shape: [1, 4], data: [1, 2, 3, 4] }] }),
      { 'content-type': 'application/json', traceparent: parent.header },
    );
    assert.equal(res.status, 400);
    const spans = await traceWith(collector.spans, parent.traceId, [HTTP_SPAN, 'validate']);
    for (const name of [HTTP_SPAN, 'validate']) {
      const s = one(spans, name, (x) => x.name === name);
      assert.equal(s.status.code, STATUS_ERROR);
      assert.equal(s.status.message, 'INVALID_ARGUMENT');
    }
    assert.equal(
      one(spans, HTTP_SPAN, (x) => x.name === HTTP_SPAN).attributes['http.response.status_code'],
      400,
    );
  });
});

test('tracing - from the config; spans still buffered are exported on a graceful shutdown', {
  timeout: 60_000,
}, async (t) => {
  const collector = await startCollector(t);
  const config = writeConfig(
    t,
    `rpc: { heartbeatIntervalMs: 100 }
tracing: { enabled: true, endpoint: "${collector.url}/v1/traces" }
${MODELS}`,
  );
  // an export interval far longer than the test: only the shutdown flush can deliver the spans
  const env = { OTEL_BSP_SCHEDULE_DELAY: '600000' };
  const coordinator = await startCoordinator(t, config, [], env);
  const worker = await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress, env });
  await waitForWorkers(coordinator.url, 1, ['echo']);
  const parent = newTraceparent();
  assert.equal((await infer(coordinator.url, 'echo', parent.header)).status, 200);
  assert.equal(collector.spans.length, 0, 'nothing exported before the shutdown');
  assert.equal(await worker.stop(), 0);
  assert.equal(await coordinator.stop(), 0);
  const spans = collector.spans.filter((s) => s.traceId === parent.traceId);
  const services = new Set(spans.map((s) => s.service));
  assert.deepEqual(services, new Set(['infergrid-coordinator', 'infergrid-worker']));
  for (const name of [HTTP_SPAN, 'validate', 'route', RPC, 'queue wait', 'batch execute'])
    assert.ok(
      spans.some((s) => s.name === name),
      `${name} was flushed`,
    );
});
