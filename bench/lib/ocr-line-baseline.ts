/**
 * The pipeline scenario's baseline for `ocr-line`: the same steps with no engine, in plain
 * processes (ocr-line-child.ts), each reading whole lines with its own classifier and recognizer
 * sessions. The engine's topologies run the ONNX models in two model-worker processes, so up to
 * two cores of onnxruntime at once; the baseline is given as many processes, or it would be
 * measured on fewer cores than the engine.
 *
 * The load reaches it through the one load engine (BenchRun) with a RequestSender of its own: a
 * request is the next line's index in turn (the images are sent to every process once, up
 * front), handed to the process with the fewest lines in flight, as a balancer spreads requests
 * over workers. Trade-off: a line index over IPC costs less than the engine's HTTP request with
 * the image in it; that difference is part of what the engine costs.
 */

import type { RequestSender, SendOutcome } from '../../src/cli/bench/index.ts';
import { type Child, forkRole } from './processes.ts';

/** What a baseline process is sent. */
export type OcrChildRequest =
  /** The rendered lines, once, before any `read`; answered `lines`. */
  | { type: 'lines'; images: Uint8Array[] }
  /** Read line `line`; answered `read` with the same `id`. */
  | { type: 'read'; id: number; line: number };

/** What a baseline process answers: `ready` first, then one reply per request. */
export type OcrChildReply =
  | { type: 'ready' }
  | { type: 'lines' }
  | { type: 'read'; id: number; text?: string; error?: string };

export interface OcrBaselineProcesses {
  pids: (number | undefined)[];
  /** Each line read once, one after another, by the first process: the text the baseline reads. */
  readAll(): Promise<string[]>;
  /**
   * Requests for a closed-loop run: each the next line in turn, on the process with the fewest in
   * flight; an answer other than that line's text from readAll is an error (`misread`).
   */
  sender(): RequestSender;
  stop(): Promise<void>;
}

const OK: SendOutcome = { ok: true };

/** Forks `processes` baseline processes and gives each the images; resolves once all are ready. */
export async function startOcrBaseline(
  images: readonly Uint8Array[],
  processes: number,
  readyTimeoutMs: number,
): Promise<OcrBaselineProcesses> {
  const childUrl = new URL('./ocr-line-child.ts', import.meta.url).href;
  const children = await Promise.all(
    Array.from({ length: processes }, () => forkRole(childUrl, 'ocr-line baseline', readyTimeoutMs)),
  );
  const stop = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.stop()));
  };
  try {
    await Promise.all(
      children.map((c) =>
        c.ask({ type: 'lines', images: [...images] } satisfies OcrChildRequest, (r) =>
          r.type === 'lines' ? true : undefined,
        ),
      ),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  let nextId = 0;
  /** The text of line `line` as `child` reads it; throws what the child could not read. */
  const read = async (child: Child, line: number): Promise<string> => {
    const id = nextId++;
    const reply = await child.ask({ type: 'read', id, line } satisfies OcrChildRequest, (r) => {
      const m = r as OcrChildReply;
      return m.type === 'read' && m.id === id ? m : undefined;
    });
    if (reply.text === undefined) throw new Error(`baseline line ${line}: ${reply.error}`);
    return reply.text;
  };
  let reference: string[] = [];
  return {
    pids: children.map((c) => c.pid),
    async readAll() {
      reference = [];
      for (let line = 0; line < images.length; line++) reference.push(await read(children[0]!, line));
      return reference;
    },
    sender() {
      const inFlight = children.map(() => 0);
      let turn = 0;
      return {
        async send() {
          const line = turn++ % images.length;
          const k = inFlight.indexOf(Math.min(...inFlight));
          inFlight[k]!++;
          try {
            const text = await read(children[k]!, line);
            return text === reference[line]
              ? OK
              : {
                  ok: false,
                  kind: 'misread',
                  message: `line ${line}: read "${text}", first "${reference[line]}"`,
                };
          } catch (err) {
            return { ok: false, kind: 'error', message: (err as Error).message };
          } finally {
            inFlight[k]!--;
          }
        },
        close() {},
      };
    },
    stop,
  };
}
