export {
  CONTROL_KINDS,
  CONTROL_PREFIX,
  type ControlApplier,
  ControlPlane,
  type ControlPlaneOptions,
  type ControlPlaneStats,
  type ControlRecord,
  DEFAULT_MAX_CONTROL_RECORD_BYTES,
  DEFAULT_MAX_CONTROL_RECORDS,
  MAX_FEED_MESSAGE_BYTES,
  controlField,
} from './control-plane.ts';
export {
  type SharedControlOptions,
  coordinatorApplier,
  startSharedControl,
  stopSharedControl,
} from './coordinator-control.ts';
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
