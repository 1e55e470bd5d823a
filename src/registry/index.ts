export {
  type ModelRegistryEvents,
  ModelRegistry,
  type ModelRegistryOptions,
  isPlacedOn,
} from './registry.ts';
export { type ModelEntry, type ModelSpec, type Replica, ReplicaTable } from './replica-table.ts';
export {
  ModelRepositoryState,
  type RepositoryIndexEntry,
  type RepositoryReplicas,
  type RepositoryState,
} from './repository-state.ts';
export {
  type VersionReplicas,
  type VersionRepository,
  VersionRouter,
  type VersionRouterOptions,
} from './version-router.ts';
export { modelKey } from './model-key.ts';
export { type ModelSchema, type TensorDescriptor, validateInputs } from './validate.ts';
// Version order and policy are config's (a function of the declared models); re-exported
// here because the registry is where the rest of the code asks which versions are served.
export {
  compareVersionsDesc,
  describePolicy,
  policyOf,
  selectVersions,
  servedModels,
} from '../config/index.ts';
