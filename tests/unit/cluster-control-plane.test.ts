/**
 * The shared control plane against a real Redis (a unique key namespace per test): records are
 * applied in seq order, concurrent writers converge on the highest seq everywhere, a reader
 * started later converges from the full re-read, malformed and oversized records (and feed
 * messages) are skipped without harm, and with Redis unreachable a change still applies locally
 * and is published once Redis answers again (through a TCP proxy the test closes and reopens).
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { type TestContext, test } from 'node:test';
import { Redis } from 'ioredis';
import {
  CONTROL_PREFIX,
  ControlPlane,
  type ControlPlaneOptions,
  type ControlRecord,
  controlField,
  redactUrl,
} from '../../src/cluster/index.ts';
import type { ControlKind, ControlOp } from '../../src/coordinator/index.ts';
import { silentLogger } from '../../src/telemetry/index.ts';
import { waitFor } from '../fixtures/processes.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';

/** A namespace of its own, its keys deleted after the test. */
function namespace(t: TestContext): string {
  const ns = `test-${randomUUID()}:`;
  t.after(async () => {
    const redis = new Redis(REDIS_URL);
    await redis.del(`${ns}${CONTROL_PREFIX}`, `${ns}${CONTROL_PREFIX}:seq`);
    redis.disconnect();
  });
  return ns;
}

function rawClient(t: TestContext): Redis {
  const redis = new Redis(REDIS_URL);
  t.after(() => redis.disconnect());
  return redis;
}

/**
 * A stand-in coordinator: its state per field is the payload of the last change applied to it,
 * its own (made through `change`, applied locally first as the coordinator does) or another's
 * (through the applier). Every applied record is remembered in order.
 */
interface Member {
  plane: ControlPlane;
  state: Map<string, Record<string, unknown>>;
  applied: ControlRecord[];
  change(kind: ControlKind, target: string, op: ControlOp, payload: Record<string, unknown>): void;
}

async function member(
  t: TestContext,
  ns: string,
  overrides: Partial<ControlPlaneOptions> = {},
  options: { start?: boolean; url?: string } = {},
): Promise<Member> {
  const state = new Map<string, Record<string, unknown>>();
  const applied: ControlRecord[] = [];
  const plane = new ControlPlane({
    redis: { url: options.url ?? REDIS_URL, namespace: ns, connectTimeoutMs: 1000, commandTimeoutMs: 1000 },
    reconcileIntervalMs: 60_000,
    applier: {
      async apply(record) {
        applied.push(record);
        state.set(controlField(record.kind, record.target), record.payload);
      },
    },
    logger: silentLogger(),
    writeRetryInitialDelayMs: 20,
    writeRetryMaxDelayMs: 200,
    ...overrides,
  });
  t.after(() => plane.stop());
  if (options.start !== false) await plane.start();
  return {
    plane,
    state,
    applied,
    change(kind, target, op, payload) {
      const entry = plane.begin(kind, target);
      state.set(controlField(kind, target), payload);
      entry.commit(op, payload);
    },
  };
}

async function stored(redis: Redis, ns: string, field: string): Promise<ControlRecord | undefined> {
  const value = await redis.hget(`${ns}${CONTROL_PREFIX}`, field);
  return value ? (JSON.parse(value) as ControlRecord) : undefined;
}

function record(seq: number, kind: ControlKind, target: string, op: ControlOp, payload = {}): string {
  return JSON.stringify({ seq, kind, target, op, payload, by: 'elsewhere', at: Date.now() });
}

test('control plane - records of one field are applied in seq order and the reader ends on the latest', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const a = await member(t, ns);
  const b = await member(t, ns);
  const field = controlField('repository', 'm');
  for (let i = 0; i < 20; i++) a.change('repository', 'm', i % 2 ? 'unload' : 'load', { i });
  a.change('traffic', 'm', 'set', { split: { '1': 100 } });
  const last = await waitFor('the last write stored', async () => {
    const r = await stored(redis, ns, field);
    return r?.payload.i === 19 ? r : undefined;
  });
  await waitFor('b applied the latest record', () => b.plane.appliedSeq('repository', 'm') === last.seq);
  assert.deepEqual(b.state.get(field), { i: 19 });
  assert.equal(last.op, 'unload');
  assert.equal(last.by, a.plane.instanceId);
  const seqs = b.applied.filter((r) => r.kind === 'repository').map((r) => r.seq);
  assert.deepEqual(
    seqs,
    [...seqs].sort((x, y) => x - y),
    'never an older record after a newer one',
  );
  assert.equal(new Set(seqs).size, seqs.length, 'no record applied twice');
  // a's own writes are not applied to a again
  assert.equal(a.applied.length, 0);
  await waitFor('b applied the split', () => b.state.get(controlField('traffic', 'm')));
  assert.equal(b.plane.stats.applied.traffic, 1);
});

test('control plane - concurrent writers of one field: the highest seq is kept and every member converges to it', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const members = await Promise.all([0, 1, 2, 3].map(() => member(t, ns)));
  const field = controlField('traffic', 'm');
  for (let round = 0; round < 10; round++)
    for (const [i, m] of members.entries())
      m.change('traffic', 'm', 'set', { split: { [String(i)]: round } });
  await waitFor('every write landed', () =>
    members.every((m) => m.plane.stats.written === 10 && m.plane.stats.pendingWrites === 0),
  );
  const kept = (await stored(redis, ns, field))!;
  assert.equal(
    kept.seq,
    Number(await redis.get(`${ns}${CONTROL_PREFIX}:seq`)),
    'the highest seq taken is kept',
  );
  await waitFor('every member on the kept record', async () => {
    await Promise.all(members.map((m) => m.plane.reconcile()));
    return members.every((m) => m.plane.appliedSeq('traffic', 'm') === kept.seq);
  });
  for (const m of members) assert.deepEqual(m.state.get(field), kept.payload);
});

test('control plane - a write whose seq is lower than the stored one is not stored (the later committed write wins)', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const field = controlField('repository', 'm');
  const a = await member(t, ns);
  // another writer took seq 100 and committed first (a has not seen it); this one's INCR gives 1
  await redis.hset(`${ns}${CONTROL_PREFIX}`, field, record(100, 'repository', 'm', 'unload'));
  a.change('repository', 'm', 'load', { configs: [] });
  await waitFor('the write ran', () => a.plane.stats.written === 1);
  const kept = (await stored(redis, ns, field))!;
  assert.equal(kept.seq, 100);
  assert.equal(kept.op, 'unload');
  // a converges on the record that stayed
  await a.plane.reconcile();
  assert.equal(a.plane.appliedSeq('repository', 'm'), 100);
  assert.deepEqual(a.state.get(field), {});
});

test('control plane - a record from elsewhere is held back while a change of its field is being made here', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const a = await member(t, ns);
  const b = await member(t, ns);
  const field = controlField('repository', 'm');
  // a's operator starts an unload (applied here, not yet committed: a load runs long)
  const entry = a.plane.begin('repository', 'm');
  a.state.set(field, { mine: true });
  // meanwhile b loads it, and its record lands first
  b.change('repository', 'm', 'load', { configs: ['b'] });
  await waitFor('b wrote', () => b.plane.stats.written === 1);
  await a.plane.reconcile();
  assert.equal(a.applied.length, 0, "held back: a's own change is still being made");
  assert.deepEqual(a.state.get(field), { mine: true });
  // a's change is committed after b's: it is the later committed write, and wins everywhere
  entry.commit('unload', { mine: true });
  await waitFor('a wrote', () => a.plane.stats.written === 1);
  const kept = (await stored(redis, ns, field))!;
  assert.equal(kept.by, a.plane.instanceId);
  await waitFor('b on the kept record', () => b.plane.appliedSeq('repository', 'm') === kept.seq);
  assert.deepEqual(b.state.get(field), { mine: true });
  await a.plane.reconcile();
  assert.equal(a.applied.length, 0, "b's older record was never applied over a's newer change");
  assert.deepEqual(a.state.get(field), { mine: true });
});

test('control plane - a member started after the changes converges from the full re-read', async (t) => {
  const ns = namespace(t);
  const a = await member(t, ns);
  a.change('repository', 'm1', 'load', { configs: [{ name: 'm1' }] });
  a.change('repository', 'm2', 'unload', {});
  a.change('traffic', 'm1', 'set', { split: { '2': 10, '1': 90 } });
  a.change('removal', 'w1', 'remove', { timeoutMs: 5 });
  a.change('removal', 'w1', 'readmit', {});
  await waitFor('the writes landed', () => a.plane.stats.written === 5);
  const late = await member(t, ns);
  // start() resolves once the re-read's records are applied: no waiting
  assert.equal(late.applied.length, 4, 'one record per field, the latest');
  assert.deepEqual(
    late.applied.map((r) => r.kind),
    ['repository', 'repository', 'traffic', 'removal'],
    'repository records first (a split names versions a load declares)',
  );
  assert.deepEqual(late.state, a.state);
  assert.equal(late.applied.find((r) => r.kind === 'removal')?.op, 'readmit');
});

test('control plane - malformed, oversized and misfiled records are skipped, and the feed survives bad messages', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const hash = `${ns}${CONTROL_PREFIX}`;
  await redis.hset(hash, {
    'repository:a': 'not json',
    'repository:b': JSON.stringify({ seq: 1, kind: 'repository', target: 'b' }),
    'repository:c': record(2, 'repository', 'elsewhere', 'load'),
    'traffic:d': record(3, 'traffic', 'd', 'load'),
    'repository:e': record(4, 'repository', 'e', 'load', { configs: ['x'.repeat(5000)] }),
    'removal:f': record(5, 'removal', 'f', 'remove', { timeoutMs: 1 }),
    'repository:g': JSON.stringify(['an', 'array']),
  });
  const a = await member(t, ns, { maxRecordBytes: 2048 });
  assert.deepEqual(
    a.applied.map((r) => `${r.kind}:${r.target}`),
    ['removal:f'],
    'only the well-formed record applies',
  );
  assert.equal(a.plane.stats.skipped, 6);
  // bad feed messages: too long, not JSON, wrong shape, a field holding garbage
  await redis.publish(`${hash}:feed`, 'x'.repeat(5000));
  await redis.publish(`${hash}:feed`, '{');
  await redis.publish(`${hash}:feed`, JSON.stringify({ field: 'repository:a', seq: 'nine' }));
  await redis.publish(`${hash}:feed`, JSON.stringify({ field: 'repository:a', seq: 9 }));
  await redis.publish(`${hash}:feed`, JSON.stringify({ field: 'repository:e', seq: 9 }));
  // then a good one, written by another member: still followed
  const b = await member(t, ns);
  b.change('traffic', 'm', 'set', { split: { '1': 100 } });
  await waitFor('the good record arrived', () => a.state.get(controlField('traffic', 'm')));
  assert.equal(a.plane.stats.skipped, 6 + 5);
});

test('control plane - a full re-read takes at most maxRecords records', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const hash = `${ns}${CONTROL_PREFIX}`;
  for (let i = 1; i <= 10; i++)
    await redis.hset(hash, `removal:w${i}`, record(i, 'removal', `w${i}`, 'readmit'));
  const a = await member(t, ns, { maxRecords: 4 });
  assert.equal(a.applied.length, 4);
  assert.equal(a.plane.stats.skipped, 1, 'the truncation is counted');
  // a writer that deletes and writes new fields cannot grow what a holds past maxRecords fields
  await redis.del(hash);
  for (let i = 11; i <= 14; i++)
    await redis.hset(hash, `removal:w${i}`, record(i, 'removal', `w${i}`, 'readmit'));
  await a.plane.reconcile();
  assert.equal(a.applied.length, 4, 'no record of a fifth field applied');
  assert.ok(a.plane.stats.skipped >= 5, `skipped ${a.plane.stats.skipped}`);
});

/** A TCP proxy to Redis that the test can take down and bring back on the same port. */
async function redisProxy(t: TestContext) {
  let server: Server | undefined;
  const sockets = new Set<Socket>();
  let port = 0;
  const up = () =>
    new Promise<void>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = connect(6379, '127.0.0.1');
        sockets.add(client).add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream).pipe(client);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        port = (s.address() as { port: number }).port;
        server = s;
        resolve();
      });
    });
  const down = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (!server) return resolve();
      server.close(() => resolve());
      server = undefined;
    });
  t.after(down);
  await up();
  return { url: () => `redis://127.0.0.1:${port}`, up, down };
}

test('control plane - with Redis unreachable a change applies locally, is kept, and is published once Redis is back', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const proxy = await redisProxy(t);
  const a = await member(t, ns, {}, { url: proxy.url() });
  const b = await member(t, ns);
  await proxy.down();
  const field = controlField('repository', 'm');
  a.change('repository', 'm', 'unload', {});
  // applied here at once, whatever Redis does
  assert.deepEqual(a.state.get(field), {});
  await waitFor('the write is kept', () => a.plane.stats.pendingWrites === 1);
  assert.ok(a.plane.stats.writeFailures >= 1);
  assert.equal(await stored(redis, ns, field), undefined, 'nothing reached Redis');
  // b changes the field meanwhile: a's kept change commits later, so it wins everywhere
  b.change('repository', 'm', 'load', { configs: [{ name: 'm' }] });
  await waitFor('b wrote', () => b.plane.stats.written === 1);
  await proxy.up();
  await waitFor('the kept write landed', () => a.plane.stats.pendingWrites === 0, 20_000);
  const kept = (await stored(redis, ns, field))!;
  assert.equal(kept.op, 'unload');
  assert.equal(kept.by, a.plane.instanceId);
  await waitFor('b applied it', () => b.plane.appliedSeq('repository', 'm') === kept.seq);
  assert.deepEqual(b.state.get(field), {});
  // a kept write that lands late is applied on its writer too, like anyone's record: a ends on
  // the kept record whatever it applied in between
  await waitFor('a on the kept record', async () => {
    await a.plane.reconcile();
    return a.plane.appliedSeq('repository', 'm') === kept.seq;
  });
  assert.deepEqual(a.state.get(field), {});
});

test('control plane - a member that starts while Redis is unreachable starts, then converges once it answers', async (t) => {
  const ns = namespace(t);
  const proxy = await redisProxy(t);
  const writer = await member(t, ns);
  writer.change('traffic', 'm', 'set', { split: { '1': 100 } });
  await waitFor('written', () => writer.plane.stats.written === 1);
  await proxy.down();
  const a = await member(t, ns, {}, { url: proxy.url() });
  assert.equal(a.applied.length, 0, 'started without Redis');
  await proxy.up();
  await waitFor('converged after reconnecting', () => a.applied.length === 1, 20_000);
  assert.deepEqual(a.state, writer.state);
});

test('control plane - a Redis URL is logged without its password', () => {
  assert.equal(redactUrl('redis://:s3cret@10.0.0.5:6379/0'), 'redis://:***@10.0.0.5:6379/0');
  assert.equal(redactUrl('rediss://user:s3cret@host:6380'), 'rediss://user:***@host:6380');
  assert.equal(redactUrl('redis://127.0.0.1:6379'), 'redis://127.0.0.1:6379');
});

test('control plane - after Redis loses everything (a restart), the records are written back and a later change still wins', async (t) => {
  const ns = namespace(t);
  const redis = rawClient(t);
  const a = await member(t, ns);
  const b = await member(t, ns);
  a.change('repository', 'm', 'unload', { n: 1 });
  b.change('traffic', 'm', 'set', { split: { '1': 100 } });
  await waitFor('both applied both', () => a.applied.length === 1 && b.applied.length === 1);
  const before = await stored(redis, ns, controlField('repository', 'm'));
  assert.ok(before);
  // the restart: the hash and the counter are gone
  await redis.del(`${ns}${CONTROL_PREFIX}`, `${ns}${CONTROL_PREFIX}:seq`);
  await b.plane.reconcile();
  assert.deepEqual(
    await stored(redis, ns, controlField('repository', 'm')),
    before,
    'written back as it was',
  );
  assert.ok(await stored(redis, ns, controlField('traffic', 'm')));
  assert.equal(b.plane.stats.restored, 2);
  // a coordinator started after the restart converges on the written-back records
  const late = await member(t, ns);
  assert.deepEqual(late.state, a.state);
  // the counter restarted at 0; a change made now must still beat the records written back
  a.change('repository', 'm', 'load', { n: 2 });
  await waitFor('b applied the new change', () => b.state.get(controlField('repository', 'm'))?.n === 2);
  const after = await stored(redis, ns, controlField('repository', 'm'));
  assert.ok(after && after.seq > before.seq, `new seq ${after?.seq} above ${before.seq}`);
});
