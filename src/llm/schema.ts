/**
 * How a generative (LLM) model looks as a KServe v2 model, the contract between the OpenAI
 * front door, the coordinator, the RPC and the llama backend (docs/llm.md):
 *
 *   input  `text_input`  BYTES [1]  the prompt; with parameter `chat: true`, a JSON array of
 *                                   OpenAI chat messages ({role, content}) the worker renders
 *                                   with the model's chat template
 *   output `text_output` BYTES [1]  the completion: in partial (streamed) answers the text made
 *                                   since the previous one, in the final answer the whole text
 *
 * Request parameters carry the sampling options; response parameters the accounting.
 */

export const LLM_INPUT = 'text_input';
export const LLM_OUTPUT = 'text_output';
/**
 * output `embedding` FP32 [-1]: the prompt's embedding vector. A request that asks for this
 * output alone (KServe `outputs`) embeds `text_input` instead of generating.
 */
export const LLM_EMBEDDING_OUTPUT = 'embedding';

/** Request parameters (the names follow OpenAI's and vLLM's). */
export const LLM_PARAMETERS = {
  /** true: `text_input` holds JSON chat messages to render with the model's template. */
  chat: 'chat',
  /** true: send partial answers as tokens are made. */
  stream: 'stream',
  maxTokens: 'max_tokens',
  /** vLLM and llama-server's: generate at least this many tokens (EOS is ignored before). */
  minTokens: 'min_tokens',
  /** vLLM's: never stop at EOS (for fixed-length benchmarks). */
  ignoreEos: 'ignore_eos',
  temperature: 'temperature',
  topP: 'top_p',
  topK: 'top_k',
  seed: 'seed',
  repeatPenalty: 'repeat_penalty',
  /** A JSON array of strings (or one string): generation stops before any of them. */
  stop: 'stop',
} as const;

/** Response parameters. */
export const LLM_RESULT_PARAMETERS = {
  /** `stop` (EOS or a stop string), `length` (max_tokens or the context), on the final answer. */
  finishReason: 'finish_reason',
  promptTokens: 'prompt_tokens',
  completionTokens: 'completion_tokens',
  /** Prompt tokens found already evaluated in the sequence (prefix reuse), not evaluated again. */
  cachedTokens: 'cached_tokens',
} as const;

export type FinishReason = 'stop' | 'length';
