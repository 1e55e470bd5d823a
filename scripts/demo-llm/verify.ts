/**
 * Step 4 of the demo model (docs/demo-llm.md): does llama.cpp run the converted GGUF as torch
 * runs the checkpoint? For a few prompts, node-llama-cpp (on the GGUF) and the trainer's torch
 * model (`train.py predict`, on the same checkpoint with its matrices rounded to F16) each
 * decode greedily; the tokens must be the same and the chosen token's probability close. A
 * wrong RoPE pairing, a transposed matrix or a different epsilon shows here at the first token.
 *
 *   node --import tsx scripts/demo-llm/verify.ts [model.gguf]
 * Exits 1 on a mismatch. PYTHON (default /usr/bin/python3, Debian's, which has python3-torch).
 */

import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ControlledEvaluateInputItem, getLlama, type Token } from 'node-llama-cpp';
import { DEFAULT_DEMO_GGUF } from './convert.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const PROMPTS = [
  'In the beginning God created',
  'And the LORD said unto Moses,',
  'Blessed are the',
  'The LORD is my shepherd;',
  'And it came to pass, when the king',
  'Jesus answered and said unto them,',
];
const STEPS = 16;
/** F32 (torch) against F16 activations and ggml's kernels: probabilities agree to about 1e-3. */
const MAX_PROBABILITY_DIFFERENCE = 0.02;

interface Reference {
  tokens: number[];
  top_probabilities: number[];
}

async function main(): Promise<void> {
  const modelPath = resolve(process.argv[2] ?? DEFAULT_DEMO_GGUF);
  const llama = await getLlama({ gpu: false, build: 'never' });
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({ contextSize: 256, threads: 1 });
  const bos = model.tokens.bos!;
  const prompts = PROMPTS.map((p) => [bos, ...model.tokenize(p)].map(Number));

  const reference = JSON.parse(
    execFileSync(process.env.PYTHON ?? '/usr/bin/python3', ['scripts/demo-llm/train.py', 'predict'], {
      cwd: ROOT,
      input: JSON.stringify({ prompts, steps: STEPS }),
      encoding: 'utf8',
      env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' },
    }),
  ) as Reference[];

  let failures = 0;
  let maxDiff = 0;
  const sequence = context.getSequence();
  for (const [i, prompt] of prompts.entries()) {
    await sequence.clearHistory();
    const tokens: number[] = [];
    const probabilities: number[] = [];
    let input: Token[] = prompt as Token[];
    for (let s = 0; s < STEPS; s++) {
      const last = input.length - 1;
      const items: ControlledEvaluateInputItem[] = [
        ...input.slice(0, last),
        [
          input[last]!,
          {
            generateNext: {
              probabilities: true,
              // no filter: the plain softmax, argmax taken here
              options: { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1 },
            },
          },
        ],
      ];
      const out = await sequence.controlledEvaluate(items);
      const probs = out.at(-1)?.next.probabilities;
      if (!probs) throw new Error('node-llama-cpp returned no probabilities');
      let best = -1;
      let bestP = -1;
      for (const [token, p] of probs) {
        if (p > bestP) {
          best = Number(token);
          bestP = p;
        }
      }
      tokens.push(best);
      probabilities.push(bestP);
      input = [best as Token];
    }
    const ref = reference[i]!;
    const sameTokens = tokens.every((t, k) => t === ref.tokens[k]);
    const diff = Math.max(...probabilities.map((p, k) => Math.abs(p - ref.top_probabilities[k]!)));
    maxDiff = Math.max(maxDiff, diff);
    const ok = sameTokens && diff <= MAX_PROBABILITY_DIFFERENCE;
    if (!ok) failures++;
    console.log(
      `${ok ? 'ok  ' : 'FAIL'} ${JSON.stringify(PROMPTS[i])} -> ${JSON.stringify(model.detokenize(tokens as Token[]))}` +
        ` | max |p_llama - p_torch| ${diff.toFixed(4)}` +
        (sameTokens ? '' : `\n     llama ${tokens.join(',')}\n     torch ${ref.tokens.join(',')}`),
    );
  }
  console.log(
    `${PROMPTS.length - failures}/${PROMPTS.length} prompts agree on ${STEPS} greedy tokens; max probability difference ${maxDiff.toFixed(4)}`,
  );
  sequence.dispose();
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  if (failures > 0) process.exitCode = 1;
}

await main();
