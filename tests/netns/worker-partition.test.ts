/**
 * A worker host cut off under load: its cable is pulled at the switch while two coordinators
 * route a steady load over three workers. The coordinators stop picking it (health checks fail,
 * then its peer timeout drops it), the requests it held are retried on the others, so no client
 * request fails; when the cable is back the worker redials and is picked again.
 *
 * Prints {"figure":"ejectPartitionedWorkerMs"}: from link down until both coordinators show the
 * worker unhealthy or gone (docs/testing-multihost.md).
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { labOrSkip } from '../fixtures/netns.ts';
import {
  type AdminWorkerView,
  INFER_BODY,
  INFER_PATH,
  SCENARIO_DISCOVERIES,
  fleetHosts,
  printFigure,
  serving,
  startFleet,
  waitForFleet,
  workersSeenBy,
} from '../fixtures/netns-fleet.ts';
import { waitFor } from '../fixtures/processes.ts';

const WORKERS = ['w1', 'w2', 'w3'];
const CUT = 'w3';

for (const discovery of SCENARIO_DISCOVERIES) {
  test(`netns worker partition (${discovery}) - a cut-off worker is ejected under load without a failed request, and readmitted when healed`, {
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
    const requestsOn = (workers: AdminWorkerView[], id: string) =>
      workers.find((w) => w.id === id)?.requests ?? 0;

    await client.startLoad({
      name: 'steady',
      targets: coordinators.map((c) => c.url),
      path: INFER_PATH,
      body: INFER_BODY,
      concurrency: 8,
      retry: false,
      requestTimeoutMs: 10_000,
    });
    await waitFor(`${CUT} to serve requests at both coordinators`, async () => {
      for (const c of coordinators) if (requestsOn(await workersSeenBy(fleet, c), CUT) < 20) return false;
      return true;
    });

    await lab.partition(CUT);
    const cutAt = Date.now();
    const ejectedAfterMs: Record<string, number> = {};
    await waitFor(
      `both coordinators to stop routing to the partitioned ${CUT}`,
      async () => {
        for (const c of coordinators) {
          if (ejectedAfterMs[c.host] === undefined && !serving(await workersSeenBy(fleet, c), CUT))
            ejectedAfterMs[c.host] = Date.now() - cutAt;
        }
        return Object.keys(ejectedAfterMs).length === coordinators.length;
      },
      20_000,
    );
    const ejectMs = Math.max(...Object.values(ejectedAfterMs));

    // while it is out, the load goes on over the other two and it gets no picks
    const cutPicks = await Promise.all(
      coordinators.map(async (c) => requestsOn(await workersSeenBy(fleet, c), CUT)),
    );
    const succeededAtEject = (await client.loadStats('steady')).succeeded;
    await waitFor('300 more requests served by the remaining workers', async () => {
      return (await client.loadStats('steady')).succeeded >= succeededAtEject + 300;
    });
    for (const [i, c] of coordinators.entries()) {
      const workers = await workersSeenBy(fleet, c);
      assert.ok(!serving(workers, CUT), `${c.host} still treats ${CUT} as out`);
      // out means unhealthy (kept, with its count frozen) or gone once its peer timeout dropped it
      const cut = workers.find((w) => w.id === CUT);
      if (cut) assert.equal(cut.requests, cutPicks[i], `${c.host} picked the partitioned ${CUT}`);
    }

    await lab.heal(CUT);
    const healedAt = Date.now();
    await waitFor(
      `${CUT} to be picked again at both coordinators`,
      async () => {
        for (const c of coordinators) {
          const workers = await workersSeenBy(fleet, c);
          if (!serving(workers, CUT)) return false;
          // it may come back as a new connection whose count starts again from 0
          const picks = requestsOn(workers, CUT);
          if (picks === 0 || picks === cutPicks[coordinators.indexOf(c)]) return false;
        }
        return true;
      },
      30_000,
    );
    const readmitMs = Date.now() - healedAt;

    const stats = await client.stopLoad('steady');
    printFigure('ejectPartitionedWorkerMs', ejectMs, { discovery, perCoordinator: ejectedAfterMs });
    printFigure('readmitHealedWorkerMs', readmitMs, { discovery });
    t.diagnostic(
      `requests sent ${stats.sent}, succeeded ${stats.succeeded}, failed ${stats.failed}; ` +
        `${CUT} out after ${ejectMs} ms (${JSON.stringify(ejectedAfterMs)}), picked again ${readmitMs} ms after the heal`,
    );
    assert.deepEqual(stats.failures, [], 'no client request failed');
    assert.equal(stats.succeeded, stats.sent);
  });
}
