/**
 * Chat messages rendered with the model's own template (the GGUF's `tokenizer.chat_template`,
 * Hugging Face Jinja), as vLLM and llama-server do. The rendered text holds the template's
 * special tokens ("<|im_start|>", "<s>") and is tokenized with special tokens on; a template
 * that writes `bos_token` itself gets no second BOS.
 */

import { Template } from '@huggingface/jinja';
import { InfergridError } from '../errors.ts';

export interface ChatMessage {
  role: string;
  content: string;
}

/** Most messages one request may carry. */
const MAX_CHAT_MESSAGES = 1024;

/** Parses `text_input` of a chat request: a JSON array of OpenAI messages ({role, content}). */
export function parseChatMessages(json: string): ChatMessage[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new InfergridError('INVALID_ARGUMENT', 'chat input: text_input must be a JSON array of messages');
  }
  if (!Array.isArray(raw) || raw.length === 0)
    throw new InfergridError('INVALID_ARGUMENT', 'chat input: expected a non-empty array of messages');
  if (raw.length > MAX_CHAT_MESSAGES)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `chat input: ${raw.length} messages, more than the ${MAX_CHAT_MESSAGES} allowed`,
    );
  return raw.map((m, i) => {
    const where = `chat input: messages[${i}]`;
    if (typeof m !== 'object' || m === null)
      throw new InfergridError('INVALID_ARGUMENT', `${where}: not an object`);
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (typeof role !== 'string' || role.length === 0)
      throw new InfergridError('INVALID_ARGUMENT', `${where}.role: expected a string`);
    return { role, content: contentText(content, where) };
  });
}

/**
 * A message's text: its content as a string, null (an assistant turn with tool calls), or
 * `{ type: 'text', text }` parts. Anything else is INVALID_ARGUMENT naming the field (also as
 * `details.param`); `where` names the message, e.g. `messages[2]`.
 */
export function contentText(content: unknown, where: string): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  const invalid = (param: string, message: string) =>
    new InfergridError('INVALID_ARGUMENT', `${param}: ${message}`, { details: { param } });
  if (!Array.isArray(content))
    throw invalid(`${where}.content`, 'expected a string or an array of text parts');
  return content
    .map((part, j) => {
      const p = part as { type?: unknown; text?: unknown } | null;
      if (p?.type !== 'text' || typeof p.text !== 'string')
        throw invalid(`${where}.content[${j}]`, 'only text parts ({"type":"text","text":...}) are supported');
      return p.text;
    })
    .join('');
}

export interface ChatTemplateTokens {
  bosToken: string;
  eosToken: string;
}

/** A model's compiled chat template. */
export class ChatTemplate {
  readonly source: string;
  readonly #template: Template;
  readonly #tokens: ChatTemplateTokens;

  constructor(source: string, tokens: ChatTemplateTokens) {
    this.source = source;
    this.#template = new Template(source);
    this.#tokens = tokens;
  }

  /** The prompt text for these messages, ending where the assistant's answer begins. */
  render(messages: readonly ChatMessage[]): string {
    try {
      return this.#template.render({
        messages,
        add_generation_prompt: true,
        bos_token: this.#tokens.bosToken,
        eos_token: this.#tokens.eosToken,
      });
    } catch (err) {
      // templates raise on conversations they do not accept ("roles must alternate")
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `chat input: the model's template refused it: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }
}
