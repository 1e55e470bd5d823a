/**
 * The `js` backend: a user module is the model. The module exports `load(options, info)`
 * (named or default) returning `{ infer(inputs, ctx), inputs?, outputs?, platform?, dispose? }`;
 * the schema comes from the module or from the config, and must come from one of them.
 */

import { pathToFileURL } from 'node:url';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import type { Tensor, TensorSpec } from '../tensor/index.ts';
import { reconcileSpecs } from './schema-check.ts';
import type { Backend, InferContext, LoadedModel } from './types.ts';

/** What a js model module's `load` returns. */
export interface JsModel {
  infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]> | Tensor[];
  inputs?: TensorSpec[];
  outputs?: TensorSpec[];
  platform?: string;
  dispose?(): Promise<void> | void;
}

export type JsModelLoader = (
  options: Record<string, unknown>,
  info: { name: string; version: string },
) => Promise<JsModel> | JsModel;

export function createJsBackend(): Backend {
  return {
    name: 'js',
    async load(model: ModelConfig): Promise<LoadedModel> {
      const fail = (why: string, cause?: unknown): never => {
        throw new InfergridError('MODEL_LOAD_FAILED', `model "${model.name}": ${why}`, { cause });
      };
      let mod: { load?: unknown; default?: unknown };
      try {
        mod = await import(pathToFileURL(model.path!).href);
      } catch (err) {
        return fail(`cannot import ${model.path}: ${(err as Error).message}`, err);
      }
      const loader = (typeof mod.load === 'function' ? mod.load : mod.default) as JsModelLoader | undefined;
      if (typeof loader !== 'function') fail(`${model.path} exports no load() function (named or default)`);
      let js: JsModel;
      try {
        js = await loader!(model.options, { name: model.name, version: model.version });
      } catch (err) {
        return fail(`load() threw: ${(err as Error).message}`, err);
      }
      if (!js || typeof js.infer !== 'function')
        fail('load() must return an object with an infer(inputs, ctx) function');
      const inputsReported = js.inputs ?? model.inputs;
      const outputsReported = js.outputs ?? model.outputs;
      if (!inputsReported || !outputsReported)
        fail('the module declares no inputs/outputs and neither does the config');
      const inputs = reconcileSpecs(
        model.name,
        'input',
        inputsReported!,
        js.inputs ? model.inputs : undefined,
      );
      const outputs = reconcileSpecs(
        model.name,
        'output',
        outputsReported!,
        js.outputs ? model.outputs : undefined,
      );
      return {
        info: { platform: js.platform ?? 'infergrid_js', inputs, outputs },
        async infer(tensors: Tensor[], ctx: InferContext): Promise<Tensor[]> {
          // a batch never starts aborted; the module may watch ctx.signal while it runs
          const outputs = await js.infer(tensors, ctx);
          // the outputs asked for, in that order; a module may return all of them (the
          // coordinator has already checked the names against the schema)
          const wanted = ctx.outputs;
          if (!wanted || !Array.isArray(outputs)) return outputs;
          return wanted.map((name) => {
            const t = outputs.find((o) => o?.name === name);
            if (!t)
              throw new InfergridError(
                'BACKEND_ERROR',
                `model "${model.name}" returned no output "${name}", which its schema declares`,
              );
            return t;
          });
        },
        async dispose(): Promise<void> {
          await js.dispose?.();
        },
      };
    },
  };
}
