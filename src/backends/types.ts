/**
 * The backend contract: a backend loads a model described by config and returns a
 * LoadedModel that runs it on raw tensors. Backends never see JSON; they get tensors whose
 * names, datatypes and shapes the coordinator has already checked against `info`.
 */

import type { ModelConfig } from '../config/index.ts';
import type { Parameters } from '../protocol/index.ts';
import type { Tensor, TensorSpec } from '../tensor/index.ts';

/** What a loaded model says about itself. */
export interface ModelInfo {
  /** e.g. "onnxruntime_onnx", "infergrid_sim", "infergrid_js". */
  platform: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface InferContext {
  /**
   * Aborted when nobody wants the outputs any more: every request in the batch was cancelled
   * (the coordinator's CANCEL, a lost connection) or passed its deadline, and has been answered
   * so already. The reason is the last such request's error. A backend stops early if it can
   * (throwing, typically, `signal.reason`); what it returns or throws after the abort is
   * dropped. The model instance counts as busy until `infer` settles, whether or not it stopped.
   * A batch never starts aborted. Reading it may make it (the batcher makes the signal lazily),
   * so a backend that cannot stop need not touch it.
   */
  readonly signal: AbortSignal;
  parameters: Parameters;
  /** Output names wanted; all outputs when undefined. */
  outputs?: string[] | undefined;
}

export interface LoadedModel {
  readonly info: ModelInfo;
  /**
   * Runs the model. Resolves with the outputs (all, or those named in ctx.outputs), or
   * rejects; an InfergridError's code says whose fault it was, anything else counts as
   * BACKEND_ERROR.
   */
  infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]>;
  /** Releases the model's resources. */
  dispose(): Promise<void>;
}

export interface LoadContext {
  /** Warnings during load (e.g. a declared schema narrower than the model's). */
  warn: (message: string) => void;
}

export interface Backend {
  readonly name: ModelConfig['backend'];
  load(model: ModelConfig, ctx: LoadContext): Promise<LoadedModel>;
}
