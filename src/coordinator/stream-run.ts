/**
 * One streamed request's attempts on workers, pulled by its consumer. Partial answers arrive as
 * the worker sends them and wait here until the consumer takes them; credit goes back to the
 * worker only as they are taken, so this buffer never holds more than the stream window, and a
 * consumer that stops pulling stalls the model on the worker (backpressure end to end).
 *
 * Retries: an attempt that fails retryably (worker lost, overloaded, draining) is retried on a
 * worker not yet tried, within the deadline, the attempt limit and the retry budget, but only
 * while the consumer has taken no partial answer: after that the client has seen tokens from
 * one worker and another cannot continue them, so the failure goes to the consumer. No hedging.
 *
 * Contract: `next` yields partial answers in order, then the final one, or throws once; `close`
 * (the consumer stopped: generator return, client gone) cancels the running attempt on its
 * worker at once. The worker counts the request as in flight until its attempt settles, which
 * happens on every path (final, error, cancel, deadline, lost connection).
 */

import { InfergridError, toInfergridError } from '../errors.ts';
import { type Frame, type InferRequestMeta, checkInferResponse, tensorsFromWire } from '../protocol/index.ts';
import { modelKey } from '../registry/index.ts';
import { endStage, startStage } from '../telemetry/index.ts';
import {
  type DispatchRequest,
  type DispatchResult,
  type Dispatcher,
  type PickTarget,
  type Replica,
  wirePlan,
} from './dispatcher.ts';
import type { InferReply } from './worker-pool.ts';

export type StreamItem =
  | { final: false; reply: InferReply; workerId: string }
  | { final: true; result: DispatchResult };

export interface StreamRunOptions {
  dispatcher: Dispatcher;
  request: DispatchRequest;
  /** Partial answers the worker may send ahead of the consumer (rpc.streamWindow). */
  window: number;
  /** false: ask the worker for the final answer only (a client that did not ask to stream). */
  partials: boolean;
}

interface Queued {
  reply: InferReply;
  credit: () => void;
}

export class StreamRun implements PickTarget {
  readonly request: DispatchRequest;
  readonly key: string;
  readonly routeConfig: PickTarget['routeConfig'];
  readonly shardKeyHash: number | undefined;
  readonly prefix: Uint8Array | undefined;
  readonly deadline: number;
  readonly trace: PickTarget['trace'];
  readonly tried = new Set<string>();
  readonly #dispatcher: Dispatcher;
  readonly #window: number;
  readonly #partials: boolean;
  readonly #maxAttempts: number;
  readonly #attachments: Uint8Array[];
  readonly #baseMeta: Omit<InferRequestMeta, 'timeoutMs'>;
  #queue: Queued[] = [];
  /** Credit for the partial answer the consumer took last, returned when it asks for the next. */
  #taken: (() => void) | undefined;
  /** Partial answers handed to the consumer: after the first, no retry. */
  #yielded = 0;
  #final: DispatchResult | undefined;
  #error: InfergridError | undefined;
  #wake: (() => void) | undefined;
  #attempt: AbortController | undefined;
  #worker: Replica | undefined;
  #started = 0;
  #closed = false;
  readonly #onAbort: () => void;

  constructor(options: StreamRunOptions) {
    const { dispatcher, request } = options;
    this.#dispatcher = dispatcher;
    this.request = request;
    this.#window = options.window;
    this.#partials = options.partials;
    const { entry } = request;
    this.key = modelKey(entry.name, entry.version);
    this.routeConfig = entry.config?.routing ?? {};
    this.#maxAttempts = dispatcher.maxAttemptsFor(this.routeConfig);
    this.deadline = dispatcher.clock.now() + request.timeoutMs;
    this.trace = request.traceContext;
    const plan = wirePlan(
      request,
      this.routeConfig,
      dispatcher.router.strategyFor(this.routeConfig) === 'prefix-aware',
    );
    this.shardKeyHash = plan.shardKeyHash;
    this.prefix = plan.prefix;
    this.#attachments = plan.attachments;
    this.#baseMeta = {
      ...plan.baseMeta,
      ...(options.partials ? { stream: true, streamWindow: options.window } : {}),
    };
    this.#onAbort = () =>
      this.#end(
        toInfergridError(
          request.signal?.reason ?? new InfergridError('CANCELLED', 'request was cancelled'),
          'CANCELLED',
        ),
      );
    dispatcher.budget.onRequest();
    if (request.signal?.aborted) {
      this.#onAbort();
      return;
    }
    request.signal?.addEventListener('abort', this.#onAbort, { once: true });
    const first = dispatcher.pickFor(this);
    if (!first) {
      this.#end(
        this.deadline - dispatcher.clock.now() <= 0
          ? new InfergridError('DEADLINE_EXCEEDED', 'the request ran out of time before it could be sent')
          : dispatcher.unavailable(entry),
      );
      return;
    }
    this.#start(first);
  }

  /** The worker running the current attempt. */
  get workerId(): string | undefined {
    return this.#worker?.id;
  }

  /** The next partial answer, or the final one; throws the request's error. */
  async next(): Promise<StreamItem> {
    // the consumer is back for more: the answer it took last has left this process
    this.#taken?.();
    this.#taken = undefined;
    for (;;) {
      const queued = this.#queue.shift();
      if (queued) {
        this.#yielded++;
        this.#taken = queued.credit;
        return { final: false, reply: queued.reply, workerId: this.#worker?.id ?? '' };
      }
      if (this.#final) return { final: true, result: this.#final };
      if (this.#error) throw this.#error;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }

  /** The consumer is gone: cancel the running attempt (if any) on its worker. */
  close(): void {
    if (this.#final || this.#error) return;
    this.#end(new InfergridError('CANCELLED', 'the client stopped reading the stream'));
  }

  #start(worker: Replica): void {
    const d = this.#dispatcher;
    const remaining = this.deadline - d.clock.now();
    this.tried.add(worker.id);
    this.#started++;
    this.#worker = worker;
    const attempt = new AbortController();
    this.#attempt = attempt;
    const startedAt = d.clock.now();
    const probe = d.router.onSend(this.key, worker.key);
    const meta: InferRequestMeta = { ...this.#baseMeta, timeoutMs: Math.max(1, remaining) };
    const stage = startStage(
      d.source,
      'attempt',
      this.trace,
      this.#baseMeta.model,
      this.#started,
      this.#started === 1 ? 'first' : 'retry',
      worker.id,
    );
    if (stage?.traceparent !== undefined) meta.traceparent = stage.traceparent;
    worker
      .infer(meta, this.#attachments, {
        timeoutMs: Math.max(1, remaining),
        signal: attempt.signal,
        ...(this.#partials
          ? {
              streamWindow: this.#window,
              onPartial: (frame: Frame, credit: () => void) =>
                this.#onPartial(attempt, worker, frame, credit),
            }
          : {}),
      })
      .then(
        (reply) => {
          endStage(stage);
          d.router.onResult(this.key, worker.key, 'success', d.clock.now() - startedAt, probe);
          if (attempt !== this.#attempt || this.#error) return;
          this.#final = { ...reply, workerId: worker.id, attempts: this.#started };
          this.#settled();
        },
        (err: unknown) => {
          endStage(stage, err);
          const error = toInfergridError(err);
          d.router.onResult(this.key, worker.key, error.isWorkerFault ? 'failure' : 'neutral', 0, probe);
          if (attempt === this.#attempt && !this.#error) this.#onError(error);
        },
      );
  }

  /** A partial answer from the worker: checked, decoded and queued for the consumer. */
  #onPartial(attempt: AbortController, worker: Replica, frame: Frame, credit: () => void): void {
    if (attempt !== this.#attempt) return;
    let reply: InferReply;
    try {
      const meta = checkInferResponse(frame.meta);
      reply = { meta, outputs: tensorsFromWire(meta.outputs, frame.attachments) };
    } catch (err) {
      // thrown back to the connection: the attempt ends as the worker's protocol error
      const cause = toInfergridError(err, 'PROTOCOL_ERROR');
      throw new InfergridError(
        'PROTOCOL_ERROR',
        `worker ${worker.id} sent a partial answer: ${cause.message}`,
        {
          cause,
        },
      );
    }
    this.#queue.push({ reply, credit });
    this.#wake?.();
  }

  #onError(error: InfergridError): void {
    const d = this.#dispatcher;
    if (
      this.#yielded === 0 &&
      !this.#closed &&
      error.retryable &&
      this.#started < this.#maxAttempts &&
      d.budget.canRetry()
    ) {
      const next = d.pickFor(this);
      if (next && d.budget.tryRetry()) {
        d.retries++;
        // what the failed attempt sent was never shown: it goes, and its credit with it
        this.#queue = [];
        this.#start(next);
        return;
      }
    }
    this.#end(error);
  }

  /** Ends the run with an error, cancelling the attempt on its worker if it is still running. */
  #end(error: InfergridError): void {
    if (this.#closed) return;
    this.#error = error;
    this.#queue = [];
    this.#attempt?.abort(error);
    this.#settled();
  }

  #settled(): void {
    this.#closed = true;
    this.request.signal?.removeEventListener('abort', this.#onAbort);
    this.#wake?.();
  }
}
