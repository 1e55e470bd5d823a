/**
 * Server-sent events as the LLM front doors stream them: each event one `data: <json>` line and
 * a blank line (OpenAI ends the stream with `data: [DONE]`, Triton's generate_stream with
 * nothing). Writes honour the socket's backpressure: the next chunk is pulled only once the
 * last one was taken (or the client is gone).
 */

import type { ServerResponse } from 'node:http';

export const SSE_CONTENT_TYPE = 'text/event-stream; charset=utf-8';
export const SSE_DONE = 'data: [DONE]\n\n';

/** One SSE event carrying `data` as JSON (JSON has no raw newline, so one `data:` line). */
export function sseEvent(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

/**
 * Writes `chunk`, resolving when the response can take more: at once while its buffer has
 * room, else on 'drain', or when the response closes (false then: nobody is reading).
 */
export function writeSse(res: ServerResponse, chunk: string): Promise<boolean> {
  if (res.destroyed || res.writableEnded) return Promise.resolve(false);
  if (res.write(chunk)) return Promise.resolve(true);
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}
