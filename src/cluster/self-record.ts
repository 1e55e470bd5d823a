/**
 * The record a coordinator or a worker announces about itself. A coordinator's RPC address is
 * what workers dial, so it must be one they can reach: `cluster.advertiseHost`, else the RPC
 * listen host, which then must not be a wildcard (checked before anything starts listening).
 * A worker announces its id, its models and whose key it proves; its RPC address only when it
 * listens at a dialable one (coordinators do not dial discovered workers yet, but the control
 * plane may).
 */

import { hostname } from 'node:os';
import type { InfergridConfig } from '../config/index.ts';
import { PROTOCOL_VERSION } from '../protocol/index.ts';
import { formatHostPort } from '../util/address.ts';
import { type Member, advertisedHost, defaultMemberId } from './member.ts';

type Config = Readonly<InfergridConfig>;

/** Whose credential a process proves on RPC: its own worker key, the cluster secret, or none (--insecure). */
function identityOf(config: Config, workerId?: string): string {
  if (workerId !== undefined && config.auth.workerKey) return workerId;
  return config.auth.token ? 'cluster' : 'none';
}

/** The host a coordinator announces its RPC address with; throws CONFIG_INVALID for a wildcard listen host without cluster.advertiseHost. */
export function coordinatorRpcHost(config: Config): string {
  return advertisedHost(
    config.coordinator.rpcHost,
    config.cluster?.advertiseHost,
    'the coordinator RPC port',
  );
}

/** A coordinator's own record, once its ports are known. */
export function coordinatorRecord(config: Config, ports: { rpcPort: number; httpPort: number }): Member {
  const advertise = config.cluster?.advertiseHost;
  let httpHost: string | undefined;
  try {
    httpHost = advertisedHost(config.coordinator.host, advertise, 'the coordinator HTTP port');
  } catch {
    // the HTTP address is for people and tools, not for dialing: left out rather than refused
  }
  return {
    id: defaultMemberId(hostname(), process.pid),
    role: 'coordinator',
    rpc: formatHostPort({ host: coordinatorRpcHost(config), port: ports.rpcPort }),
    ...(httpHost !== undefined ? { http: formatHostPort({ host: httpHost, port: ports.httpPort }) } : {}),
    protocolVersion: PROTOCOL_VERSION,
    identity: identityOf(config),
    startedAt: Date.now(),
  };
}

/** A worker's own record. `listen`: where it takes coordinators' connections, if it does. */
export function workerRecord(
  config: Config,
  id: string,
  models: readonly string[],
  listen?: { host: string; port: number },
): Member {
  let rpc: string | undefined;
  if (listen) {
    try {
      rpc = formatHostPort({
        host: advertisedHost(listen.host, config.cluster?.advertiseHost, 'worker'),
        port: listen.port,
      });
    } catch {
      // listening on a wildcard with no advertised host: coordinators still get it by its dialing them
    }
  }
  return {
    id,
    role: 'worker',
    ...(rpc !== undefined ? { rpc } : {}),
    models: [...new Set(models)].sort(),
    protocolVersion: PROTOCOL_VERSION,
    identity: identityOf(config, id),
    startedAt: Date.now(),
  };
}
