import assert from 'node:assert/strict';
import { Agent, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { type OpenStream, runStreams, sseStream, streamFigures } from '../../bench/lib/stream-load.ts';

test('bench stream load - every stream in the window counts its chunks, one TTFT and the gaps', async () => {
  const open: OpenStream = async (_n, _signal, chunk) => {
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setImmediate(r));
      chunk();
    }
    return 4;
  };
  const raw = await runStreams(open, { concurrency: 3, durationMs: 150, warmupMs: 0 });
  assert.equal(raw.errors, 0);
  assert.ok(raw.completed > 0);
  // every stream that completed in the window made 4 tokens; streams cut at its edges add fewer
  assert.ok(raw.tokens >= raw.completed * 4 - 3 * 4, `${raw.tokens} tokens for ${raw.completed} streams`);
  assert.ok(raw.ttftMs.length >= raw.completed - 3);
  assert.ok(raw.itlMs.length >= raw.completed * 3 - 3 * 3);
  const figures = streamFigures([raw, raw]);
  assert.equal(figures.completed, raw.completed * 2);
  assert.equal(figures.outputTokensPerS, Math.round((raw.tokens * 2 * 10) / 0.3) / 10);
});

test('bench stream load - failures count by kind, the abort at the window end does not', async () => {
  let n = 0;
  const open: OpenStream = (_n, signal) =>
    new Promise<number | undefined>((_resolve, reject) => {
      // every other stream fails at once; the others wait for the window's end
      if (n++ % 2 === 0) setImmediate(() => reject(Object.assign(new Error('boom'), { code: 'HTTP 500' })));
      else signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
    });
  const raw = await runStreams(open, { concurrency: 2, durationMs: 50, warmupMs: 0 });
  assert.ok(raw.errors > 0);
  assert.deepEqual(Object.keys(raw.errorKinds), ['HTTP 500']);
  assert.equal(raw.completed, 0);
});

test('bench stream load - the SSE client reads data lines split anywhere, text chunks and usage', async (t) => {
  const events = [
    { choices: [{ text: 'a' }] },
    { choices: [{ text: '' }] },
    { choices: [{ text: 'bc' }] },
    { choices: [], usage: { completion_tokens: 3 } },
  ];
  const body = `${events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('')}data: [DONE]\n\n`;
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    // one byte at a time: every split point of every line
    let i = 0;
    const next = (): void => {
      if (i >= body.length) return void res.end();
      res.write(body[i++], () => setImmediate(next));
    };
    next();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const agent = new Agent({ keepAlive: true });
  t.after(() => agent.destroy());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/completions`;
  let chunks = 0;
  const usage = await sseStream(url, (n) => ({ n }), agent)(0, new AbortController().signal, () => chunks++);
  assert.equal(usage, 3);
  assert.equal(chunks, 2);
});

test('bench stream load - the SSE client rejects a non-200 answer with its status as the kind', async (t) => {
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(429, { 'content-type': 'application/json' });
    res.end('{"error":{"message":"busy"}}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const agent = new Agent();
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  await assert.rejects(
    sseStream(url, () => ({}), agent)(0, new AbortController().signal, () => {}),
    {
      code: 'HTTP 429',
    },
  );
});
