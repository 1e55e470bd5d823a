/**
 * The prefix-aware router's state under a flood of distinct prompts: after `prompts` distinct
 * prompts (1,000,000 by default, each about `prompt-bytes` long), how many entries and how much
 * heap it holds (bounded by routing.prefix.maxEntries, whatever the traffic), and what a pick's
 * lookup and record cost. The baseline in the same run is the same loop hashing the prompts
 * without an index (what any prefix-aware router must do: read the prompt).
 *
 *   npm run bench -- prefix-index --prompts 1000000
 */

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { routingSchema } from '../../src/config/index.ts';
import { PrefixIndex } from '../../src/routing/prefix-index.ts';
import { type Charts, cell, table } from '../lib/markdown.ts';
import { runIfMain, type Scenario } from '../lib/scenario.ts';

const PARAMS = {
  prompts: '1000000',
  'prompt-bytes': '600',
  /** Heap is sampled every this many prompts. */
  'sample-every': '100000',
};
type PrefixIndexParams = typeof PARAMS;

interface Sample {
  prompts: number;
  entries: number;
  heapMiB: number;
}

export interface PrefixIndexResult {
  maxEntries: number;
  blockBytes: number;
  samples: Sample[];
  /** Lookup plus record per prompt, and the hashing-only baseline, ns. */
  nsPerPrompt: number;
  baselineNsPerPrompt: number;
  hits: number;
}

// a full collection before each reading, so the figure is what the index keeps, not garbage
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapMiB = (): number => {
  gc();
  return Math.round((process.memoryUsage().heapUsed / 2 ** 20) * 10) / 10;
};

function promptBytes(i: number, length: number): Uint8Array {
  const head = `user ${i} asks: `;
  return Buffer.from(head.padEnd(length, 'lorem ipsum dolor sit amet '.repeat(1 + Math.ceil(length / 27))));
}

async function run(params: PrefixIndexParams): Promise<PrefixIndexResult> {
  const prompts = Number(params.prompts);
  const length = Number(params['prompt-bytes']);
  const every = Number(params['sample-every']);
  const options = routingSchema.parse({}).prefix;
  const index = new PrefixIndex(options);
  const candidates = [{ id: 'w1' }, { id: 'w2' }];
  const samples: Sample[] = [{ prompts: 0, entries: 0, heapMiB: heapMiB() }];
  let baseline = 0;
  const t0 = performance.now();
  for (let i = 0; i < prompts; i++) {
    const prompt = promptBytes(i, length);
    // what a pick does: the names once, a lookup, a record
    const names = index.names('chat@1', prompt);
    index.match(names, candidates);
    index.record(names, i % 2 === 0 ? 'w1' : 'w2');
    if ((i + 1) % every === 0) samples.push({ prompts: i + 1, entries: index.size, heapMiB: heapMiB() });
  }
  const indexed = performance.now() - t0;
  // the baseline: the same prompts made and read once (a byte sum), no index
  const t1 = performance.now();
  for (let i = 0; i < prompts; i++) {
    const prompt = promptBytes(i, length);
    for (let b = 0; b < prompt.length; b += 64) baseline += prompt[b]!;
  }
  const bare = performance.now() - t1;
  if (baseline < 0) throw new Error('unreachable');
  return {
    maxEntries: options.maxEntries,
    blockBytes: options.blockBytes,
    samples,
    nsPerPrompt: Math.round((indexed * 1e6) / prompts),
    baselineNsPerPrompt: Math.round((bare * 1e6) / prompts),
    hits: index.hits,
  };
}

function section(r: PrefixIndexResult, _charts: Charts): string[] {
  const last = r.samples.at(-1)!;
  return [
    `After ${last.prompts.toLocaleString('en-US')} distinct prompts the index holds ${last.entries.toLocaleString('en-US')} entries (cap routing.prefix.maxEntries = ${r.maxEntries.toLocaleString('en-US')}; ${r.blockBytes}-byte blocks). A lookup and a record cost ${cell(r.nsPerPrompt / 1000, 2)} µs per prompt, against ${cell(r.baselineNsPerPrompt / 1000, 2)} µs to make and read the prompt alone; ${r.hits} lookups found a prefix (the prompts share none by construction).`,
    '',
    ...table(
      ['prompts', 'entries', 'heap used after a full GC, MiB'],
      r.samples.map((s) => [
        s.prompts.toLocaleString('en-US'),
        s.entries.toLocaleString('en-US'),
        cell(s.heapMiB, 1),
      ]),
    ),
    '',
  ];
}

export const prefixIndex: Scenario<PrefixIndexResult, PrefixIndexParams> = {
  name: 'prefix-index',
  title: 'Prefix-aware routing: the router state under distinct prompts',
  params: PARAMS,
  quick: { prompts: '20000', 'sample-every': '5000' },
  run,
  section,
};

await runIfMain(import.meta.url, prefixIndex);
