/**
 * A coordinator host lost under load: two clients spread a steady load over two coordinators
 * in front of one fleet, and one coordinator is killed with SIGKILL. A client that re-sends an
 * unanswered request to the other coordinator loses none; a client that does not loses what was
 * in flight on, or sent to, the dead one before it noticed (lab-client.ts drops an unreachable
 * target from its rotation, so that figure does not grow with the length of the run).
 *
 * Prints {"figure":"requestsLostOnCoordinatorKill","retry":true|false} (docs/testing-multihost.md).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { labOrSkip } from '../fixtures/netns.ts';
import {
  INFER_BODY,
  INFER_PATH,
  SCENARIO_DISCOVERIES,
  fleetHosts,
  printFigure,
  startFleet,
  waitForFleet,
  workersSeenBy,
} from '../fixtures/netns-fleet.ts';
import { waitFor } from '../fixtures/processes.ts';

const WORKERS = ['w1', 'w2', 'w3'];

for (const discovery of SCENARIO_DISCOVERIES) {
  test(`netns coordinator kill (${discovery}) - a client retrying on the other coordinator loses no request`, {
    timeout: 120_000,
  }, async (t) => {
    const lab = await labOrSkip(t, fleetHosts(discovery, ['c1', 'c2', ...WORKERS, 'client']));
    if (!lab) return;
    const fleet = await startFleet(t, lab, {
      coordinators: ['c1', 'c2'],
      workers: WORKERS,
      client: 'client',
      discovery,
    });
    await waitForFleet(fleet, WORKERS);
    const { client, coordinators } = fleet;
    const [doomed, survivor] = coordinators as [(typeof coordinators)[0], (typeof coordinators)[0]];
    const load = {
      targets: coordinators.map((c) => c.url),
      path: INFER_PATH,
      body: INFER_BODY,
      requestTimeoutMs: 10_000,
    };
    await client.startLoad({ ...load, name: 'retry', concurrency: 4, retry: true });
    await client.startLoad({ ...load, name: 'once', concurrency: 4, retry: false });
    await waitFor('both clients to get 100 answers', async () => {
      const [a, b] = await Promise.all([client.loadStats('retry'), client.loadStats('once')]);
      return a.succeeded >= 100 && b.succeeded >= 100;
    });

    doomed.process.child.kill('SIGKILL');
    await doomed.process.exited;
    // both clients notice, and keep being served by the survivor
    const [retryAtNotice, onceAtNotice] = await waitFor(
      `both clients to drop ${doomed.host} from their rotation`,
      async () => {
        const stats = await Promise.all([client.loadStats('retry'), client.loadStats('once')]);
        return stats.every((s) => s.dropped.includes(doomed.url)) ? stats : undefined;
      },
      20_000,
    );
    await waitFor('both clients to get 200 more answers from the survivor', async () => {
      const [a, b] = await Promise.all([client.loadStats('retry'), client.loadStats('once')]);
      return a.succeeded >= retryAtNotice!.succeeded + 200 && b.succeeded >= onceAtNotice!.succeeded + 200;
    });
    const retry = await client.stopLoad('retry');
    const once = await client.stopLoad('once');

    printFigure('requestsLostOnCoordinatorKill', retry.failed, {
      discovery,
      retry: true,
      sent: retry.sent,
      retried: retry.retried,
    });
    printFigure('requestsLostOnCoordinatorKill', once.failed, { discovery, retry: false, sent: once.sent });
    t.diagnostic(
      `with retry: sent ${retry.sent}, succeeded ${retry.succeeded}, re-sent ${retry.retried}; ` +
        `without: sent ${once.sent}, succeeded ${once.succeeded}, lost ${once.failed}`,
    );
    assert.deepEqual(retry.failures, [], 'the retrying client lost no request');
    assert.equal(retry.succeeded, retry.sent);
    assert.ok(retry.retried >= 1, 'it did re-send at least the request that found the coordinator gone');
    // the client without retry loses at least the request that found the coordinator gone, and
    // only to that coordinator
    assert.ok(once.failed >= 1);
    assert.equal(once.succeeded + once.failed, once.sent);
    assert.ok(
      once.failures.every((f) => f.startsWith(doomed.url)),
      once.failures.join('\n'),
    );
    // the surviving coordinator still has the whole fleet
    const fleetAtSurvivor = await workersSeenBy(fleet, survivor);
    assert.deepEqual(fleetAtSurvivor.map((w) => w.id).sort(), WORKERS);
  });
}
