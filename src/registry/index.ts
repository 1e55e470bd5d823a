export {
  type ModelEntry,
  ModelRegistry,
  type ModelRegistryEvents,
  type ModelSpec,
  type RepositoryIndexEntry,
  type RepositoryState,
  compareVersionsDesc,
  modelKey,
} from './registry.ts';
export { type ModelSchema, type TensorDescriptor, validateInputs } from './validate.ts';
export { describePolicy, policyOf, selectVersions, servedModels } from './policy.ts';
