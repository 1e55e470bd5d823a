/**
 * Operator routes:
 *   GET    /admin/workers        every connected worker: state, health, load, and per model its
 *                                replica state, circuit, latency and picks; plus routing totals
 *   POST   /admin/workers        {"address": "host:port", "weight"?: n} dials a static worker
 *                                (only addresses coordinator.dial.allow lists, at most
 *                                coordinator.dial.maxTargets); {"id": "w1"} re-admits a removed worker
 *   DELETE /admin/workers/{id}   drains the worker out of this coordinator and removes it
 *                                (?timeout_ms= how long to wait for its in-flight requests);
 *                                `{id}` may also be a dialed address (host:port), connected or not
 */

import type { FastifyInstance } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';
import { InfergridError } from '../errors.ts';
import { formatHostPort, parseHostPort } from '../util/address.ts';
import { DialAllowList } from './dial-allow.ts';

const DEFAULT_REMOVE_TIMEOUT_MS = 30_000;
/** A timer holds at most 2^31-1 ms. */
const MAX_TIMER_MS = 2_147_483_647;

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

export interface DialPolicy {
  allow: readonly string[];
  maxTargets: number;
}

export function registerAdminRoutes(
  app: FastifyInstance,
  coordinator: Coordinator,
  dialPolicy: DialPolicy,
): void {
  const { pool, router, dispatcher, budget } = coordinator;
  const allowList = new DialAllowList(dialPolicy.allow);

  app.get('/admin/workers', async () => {
    return {
      workers: coordinator.fleet().map((w) => ({
        id: w.id,
        origin: w.origin,
        address: w.address ?? null,
        pid: w.pid,
        state: w.state,
        health: {
          state: w.health,
          consecutiveFailures: w.consecutiveHealthFailures,
          lastRttMs: w.lastRttMs ?? null,
          checks: w.healthChecks,
        },
        weight: w.weight,
        inFlight: w.inFlight,
        reportedInFlight: w.reportedInFlight,
        requests: w.requests,
        failures: w.failures,
        connectedAt: iso(w.connectedAtMs),
        lastHeartbeatAt: iso(w.lastHeartbeatAtMs),
        models: w.models.map(({ lastPickedAtMs, ...m }) => ({ ...m, lastPickedAt: iso(lastPickedAtMs) })),
      })),
      routing: {
        retries: dispatcher.retries,
        hedges: dispatcher.hedges,
        retryBudgetAvailable: budget.available,
        retriesRefusedByBudget: budget.exhausted,
        panicPicks: router.panicPicks,
        staticWorkers: coordinator.staticWorkers,
        removed: [...pool.blocked],
      },
    };
  });

  app.post('/admin/workers', async (req, reply) => {
    const body = (req.body ?? {}) as { address?: unknown; weight?: unknown; id?: unknown };
    if (typeof body.id === 'string') {
      if (!coordinator.readmit(body.id)) {
        throw new InfergridError('NOT_FOUND', `worker "${body.id}" was not removed; nothing to re-admit`);
      }
      return reply.code(200).send({ readmitted: body.id });
    }
    if (typeof body.address !== 'string') {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        'body must be {"address": "host:port", "weight"?: number} or {"id": "<removed worker>"}',
      );
    }
    if (
      body.weight !== undefined &&
      !(typeof body.weight === 'number' && body.weight > 0 && Number.isFinite(body.weight))
    ) {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `"weight" must be a positive number, got ${JSON.stringify(body.weight)}`,
      );
    }
    let address: ReturnType<typeof parseHostPort>;
    try {
      address = parseHostPort(body.address, '"address"');
    } catch (err) {
      throw new InfergridError('INVALID_ARGUMENT', (err as Error).message);
    }
    if (!allowList.allows(address)) {
      throw new InfergridError(
        'PERMISSION_DENIED',
        `${body.address} is not an address this coordinator may dial; list it (or its network) in coordinator.dial.allow`,
      );
    }
    const targets = coordinator.staticWorkers;
    if (targets.length >= dialPolicy.maxTargets && !targets.includes(formatHostPort(address))) {
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `this coordinator already dials ${targets.length} workers, the most coordinator.dial.maxTargets allows; remove one first (DELETE /admin/workers/<host:port>)`,
        { details: { maxTargets: dialPolicy.maxTargets } },
      );
    }
    const added = coordinator.addStaticWorker(address, body.weight as number | undefined);
    // 202: the worker is being dialed; it shows in GET /admin/workers once it has registered
    return reply.code(added ? 202 : 200).send({ address: body.address, dialing: true, alreadyKnown: !added });
  });

  app.delete<{ Params: { id: string }; Querystring: { timeout_ms?: string } }>(
    '/admin/workers/:id',
    async (req) => {
      const raw = req.query.timeout_ms;
      const timeoutMs = raw === undefined ? DEFAULT_REMOVE_TIMEOUT_MS : Number(raw);
      if (!(Number.isInteger(timeoutMs) && timeoutMs >= 0 && timeoutMs <= MAX_TIMER_MS)) {
        throw new InfergridError(
          'INVALID_ARGUMENT',
          `timeout_ms must be a whole number of ms from 0 to ${MAX_TIMER_MS}, got "${raw}"`,
        );
      }
      const target = coordinator.stopStaticWorker(req.params.id);
      // a dialed address that never connected: it is no longer dialed, and nothing is to drain
      if (target.stopped && target.workerId === undefined) return { removed: req.params.id, drained: true };
      const id = target.workerId ?? req.params.id;
      const { drained } = await coordinator.removeWorker(id, timeoutMs);
      return { removed: id, drained };
    },
  );
}
