/**
 * Tracing settings: the OTEL_* environment over the `tracing:` config section, and what stays
 * off. The spans themselves are checked with real processes in tests/integration/tracing.test.ts.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configSchema } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';
import { createTracing, resolveTracingSettings, silentLogger } from '../../src/telemetry/index.ts';

const defaults = configSchema.parse({}).tracing;

test('tracing settings - off by default, named by role', () => {
  const s = resolveTracingSettings(defaults, {}, 'worker');
  assert.equal(s.enabled, false);
  assert.equal(s.serviceName, 'infergrid-worker');
  assert.equal(s.endpoint, 'http://localhost:4318/v1/traces');
  assert.deepEqual(s.sampler, { name: 'parentbased_traceidratio', ratio: 1 });
});

test('tracing settings - the config switches it on; a bare endpoint gets /v1/traces', () => {
  const config = configSchema.parse({
    tracing: { enabled: true, endpoint: 'http://collector:4318', sampleRatio: 0.25, serviceName: 'ocr' },
  }).tracing;
  const s = resolveTracingSettings(config, {}, 'coordinator');
  assert.equal(s.enabled, true);
  assert.deepEqual(s.exporters, ['otlp']);
  assert.equal(s.endpoint, 'http://collector:4318/v1/traces');
  assert.deepEqual(s.sampler, { name: 'parentbased_traceidratio', ratio: 0.25 });
  assert.equal(s.serviceName, 'ocr');
  const full = configSchema.parse({ tracing: { enabled: true, endpoint: 'http://c:4318/custom' } }).tracing;
  assert.equal(resolveTracingSettings(full, {}, 'coordinator').endpoint, 'http://c:4318/custom');
});

test('tracing settings - the environment switches it on and wins over the config', () => {
  const on = resolveTracingSettings(
    defaults,
    {
      OTEL_TRACES_EXPORTER: 'otlp,console',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://jaeger:4318/',
      OTEL_SERVICE_NAME: 'svc',
      OTEL_TRACES_SAMPLER: 'traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.5',
    },
    'coordinator',
  );
  assert.equal(on.enabled, true);
  assert.deepEqual(on.exporters, ['otlp', 'console']);
  assert.equal(on.endpoint, 'http://jaeger:4318/v1/traces');
  assert.equal(on.serviceName, 'svc');
  assert.deepEqual(on.sampler, { name: 'traceidratio', ratio: 0.5 });
  // the signal's own variable is used as given, over the base one
  const traces = resolveTracingSettings(
    defaults,
    {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://b:4318/x',
    },
    'worker',
  );
  assert.equal(traces.enabled, true, 'an endpoint variable alone switches it on');
  assert.equal(traces.endpoint, 'http://b:4318/x');
  const config = configSchema.parse({ tracing: { enabled: true } }).tracing;
  assert.equal(resolveTracingSettings(config, { OTEL_TRACES_EXPORTER: 'none' }, 'worker').enabled, false);
  assert.equal(resolveTracingSettings(config, { OTEL_SDK_DISABLED: 'true' }, 'worker').enabled, false);
});

test('tracing settings - unsupported values are listed at once', () => {
  assert.throws(
    () =>
      resolveTracingSettings(
        defaults,
        { OTEL_TRACES_EXPORTER: 'zipkin', OTEL_TRACES_SAMPLER: 'sometimes', OTEL_TRACES_SAMPLER_ARG: '2' },
        'worker',
      ),
    (err: unknown) =>
      err instanceof InfergridError &&
      err.code === 'CONFIG_INVALID' &&
      err.message.includes('OTEL_TRACES_EXPORTER: "zipkin"') &&
      err.message.includes('OTEL_TRACES_SAMPLER: "sometimes"'),
  );
  assert.equal(configSchema.safeParse({ tracing: { endpoint: 'localhost:4318' } }).success, false);
  assert.equal(configSchema.safeParse({ tracing: { sampleRatio: 2 } }).success, false);
});

test('tracing - off is the no-op tracer; on, an unsampled parent makes no child spans', async () => {
  const off = await createTracing({ role: 'coordinator', logger: silentLogger() });
  assert.equal(off.enabled, false);
  assert.equal(off.startSpan('x', undefined).isRecording(), false);
  await off.shutdown();

  const on = await createTracing({
    role: 'worker',
    logger: silentLogger(),
    // nothing is exported in this test: spans end before the first scheduled export
    env: { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' },
  });
  try {
    assert.equal(on.enabled, true);
    const meta = { model: 'm', version: '1' };
    const unsampled = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00';
    assert.equal(on.startWorkerRequest({ ...meta, traceparent: unsampled }, 'w1'), undefined);
    const sampled = on.startWorkerRequest(
      { ...meta, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      'w1',
    )!;
    assert.equal(sampled.span.isRecording(), true);
    assert.equal(sampled.span.spanContext().traceId, '0af7651916cd43dd8448eb211c80319c');
    sampled.end();
    const http = on.startHttp({
      method: 'POST',
      route: '/v2/models/:model/infer',
      path: '/v2/models/m/infer',
      headers: { traceparent: unsampled },
      model: 'm',
    });
    assert.equal(http.span.isRecording(), false);
    // a child of an unrecorded span is that span: nothing is made for it
    assert.equal(on.startRoute(http.context, 'm', 1), http.span);
    http.end(200);
  } finally {
    await on.shutdown(100);
  }
});
