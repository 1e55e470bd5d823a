export { WORKER_MALLOC_TUNABLES, withWorkerMallocTunables } from './malloc-tunables.ts';
export { type ChildSpec, Supervisor, type SupervisorEvents, type SupervisorOptions } from './supervisor.ts';
