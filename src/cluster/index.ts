export {
  CLUSTER_PREFIX,
  MAX_MEMBER_MODELS,
  MAX_MEMBER_NOTE_BYTES,
  MAX_MEMBER_RECORD_BYTES,
  type Member,
  MemberKeys,
  type MemberRole,
  advertisedHost,
  checkRecord,
  defaultMemberId,
  memberSchema,
  redactUrl,
} from './member.ts';
export {
  Membership,
  type MembershipCounters,
  type MembershipEvents,
  type MembershipOptions,
  type MembershipSnapshot,
  type MemberView,
} from './membership.ts';
export { type CoordinatorDialer, followCoordinators } from './follow-coordinators.ts';
export { coordinatorRecord, coordinatorRpcHost, workerRecord } from './self-record.ts';
