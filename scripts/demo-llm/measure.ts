/**
 * Step 5 of the demo model (docs/demo-llm.md): how English is what it says? Sends completions
 * to a running infergrid (`npm start`, or `serve --config examples/demo-config.yaml`) through
 * /v1/completions, with the API's default sampling unless told otherwise, and counts the share
 * of generated words that Debian's word list (package wamerican) has. A word is a run of
 * letters (with inner apostrophes); the check ignores case and a trailing "'s".
 *
 *   node --import tsx scripts/demo-llm/measure.ts http://127.0.0.1:8000 [temperature]
 */

import { readFileSync } from 'node:fs';

const DICTIONARY = '/usr/share/dict/american-english';
const MODEL = 'chat';
const MAX_TOKENS = 64;
/** 20 prompts: 10 in the Bible's own voice, 10 in plain modern English. */
const PROMPTS = [
  'In the beginning',
  'And the LORD spake unto Moses, saying,',
  'Blessed are the poor in spirit:',
  'The LORD is my shepherd;',
  'And it came to pass in those days,',
  'Then said Jesus unto his disciples,',
  'Wisdom is',
  'And the king of Babylon',
  'Thus saith the LORD of hosts;',
  'And the children of Israel',
  'The weather today is',
  'My favourite food is',
  'Once upon a time there was a',
  'The city was quiet, and',
  'She opened the door and saw',
  'A good friend is',
  'Tell me about the sea.',
  'The old man said',
  'What is love?',
  'The night was dark and',
];

export function dictionaryWords(path = DICTIONARY): Set<string> {
  return new Set(
    readFileSync(path, 'utf8')
      .split('\n')
      .map((w) => w.trim().toLowerCase())
      .filter((w) => w !== ''),
  );
}

export function wordsOf(text: string): string[] {
  return text.match(/[A-Za-z]+(?:'[A-Za-z]+)*/g) ?? [];
}

async function main(): Promise<void> {
  const base = process.argv[2];
  if (!base) throw new Error('usage: measure.ts <base url> [temperature]');
  const temperature = process.argv[3] === undefined ? undefined : Number(process.argv[3]);
  const dict = dictionaryWords();
  const texts = await Promise.all(
    PROMPTS.map(async (prompt, i) => {
      const res = await fetch(`${base}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, prompt, max_tokens: MAX_TOKENS, seed: i + 1, temperature }),
      });
      if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
      const body = (await res.json()) as {
        choices: Array<{ text: string }>;
        usage: { completion_tokens: number };
      };
      return { prompt, text: body.choices[0]!.text, tokens: body.usage.completion_tokens };
    }),
  );
  let words = 0;
  let known = 0;
  let tokens = 0;
  for (const t of texts) {
    tokens += t.tokens;
    for (const w of wordsOf(t.text)) {
      words++;
      const lower = w.toLowerCase();
      if (dict.has(lower) || dict.has(lower.replace(/'s$/, ''))) known++;
    }
    console.log(`${JSON.stringify(t.prompt)} -> ${JSON.stringify(t.text)}`);
  }
  console.log(
    JSON.stringify({
      completions: texts.length,
      temperature: temperature ?? 'default (1)',
      tokens,
      words,
      dictionaryWords: known,
      share: Number((known / words).toFixed(4)),
    }),
  );
}

await main();
