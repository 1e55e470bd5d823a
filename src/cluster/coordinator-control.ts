/**
 * The shared control plane wired to a coordinator: records from other coordinators are applied
 * through the coordinator's own code paths, flagged as replicated so they are not published
 * again (a load through ModelRepository.loadReplicated, which checks each config as it checks
 * an operator's, so a hostile Redis writer cannot load a model outside the repository roots;
 * every worker checks again), and the coordinator's operator changes are journaled to Redis.
 *
 * A removal is applied by blocking the worker id at once (it can no longer register here) and
 * draining its connection in the background: a drain may take its timeout, and the records of
 * other fields need not wait for it.
 */

import { z } from 'zod';
import type { ClusterConfig } from '../config/index.ts';
import { type Coordinator, MAX_REPLICATED_CONFIGS } from '../coordinator/index.ts';
import { InfergridError, toInfergridError } from '../errors.ts';
import { type Logger, registerControlPlaneMetrics } from '../telemetry/index.ts';
import { type ControlApplier, ControlPlane, type ControlRecord } from './control-plane.ts';

/** Versions a replicated traffic split may name, at most. */
const MAX_SPLIT_VERSIONS = 256;
/** A timer holds at most 2^31-1 ms. */
const MAX_TIMER_MS = 2_147_483_647;
/** A replicated removal's drain when its record names none, ms (the admin route's default). */
const DEFAULT_REMOVE_TIMEOUT_MS = 30_000;

const loadPayload = z.object({ configs: z.array(z.unknown()).min(1).max(MAX_REPLICATED_CONFIGS) }).strict();
const trafficPayload = z
  .object({
    split: z
      .record(z.string().max(128), z.number().finite())
      .refine((s) => Object.keys(s).length <= MAX_SPLIT_VERSIONS, `at most ${MAX_SPLIT_VERSIONS} versions`),
  })
  .strict();
const removePayload = z.object({ timeoutMs: z.number().int().min(0).max(MAX_TIMER_MS).optional() }).strict();

function payloadOf<T>(schema: z.ZodType<T>, record: ControlRecord): T {
  const parsed = schema.safeParse(record.payload);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `control record ${record.kind}:${record.target} (${record.op}): payload.${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
  }
  return parsed.data;
}

/** Applies records to a coordinator, as replicated changes (never journaled again). */
export function coordinatorApplier(coordinator: Coordinator, logger: Logger): ControlApplier {
  return {
    async apply(record) {
      const { target } = record;
      switch (record.op) {
        case 'load':
          await coordinator.repository.loadReplicated(target, payloadOf(loadPayload, record).configs);
          return;
        case 'unload':
          await coordinator.repository.unload(target, { replicated: true });
          return;
        case 'set':
          coordinator.repository.setTraffic(target, payloadOf(trafficPayload, record).split, {
            replicated: true,
          });
          return;
        case 'remove': {
          const timeoutMs = payloadOf(removePayload, record).timeoutMs ?? DEFAULT_REMOVE_TIMEOUT_MS;
          // blocks the id before its first await; the drain goes on in the background
          coordinator
            .removeWorker(target, timeoutMs, { replicated: true })
            .catch((err: unknown) =>
              logger.warn(
                { worker: target, err: toInfergridError(err).message },
                'could not drain a worker removed on another coordinator',
              ),
            );
          return;
        }
        case 'readmit':
          coordinator.readmit(target, { replicated: true });
          return;
      }
    },
  };
}

export interface SharedControlOptions {
  coordinator: Coordinator;
  cluster: ClusterConfig;
  logger: Logger;
  /** This coordinator's id in the records it writes; default host/pid/random. */
  instanceId?: string | undefined;
}

/**
 * Builds the control plane for a started coordinator from its `cluster` settings (cluster.redis
 * and cluster.reconcileIntervalMs), journals its operator changes there, adds its metrics to
 * the coordinator's registry and reads every record once. Never fails for Redis (see ControlPlane).
 */
export async function startSharedControl(options: SharedControlOptions): Promise<ControlPlane> {
  const { coordinator, cluster, logger } = options;
  const plane = new ControlPlane({
    redis: cluster.redis,
    reconcileIntervalMs: cluster.reconcileIntervalMs,
    applier: coordinatorApplier(coordinator, logger),
    logger,
    instanceId: options.instanceId,
  });
  coordinator.controlJournal = plane;
  registerControlPlaneMetrics(coordinator.metrics.registry, () => plane.stats);
  await plane.start();
  return plane;
}

/** Stops journaling a coordinator's changes and closes the control plane's Redis connections. */
export async function stopSharedControl(coordinator: Coordinator, plane: ControlPlane): Promise<void> {
  if (coordinator.controlJournal === plane) coordinator.controlJournal = undefined;
  await plane.stop();
}
