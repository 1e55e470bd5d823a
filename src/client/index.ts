export {
  type ClientTensor,
  InferenceClient,
  InferenceClientError,
  type InferOptions,
  type InferOutput,
  type InferResponse,
  decodeInferResponse,
  encodeInferRequest,
} from './http-client.ts';
