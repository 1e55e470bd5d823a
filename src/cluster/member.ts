/**
 * A cluster member as it is written to Redis, and the checks every record read back from Redis
 * goes through before anything acts on it. Redis is shared state that any client holding its
 * password can write, so a record is untrusted input: its size is bounded before it is parsed,
 * its shape is checked by a strict schema, its key must name the same role and id as its body,
 * and every address in it must be one `cluster.allow` lists. A record failing any check is
 * ignored (and counted), never thrown at the caller.
 *
 * Keys: `${namespace}ig:v1:cluster:member:<role>:<id>` hold one JSON record each, under a
 * lease (PX); `${namespace}ig:v1:cluster:members` is the channel announce/leave notes go to.
 * A note only says which key to re-read: its content is never trusted beyond that.
 */

import { isIP } from 'node:net';
import { z } from 'zod';
import type { DialAllowList } from '../api/dial-allow.ts';
import { InfergridError } from '../errors.ts';
import { type HostPort, parseHostPort } from '../util/address.ts';

export const CLUSTER_PREFIX = 'ig:v1:cluster:';

/** A record longer than this is ignored unread (a member's record is a few hundred bytes), bytes. */
export const MAX_MEMBER_RECORD_BYTES = 64 * 1024;
/** A channel note longer than this is ignored, bytes. */
export const MAX_MEMBER_NOTE_BYTES = 1024;
/** Model names a record may list. */
export const MAX_MEMBER_MODELS = 1024;

export type MemberRole = 'coordinator' | 'worker';
export const MEMBER_ROLES: readonly MemberRole[] = ['coordinator', 'worker'];

const memberId = z
  .string()
  .min(1)
  .max(128)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    'letters, digits, "_", "." and "-", starting with a letter or digit',
  );
const address = z.string().min(3).max(300);

export const memberSchema = z
  .object({
    id: memberId,
    role: z.enum(['coordinator', 'worker']),
    /** A coordinator's RPC address (host:port), the one workers dial. */
    rpc: address.optional(),
    /** The member's HTTP front door (host:port). */
    http: address.optional(),
    /** Models a worker hosts. */
    models: z.array(z.string().min(1).max(256)).max(MAX_MEMBER_MODELS).optional(),
    protocolVersion: z.number().int().min(0).max(1_000_000),
    /** Whose credential the member proves on RPC: a worker id (its own key), or 'cluster' (the shared secret), or 'none'. */
    identity: z.string().min(1).max(128),
    /** When the process started, ms since the epoch. */
    startedAt: z.number().int().min(0),
  })
  .strict();

export type Member = z.infer<typeof memberSchema>;

export const memberNoteSchema = z
  .object({
    type: z.enum(['announce', 'leave']),
    role: z.enum(['coordinator', 'worker']),
    id: memberId,
  })
  .strict();

export type MemberNote = z.infer<typeof memberNoteSchema>;

/** Why a record read back from Redis was not taken. */
export type RejectReason = 'malformed' | 'oversized' | 'disallowed';

export type CheckedRecord =
  | { ok: true; member: Member }
  | { ok: false; reason: RejectReason; detail: string };

export class MemberKeys {
  /** `${ns}ig:v1:cluster:member:` */
  readonly memberPrefix: string;
  /** The announce/leave channel. */
  readonly channel: string;
  /** SCAN MATCH pattern for every member key (glob characters of the namespace escaped). */
  readonly pattern: string;

  constructor(namespace: string) {
    this.memberPrefix = `${namespace}${CLUSTER_PREFIX}member:`;
    this.channel = `${namespace}${CLUSTER_PREFIX}members`;
    this.pattern = `${this.memberPrefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  }

  keyOf(role: MemberRole, id: string): string {
    return `${this.memberPrefix}${role}:${id}`;
  }

  /** The role and id a key names; undefined for a key that is not a member key. */
  parseKey(key: string): { role: MemberRole; id: string } | undefined {
    if (!key.startsWith(this.memberPrefix)) return undefined;
    const rest = key.slice(this.memberPrefix.length);
    const colon = rest.indexOf(':');
    if (colon < 0) return undefined;
    const role = rest.slice(0, colon);
    const id = rest.slice(colon + 1);
    if (role !== 'coordinator' && role !== 'worker') return undefined;
    return memberId.safeParse(id).success ? { role, id } : undefined;
  }
}

/**
 * Checks a record read from `key`: size, JSON, schema, that its role and id are the key's, and
 * that every address in it parses and is allowed.
 */
export function checkRecord(keys: MemberKeys, key: string, raw: string, allow: DialAllowList): CheckedRecord {
  if (Buffer.byteLength(raw) > MAX_MEMBER_RECORD_BYTES)
    return { ok: false, reason: 'oversized', detail: `record over ${MAX_MEMBER_RECORD_BYTES} bytes` };
  const named = keys.parseKey(key);
  if (!named) return { ok: false, reason: 'malformed', detail: 'key does not name a role and a valid id' };
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { ok: false, reason: 'malformed', detail: 'record is not JSON' };
  }
  const parsed = memberSchema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return {
      ok: false,
      reason: 'malformed',
      detail: first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid record',
    };
  }
  const member = parsed.data;
  if (member.role !== named.role || member.id !== named.id)
    return {
      ok: false,
      reason: 'malformed',
      detail: `record names ${member.role}:${member.id}, not its key's`,
    };
  for (const what of ['rpc', 'http'] as const) {
    const text = member[what];
    if (text === undefined) continue;
    let at: HostPort;
    try {
      at = parseHostPort(text, what);
    } catch {
      return { ok: false, reason: 'malformed', detail: `${what} "${text}" is not host:port` };
    }
    if (at.port === 0 || !allow.allows(at))
      return { ok: false, reason: 'disallowed', detail: `${what} ${text} is outside cluster.allow` };
  }
  return { ok: true, member };
}

/** Whether two records say the same thing. */
export function sameMember(a: Member, b: Member): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0', '']);

/**
 * The host others reach a listener at: `advertiseHost`, else the listen host, which must then
 * be a real address (a wildcard listens everywhere but names no one place to dial).
 */
export function advertisedHost(listenHost: string, advertiseHost: string | undefined, what: string): string {
  if (advertiseHost !== undefined) return advertiseHost;
  if (WILDCARDS.has(listenHost) || (isIP(listenHost) === 6 && /^[0:]+$/.test(listenHost)))
    throw new InfergridError(
      'CONFIG_INVALID',
      `${what} listens on the wildcard address "${listenHost}", which other hosts cannot dial: set cluster.advertiseHost (--advertise-host) to the address they reach this host at`,
    );
  return listenHost;
}

/** A sanitized member id from a host name and pid (host names may hold characters ids may not). */
export function defaultMemberId(host: string, pid: number): string {
  const clean = host.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '');
  return `${(clean || 'host').slice(0, 100)}-${pid}`;
}

/** The URL with its password hidden, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}
