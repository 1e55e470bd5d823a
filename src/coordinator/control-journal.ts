/**
 * How an operator's control-plane change (repository load/unload, traffic split, worker
 * removal/re-admission) is reported beyond this coordinator. The coordinator only knows this
 * interface; the cluster's shared control plane (src/cluster/control-plane.ts) implements it,
 * so nothing here depends on Redis, and a coordinator without `cluster` has no journal at all.
 *
 * The trade-off: a change is reported in two steps. `begin` is called synchronously when the
 * change starts (before anything is applied), so the journal can hold back records from other
 * coordinators about the same target until this one is written; `commit` once it is applied
 * here, with what other coordinators need to apply it the same way (or `abort` when it failed
 * and changed nothing). A change applied because another coordinator made it is never begun:
 * it must not be published again.
 */

/** What a control record is about; with the target it names one record (the latest wins). */
export type ControlKind = 'repository' | 'traffic' | 'removal';

/** What was done to the target. */
export type ControlOp = 'load' | 'unload' | 'set' | 'remove' | 'readmit';

/** One change being made here, from `begin` to `commit` or `abort` (exactly one of them, once). */
export interface ControlEntry {
  /** The change is applied here: publish it. `payload` is plain JSON. */
  commit(op: ControlOp, payload: Record<string, unknown>): void;
  /** The change failed and left nothing to share. */
  abort(): void;
}

export interface ControlJournal {
  /** Called when an operator's change of (kind, target) starts on this coordinator. */
  begin(kind: ControlKind, target: string): ControlEntry;
}

/** Options of a control-plane change: whether another coordinator made it (then it is not journaled). */
export interface ControlChangeOptions {
  /** Applied from another coordinator's record: not published again. Default false. */
  replicated?: boolean;
}

/** An entry that does nothing: no journal (a coordinator without `cluster`) or a replicated change. */
export const NO_ENTRY: ControlEntry = { commit() {}, abort() {} };
