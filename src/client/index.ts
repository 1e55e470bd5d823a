export {
  type ClientTensor,
  InferenceClient,
  InferenceClientError,
  type InferOptions,
  type InferOutput,
  type InferResponse,
} from './http-client.ts';
