/**
 * The lab itself (tests/fixtures/netns.ts): hosts reach each other over the bridge, a partition
 * cuts one host off silently in both directions and leaves the others alone, and healing
 * restores it. The scenarios in this folder rest on exactly these facts.
 */

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { type TestContext, test } from 'node:test';
import { DELAY_RELAY_SCRIPT, LabClient, createLab, labOrSkip, netnsAvailable } from '../fixtures/netns.ts';

test('netns lab - hosts reach each other; a partitioned host is cut off silently until healed', {
  timeout: 60_000,
}, async (t) => {
  const lab = await labOrSkip(t, ['client', 'near', 'cut']);
  if (!lab) return;
  const listen = (host: string) =>
    lab.spawnNode(
      host,
      ['--listen', `${lab.address(host)}:7000`, '--target', '127.0.0.1:9', '--delay-ms', '0'],
      {
        script: DELAY_RELAY_SCRIPT,
      },
    );
  await Promise.all([listen('near'), listen('cut')]);
  const client = await LabClient.start(lab, 'client');

  assert.equal((await client.probe(lab.address('near'), 7000)).connected, true);
  assert.equal((await client.probe(lab.address('cut'), 7000)).connected, true);
  const closed = await client.probe(lab.address('cut'), 7001);
  assert.equal(closed.connected, false);
  assert.match(closed.error!, /ECONNREFUSED/, 'a closed port on a reachable host is refused');

  await lab.partition('cut');
  const cut = await client.probe(lab.address('cut'), 7000, 500);
  assert.equal(cut.connected, false);
  assert.match(cut.error!, /no connection within 500 ms/, 'a partition drops packets; nothing is refused');
  assert.equal((await client.probe(lab.address('near'), 7000)).connected, true, 'other hosts are untouched');

  await lab.heal('cut');
  assert.equal((await client.probe(lab.address('cut'), 7000, 5000)).connected, true);
});

test('netns lab - teardown kills every process on its hosts and deletes its namespaces', {
  timeout: 60_000,
}, async (t) => {
  const available = await netnsAvailable();
  if (!available.ok) {
    process.stderr.write(`SKIP ${t.name}: network namespaces unavailable: ${available.reason}\n`);
    t.skip(`network namespaces unavailable: ${available.reason}`);
    return;
  }
  // the lab's teardown is what the test's t.after would run, here called by hand
  const hooks: (() => Promise<void>)[] = [];
  const fakeContext = { after: (fn: () => Promise<void>) => hooks.push(fn) } as unknown as TestContext;
  const lab = await createLab(fakeContext, ['a', 'b']);
  t.after(() => lab.teardown());
  const sleeper = await lab.spawnCommand('b', ['sh', '-c', 'echo up; exec sleep 600'], /up/);
  // a process the lab did not start, found through its namespace
  const stray = execFileSync(
    'sh',
    ['-c', `ip netns exec ${lab.host('a').ns} sh -c 'sleep 600 >/dev/null 2>&1 & echo $!'`],
    {
      encoding: 'utf8',
    },
  ).trim();
  const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.match(namespaces(), new RegExp(lab.host('a').ns));

  assert.equal(hooks.length, 1, 'createLab registered its teardown');
  await hooks[0]!();
  assert.equal(await sleeper.exited, 'SIGKILL');
  // dead: gone, or a zombie its new parent has not reaped yet
  const state = (() => {
    try {
      return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${stray}/status`, 'utf8'))?.[1];
    } catch {
      return 'gone';
    }
  })();
  assert.ok(state === 'gone' || state === 'Z', `the stray process is ${state}`);
  assert.doesNotMatch(namespaces(), new RegExp(lab.id), 'no namespace of the lab is left');
});
