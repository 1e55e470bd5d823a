/**
 * Step 3 of the demo model (docs/demo-llm.md): the trainer's latest checkpoint as a GGUF.
 *
 * Reads .tmp/demo-llm/ckpt/{manifest.json,weights.bin} (raw float32 in torch's layout) and
 * writes a llama GGUF with src/llm/gguf.ts: matrices in F16, norms in F32, tokenizer KVs copied
 * verbatim from the vocab-only llama-spm GGUF, as tests/fixtures/tiny-gguf.ts does. A torch
 * Linear weight [out, in] (row-major) is ggml ne [in, out] byte for byte, so nothing is
 * transposed; the trainer's RoPE rotates adjacent pairs as llama.cpp's llama does, so Q and K
 * are not permuted either. scripts/demo-llm/verify.ts checks the result against torch.
 *
 *   node --import tsx scripts/demo-llm/convert.ts [out.gguf]   (default examples/models/kjv-demo.gguf)
 */

import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GGML_TYPE, type GgufTensor, writeGguf } from '../../src/llm/index.ts';
import { toHalfBits } from '../../src/tensor/index.ts';
import { llamaHeader } from '../../tests/fixtures/tiny-gguf.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CKPT_DIR = join(ROOT, '.tmp', 'demo-llm', 'ckpt');
export const DEFAULT_DEMO_GGUF = join(ROOT, 'examples', 'models', 'kjv-demo.gguf');
const CKPT_FORMAT = 'infergrid-demo-llm-ckpt-v1';

/**
 * A plain transcript template: the model is a language model of the Bible, so a chat reply is
 * its continuation of "Assistant:". The engine adds no second BOS, because this writes it.
 */
export const DEMO_CHAT_TEMPLATE =
  '{{ bos_token }}{% for message in messages %}' +
  "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}" +
  "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + '\\n' }}" +
  "{% else %}{{ message['content'] + '\\n' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

interface Manifest {
  format: string;
  config: {
    embedding: number;
    layers: number;
    heads: number;
    feed_forward: number;
    context: number;
    rms_eps: number;
    rope_base: number;
  };
  tensors: Array<{ name: string; shape: number[]; offset: number }>;
  step: number;
  tokens_seen: number;
}

export function convert(outPath: string): { path: string; manifest: Manifest } {
  const manifest = JSON.parse(readFileSync(join(CKPT_DIR, 'manifest.json'), 'utf8')) as Manifest;
  if (manifest.format !== CKPT_FORMAT)
    throw new Error(`${CKPT_DIR}: checkpoint format ${manifest.format}, expected ${CKPT_FORMAT}`);
  const weights = readFileSync(join(CKPT_DIR, 'weights.bin'));
  const floats = new Float32Array(weights.buffer, weights.byteOffset, weights.byteLength / 4);
  const c = manifest.config;

  const { kvs } = llamaHeader({
    name: 'infergrid-kjv-demo',
    description:
      `A ${c.layers}x${c.embedding} llama trained by scripts/demo-llm/train.py on the King James Bible ` +
      `(Debian bible-kjv-text, public domain), ${manifest.tokens_seen} tokens seen; see docs/demo-llm.md`,
    f16: true,
    contextLength: c.context,
    embeddingSize: c.embedding,
    layers: c.layers,
    feedForwardSize: c.feed_forward,
    heads: c.heads,
    ropeFreqBase: c.rope_base,
    rmsEpsilon: c.rms_eps,
    vocab: 'llama-spm',
    chatTemplate: DEMO_CHAT_TEMPLATE,
  });

  const tensors: GgufTensor[] = manifest.tensors.map((t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const src = floats.subarray(t.offset / 4, t.offset / 4 + n);
    // numpy shape [rows, cols] is ggml ne [cols, rows]
    const ne = [...t.shape].reverse();
    if (t.shape.length === 1) return { name: t.name, ne, type: GGML_TYPE.F32, data: Float32Array.from(src) };
    const half = new Uint16Array(n);
    for (let i = 0; i < n; i++) half[i] = toHalfBits(src[i]!);
    return { name: t.name, ne, type: GGML_TYPE.F16, data: half };
  });
  mkdirSync(dirname(outPath), { recursive: true });
  writeGguf(outPath, kvs, tensors);
  return { path: outPath, manifest };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { path, manifest } = convert(resolve(process.argv[2] ?? DEFAULT_DEMO_GGUF));
  console.log(`${path}: step ${manifest.step}, ${manifest.tokens_seen} tokens seen`);
}
