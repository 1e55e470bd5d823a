import assert from 'node:assert/strict';
import { test } from 'node:test';
import { routingSchema } from '../../src/config/index.ts';
import { type RoutableWorker, Router } from '../../src/routing/index.ts';
import { PrefixIndex } from '../../src/routing/prefix-index.ts';

const bytes = (text: string): Uint8Array => Buffer.from(text, 'utf8');
const OPTIONS = { blockBytes: 16, maxBlocks: 64, maxEntries: 10_000, ttlMs: 60_000 };

/** Records `text` as held by `workerId`, as the router does after a pick. */
function record(index: PrefixIndex, model: string, text: string, workerId: string): void {
  index.record(index.names(model, bytes(text)), workerId);
}

/** The candidate holding the longest known prefix of `text`, as { workerId, bytes }. */
function lookup(index: PrefixIndex, model: string, text: string, ids: Iterable<string>) {
  const match = index.match(
    index.names(model, bytes(text)),
    [...ids].map((id) => ({ id })),
  );
  return match && { workerId: match.worker.id, bytes: match.bytes };
}

test('prefix index - the longest known prefix names its worker, in whole blocks, per model', () => {
  const index = new PrefixIndex(OPTIONS);
  // 44 bytes; with " Q: " the shared text is 48 bytes: 3 whole blocks
  const system = 'You are a helpful assistant. Answer briefly.';
  const all = ['w1', 'w2'];
  record(index, 'chat@1', `${system} Q: one`, 'w1');
  assert.deepEqual(lookup(index, 'chat@1', `${system} Q: two, a longer one`, all), {
    workerId: 'w1',
    bytes: 48,
  });
  assert.equal(lookup(index, 'chat@1', 'Something else entirely, nothing shared', all), undefined);
  assert.equal(lookup(index, 'other@1', `${system} Q: one`, all), undefined, 'prefixes are per model');
  assert.equal(lookup(index, 'chat@1', 'short', all), undefined, 'less than a block is no prefix');
  // a longer prefix on another worker wins over a shorter one
  record(index, 'chat@1', `${system} Q: two, a longer one`, 'w2');
  assert.equal(lookup(index, 'chat@1', `${system} Q: two, a longer one!!`, all)?.workerId, 'w2');
  // a worker that is no candidate (gone, excluded) does not count: the next longest does
  record(index, 'chat@1', `${system}`, 'w1');
  assert.equal(lookup(index, 'chat@1', `${system} Q: two, a longer one`, ['w1'])?.workerId, 'w1');
  index.forgetWorker('w1');
  assert.equal(lookup(index, 'chat@1', `${system} Q: one`, ['w1']), undefined);
  assert.equal(index.queries, 7);
  assert.equal(index.hits, 3);
});

test('prefix index - stays within maxEntries whatever the number of distinct prompts', () => {
  const index = new PrefixIndex({ blockBytes: 16, maxBlocks: 8, maxEntries: 1000, ttlMs: 60_000 });
  for (let i = 0; i < 200_000; i++)
    record(index, 'm@1', `prompt number ${i} with some padding text`, `w${i % 4}`);
  assert.ok(index.size <= 1000, `size ${index.size}`);
  // the most recent prompts are still known
  assert.equal(lookup(index, 'm@1', 'prompt number 199999 with some padding text', ['w3'])?.workerId, 'w3');
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
  const systems = Array.from({ length: 8 }, (_, s) => `System prompt ${s}: ${'policy text '.repeat(8)}`);
  const owner = new Map<number, string>();
  for (let user = 0; user < 20; user++) {
    // the least loaded worker swaps each round (a gap of 1, far below the balance threshold):
    // a pick that ignored prefixes would follow the loads, not the system prompt
    const workers = [worker('w1', user % 2), worker('w2', 1 - (user % 2))];
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
  assert.ok(s !== undefined, 'some system prompt is held by w1');
  const picked = router.pick('chat@1', config, busy, { prefix: bytes(`${systems[s]} user 99 asks`) })!;
  assert.equal(picked.id, 'w2');
  // without a prompt, prefix-aware is least-connections
  assert.equal(router.pick('chat@1', config, [worker('w1', 3), worker('w2', 1)])!.id, 'w2');
});

test('prefix-aware routing - prompts nobody holds take turns among equally loaded workers', () => {
  const router = new Router({ routing: routingSchema.parse({}), random: () => 0 });
  const workers = [worker('w1'), worker('w2'), worker('w3')];
  const picks = new Map<string, number>();
  for (let s = 0; s < 9; s++) {
    const id = router.pick('chat@1', { strategy: 'prefix-aware' }, workers, {
      prefix: bytes(`A system prompt of its own, number ${s}: ${'x'.repeat(600)}`),
    })!.id;
    picks.set(id, (picks.get(id) ?? 0) + 1);
  }
  assert.deepEqual([...picks.values()], [3, 3, 3], JSON.stringify([...picks]));
});
