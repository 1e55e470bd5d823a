export { type ChildSpec, Supervisor, type SupervisorEvents, type SupervisorOptions } from './supervisor.ts';
