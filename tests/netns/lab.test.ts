/**
 * The lab itself (tests/fixtures/netns.ts): hosts reach each other over the bridge, a partition
 * cuts one host off silently in both directions and leaves the others alone, and healing
 * restores it. The scenarios in this folder rest on exactly these facts.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DELAY_RELAY_SCRIPT, LabClient, labOrSkip } from '../fixtures/netns.ts';

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
