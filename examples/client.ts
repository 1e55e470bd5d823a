/**
 * Reads the text in line images through a running infergrid (npm start):
 *
 *   npm run client -- examples/images/hello-world.png [more.png ...] [--url http://127.0.0.1:8000]
 */

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { InferenceClient } from '../src/client/index.ts';
import { loadCharset, readLine, resolveOcrAssets } from '../src/ocr/index.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { url: { type: 'string', default: 'http://127.0.0.1:8000' } },
});
if (positionals.length === 0) {
  console.error('usage: npm run client -- <image.png> [more images] [--url http://127.0.0.1:8000]');
  process.exit(2);
}
const client = new InferenceClient(values.url!);
const charset = loadCharset(resolveOcrAssets().keysPath);
for (const path of positionals) {
  try {
    const result = await readLine(client, readFileSync(path), { charset });
    const rotated = result.angle === 180 ? ' (was upside down)' : '';
    console.log(
      `${path}: ${JSON.stringify(result.text)}  confidence ${result.confidence.toFixed(3)}${rotated}`,
    );
  } catch (err) {
    console.error(`${path}: ${(err as Error).message}`);
    process.exitCode = 1;
  }
}
