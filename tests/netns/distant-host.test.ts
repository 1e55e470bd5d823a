/**
 * A distant worker host: one of three workers reaches both coordinators through a relay on its
 * own host that holds every chunk 20 ms in each direction (tests/fixtures/delay-relay.ts; the
 * kernel here has no netem). The fleet serves the same sim model twice: `near-first` with
 * routing.strategy least-latency, `fair` with round-robin. Asserted on pick counts, not timings:
 * - least-latency sends more than 80% of its requests to the two near workers;
 * - round-robin, the control, gives the far worker its third: it serves normally, so the small
 *   share under least-latency comes from its distance and not from a broken link.
 *
 * The far worker dials the relays, so it is given its coordinators statically whatever
 * SCENARIO_DISCOVERIES say: a worker that found coordinators in Redis would dial their real
 * addresses and skip the relay.
 *
 * Prints {"figure":"farWorkerShare","strategy":...}: the fraction of requests the far worker served.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DELAY_RELAY_SCRIPT, labOrSkip } from '../fixtures/netns.ts';
import {
  type Fleet,
  INFER_BODY,
  RPC_PORT,
  inferPath,
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
const MODELS = [
  { name: 'near-first', strategy: 'least-latency' },
  { name: 'fair', strategy: 'round-robin' },
] as const;

interface Share {
  farShare: number;
  /** Per coordinator, per worker: picks for the model, and the router's latency estimate. */
  seen: Record<string, Record<string, { picks: number; latencyMs: number | null }>>;
}

/** Sends REQUESTS requests for `model` over both coordinators; returns the far worker's share of the picks. */
async function farShare(fleet: Fleet, model: string): Promise<Share> {
  const { client, coordinators } = fleet;
  await client.startLoad({
    name: model,
    targets: coordinators.map((c) => c.url),
    path: inferPath(model),
    body: INFER_BODY,
    concurrency: 4,
    retry: false,
    requestTimeoutMs: 10_000,
  });
  await waitFor(
    `${REQUESTS} answers for ${model}`,
    async () => (await client.loadStats(model)).succeeded >= REQUESTS,
  );
  const stats = await client.stopLoad(model);
  assert.deepEqual(stats.failures, [], `no ${model} request failed`);
  let far = 0;
  let total = 0;
  const seen: Share['seen'] = {};
  for (const c of coordinators) {
    seen[c.host] = {};
    for (const w of await workersSeenBy(fleet, c)) {
      const replica = w.models.find((m) => m.name === model);
      const picks = replica?.picks ?? 0;
      const latencyMs = replica?.latencyMs;
      seen[c.host]![w.id] = { picks, latencyMs: latencyMs == null ? null : Math.round(latencyMs * 10) / 10 };
      total += picks;
      if (w.id === FAR) far += picks;
    }
  }
  assert.equal(total, stats.succeeded, `every answered ${model} request was one pick`);
  return { farShare: far / total, seen };
}

test('netns distant host - least-latency sends most requests to the near workers; round-robin gives the far one its third', {
  timeout: 120_000,
}, async (t) => {
  const lab = await labOrSkip(t, [...COORDINATORS, ...NEAR, FAR, 'client']);
  if (!lab) return;
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
    models: MODELS,
    modelLatencyMs: 5,
    dialAddress: (worker, coordinator) =>
      worker === FAR ? `127.0.0.1:${relayPort(coordinator)}` : undefined,
  });
  await waitForFleet(fleet, [...NEAR, FAR]);

  const shares: Record<string, number> = {};
  for (const { name, strategy } of MODELS) {
    const share = await farShare(fleet, name);
    shares[strategy] = share.farShare;
    printFigure('farWorkerShare', Number(share.farShare.toFixed(3)), {
      strategy,
      delayMsEachWay: DELAY_MS,
      seen: share.seen,
    });
    t.diagnostic(
      `${strategy}: ${JSON.stringify(share.seen)}; far share ${(share.farShare * 100).toFixed(1)}%`,
    );
  }
  // near: more than 80% of least-latency's picks (how the two near workers split them is their
  // own latencies' business, and on a busy machine those differ from run to run)
  const near = 1 - shares['least-latency']!;
  assert.ok(near > 0.8, `the near workers got ${(near * 100).toFixed(1)}% of the least-latency picks`);
  assert.ok(
    shares['round-robin']! > 0.3,
    `the far worker got ${(shares['round-robin']! * 100).toFixed(1)}% of round-robin picks`,
  );
});
