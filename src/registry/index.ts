export {
  type ModelEntry,
  ModelRegistry,
  type ModelRegistryEvents,
  type ModelSpec,
  compareVersionsDesc,
  modelKey,
} from './registry.ts';
export { type ModelSchema, type TensorDescriptor, validateInputs } from './validate.ts';
