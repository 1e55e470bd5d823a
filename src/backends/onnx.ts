/**
 * onnxruntime-node backend (CPU). The session's own metadata is the schema. One intra-op
 * thread by default: several worker processes share few cores, and more threads per
 * process only make them fight.
 *
 * Trade-off: onnxruntime-node's run() executes on the worker's main thread, so the worker's
 * event loop (heartbeats included) waits while a batch runs. Heartbeat timeouts are seconds,
 * runs are milliseconds; a model whose runs take seconds needs a longer rpc.peerTimeoutMs.
 */

import type * as Ort from 'onnxruntime-node';
import type { ModelConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import {
  type Datatype,
  type Tensor,
  type TensorSpec,
  bytesOf,
  decodeBytesElements,
  encodeBytesElements,
  typedView,
} from '../tensor/index.ts';
import { reconcileSpecs, selectOutputs } from './schema-check.ts';
import type { Backend, InferContext, LoadedModel, ModelInfo } from './types.ts';

const ORT_TO_DATATYPE: Readonly<Record<string, Datatype>> = {
  bool: 'BOOL',
  uint8: 'UINT8',
  uint16: 'UINT16',
  uint32: 'UINT32',
  uint64: 'UINT64',
  int8: 'INT8',
  int16: 'INT16',
  int32: 'INT32',
  int64: 'INT64',
  float16: 'FP16',
  float32: 'FP32',
  float64: 'FP64',
  string: 'BYTES',
};

const DATATYPE_TO_ORT: Readonly<Record<Datatype, Ort.Tensor.Type>> = {
  BOOL: 'bool',
  UINT8: 'uint8',
  UINT16: 'uint16',
  UINT32: 'uint32',
  UINT64: 'uint64',
  INT8: 'int8',
  INT16: 'int16',
  INT32: 'int32',
  INT64: 'int64',
  FP16: 'float16',
  FP32: 'float32',
  FP64: 'float64',
  BYTES: 'string',
};

function specFromMetadata(model: string, meta: Ort.InferenceSession.ValueMetadata): TensorSpec {
  if (!meta.isTensor) {
    throw new InfergridError(
      'MODEL_LOAD_FAILED',
      `model "${model}": value "${meta.name}" is not a tensor (maps and sequences are not supported)`,
    );
  }
  const datatype = ORT_TO_DATATYPE[meta.type];
  if (!datatype)
    throw new InfergridError(
      'MODEL_LOAD_FAILED',
      `model "${model}": tensor "${meta.name}" has unsupported type ${meta.type}`,
    );
  // symbolic dimensions ("batch", "p2o.DynamicDimension.0") are variable
  const shape = meta.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1));
  return { name: meta.name, datatype, shape };
}

function toOrtTensor(ort: OrtModule, t: Tensor): Ort.Tensor {
  const type = DATATYPE_TO_ORT[t.datatype];
  if (t.datatype === 'BYTES') {
    const strings = decodeBytesElements(t.data, `input "${t.name}"`).map((e) =>
      Buffer.from(e).toString('utf8'),
    );
    return new ort.Tensor('string', strings, t.shape);
  }
  return new ort.Tensor(type, typedView(t.datatype, t.data) as never, t.shape);
}

function fromOrtTensor(name: string, value: Ort.Tensor): Tensor {
  const datatype = ORT_TO_DATATYPE[value.type];
  if (!datatype)
    throw new InfergridError('BACKEND_ERROR', `output "${name}" has unsupported type ${value.type}`);
  const shape = value.dims.map(Number);
  if (datatype === 'BYTES') {
    const elements = (value.data as string[]).map((s) => Buffer.from(s, 'utf8'));
    return { name, datatype, shape, data: encodeBytesElements(elements) };
  }
  return { name, datatype, shape, data: bytesOf(value.data as ArrayBufferView) };
}

class OnnxModel implements LoadedModel {
  readonly info: ModelInfo;
  readonly #ort: OrtModule;
  readonly #session: Ort.InferenceSession;

  constructor(ort: OrtModule, session: Ort.InferenceSession, info: ModelInfo) {
    this.#ort = ort;
    this.#session = session;
    this.info = info;
  }

  async infer(inputs: Tensor[], ctx: InferContext): Promise<Tensor[]> {
    // no check of ctx.signal here: a batch never starts aborted, and onnxruntime's run cannot be stopped
    const feeds: Record<string, Ort.Tensor> = {};
    for (const t of inputs) feeds[t.name] = toOrtTensor(this.#ort, t);
    const wanted = selectOutputs(this.info.outputs, ctx.outputs).map((o) => o.name);
    let results: Ort.InferenceSession.ReturnType;
    ctx.runStarted?.();
    try {
      results = await this.#session.run(feeds, wanted);
      ctx.runEnded?.();
    } catch (err) {
      throw new InfergridError('BACKEND_ERROR', `onnxruntime failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return wanted.map((name) => fromOrtTensor(name, results[name]!));
  }

  async dispose(): Promise<void> {
    await this.#session.release();
  }
}

type OrtModule = typeof Ort;

/** onnxruntime-node is loaded on first use, so processes that never run ONNX never load it. */
export function createOnnxBackend(): Backend {
  let ortModule: Promise<OrtModule> | undefined;
  return {
    name: 'onnx',
    async load(model: ModelConfig): Promise<LoadedModel> {
      ortModule ??= import('onnxruntime-node').then((m) => (m.default ?? m) as OrtModule);
      const ort = await ortModule;
      let session: Ort.InferenceSession;
      try {
        session = await ort.InferenceSession.create(model.path!, {
          intraOpNumThreads: model.onnx.intraOpThreads,
          interOpNumThreads: model.onnx.interOpThreads,
          graphOptimizationLevel: model.onnx.graphOptimizationLevel,
          executionProviders: ['cpu'],
        });
      } catch (err) {
        throw new InfergridError(
          'MODEL_LOAD_FAILED',
          `model "${model.name}": onnxruntime could not load ${model.path}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      try {
        const inputs = reconcileSpecs(
          model.name,
          'input',
          session.inputMetadata.map((m) => specFromMetadata(model.name, m)),
          model.inputs,
        );
        const outputs = reconcileSpecs(
          model.name,
          'output',
          session.outputMetadata.map((m) => specFromMetadata(model.name, m)),
          model.outputs,
        );
        return new OnnxModel(ort, session, { platform: 'onnxruntime_onnx', inputs, outputs });
      } catch (err) {
        await session.release();
        throw err;
      }
    },
  };
}
