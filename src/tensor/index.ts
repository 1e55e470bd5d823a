export { decodeBytesElements, encodeBytesElements, textTensor } from './bytes-elements.ts';
export {
  DATATYPES,
  type Datatype,
  ELEMENT_BYTES,
  type NumericArray,
  TYPED_ARRAY,
  bytesOf,
  describeTensor,
  elementCount,
  isDatatype,
  typedView,
} from './datatypes.ts';
export { fromHalfBits, toHalfBits } from './fp16.ts';
export { MAX_TENSOR_RANK, flattenJsonData, tensorFromJson, tensorToJsonData } from './json.ts';
export type { Tensor, TensorSpec } from './tensor.ts';
