/**
 * Reads the text in line images through a running infergrid (npm start): each image's PNG or
 * JPEG bytes go to the `ocr-line` pipeline as a binary tensor; decoding, orientation, resizing,
 * both models and CTC decoding all run server-side, in the worker processes.
 *
 *   npm run client -- examples/images/hello-world.png [more.png ...] [--url http://127.0.0.1:8000]
 *   npm run client -- --client-side examples/images/hello-world.png   (preprocess here, models there)
 */

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { InferenceClient } from '../src/client/index.ts';
import { loadCharset, readLine, resolveOcrAssets } from './ocr/index.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8000' },
    model: { type: 'string', default: 'ocr-line' },
    'client-side': { type: 'boolean', default: false },
  },
});
if (positionals.length === 0) {
  console.error(
    'usage: npm run client -- <image.png> [more images] [--url http://127.0.0.1:8000] [--model ocr-line] [--client-side]',
  );
  process.exit(2);
}
// a coordinator with API keys: INFERGRID_API_KEY holds one with the infer scope
const client = new InferenceClient(values.url!, { apiKey: process.env.INFERGRID_API_KEY });
const charset = values['client-side'] ? loadCharset(resolveOcrAssets().keysPath) : [];

async function readOne(path: string): Promise<{ text: string; confidence: number; angle: number }> {
  const image = readFileSync(path);
  if (values['client-side']) return readLine(client, image, { charset });
  const response = await client.infer(values.model!, [
    { name: 'image', datatype: 'BYTES', shape: [1], data: [image] },
  ]);
  const out = Object.fromEntries(response.outputs.map((o) => [o.name, o.data]));
  return {
    text: String((out.text as unknown[])[0]),
    confidence: Number((out.confidence as ArrayLike<number>)[0]),
    angle: Number((out.angle as ArrayLike<number>)?.[0] ?? 0),
  };
}

for (const path of positionals) {
  try {
    const result = await readOne(path);
    const rotated = result.angle === 180 ? ' (was upside down)' : '';
    console.log(
      `${path}: ${JSON.stringify(result.text)}  confidence ${result.confidence.toFixed(3)}${rotated}`,
    );
  } catch (err) {
    console.error(`${path}: ${(err as Error).message}`);
    process.exitCode = 1;
  }
}
