/**
 * A distant worker host: one of three workers reaches both coordinators through a relay on its
 * own host that holds every chunk 20 ms in each direction (tests/fixtures/delay-relay.ts; the
 * kernel here has no netem). With routing.strategy least-latency the coordinators send most
 * requests to the two near workers. Asserted on pick counts, not timings: the far worker's share
 * under a fair split would be a third.
 *
 * The far worker dials the relays, so it is given its coordinators statically whatever
 * SCENARIO_DISCOVERY says: a worker that found coordinators in Redis would dial their real
 * addresses and skip the relay.
 *
 * A second run with round-robin is the control: there the far worker gets its third, so it
 * serves normally and the small share under least-latency comes from its distance.
 *
 * Prints {"figure":"farWorkerShare","strategy":...}: the fraction of requests the far worker served.
 */

import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { DELAY_RELAY_SCRIPT, labOrSkip } from '../fixtures/netns.ts';
import {
  INFER_BODY,
  INFER_PATH,
  RPC_PORT,
  printFigure,
  startFleet,
  waitForFleet,
  workersSeenBy,
} from '../fixtures/netns-fleet.ts';
import { waitFor } from '../fixtures/processes.ts';

const DELAY_MS = 20;
const NEAR = ['w1', 'w2'];
const FAR = 'far';
const COORDINATORS = ['c1', 'c2'];
const REQUESTS = 300;

/** Runs the load over the fleet with `strategy`; returns each coordinator's picks per worker and the far share. */
async function farShareWith(
  t: TestContext,
  strategy: string,
): Promise<{ farShare: number; total: number; near: Record<string, number> } | undefined> {
  const lab = await labOrSkip(t, [...COORDINATORS, ...NEAR, FAR, 'client']);
  if (!lab) return undefined;
  // one relay per coordinator on the far host: 127.0.0.1:7000+i -> coordinator i's RPC port
  const relayPort = (coordinator: string) => 7000 + COORDINATORS.indexOf(coordinator);
  await Promise.all(
    COORDINATORS.map((c) =>
      lab.spawnNode(
        FAR,
        [
          '--listen',
          `127.0.0.1:${relayPort(c)}`,
          '--target',
          `${lab.address(c)}:${RPC_PORT}`,
          '--delay-ms',
          String(DELAY_MS),
        ],
        { script: DELAY_RELAY_SCRIPT },
      ),
    ),
  );
  const fleet = await startFleet(t, lab, {
    coordinators: COORDINATORS,
    workers: [...NEAR, FAR],
    client: 'client',
    discovery: 'static',
    strategy,
    modelLatencyMs: 5,
    dialAddress: (worker, coordinator) =>
      worker === FAR ? `127.0.0.1:${relayPort(coordinator)}` : undefined,
  });
  await waitForFleet(fleet, [...NEAR, FAR]);
  const { client, coordinators } = fleet;

  await client.startLoad({
    name: 'steady',
    targets: coordinators.map((c) => c.url),
    path: INFER_PATH,
    body: INFER_BODY,
    concurrency: 4,
    retry: false,
    requestTimeoutMs: 10_000,
  });
  await waitFor(`${REQUESTS} answers`, async () => (await client.loadStats('steady')).succeeded >= REQUESTS);
  const stats = await client.stopLoad('steady');
  assert.deepEqual(stats.failures, []);

  let far = 0;
  let total = 0;
  const perCoordinator: Record<string, Record<string, number>> = {};
  for (const c of coordinators) {
    const workers = await workersSeenBy(fleet, c);
    perCoordinator[c.host] = Object.fromEntries(workers.map((w) => [w.id, w.requests]));
    for (const w of workers) {
      total += w.requests;
      if (w.id === FAR) far += w.requests;
    }
  }
  const farShare = far / total;
  printFigure('farWorkerShare', Number(farShare.toFixed(3)), {
    strategy,
    delayMsEachWay: DELAY_MS,
    picks: perCoordinator,
  });
  t.diagnostic(
    `${strategy}: picks ${JSON.stringify(perCoordinator)}; far share ${(farShare * 100).toFixed(1)}%`,
  );
  assert.equal(total, stats.succeeded, 'every answered request was one pick');
  const near = Object.fromEntries(
    NEAR.map((id) => [id, coordinators.reduce((n, c) => n + (perCoordinator[c.host]![id] ?? 0), 0)]),
  );
  return { farShare, total, near };
}

test('netns distant host - least-latency routing sends most requests to the near workers', {
  timeout: 120_000,
}, async (t) => {
  const result = await farShareWith(t, 'least-latency');
  if (!result) return;
  const { farShare, total, near } = result;
  assert.ok(farShare < 0.2, `the far worker got ${(farShare * 100).toFixed(1)}% of the picks, not under 20%`);
  for (const [id, picks] of Object.entries(near))
    assert.ok(picks > total * 0.25, `near worker ${id} got ${picks} of ${total} picks`);
});

test('netns distant host - round-robin gives the far worker its third (it serves as well as the near ones)', {
  timeout: 120_000,
}, async (t) => {
  // the control: the far worker takes traffic normally, so least-latency's small share for it
  // comes from its distance, not from a broken link
  const result = await farShareWith(t, 'round-robin');
  if (!result) return;
  assert.ok(
    result.farShare > 0.3,
    `the far worker got ${(result.farShare * 100).toFixed(1)}% of round-robin picks`,
  );
});
