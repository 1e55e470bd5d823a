/**
 * The worker's pipeline backend (`pipeline.runOn: worker`) on a real ModelHost: pipeline
 * requests do not wait behind each other, a cancel or deadline reaches the running step, a step
 * model the worker lacks is UNAVAILABLE naming pipeline, step, model and worker (at load and at
 * run time), and a step's own error keeps its code with the step named.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Backend, type InferContext, createSimBackend } from '../../src/backends/index.ts';
import { modelSchema } from '../../src/config/index.ts';
import { InfergridError } from '../../src/errors.ts';
import type { Tensor } from '../../src/tensor/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { type Deferred, deferred } from '../../src/util/deferred.ts';
import { ModelHost, createPipelineBackend } from '../../src/worker/index.ts';
import { waitFor } from '../fixtures/processes.ts';

const SPEC = (name: string) => [{ name, datatype: 'FP32' as const, shape: [-1] }];

/** A step model ("js" here) that answers when the test says, or fails with `options.fail`. */
function gatedBackend() {
  const calls: { ctx: InferContext; gate: Deferred<void> }[] = [];
  const backend: Backend = {
    name: 'js',
    async load(config) {
      const fail = config.options.fail as string | undefined;
      return {
        info: { platform: 'test', inputs: SPEC('x'), outputs: SPEC('y') },
        async infer(inputs: Tensor[], ctx: InferContext) {
          if (fail) throw new InfergridError('INVALID_ARGUMENT', fail);
          const gate = deferred<void>();
          calls.push({ ctx, gate });
          await gate.promise;
          return [{ ...inputs[0]!, name: 'y' }];
        },
        dispose: async () => {},
      };
    },
  };
  return { backend, calls };
}

function hostWith(backend: Backend): ModelHost {
  const backends = new Map<string, Backend>([
    ['js', backend],
    ['sim', createSimBackend()],
  ]);
  backends.set('pipeline', createPipelineBackend({ host: () => host, workerId: 'w-test' }));
  const host = new ModelHost(backends, silentLogger());
  return host;
}

const stepModel = (name: string, options: Record<string, unknown> = {}) =>
  modelSchema.parse({ name, backend: 'js', path: 'unused', options, batching: { instances: 4 } });
const ident = modelSchema.parse({
  name: 'ident',
  backend: 'sim',
  sim: { latencyMs: 0 },
  inputs: SPEC('x'),
  outputs: SPEC('y'),
});
const pipe = (stepModelName = 'gated') =>
  modelSchema.parse({
    name: 'pipe',
    backend: 'pipeline',
    inputs: SPEC('v'),
    outputs: SPEC('out'),
    pipeline: {
      runOn: 'worker',
      steps: [
        { name: 'first', model: 'ident', inputs: { x: '$v' } },
        { name: 'g', model: stepModelName, inputs: { x: 'first.y' } },
      ],
      outputs: { out: 'g.y' },
    },
  });

const input = (v: number): Tensor => ({
  name: 'v',
  datatype: 'FP32',
  shape: [1],
  data: new Uint8Array(new Float32Array([v]).buffer),
});

test('worker pipeline - requests run at once, each step through its model, outputs wired', async () => {
  const { backend, calls } = gatedBackend();
  const host = hostWith(backend);
  await host.load(ident);
  await host.load(stepModel('gated'));
  assert.equal((await host.load(pipe())).state, 'ready');
  const p = host.get('pipe', undefined);
  const running = [1, 2, 3].map((v) => host.run(p, { inputs: [input(v)] }));
  // all three reached the step model while none had finished: the pipeline holds none back
  await waitFor('three steps running', () => calls.length === 3);
  for (const c of calls) c.gate.resolve();
  const answers = await Promise.all(running);
  assert.deepEqual(
    answers.map((a) => [a[0]!.name, new Float32Array(a[0]!.data.slice().buffer)[0]]),
    [
      ['out', 1],
      ['out', 2],
      ['out', 3],
    ],
  );
  const stats = new Map(host.statsSnapshots().map((s) => [s.name, s]));
  assert.equal(stats.get('pipe')!.inferenceCount, 3);
  assert.equal(stats.get('ident')!.inferenceCount, 3);
  assert.equal(stats.get('gated')!.inferenceCount, 3);
});

test('worker pipeline - a cancel or a deadline aborts the running step', async () => {
  const { backend, calls } = gatedBackend();
  const host = hostWith(backend);
  await host.load(ident);
  await host.load(stepModel('gated'));
  await host.load(pipe());
  const p = host.get('pipe', undefined);

  const controller = new AbortController();
  const cancelled = host.run(p, { inputs: [input(1)], signal: controller.signal });
  await waitFor('the step running', () => calls.length === 1);
  controller.abort(new InfergridError('CANCELLED', 'the client went away'));
  await assert.rejects(cancelled, { code: 'CANCELLED' });
  await waitFor('the step told', () => calls[0]!.ctx.signal.aborted);

  const expired = host.run(p, { inputs: [input(2)], deadlineAt: performance.now() + 20 });
  await assert.rejects(expired, { code: 'DEADLINE_EXCEEDED' });
  await waitFor('the step told', () => calls[1]?.ctx.signal.aborted);
});

test('worker pipeline - a step model the worker does not host is UNAVAILABLE, named, at load and at run time', async () => {
  const { backend } = gatedBackend();
  const host = hostWith(backend);
  await host.load(ident);
  const failed = await host.load(pipe('absent'));
  assert.equal(failed.state, 'unavailable');
  assert.match(failed.error ?? '', /worker w-test does not host model "absent" \(step "g"\)/);

  await host.load(stepModel('gated'));
  await host.load(pipe());
  const p = host.get('pipe', undefined);
  await host.unload('gated');
  await assert.rejects(host.run(p, { inputs: [input(1)] }), (err: InfergridError) => {
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /pipeline "pipe" step "g": model "gated" is not ready on worker w-test/);
    assert.deepEqual(err.details, { pipeline: 'pipe', step: 'g', model: 'gated', worker: 'w-test' });
    return true;
  });
});

test("worker pipeline - a step's error keeps its code and names the step", async () => {
  const { backend } = gatedBackend();
  const host = hostWith(backend);
  await host.load(ident);
  await host.load(stepModel('gated', { fail: 'x must be positive' }));
  await host.load(pipe());
  await assert.rejects(host.run(host.get('pipe', undefined), { inputs: [input(1)] }), {
    code: 'INVALID_ARGUMENT',
    message: /step "g" \(gated\): x must be positive/,
  });
});

test("worker pipeline - a request's priority holds for its steps", async () => {
  const { backend, calls } = gatedBackend();
  const host = hostWith(backend);
  await host.load(ident);
  await host.load(stepModel('gated'));
  await host.load(pipe());
  const p = host.get('pipe', undefined);
  const urgent = host.run(p, { inputs: [input(1)], priority: 1 });
  await waitFor('the urgent step running', () => calls.length === 1);
  const plain = host.run(p, { inputs: [input(2)] });
  await waitFor('the plain step running', () => calls.length === 2);
  assert.deepEqual(
    calls.map((c) => c.ctx.priority),
    [1, undefined],
  );
  for (const c of calls) c.gate.resolve();
  await Promise.all([urgent, plain]);
});

/** A step backend whose load finishes when the test says, or fails with `options.failLoad`. */
function slowLoadingBackend() {
  const loads: Deferred<void>[] = [];
  const backend: Backend = {
    name: 'js',
    async load(config) {
      const gate = deferred<void>();
      loads.push(gate);
      await gate.promise;
      if (config.options.failLoad)
        throw new InfergridError('MODEL_LOAD_FAILED', String(config.options.failLoad));
      return {
        info: { platform: 'test', inputs: SPEC('x'), outputs: SPEC('y') },
        infer: async (inputs: Tensor[]) => [{ ...inputs[0]!, name: 'y' }],
        dispose: async () => {},
      };
    },
  };
  return { backend, loads };
}

test('worker pipeline - a load sent before the worker has loaded its steps waits for them, and is ready after', async () => {
  const { backend, loads } = slowLoadingBackend();
  const backends = new Map<string, Backend>([
    ['js', backend],
    ['sim', createSimBackend()],
  ]);
  const startup = deferred<void>();
  backends.set(
    'pipeline',
    createPipelineBackend({ host: () => host, workerId: 'w-test', stepsLoaded: startup.promise }),
  );
  const host = new ModelHost(backends, silentLogger());
  // as a coordinator's reconcile does at registration: the pipeline first, the worker's own loads after
  const pipeline = host.load(pipe());
  const steps = (async () => {
    await host.load(ident);
    await host.load(stepModel('gated'));
    startup.resolve();
  })();
  await waitFor('the step model loading', () => loads.length === 1);
  loads[0]!.resolve();
  await steps;
  assert.equal((await pipeline).state, 'ready', (await pipeline).error);
  const out = await host.run(host.get('pipe', undefined), { inputs: [input(7)] });
  assert.equal(new Float32Array(out[0]!.data.slice().buffer)[0], 7);
});

test('worker pipeline - a step still loading is waited for; a step whose load failed leaves the pipeline unavailable, naming it', async () => {
  const { backend, loads } = slowLoadingBackend();
  const host = hostWith(backend);
  await host.load(ident);
  const step = host.load(stepModel('gated', { failLoad: 'weights missing' }));
  await waitFor('the step model loading', () => loads.length === 1);
  const pipeline = host.load(pipe());
  loads[0]!.resolve();
  assert.equal((await step).state, 'unavailable');
  const loaded = await pipeline;
  assert.equal(loaded.state, 'unavailable', 'never ready while a step cannot run');
  assert.match(
    loaded.error ?? '',
    /on worker w-test model "gated" \(step "g"\) is unavailable: .*weights missing/,
  );
});

test('worker pipeline - a pipeline step that is itself a pipeline (or the pipeline) is refused at load, never waited for', async () => {
  const host = hostWith(gatedBackend().backend);
  await host.load(ident);
  const self = await host.load(pipe('pipe'));
  assert.equal(self.state, 'unavailable');
  assert.match(self.error ?? '', /step "g" is pipeline "pipe"; pipelines do not nest/);
  await host.load(stepModel('gated'));
  assert.equal((await host.load(pipe())).state, 'ready');
  const outer = modelSchema.parse({
    ...pipe('pipe'),
    name: 'outer',
  });
  const nested = await host.load(outer);
  assert.equal(nested.state, 'unavailable');
  assert.match(nested.error ?? '', /pipelines do not nest/);
});
