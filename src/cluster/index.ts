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
  redactedUrl,
} from './control-plane.ts';
export {
  type SharedControlOptions,
  coordinatorApplier,
  startSharedControl,
  stopSharedControl,
} from './coordinator-control.ts';
