/**
 * A worker follows the coordinators in the cluster membership: it dials each one that joins (the
 * same dial, handshake and credentials as `--coordinator`) and stops dialing one whose lease is
 * gone. Membership never drops members while Redis is unreachable, so during an outage the
 * worker keeps dialing the last known coordinators. Addresses given with `--coordinator` are not
 * this module's: they are dialed for as long as the worker runs, listed in Redis or not.
 *
 * Dialing a discovered coordinator does not trust it: the RPC handshake authenticates it (it
 * must prove the same key), so a forged record can at most make the worker dial an address in
 * cluster.allow and fail the handshake.
 */

import type { Logger } from '../telemetry/index.ts';
import { type HostPort, formatHostPort, parseHostPort } from '../util/address.ts';
import type { Member } from './member.ts';
import type { Membership } from './membership.ts';

/** What following needs of a worker. */
export interface CoordinatorDialer {
  /** Dials `address` and keeps it dialed; false when it is dialed already (e.g. a static one). */
  dialCoordinator(address: HostPort): boolean;
  /** Stops dialing `address` and closes its connection. */
  stopDialingCoordinator(address: HostPort): Promise<void>;
}

/** Starts following; returns a function that stops (the links already made are the worker's to close). */
export function followCoordinators(
  membership: Membership,
  dialer: CoordinatorDialer,
  logger: Logger,
): () => void {
  /** Member id -> the address this module dials for it. */
  const dialed = new Map<string, string>();
  const addressOf = (m: Member): HostPort | undefined => {
    if (m.role !== 'coordinator' || m.rpc === undefined) return undefined;
    try {
      return parseHostPort(m.rpc, 'rpc');
    } catch {
      return undefined;
    }
  };
  /** Whether another followed member (not `id`) dials `label` too. */
  const sharedBy = (label: string, id: string): boolean =>
    [...dialed].some(([other, at]) => other !== id && at === label);
  const join = (m: Member): void => {
    const at = addressOf(m);
    if (!at || dialed.has(m.id)) return;
    const label = formatHostPort(at);
    // a static --coordinator or another member with the same address is dialed already
    if (sharedBy(label, m.id) || !dialer.dialCoordinator(at)) {
      logger.debug({ coordinator: m.id, rpc: label }, 'discovered coordinator is dialed already');
      return;
    }
    dialed.set(m.id, label);
    logger.info({ coordinator: m.id, rpc: label }, 'dialing a discovered coordinator');
  };
  const leave = (m: Member): void => {
    const label = dialed.get(m.id);
    if (label === undefined) return;
    dialed.delete(m.id);
    if (sharedBy(label, m.id)) return;
    logger.info({ coordinator: m.id, rpc: label }, 'coordinator left the cluster; no longer dialing it');
    void dialer.stopDialingCoordinator(parseHostPort(label));
  };
  const change = (m: Member): void => {
    const at = addressOf(m);
    if (dialed.get(m.id) === (at ? formatHostPort(at) : undefined)) return;
    leave(m);
    join(m);
  };
  const onJoin = (m: Member) => join(m);
  const onLeave = (m: Member) => leave(m);
  const onChange = (m: Member) => change(m);
  membership.on('join', onJoin);
  membership.on('leave', onLeave);
  membership.on('change', onChange);
  for (const m of membership.members('coordinator')) join(m);
  return () => {
    membership.off('join', onJoin);
    membership.off('leave', onLeave);
    membership.off('change', onChange);
  };
}
