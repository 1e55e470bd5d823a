/**
 * One process of the pipeline scenario's in-process baseline (forked by ocr-line-baseline.ts):
 * the demo's `ocr-line` steps with no engine. It runs the same step functions the js processors
 * run (readLineInProcess: preprocess → classifier → prepare → recognizer → decode) and the two
 * ONNX models in onnxruntime-node sessions of its own, with the model workers' session options.
 *
 * Trade-off: it reads the lines it is sent one at a time, in the order they came, each from image
 * bytes to text. That is what a plain program does, and on the cores it has it keeps one busy; the
 * engine may overlap steps of different requests in one process (a classifier run beside a
 * recognizer run), which is the engine's to win, not the baseline's.
 */

import type * as Ort from 'onnxruntime-node';
import {
  loadCharset,
  type OcrLineModels,
  readLineInProcess,
  resolveOcrAssets,
} from '../../examples/ocr/index.ts';
import type { OcrChildReply, OcrChildRequest } from './ocr-line-baseline.ts';

const send = (m: OcrChildReply) => process.send!(m);

async function main(): Promise<void> {
  process.on('disconnect', () => process.exit(0));
  // the onnx backend loads it the same way: a CommonJS module whose namespace may sit under `default`
  const ortModule = (await import('onnxruntime-node')) as unknown as typeof Ort & { default?: typeof Ort };
  const ort = ortModule.default ?? ortModule;
  const assets = resolveOcrAssets();
  // the model workers' defaults (config onnx: intraOpThreads 1, interOpThreads 1, 'all')
  const open = (path: string) =>
    ort.InferenceSession.create(path, {
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      executionProviders: ['cpu'],
    });
  const [cls, rec] = await Promise.all([open(assets.classifierPath), open(assets.recognizerPath)]);
  const run = async (session: Ort.InferenceSession, x: { data: Float32Array; shape: number[] }) => {
    const output = session.outputNames[0]!;
    const out = (
      await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x.data, x.shape) }, [output])
    )[output]!;
    return { data: out.data as Float32Array, shape: [...out.dims] };
  };
  const models: OcrLineModels = { cls: async (x) => (await run(cls, x)).data, rec: (x) => run(rec, x) };
  const charset = loadCharset(assets.keysPath);

  let images: Uint8Array[] = [];
  let tail = Promise.resolve();
  const read = async (id: number, line: number): Promise<void> => {
    try {
      const image = images[line];
      if (image === undefined) throw new RangeError(`no line ${line}: ${images.length} lines were sent`);
      send({ type: 'read', id, text: (await readLineInProcess(image, models, { charset })).text });
    } catch (err) {
      send({ type: 'read', id, error: (err as Error).stack ?? String(err) });
    }
  };
  process.on('message', (m: OcrChildRequest) => {
    if (m.type === 'lines') {
      images = m.images;
      send({ type: 'lines' });
    } else tail = tail.then(() => read(m.id, m.line));
  });
  send({ type: 'ready' });
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
