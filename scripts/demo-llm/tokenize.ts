/**
 * Step 1 of the demo model (docs/demo-llm.md): the King James Bible as token ids.
 *
 * Reads the text with Debian's `bible` reader (packages bible-kjv and bible-kjv-text), keeps
 * the verses (drops the "Genesis 1" headings and verse numbers), and tokenizes it with
 * node-llama-cpp itself, on the vocab-only llama-spm GGUF that tests/fixtures/tiny-gguf.ts
 * extracts from node-llama-cpp's bundled llama.cpp source. So the trainer sees exactly the
 * token ids llama.cpp produces when it serves the model.
 *
 * Each chapter is one line of verses joined by spaces, tokenized on its own (so every word
 * carries SentencePiece's leading "▁", as in a prompt) and written as BOS, the chapter's tokens
 * and a newline token. Output (under .tmp/demo-llm/, gitignored): tokens.u16 (little-endian
 * uint16 ids) and tokens.json (counts, BOS id, source).
 *
 *   node --import tsx scripts/demo-llm/tokenize.ts
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, type Token } from 'node-llama-cpp';
import { vocabGguf } from '../../tests/fixtures/tiny-gguf.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT_DIR = join(ROOT, '.tmp', 'demo-llm');
const ALL_VERSES = 'gen1:1-rev22:21';
const NEWLINE_TOKEN = 13;

/** The chapters of the KJV as plain text: one string per chapter, verses joined by spaces. */
export function kjvChapters(): string[] {
  // -l10000: one verse per line (the reader wraps at the terminal width otherwise)
  const raw = execFileSync('bible', ['-l10000', ALL_VERSES], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const chapters: string[][] = [];
  for (const line of raw.split('\n')) {
    const verse = /^\s+\d+ (.*)$/.exec(line);
    if (verse) chapters.at(-1)?.push(verse[1]!.trim());
    else if (line.trim() !== '') chapters.push([]); // a heading such as "Genesis 1"
  }
  return chapters.filter((c) => c.length > 0).map((c) => c.join(' '));
}

async function main(): Promise<void> {
  const chapters = kjvChapters();
  const vocabPath = vocabGguf('llama-spm');
  const llama = await getLlama({ gpu: false, build: 'never' });
  const model = await llama.loadModel({ modelPath: vocabPath, vocabOnly: true });
  const bos = model.tokens.bos;
  if (bos === null) throw new Error(`${vocabPath}: the vocabulary has no BOS token`);
  // SPM's byte token <0x0A> (tokenizing "\n" alone would prepend a "▁")
  const newline = [NEWLINE_TOKEN] as Token[];
  if (model.detokenize(newline) !== '\n') throw new Error(`token ${NEWLINE_TOKEN} is not "\\n"`);

  const ids: number[] = [];
  for (const chapter of chapters) ids.push(bos, ...model.tokenize(chapter), newline[0]!);
  const tokens = Uint16Array.from(ids, (id) => {
    if (id < 0 || id > 0xffff) throw new Error(`token id ${id} does not fit in uint16`);
    return id;
  });
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, 'tokens.u16'), tokens);
  const words = chapters.reduce((n, c) => n + c.split(/\s+/).length, 0);
  const meta = {
    source: `bible -l10000 ${ALL_VERSES} (Debian bible-kjv + bible-kjv-text)`,
    vocabulary: vocabPath,
    vocabularySize: model.fileInfo.metadata.tokenizer.ggml.tokens.length,
    bos: Number(bos),
    newline: Number(newline[0]),
    chapters: chapters.length,
    words,
    characters: chapters.reduce((n, c) => n + c.length, 0),
    tokens: tokens.length,
    distinctTokens: new Set(ids).size,
  };
  writeFileSync(join(OUT_DIR, 'tokens.json'), `${JSON.stringify(meta, null, 2)}\n`);
  console.log(JSON.stringify(meta));
  await model.dispose();
  await llama.dispose();
}

await main();
