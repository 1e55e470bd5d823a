import assert from 'node:assert/strict';
import { test } from 'node:test';
import { routingSchema } from '../../src/config/index.ts';
import { type RoutableWorker, Router } from '../../src/routing/index.ts';
import { PrefixIndex } from '../../src/routing/prefix-index.ts';

const bytes = (text: string): Uint8Array => Buffer.from(text, 'utf8');
const OPTIONS = { blockBytes: 16, maxBlocks: 64, maxEntries: 10_000, ttlMs: 60_000 };

test('prefix index - the longest known prefix names its worker, in whole blocks, per model', () => {
  const index = new PrefixIndex(OPTIONS);
  // 44 bytes; with " Q: " the shared text is 48 bytes: 3 whole blocks
  const system = 'You are a helpful assistant. Answer briefly.';
  const all = new Set(['w1', 'w2']);
  index.record('chat@1', bytes(`${system} Q: one`), 'w1');
  assert.deepEqual(index.lookup('chat@1', bytes(`${system} Q: two, a longer one`), all), {
    workerId: 'w1',
    bytes: 48,
  });
  assert.equal(index.lookup('chat@1', bytes('Something else entirely, nothing shared'), all), undefined);
  assert.equal(index.lookup('other@1', bytes(`${system} Q: one`), all), undefined, 'prefixes are per model');
  assert.equal(index.lookup('chat@1', bytes('short'), all), undefined, 'less than a block is no prefix');
  // a longer prefix on another worker wins over a shorter one
  index.record('chat@1', bytes(`${system} Q: two, a longer one`), 'w2');
  assert.equal(index.lookup('chat@1', bytes(`${system} Q: two, a longer one!!`), all)?.workerId, 'w2');
  // a worker that is no candidate (gone, excluded) does not count: the next longest does
  index.record('chat@1', bytes(`${system}`), 'w1');
  assert.equal(
    index.lookup('chat@1', bytes(`${system} Q: two, a longer one`), new Set(['w1']))?.workerId,
    'w1',
  );
  index.forgetWorker('w1');
  assert.equal(index.lookup('chat@1', bytes(`${system} Q: one`), new Set(['w1'])), undefined);
  assert.equal(index.queries, 7);
  assert.equal(index.hits, 3);
});

test('prefix index - stays within maxEntries whatever the number of distinct prompts', () => {
  const index = new PrefixIndex({ blockBytes: 16, maxBlocks: 8, maxEntries: 1000, ttlMs: 60_000 });
  for (let i = 0; i < 200_000; i++)
    index.record('m@1', bytes(`prompt number ${i} with some padding text`), `w${i % 4}`);
  assert.ok(index.size <= 1000, `size ${index.size}`);
  // the most recent prompts are still known
  assert.equal(
    index.lookup('m@1', bytes('prompt number 199999 with some padding text'), new Set(['w3']))?.workerId,
    'w3',
  );
});

function worker(id: string, inFlight = 0): RoutableWorker {
  return { id, inFlight, weight: 1, draining: false, connected: true, health: 'healthy' };
}

test('prefix-aware routing - requests sharing a system prompt stick to one worker, unless loads are far apart', () => {
  const routing = routingSchema.parse({
    prefix: { blockBytes: 32, balanceAbsThreshold: 4, balanceRatio: 1.5 },
  });
  const router = new Router({ routing, random: () => 0 });
  const config = { strategy: 'prefix-aware' as const };
  const workers = [worker('w1'), worker('w2')];
  const systems = Array.from({ length: 8 }, (_, s) => `System prompt ${s}: ${'policy text '.repeat(8)}`);
  const owner = new Map<number, string>();
  for (let user = 0; user < 20; user++) {
    for (const [s, system] of systems.entries()) {
      const picked = router.pick('chat@1', config, workers, {
        prefix: bytes(`${system} user ${user} asks`),
      })!;
      if (!owner.has(s)) owner.set(s, picked.id);
      assert.equal(picked.id, owner.get(s), `system prompt ${s}, user ${user}`);
    }
  }
  assert.ok(router.prefixes.hits >= 8 * 19, `hits ${router.prefixes.hits}`);
  // w1 far busier than w2: balance first, whatever w1 holds
  const busy = [worker('w1', 40), worker('w2', 2)];
  const s = [...owner.entries()].find(([, w]) => w === 'w1')?.[0];
  if (s !== undefined) {
    const picked = router.pick('chat@1', config, busy, { prefix: bytes(`${systems[s]} user 99 asks`) })!;
    assert.equal(picked.id, 'w2');
  }
  // without a prompt, prefix-aware is least-connections
  assert.equal(router.pick('chat@1', config, [worker('w1', 3), worker('w2', 1)])!.id, 'w2');
});
