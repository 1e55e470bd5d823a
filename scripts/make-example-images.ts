/** Writes the text-line PNGs under examples/images/ that the OCR examples send. Run: npx tsx scripts/make-example-images.ts */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderTextLine } from '../tests/fixtures/render-text.ts';

const OUT_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'examples', 'images');

const IMAGES: ReadonlyArray<{ file: string; text: string; rotate180?: boolean }> = [
  { file: 'hello-world.png', text: 'Hello World' },
  { file: 'infergrid.png', text: 'infergrid 2026' },
  { file: 'quick-brown-fox.png', text: 'The quick brown fox' },
  // Short: the classifier squeezes a line into 48x192 px and grows unsure of long ones.
  { file: 'upside-down.png', text: 'Upside down text', rotate180: true },
];

await mkdir(OUT_DIR, { recursive: true });
for (const { file, text, rotate180 } of IMAGES) {
  const png = await renderTextLine(text, { rotate180: rotate180 ?? false });
  await writeFile(join(OUT_DIR, file), png);
  console.log(
    `${join('examples', 'images', file)}  ${png.length} bytes  "${text}"${rotate180 ? ' (rotated 180°)' : ''}`,
  );
}
