/**
 * The `sim` backend: a model with no compute, for tests and for measuring the engine's own
 * cost. Latency = latencyMs + perItemMs × batch + jitter, spent on a timer (no CPU burn);
 * failures at a configured rate. Outputs echo the inputs: output i carries input i's bytes
 * and shape under the output's name and datatype when they agree, else zeros. With
 * `sim.generate` it is a generative model that streams (sim-generate.ts).
 */

import type { ModelConfig, SimOptions } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { ELEMENT_BYTES, type Tensor, type TensorSpec, elementCount } from '../tensor/index.ts';
import { delay } from '../util/deadline.ts';
import { selectOutputs } from './schema-check.ts';
import { SimGenerativeModel } from './sim-generate.ts';
import type { Backend, InferContext, LoadedModel } from './types.ts';

/** mulberry32: small, fast, seedable. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function echo(spec: TensorSpec, source: Tensor | undefined, batch: number): Tensor {
  if (source && source.datatype === spec.datatype) {
    return { name: spec.name, datatype: spec.datatype, shape: source.shape, data: source.data };
  }
  const shape = spec.shape.map((d, i) => (d >= 0 ? d : i === 0 ? batch : 1));
  const bytes =
    spec.datatype === 'BYTES' ? 4 * elementCount(shape) : ELEMENT_BYTES[spec.datatype] * elementCount(shape);
  return { name: spec.name, datatype: spec.datatype, shape, data: new Uint8Array(bytes) };
}

class SimModel implements LoadedModel {
  readonly info;
  readonly #options: SimOptions;
  readonly #random: () => number;

  constructor(inputs: TensorSpec[], outputs: TensorSpec[], options: SimOptions) {
    this.info = { platform: 'infergrid_sim', inputs, outputs };
    this.#options = options;
    this.#random = options.seed === undefined ? Math.random : seededRandom(options.seed);
  }

  async infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]> {
    const { latencyMs, perItemMs, jitterMs, failureRate } = this.#options;
    const batch = inputs[0]?.shape[0] ?? 1;
    const ms = latencyMs + perItemMs * batch + (jitterMs > 0 ? this.#random() * jitterMs : 0);
    ctx.runStarted?.();
    // a batch never starts aborted: the signal is read only while there is time to wait
    if (ms > 0) await delay(ms, ctx.signal);
    ctx.runEnded?.();
    if (failureRate > 0 && this.#random() < failureRate) {
      throw new InfergridError('WORKER_FAULT', 'sim: injected failure (sim.failureRate)');
    }
    const byName = new Map(inputs.map((t, i) => [this.info.inputs[i]?.name ?? t.name, t]));
    const ordered = this.info.inputs.map((s) => byName.get(s.name));
    const outputs = this.info.outputs.map((spec, i) => echo(spec, ordered[i], batch));
    return selectOutputs(outputs, ctx.outputs);
  }

  async dispose(): Promise<void> {}
}

export function createSimBackend(): Backend {
  return {
    name: 'sim',
    async load(model: ModelConfig): Promise<LoadedModel> {
      if (model.sim.generate) return new SimGenerativeModel(model.sim.generate);
      return new SimModel(model.inputs ?? [], model.outputs ?? [], model.sim);
    },
  };
}
