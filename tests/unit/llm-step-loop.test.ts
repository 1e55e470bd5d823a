/**
 * The LLM decode loop against a fake context that records every step's batch: the batch
 * shape (one submission per step, ascending sequence ids, the token budget), admission
 * between steps, cancellation at the step boundary, backpressure without stalling others,
 * prefix reuse, limits.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import {
  type DecodeContext,
  type GenerationJob,
  type StepItem,
  StepLoop,
  type StepLoopOptions,
  type Token,
} from '../../src/llm/index.ts';

/** Sampled token: a function of the position, so runs are predictable. */
const tokenAt = (position: number): Token => 1000 + position;

class FakeContext implements DecodeContext {
  readonly batches: StepItem[][] = [];
  readonly erased: Array<{ sequence: number; start: number }> = [];
  readonly lengths: number[];
  /** Runs inside a step, before it resolves (the step is "in flight"). */
  duringStep: ((step: number) => void | Promise<void>) | undefined;
  eog = new Set<Token>();

  constructor(
    readonly sequences: number,
    readonly contextSize = 1024,
  ) {
    this.lengths = new Array(sequences).fill(0);
  }

  async step(items: readonly StepItem[]): Promise<Array<Token | undefined>> {
    this.batches.push(items.map((i) => ({ ...i, tokens: [...i.tokens] })));
    await this.duringStep?.(this.batches.length);
    return items.map((item) => {
      this.lengths[item.sequence]! += item.tokens.length;
      return item.sample ? tokenAt(this.lengths[item.sequence]!) : undefined;
    });
  }

  async erase(sequence: number, start: number): Promise<void> {
    this.erased.push({ sequence, start });
    this.lengths[sequence] = start;
  }

  isEndOfGeneration(token: Token): boolean {
    return this.eog.has(token);
  }

  /** Indexes of the batches that hold `sequence`. */
  stepsWith(sequence: number): number[] {
    return this.batches.flatMap((b, i) => (b.some((item) => item.sequence === sequence) ? [i] : []));
  }
}

const SAMPLING = { temperature: 0, topP: 1, topK: 0, seed: 7, repeatPenalty: 1 };

function job(prompt: Token[], extra: Partial<GenerationJob> = {}): GenerationJob & { tokens: Token[] } {
  const tokens: Token[] = [];
  return {
    prompt,
    maxTokens: 4,
    minTokens: 0,
    ignoreEos: false,
    sampling: SAMPLING,
    signal: new AbortController().signal,
    onToken: (t) => {
      tokens.push(t);
      return false;
    },
    blocked: () => false,
    tokens,
    ...extra,
  };
}

const range = (from: number, n: number): Token[] => Array.from({ length: n }, (_, i) => from + i);

function loopOf(ctx: FakeContext, options: Partial<StepLoopOptions> = {}): StepLoop {
  return new StepLoop(ctx, { stepTokens: 64, maxQueued: 16, ...options });
}

function assertAscending(ctx: FakeContext): void {
  for (const [i, batch] of ctx.batches.entries()) {
    const ids = batch.map((item) => item.sequence);
    assert.deepEqual(
      ids,
      [...ids].sort((a, b) => a - b),
      `step ${i}: sequence ids ${ids} not ascending`,
    );
    assert.equal(new Set(ids).size, ids.length, `step ${i}: a sequence twice`);
  }
}

test('llm step loop - one submission per step, ascending sequence ids, requests submitted together share the first step', async () => {
  const ctx = new FakeContext(4);
  const loop = loopOf(ctx);
  const results = await Promise.all([
    loop.submit(job(range(1, 5), { maxTokens: 3 })),
    loop.submit(job(range(1, 7), { maxTokens: 5 })),
    loop.submit(job(range(50, 2), { maxTokens: 4 })),
  ]);
  assert.equal(ctx.batches.length, loop.stats.steps);
  assertAscending(ctx);
  assert.deepEqual(
    ctx.batches[0]!.map((i) => [i.sequence, i.tokens.length]),
    [
      [0, 5],
      [1, 7],
      [2, 2],
    ],
  );
  // 5 tokens at most: the prompt step samples the first, then one step per token
  assert.equal(ctx.batches.length, 5);
  assert.deepEqual(
    results.map((r) => [r.finishReason, r.completionTokens, r.promptTokens]),
    [
      ['length', 3, 5],
      ['length', 5, 7],
      ['length', 4, 2],
    ],
  );
});

test('llm step loop - a request submitted while a step runs starts at the next step', async () => {
  const ctx = new FakeContext(4);
  const loop = loopOf(ctx);
  let late: Promise<unknown> | undefined;
  ctx.duringStep = (step) => {
    if (step === 3) late = loop.submit(job(range(200, 3), { maxTokens: 2 }));
  };
  const first = loop.submit(job(range(1, 4), { maxTokens: 8 }));
  await first;
  await late;
  assertAscending(ctx);
  // joined at step 4 (index 3), running alongside the first request, not after it
  assert.deepEqual(ctx.stepsWith(1), [3, 4]);
  assert.ok(ctx.stepsWith(0).includes(3) && ctx.stepsWith(0).includes(4));
});

test('llm step loop - a long prompt is prefilled in chunks within the step budget while other streams keep decoding', async () => {
  const ctx = new FakeContext(3);
  const loop = loopOf(ctx, { stepTokens: 8 });
  let long: Promise<unknown> | undefined;
  ctx.duringStep = (step) => {
    if (step === 2) long = loop.submit(job(range(300, 30), { maxTokens: 2 }));
  };
  const a = loop.submit(job(range(1, 2), { maxTokens: 12 }));
  const b = loop.submit(job(range(10, 2), { maxTokens: 12 }));
  await Promise.all([a, b]);
  await long;
  assertAscending(ctx);
  for (const [i, batch] of ctx.batches.entries()) {
    const total = batch.reduce((n, item) => n + item.tokens.length, 0);
    assert.ok(total <= 8, `step ${i} holds ${total} tokens, over the budget of 8`);
  }
  // the running streams decode in every step from their first until they finish: never displaced
  const stepsA = ctx.stepsWith(0);
  assert.deepEqual(stepsA, range(0, 12));
  const prefill = ctx.batches.flatMap((b) => b.filter((i) => i.sequence === 2 && i.sample === undefined));
  assert.ok(prefill.length >= 4, `30 prompt tokens in chunks of at most 6: got ${prefill.length} chunks`);
  for (const chunk of prefill) assert.ok(chunk.tokens.length <= 6);
  // the chunks are the prompt, in order
  const withSample = ctx.batches.flatMap((b) => b.filter((i) => i.sequence === 2)).map((i) => i.tokens);
  assert.deepEqual(withSample.flat().slice(0, 30), range(300, 30));
});

test('llm step loop - prefill chunks go to the oldest prompt first, at most prefillChunk each', async () => {
  const ctx = new FakeContext(2);
  const loop = loopOf(ctx, { stepTokens: 10, prefillChunk: 6 });
  await Promise.all([
    loop.submit(job(range(1, 14), { maxTokens: 1 })),
    loop.submit(job(range(100, 14), { maxTokens: 1 })),
  ]);
  assert.deepEqual(
    ctx.batches.map((b) => b.map((i) => [i.sequence, i.tokens.length])),
    [
      [
        [0, 6],
        [1, 4],
      ],
      [
        [0, 6],
        [1, 4],
      ],
      [
        [0, 2],
        [1, 6],
      ],
    ],
  );
});

test('llm step loop - a request cancelled mid-stream is in no step after the cancel, and its sequence serves the next request', async () => {
  const ctx = new FakeContext(1);
  const loop = loopOf(ctx);
  const abort = new AbortController();
  const cancelled = job(range(1, 3), { maxTokens: 50, signal: abort.signal });
  cancelled.onToken = (t) => {
    cancelled.tokens.push(t);
    if (cancelled.tokens.length === 3) abort.abort(new InfergridError('CANCELLED', 'client went away'));
    return false;
  };
  await assert.rejects(loop.submit(cancelled), (e: unknown) => (e as InfergridError).code === 'CANCELLED');
  assert.equal(cancelled.tokens.length, 3);
  assert.equal(ctx.batches.length, 3, 'no step after the one whose token was the third');
  const next = await loop.submit(job(range(1, 3), { maxTokens: 2 }));
  assert.equal(next.sequence, 0);
  assert.equal(next.finishReason, 'length');
});

test('llm step loop - a cancel during a step discards that step token', async () => {
  const ctx = new FakeContext(2);
  const loop = loopOf(ctx);
  const abort = new AbortController();
  const victim = job(range(1, 3), { maxTokens: 50, signal: abort.signal });
  ctx.duringStep = (step) => {
    if (step === 4) abort.abort();
  };
  const other = loop.submit(job(range(9, 3), { maxTokens: 8 }));
  await assert.rejects(loop.submit(victim));
  assert.equal(victim.tokens.length, 3, 'tokens of steps 1-3 only');
  assert.deepEqual(ctx.stepsWith(1), [0, 1, 2, 3]);
  assert.equal((await other).completionTokens, 8);
});

test('llm step loop - a request cancelled while queued is rejected without a sequence', async () => {
  const ctx = new FakeContext(1);
  const loop = loopOf(ctx);
  const abort = new AbortController();
  const running = loop.submit(job(range(1, 2), { maxTokens: 3 }));
  const queued = loop.submit(job(range(1, 2), { signal: abort.signal }));
  abort.abort();
  await assert.rejects(queued);
  await running;
  assert.equal(loop.waiting, 0);
  assert.equal(ctx.stepsWith(0).length, 3);
});

test('llm step loop - a slow reader sits out steps without stalling the other streams', async () => {
  const ctx = new FakeContext(2);
  const loop = loopOf(ctx);
  let behind = false;
  const slow = job(range(1, 2), { maxTokens: 6, blocked: () => behind });
  slow.onToken = (t) => {
    slow.tokens.push(t);
    if (slow.tokens.length === 2) behind = true;
    return false;
  };
  const slowDone = loop.submit(slow);
  const fast = await loop.submit(job(range(5, 2), { maxTokens: 20 }));
  assert.equal(fast.completionTokens, 20);
  assert.equal(slow.tokens.length, 2, 'the slow request made no token while its reader was behind');
  behind = false;
  loop.wake();
  const done = await slowDone;
  assert.equal(done.completionTokens, 6);
  assertAscending(ctx);
});

test('llm step loop - a new request takes the free sequence sharing its longest prefix and evaluates only the suffix', async () => {
  const ctx = new FakeContext(3);
  const loop = loopOf(ctx);
  const system = range(1, 20);
  await Promise.all([
    loop.submit(job([...range(500, 10)], { maxTokens: 2 })),
    loop.submit(job([...system, 77], { maxTokens: 2 })),
    loop.submit(job([...range(600, 5)], { maxTokens: 2 })),
  ]);
  const stepsBefore = ctx.batches.length;
  const reuse = await loop.submit(job([...system, 88, 89], { maxTokens: 1 }));
  assert.equal(reuse.sequence, 1);
  assert.equal(reuse.cachedTokens, 20);
  assert.deepEqual(ctx.batches[stepsBefore]![0]!.tokens, [88, 89], 'only the new suffix is evaluated');
  assert.deepEqual(ctx.erased.at(-1), { sequence: 1, start: 20 });
  // the same prompt again: all but its last token come from the cache (logits need one)
  const same = await loop.submit(job([...system, 88, 89], { maxTokens: 1 }));
  assert.equal(same.cachedTokens, 21);
  assert.deepEqual(ctx.batches.at(-1)![0]!.tokens, [89]);
  assert.equal(loop.stats.prefixHits, 2);
});

test('llm step loop - a prompt no cache matches takes an empty, else the least recently used sequence, not one holding another prefix', async () => {
  // every prompt starts with the same 2 tokens (as BOS and a first word piece do): that alone
  // must not make a request overwrite the cache of a system prompt another request could reuse
  const ctx = new FakeContext(3);
  const loop = loopOf(ctx);
  const head = [1, 2];
  const a = [...head, ...range(100, 30)];
  const b = [...head, ...range(200, 30)];
  const c = [...head, ...range(300, 30)];
  const run = async (system: Token[], user: Token) =>
    (await loop.submit(job([...system, user], { maxTokens: 2 }))).sequence;
  const first = await run(a, 7);
  const second = await run(b, 7);
  assert.notEqual(second, first, "B takes an empty sequence rather than A's");
  assert.equal(await run(a, 8), first, 'A goes back to its cache');
  assert.equal(await run(b, 8), second);
  const third = await run(c, 7);
  assert.notEqual(third, first);
  assert.notEqual(third, second);
  // all full now: D overwrites the least recently used cache (A's was used before B's and C's)
  assert.equal(await run([...head, ...range(400, 30)], 7), first);
  assert.equal(await run(b, 9), second, "B's cache survived");
  assert.equal(loop.stats.prefixHits, 3, 'A, B and B again matched; the shared head alone is no hit');
});

test('llm step loop - with prefixReuse off a request evaluates its whole prompt, whatever its sequence holds', async () => {
  // one sequence: the second request lands where the first left the shared prefix
  const ctx = new FakeContext(1);
  const loop = loopOf(ctx, { prefixReuse: false });
  const system = range(1, 20);
  await loop.submit(job([...system, 77], { maxTokens: 2 }));
  const stepsBefore = ctx.batches.length;
  const again = await loop.submit(job([...system, 88, 89], { maxTokens: 1 }));
  assert.equal(again.cachedTokens, 0);
  assert.deepEqual(
    ctx.batches[stepsBefore]![0]!.tokens,
    [...system, 88, 89],
    'the whole prompt is evaluated',
  );
  assert.deepEqual(ctx.erased.at(-1), { sequence: 0, start: 0 }, 'the old cache is erased');
  assert.equal(loop.stats.prefixHits, 0);
  assert.equal(loop.stats.promptTokensCached, 0);
  assert.equal(loop.stats.promptTokensEvaluated, 21 + 22);
});

test('llm step loop - limits: queue full is OVERLOADED, a prompt the context cannot hold is INVALID_ARGUMENT', async () => {
  const ctx = new FakeContext(1, 16);
  const loop = loopOf(ctx, { stepTokens: 8, maxQueued: 1 });
  const running = loop.submit(job(range(1, 2), { maxTokens: 3 }));
  const queued = loop.submit(job(range(1, 2), { maxTokens: 3 }));
  await assert.rejects(loop.submit(job(range(1, 2))), (e: unknown) => {
    assert.ok(e instanceof InfergridError);
    assert.equal(e.code, 'OVERLOADED');
    assert.match(e.message, /maxQueued/);
    return true;
  });
  await assert.rejects(
    loop.submit(job(range(1, 16))),
    (e: unknown) => (e as InfergridError).code === 'INVALID_ARGUMENT',
  );
  await Promise.all([running, queued]);
});

test('llm step loop - a full context ends the request with length, never hangs', async () => {
  const ctx = new FakeContext(1, 8);
  const loop = loopOf(ctx, { stepTokens: 8 });
  const r = await loop.submit(job(range(1, 5), { maxTokens: 100 }));
  assert.equal(r.finishReason, 'length');
  assert.equal(r.completionTokens, 3, '5 prompt + 3 completion tokens are the 8 the context holds');
  assert.ok(loop.cachedTokens(0).length <= 8);
});

test('llm step loop - end of generation stops, unless ignore_eos or min_tokens bans it', async () => {
  const ctx = new FakeContext(1);
  ctx.eog.add(tokenAt(4)); // the first sampled token after a 4-token prompt
  const loop = loopOf(ctx);
  const stopped = await loop.submit(job(range(1, 4), { maxTokens: 10 }));
  assert.deepEqual([stopped.finishReason, stopped.completionTokens], ['stop', 0]);
  const ignoring = await loop.submit(job(range(900, 4), { maxTokens: 3, ignoreEos: true }));
  assert.deepEqual([ignoring.finishReason, ignoring.completionTokens], ['length', 3]);
  assert.equal(ctx.batches.at(-3)![0]!.sample?.banEndOfGeneration, true);
  const min = job(range(700, 4), { maxTokens: 5, minTokens: 2 });
  await loop.submit(min);
  const bans = ctx.batches.slice(-5).map((b) => b[0]!.sample?.banEndOfGeneration);
  assert.deepEqual(bans, [true, true, false, false, false]);
});

test('llm step loop - seeds advance with the position; the repeat penalty sees recent tokens', async () => {
  const ctx = new FakeContext(1);
  const loop = loopOf(ctx);
  await loop.submit(
    job(range(1, 3), { maxTokens: 3, sampling: { ...SAMPLING, seed: 10, repeatPenalty: 1.3 } }),
  );
  const seeds = ctx.batches.map((b) => b[0]!.sample?.seed);
  assert.deepEqual(seeds, [13, 14, 15]);
  assert.deepEqual(ctx.batches[1]![0]!.sample?.penaltyTokens, [1, 2, 3, tokenAt(3)]);
  await loop.submit(job(range(1, 3), { maxTokens: 1 }));
  assert.deepEqual(ctx.batches.at(-1)![0]!.sample?.penaltyTokens, [], 'off when repeat_penalty is 1');
});

test('llm step loop - a failed decode rejects the step requests with BACKEND_ERROR and clears their sequences', async () => {
  const ctx = new FakeContext(2);
  const loop = loopOf(ctx);
  ctx.duringStep = (step) => {
    if (step === 2) throw new Error('llama_decode failed');
  };
  const results = await Promise.allSettled([
    loop.submit(job(range(1, 3), { maxTokens: 5 })),
    loop.submit(job(range(1, 3), { maxTokens: 5 })),
  ]);
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.equal((r.reason as InfergridError).code, 'BACKEND_ERROR');
  }
  assert.equal(loop.cachedTokens(0).length, 0);
  ctx.duringStep = undefined;
  assert.equal((await loop.submit(job(range(1, 3), { maxTokens: 2 }))).cachedTokens, 0);
});

test('llm step loop - options are checked', () => {
  const ctx = new FakeContext(4);
  assert.throws(() => new StepLoop(ctx, { stepTokens: 3, maxQueued: 1 }), /stepTokens/);
  assert.throws(() => new StepLoop(ctx, { stepTokens: 8, prefillChunk: 0, maxQueued: 1 }), /prefillChunk/);
  assert.throws(() => new StepLoop(ctx, { stepTokens: 8, maxQueued: -1 }), /maxQueued/);
});

test('llm step loop - close rejects waiting and running requests; idle resolves once the step in flight ends', async () => {
  const ctx = new FakeContext(1);
  const loop = loopOf(ctx);
  let finishStep: (() => void) | undefined;
  let stepStarted: (() => void) | undefined;
  const started = new Promise<void>((resolve) => {
    stepStarted = resolve;
  });
  ctx.duringStep = () =>
    new Promise<void>((resolve) => {
      finishStep = resolve;
      stepStarted!();
    });
  const running = loop.submit(job(range(1, 2), { maxTokens: 5 }));
  const queued = loop.submit(job(range(1, 2), { maxTokens: 5 }));
  await started;
  const reason = new InfergridError('MODEL_NOT_READY', 'unloading');
  loop.close(reason);
  await assert.rejects(running, reason);
  await assert.rejects(queued, reason);
  let idle = false;
  const idled = loop.idle().then(() => {
    idle = true;
  });
  await Promise.resolve();
  assert.equal(idle, false, 'a step is still in flight');
  finishStep!();
  await idled;
  assert.equal(ctx.batches.length, 1);
  await assert.rejects(loop.submit(job(range(1, 2))), reason);
});
