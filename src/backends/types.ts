/**
 * The backend contract: a backend loads a model described by config and returns a
 * LoadedModel that runs it on raw tensors. Backends never see JSON; they get tensors whose
 * names, datatypes and shapes the coordinator has already checked against `info`.
 */

import type { ModelConfig } from '../config/index.ts';
import type { LlmLoopStats, Parameters } from '../protocol/index.ts';

export type { LlmLoopStats };
import type { Tensor, TensorSpec } from '../tensor/index.ts';

/** What a generative (LLM) model says about itself, beyond its tensors (docs/llm.md). */
export interface LlmInfo {
  /** Tokens one sequence (one request) may hold: prompt and completion together. */
  contextSize: number;
  /** The context length the model was trained with (its GGUF metadata). */
  trainContextSize?: number | undefined;
  vocabularySize: number;
  embeddingSize: number;
  /** The model's chat template (Jinja, from its file), when it has one. */
  chatTemplate?: string | undefined;
  /** Requests one instance generates for at once (its sequences). */
  sequences: number;
}

/** What a loaded model says about itself. */
export interface ModelInfo {
  /** e.g. "onnxruntime_onnx", "infergrid_sim", "infergrid_js". */
  platform: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Set for generative models: they serve the OpenAI API and stream (`LoadedModel.stream`). */
  llm?: LlmInfo | undefined;
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
  /**
   * The `priority` the batch's first request asked for (1 most urgent); undefined when it asked
   * for none (the default level), or where no batcher queued it (a streaming model's request).
   */
  readonly priority?: number | undefined;
  /** Output names wanted; all outputs when undefined. */
  outputs?: string[] | undefined;
  /**
   * Marks around the model run itself (first call of each wins), so the worker's statistics tell
   * preparing the backend's inputs (compute_input) and extracting its outputs (compute_output)
   * from the run (compute_infer). A backend that marks nothing has its whole `infer` counted
   * as the run. Absent where nobody measures.
   */
  runStarted?(): void;
  runEnded?(): void;
}

/** A streaming request's context: partial outputs go to the client as they are made. */
export interface StreamContext extends InferContext {
  /**
   * Sends partial outputs (deltas: for an LLM, the text made since the last call) and response
   * parameters. Resolves when the receiver has room for more, so a slow reader slows the model
   * instead of growing a buffer (credit-based, per request). When nobody reads partials (a
   * client that did not ask to stream) it resolves at once and sends nothing.
   */
  emit(outputs: Tensor[], parameters?: Parameters): Promise<void>;
}

/** A streaming request's last answer: the whole outputs (not a delta) and response parameters. */
export interface StreamResult {
  outputs: Tensor[];
  parameters?: Parameters | undefined;
}

export interface LoadedModel {
  readonly info: ModelInfo;
  /**
   * Runs the model. Resolves with the outputs (all, or those named in ctx.outputs), or
   * rejects; an InfergridError's code says whose fault it was, anything else counts as
   * BACKEND_ERROR.
   */
  infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]>;
  /**
   * Models that batch for themselves and stream (the llama backend): the worker hands each
   * request straight here, never to its batcher, one call per request, concurrently. Resolves
   * with the final outputs; partial ones go through `ctx.emit`. Admission is the model's own:
   * beyond its limits it throws OVERLOADED.
   */
  stream?(inputs: Tensor[], ctx: StreamContext): Promise<StreamResult>;
  /** A generative model's decode loop counters, read at scrape time. */
  llmStats?(): LlmLoopStats;
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
