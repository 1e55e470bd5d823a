/**
 * One multiplexed RPC connection over a socket: many requests in flight at once, matched by
 * request id (the dialer numbers its requests odd, the listener even, so both sides may
 * ask); per-request deadlines and cancellation; heartbeats both ways and a watchdog that
 * closes a silent connection.
 *
 * Contract: every promise returned by `request` settles exactly once. When the connection is
 * lost, every pending request fails with CONNECTION_LOST (retryable) and every incoming
 * request's signal is aborted — nothing waits forever on a dead peer.
 *
 * Frames written in the same event-loop turn are corked into one writev, so a burst of
 * requests or responses costs one syscall without waiting for a timer.
 *
 * Streamed responses are flow-controlled per request by credit: the requester names a window
 * (partial frames it can hold), the responder sends a partial frame only while it holds
 * credit, and the requester returns credit (STREAM_CREDIT) as its consumer takes frames. A
 * peer that sends partial frames beyond its credit, or grants credit for frames never sent,
 * breaks the protocol and loses its connection. Trade-off: credit comes back in batches of a
 * quarter window (fewer frames), so up to that many taken frames wait to be acknowledged.
 */

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Packr } from 'msgpackr';
import { InfergridError, errorFromWire, toInfergridError } from '../errors.ts';
import {
  FRAME_FLAG,
  type Frame,
  FrameDecoder,
  type HeartbeatMeta,
  KIND_NAME,
  MESSAGE_KIND,
  checkStreamCredit,
  createPackr,
  encodeFrame,
} from '../protocol/index.ts';

export interface RpcConnectionOptions {
  /** Hard limit on one frame in either direction, bytes. */
  maxFrameBytes: number;
  /** How often to send a heartbeat, ms; 0 sends none. */
  heartbeatIntervalMs: number;
  /** Close the connection when nothing at all has arrived for this long, ms; 0 never. */
  peerTimeoutMs: number;
  /** Who opened the connection; decides the parity of this side's request ids. */
  side: 'dialer' | 'listener';
  /** The payload of this side's heartbeats. Default: just the time. */
  heartbeat?: () => HeartbeatMeta;
  /** Shared msgpack codec; one is made when absent. */
  packr?: Packr;
  /** Wall clock in ms, injectable for tests. */
  now?: () => number;
}

export interface RequestOptions {
  /** Fail with DEADLINE_EXCEEDED (and cancel at the peer) after this many ms. */
  timeoutMs?: number;
  /** Aborting fails the request with CANCELLED and cancels it at the peer. */
  signal?: AbortSignal;
  /**
   * Called with each non-final response frame of a streamed response, and the function that
   * returns credit for it: call `credit()` once the frame has been taken by whoever consumes
   * it. Partial frames are refused (PROTOCOL_ERROR) unless `streamWindow` is set.
   */
  onPartial?: (frame: Frame, credit: () => void) => void;
  /** Partial frames the peer may send before credit is returned (the request's `streamWindow`). */
  streamWindow?: number;
}

/** A request the peer sent us. Answer it exactly once with `reply(..., final=true)` or `fail`. */
export interface IncomingRequest {
  readonly requestId: number;
  readonly kind: number;
  readonly meta: unknown;
  readonly attachments: Uint8Array[];
  /** Aborted when the peer cancels or the connection closes. */
  readonly signal: AbortSignal;
  reply(kind: number, meta: unknown, attachments?: Uint8Array[], final?: boolean): void;
  /**
   * Sends a partial (non-final) response frame under the request's stream window: waits for
   * credit first if there is none, and resolves when there is credit for the next one (the
   * receiver has room). Rejects with the signal's reason when the request is cancelled or the
   * connection lost. Call `openStream` first.
   */
  partial(kind: number, meta: unknown, attachments?: Uint8Array[]): Promise<void>;
  /** Starts flow control for partial frames: `window` frames may be sent before credit comes back. */
  openStream(window: number): void;
  fail(error: InfergridError): void;
}

interface Pending {
  resolve: (frame: Frame) => void;
  reject: (err: InfergridError) => void;
  timer: NodeJS.Timeout | undefined;
  onPartial: ((frame: Frame, credit: () => void) => void) | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** Flow control of a streamed response; undefined when the request did not ask to stream. */
  stream: PendingStream | undefined;
}

/** The requester's side of a stream window. */
interface PendingStream {
  readonly window: number;
  /** Partial frames received whose credit has not been returned (taken or not). */
  outstanding: number;
  /** Credit taken by the consumer and not yet sent back. */
  owed: number;
  readonly credit: () => void;
}

/** Kinds that start a request the peer must answer. */
const REQUEST_KINDS: ReadonlySet<number> = new Set([
  MESSAGE_KIND.INFER_REQUEST,
  MESSAGE_KIND.PING,
  MESSAGE_KIND.STATS_REQUEST,
  MESSAGE_KIND.MODEL_CONTROL_REQUEST,
  MESSAGE_KIND.METRICS_REQUEST,
]);
/** Kinds that answer one of our requests. */
const RESPONSE_KINDS: ReadonlySet<number> = new Set([
  MESSAGE_KIND.INFER_RESPONSE,
  MESSAGE_KIND.PONG,
  MESSAGE_KIND.STATS_RESPONSE,
  MESSAGE_KIND.MODEL_CONTROL_RESPONSE,
  MESSAGE_KIND.METRICS_RESPONSE,
]);
/** Kinds of the handshake itself. */
const HANDSHAKE_KINDS: ReadonlySet<number> = new Set([
  MESSAGE_KIND.HELLO,
  MESSAGE_KIND.CHALLENGE,
  MESSAGE_KIND.PROOF,
  MESSAGE_KIND.HELLO_ACK,
  MESSAGE_KIND.ERROR,
]);

export interface RpcConnectionEvents {
  /** The connection is closed; `error` says why when it was not a clean close by this side. */
  close: [InfergridError | undefined];
}

/**
 * Largest frame accepted before the handshake completes. HELLO, HELLO_ACK and a REGISTER
 * listing many models fit easily; a stranger cannot make this process hold 256 MiB.
 */
export const PRE_HANDSHAKE_MAX_FRAME_BYTES = 1024 * 1024;

/** How long an ended socket may take to flush and close before it is destroyed, ms. */
const DEFAULT_LINGER_MS = 5000;

/** Connection-level messages kept while nobody is receiving them yet; more is a misbehaving peer. */
const MAX_INBOX = 64;

export class RpcConnection extends EventEmitter<RpcConnectionEvents> {
  readonly socket: Socket;
  readonly #options: RpcConnectionOptions;
  readonly #packr: Packr;
  readonly #decoder: FrameDecoder;
  readonly #now: () => number;
  readonly #pending = new Map<number, Pending>();
  readonly #incoming = new Map<number, Incoming>();
  #nextId: number;
  #ready = false;
  #closed = false;
  #corked = false;
  #lastHeardAt: number;
  #lastHeartbeatSentAt = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  /**
   * Connection-level messages (HELLO, HELLO_ACK, REGISTER, HEARTBEAT, DRAIN, ERROR with id 0)
   * go to a waiting `receive`, else to the message handler, else wait here: frames that
   * arrive in one chunk are dispatched before any awaiting code runs, so none may be dropped
   * for want of a listener.
   */
  #inbox: Frame[] = [];
  /** Why the peer said it is closing the connection (an ERROR frame with request id 0). */
  #peerError: InfergridError | undefined;
  #waiter: ((frame: Frame | InfergridError) => void) | undefined;
  #messageHandler: ((frame: Frame) => void) | undefined;
  /** Requests from the peer wait here until a request handler is set. */
  #requestQueue: IncomingRequest[] = [];
  #requestHandler: ((request: IncomingRequest) => void) | undefined;
  /**
   * Frames that follow the peer's handshake frame in the same chunk, before this side's
   * handshake code has run: replayed by markReady. (Before any handshake frame, anything
   * else is a protocol error.)
   */
  #early: Frame[] = [];
  #handshakeSeen = false;

  constructor(socket: Socket, options: RpcConnectionOptions) {
    super();
    if (!(options.heartbeatIntervalMs >= 0)) throw new RangeError('heartbeatIntervalMs must be >= 0');
    if (!(options.peerTimeoutMs >= 0)) throw new RangeError('peerTimeoutMs must be >= 0');
    this.socket = socket;
    this.#options = options;
    this.#packr = options.packr ?? createPackr();
    this.#decoder = new FrameDecoder({ maxFrameBytes: options.maxFrameBytes, packr: this.#packr });
    // an unauthenticated peer may not make us buffer hundreds of megabytes
    this.#decoder.setMaxFrameBytes(
      Math.min(options.maxFrameBytes, PRE_HANDSHAKE_MAX_FRAME_BYTES),
      'the limit before the handshake',
    );
    this.#now = options.now ?? Date.now;
    this.#nextId = options.side === 'dialer' ? 1 : 2;
    this.#lastHeardAt = this.#now();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err) =>
      this.close(new InfergridError('CONNECTION_LOST', `connection error: ${err.message}`, { cause: err })),
    );
    socket.on('close', () =>
      this.close(
        this.#peerError
          ? new InfergridError(
              'CONNECTION_LOST',
              `peer closed the connection: ${this.#peerError.message} (${this.#peerError.code})`,
              {
                cause: this.#peerError,
              },
            )
          : new InfergridError('CONNECTION_LOST', 'connection closed by peer'),
      ),
    );
    const tick = Math.min(
      options.heartbeatIntervalMs || Number.POSITIVE_INFINITY,
      options.peerTimeoutMs ? Math.max(1, Math.floor(options.peerTimeoutMs / 4)) : Number.POSITIVE_INFINITY,
    );
    if (Number.isFinite(tick)) {
      this.#timer = setInterval(() => this.#onTick(), tick);
      this.#timer.unref();
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  get ready(): boolean {
    return this.#ready;
  }

  /** Requests this side has sent and not yet seen answered. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Requests the peer sent that have not been answered yet. */
  get incomingCount(): number {
    return this.#incoming.size;
  }

  get remoteAddress(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /** Ends the handshake phase: requests and other messages are accepted from now on. */
  markReady(): void {
    if (this.#ready) return;
    this.#ready = true;
    this.#decoder.setMaxFrameBytes(this.#options.maxFrameBytes);
    const early = this.#early;
    this.#early = [];
    this.#dispatchAll(early);
  }

  /** Hands every request from the peer (and any already queued) to `handler`. Answer each exactly once. */
  setRequestHandler(handler: (request: IncomingRequest) => void): void {
    this.#requestHandler = handler;
    const queued = this.#requestQueue;
    this.#requestQueue = [];
    for (const request of queued) handler(request);
  }

  /**
   * The next connection-level message, for the handshake and registration phases. Rejects
   * when the connection closes; on timeout closes it (telling the peer) and rejects.
   */
  receive(timeoutMs: number, what: string): Promise<Frame> {
    const queued = this.#inbox.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closed)
      return Promise.reject(
        new InfergridError('CONNECTION_LOST', `connection closed while waiting for ${what}`),
      );
    if (this.#waiter) return Promise.reject(new InfergridError('INTERNAL', 'receive() is already waiting'));
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        const err = new InfergridError(
          'DEADLINE_EXCEEDED',
          `no ${what} from ${this.remoteAddress} within ${timeoutMs} ms`,
        );
        this.close(err, true);
        reject(err);
      }, timeoutMs);
      this.#waiter = (frame) => {
        clearTimeout(timer);
        this.#waiter = undefined;
        if (frame instanceof InfergridError) reject(frame);
        else resolve(frame);
      };
    });
  }

  /** Hands every later connection-level message (and any still queued) to `handler`. */
  setMessageHandler(handler: (frame: Frame) => void): void {
    this.#messageHandler = handler;
    const queued = this.#inbox;
    this.#inbox = [];
    for (const frame of queued) handler(frame);
  }

  /** Sends a one-way message (no request id unless given). */
  send(kind: number, meta: unknown, attachments: Uint8Array[] = [], requestId = 0, flags = 0): void {
    if (this.#closed) return;
    this.#write(
      encodeFrame(this.#packr, { kind, flags, requestId, meta, attachments }, this.#options.maxFrameBytes),
    );
  }

  /** Sends a request and resolves with the peer's final response frame. */
  request(
    kind: number,
    meta: unknown,
    attachments: Uint8Array[] = [],
    options: RequestOptions = {},
  ): Promise<Frame> {
    if (this.#closed) {
      return Promise.reject(new InfergridError('CONNECTION_LOST', 'connection is closed'));
    }
    if (options.signal?.aborted) {
      return Promise.reject(new InfergridError('CANCELLED', 'request was cancelled before it was sent'));
    }
    const requestId = this.#allocateId();
    let frameChunks: Uint8Array[];
    try {
      frameChunks = encodeFrame(
        this.#packr,
        { kind, flags: 0, requestId, meta, attachments },
        this.#options.maxFrameBytes,
      );
    } catch (err) {
      return Promise.reject(toInfergridError(err));
    }
    return new Promise<Frame>((resolve, reject) => {
      const pending: Pending = {
        resolve,
        reject,
        timer: undefined,
        onPartial: options.onPartial,
        signal: options.signal,
        onAbort: undefined,
        stream: undefined,
      };
      if (options.streamWindow !== undefined) {
        const window = options.streamWindow;
        // credit goes back in batches of a quarter window: fewer frames, and never a deadlock
        // (the peer stalls only with more than window - batch frames buffered here to take)
        const batch = Math.max(1, Math.floor(window / 4));
        const stream: PendingStream = {
          window,
          outstanding: 0,
          owed: 0,
          credit: () => {
            if (stream.owed >= stream.outstanding || this.#pending.get(requestId) !== pending) return;
            stream.owed++;
            if (stream.owed >= batch) this.#returnCredit(requestId, stream);
          },
        };
        pending.stream = stream;
      }
      if (options.timeoutMs !== undefined) {
        const timeoutMs = options.timeoutMs;
        pending.timer = setTimeout(
          () =>
            this.#abandon(
              requestId,
              new InfergridError('DEADLINE_EXCEEDED', `no response within ${timeoutMs} ms`, {
                details: { timeoutMs },
              }),
            ),
          Math.max(0, timeoutMs),
        );
      }
      if (options.signal) {
        pending.onAbort = () =>
          this.#abandon(requestId, new InfergridError('CANCELLED', 'request was cancelled'));
        options.signal.addEventListener('abort', pending.onAbort, { once: true });
      }
      this.#pending.set(requestId, pending);
      this.#write(frameChunks);
    });
  }

  /** Sends PING and resolves with the round-trip time in ms. */
  async ping(timeoutMs: number): Promise<number> {
    const start = this.#now();
    await this.request(MESSAGE_KIND.PING, { sentAtMs: start }, [], { timeoutMs });
    return this.#now() - start;
  }

  /**
   * Closes the connection. Pending requests fail with CONNECTION_LOST; incoming requests'
   * signals abort. With an `error` whose code is connection-level (protocol, auth), the peer
   * is told why in an ERROR frame first.
   */
  close(error?: InfergridError, tellPeer = false): void {
    this.#shutdown(error, tellPeer, tellPeer ? DEFAULT_LINGER_MS : undefined);
  }

  /** Fails what is pending, then ends the socket (lingering up to lingerMs) or destroys it. */
  #shutdown(error: InfergridError | undefined, tellPeer: boolean, lingerMs: number | undefined): void {
    if (this.#closed) return;
    if (tellPeer && error && !this.socket.destroyed) {
      try {
        this.#write(
          encodeFrame(
            this.#packr,
            {
              kind: MESSAGE_KIND.ERROR,
              flags: FRAME_FLAG.FINAL,
              requestId: 0,
              meta: error.toWire(),
              attachments: [],
            },
            this.#options.maxFrameBytes,
          ),
        );
      } catch {
        // the error frame is a courtesy; the close goes ahead regardless
      }
    }
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    const lost = new InfergridError(
      'CONNECTION_LOST',
      error ? `connection lost: ${error.message}` : 'connection closed',
      {
        cause: error,
      },
    );
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      this.#cleanup(p);
      p.reject(lost);
    }
    for (const [id, incoming] of this.#incoming) {
      this.#incoming.delete(id);
      incoming.abort(lost);
    }
    this.#waiter?.(lost);
    if (this.#corked) {
      this.#corked = false;
      this.socket.uncork();
    }
    if (lingerMs === undefined) this.socket.destroy();
    else {
      this.socket.end();
      setTimeout(() => this.socket.destroy(), lingerMs).unref();
    }
    this.emit('close', error);
  }

  /**
   * Closes after everything already written has reached the peer: the socket is ended (not
   * destroyed) and the promise resolves when the peer has closed its side too, or after
   * `lingerMs`, when the socket is destroyed. For drains: the last answers are not cut off.
   */
  closeGracefully(lingerMs = DEFAULT_LINGER_MS): Promise<void> {
    if (this.socket.destroyed) {
      this.close();
      return Promise.resolve();
    }
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.#shutdown(undefined, false, lingerMs);
    return closed;
  }

  #allocateId(): number {
    const id = this.#nextId;
    this.#nextId += 2;
    if (this.#nextId > 0xffffffff) this.#nextId = this.#options.side === 'dialer' ? 1 : 2;
    return id;
  }

  #write(chunks: Uint8Array[]): void {
    if (this.socket.destroyed) return;
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      // flush after this poll phase: frames for every request read in the same loop turn
      // leave in one writev, and nothing waits on a timer
      setImmediate(() => {
        if (!this.#corked) return;
        this.#corked = false;
        this.socket.uncork();
      });
    }
    for (const c of chunks) this.socket.write(c);
  }

  #cleanup(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    if (p.signal && p.onAbort) p.signal.removeEventListener('abort', p.onAbort);
  }

  #returnCredit(requestId: number, stream: PendingStream): void {
    const credits = stream.owed;
    stream.owed = 0;
    stream.outstanding -= credits;
    this.send(MESSAGE_KIND.STREAM_CREDIT, { credits }, [], requestId);
  }

  /** Gives up on one of our requests (deadline or cancel) and tells the peer to stop. */
  #abandon(requestId: number, error: InfergridError): void {
    const p = this.#pending.get(requestId);
    if (!p) return;
    this.#pending.delete(requestId);
    this.#cleanup(p);
    this.send(MESSAGE_KIND.CANCEL, { reason: error.code }, [], requestId);
    p.reject(error);
  }

  #onTick(): void {
    const now = this.#now();
    // the timer may tick faster than the heartbeat interval (to serve the watchdog)
    const { heartbeatIntervalMs, peerTimeoutMs } = this.#options;
    if (heartbeatIntervalMs && this.#ready && now - this.#lastHeartbeatSentAt >= heartbeatIntervalMs) {
      this.#lastHeartbeatSentAt = now;
      this.send(
        MESSAGE_KIND.HEARTBEAT,
        this.#options.heartbeat ? this.#options.heartbeat() : { sentAtMs: now },
      );
    }
    // Judge silence only after this loop turn's I/O has been read: when this process was
    // blocked (a long model run), the peer's heartbeats are waiting in the socket, and a timer
    // that fires first must not blame the peer for our own stall.
    if (peerTimeoutMs && now - this.#lastHeardAt > peerTimeoutMs) setImmediate(() => this.#checkSilence());
  }

  #checkSilence(): void {
    const silentMs = this.#now() - this.#lastHeardAt;
    if (this.#closed || silentMs <= this.#options.peerTimeoutMs) return;
    this.close(
      new InfergridError(
        'CONNECTION_LOST',
        `peer sent nothing for ${silentMs} ms (limit ${this.#options.peerTimeoutMs} ms)`,
      ),
    );
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    this.#lastHeardAt = this.#now();
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.close(toInfergridError(err, 'PROTOCOL_ERROR'), true);
      return;
    }
    this.#dispatchAll(frames);
  }

  /** Dispatches frames in order; the first one that breaks the protocol closes the connection. */
  #dispatchAll(frames: Frame[]): void {
    for (const frame of frames) {
      if (this.#closed) return;
      try {
        this.#dispatch(frame);
      } catch (err) {
        this.close(toInfergridError(err, 'PROTOCOL_ERROR'), true);
        return;
      }
    }
  }

  #dispatch(frame: Frame): void {
    const { kind, requestId } = frame;
    if (!this.#ready) {
      if (HANDSHAKE_KINDS.has(kind)) {
        if (kind !== MESSAGE_KIND.ERROR) this.#handshakeSeen = true;
        this.#deliverMessage(frame);
        return;
      }
      if (!this.#handshakeSeen) {
        throw new InfergridError('PROTOCOL_ERROR', `${KIND_NAME[kind]} before the handshake`);
      }
      if (this.#early.length >= MAX_INBOX) {
        throw new InfergridError(
          'PROTOCOL_ERROR',
          `peer sent more than ${MAX_INBOX} messages during the handshake`,
        );
      }
      this.#early.push(frame);
      return;
    }
    if (RESPONSE_KINDS.has(kind) || (kind === MESSAGE_KIND.ERROR && requestId !== 0)) {
      const p = this.#pending.get(requestId);
      if (!p) return; // answer to a request we already gave up on (deadline, cancel)
      if (kind === MESSAGE_KIND.ERROR) {
        this.#pending.delete(requestId);
        this.#cleanup(p);
        p.reject(errorFromWire(frame.meta));
      } else if (frame.flags & FRAME_FLAG.FINAL) {
        this.#pending.delete(requestId);
        this.#cleanup(p);
        p.resolve(frame);
      } else {
        const stream = p.stream;
        if (kind !== MESSAGE_KIND.INFER_RESPONSE || !stream || !p.onPartial) {
          throw new InfergridError(
            'PROTOCOL_ERROR',
            `a partial ${KIND_NAME[kind]} for request ${requestId}, which did not ask to stream`,
          );
        }
        if (++stream.outstanding > stream.window) {
          throw new InfergridError(
            'PROTOCOL_ERROR',
            `request ${requestId}: more partial responses than its stream window of ${stream.window} allows`,
          );
        }
        try {
          p.onPartial(frame, stream.credit);
        } catch (err) {
          // the caller's own callback failed: that request ends, the connection is fine
          this.#abandon(requestId, toInfergridError(err));
        }
      }
      return;
    }
    if (REQUEST_KINDS.has(kind)) {
      if (requestId === 0)
        throw new InfergridError('PROTOCOL_ERROR', `${KIND_NAME[kind]} without a request id`);
      if (kind === MESSAGE_KIND.PING) {
        this.send(MESSAGE_KIND.PONG, frame.meta, [], requestId, FRAME_FLAG.FINAL);
        return;
      }
      if (this.#incoming.has(requestId)) {
        throw new InfergridError('PROTOCOL_ERROR', `request id ${requestId} is already in use`);
      }
      const request = this.#makeIncoming(frame);
      if (this.#requestHandler) this.#requestHandler(request);
      else if (this.#requestQueue.length < MAX_INBOX) this.#requestQueue.push(request);
      else
        throw new InfergridError(
          'PROTOCOL_ERROR',
          `peer sent more than ${MAX_INBOX} requests before this side was set up`,
        );
      return;
    }
    if (kind === MESSAGE_KIND.STREAM_CREDIT) {
      if (requestId === 0) throw new InfergridError('PROTOCOL_ERROR', 'STREAM_CREDIT without a request id');
      const { credits } = checkStreamCredit(frame.meta);
      // credit for a request already answered or cancelled crossed its end on the wire
      this.#incoming.get(requestId)?.credit(credits);
      return;
    }
    if (kind === MESSAGE_KIND.CANCEL) {
      const incoming = this.#incoming.get(requestId);
      if (incoming) {
        this.#incoming.delete(requestId);
        incoming.abort(new InfergridError('CANCELLED', 'cancelled by the coordinator'));
      }
      return;
    }
    this.#deliverMessage(frame);
  }

  #deliverMessage(frame: Frame): void {
    if (frame.kind === MESSAGE_KIND.ERROR) this.#peerError = errorFromWire(frame.meta);
    // liveness is already recorded; a heartbeat nobody is listening for is not worth keeping
    if (frame.kind === MESSAGE_KIND.HEARTBEAT) {
      this.#messageHandler?.(frame);
      return;
    }
    if (this.#waiter) this.#waiter(frame);
    else if (this.#messageHandler) this.#messageHandler(frame);
    else if (this.#inbox.length < MAX_INBOX) this.#inbox.push(frame);
    else
      throw new InfergridError(
        'PROTOCOL_ERROR',
        `peer sent more than ${MAX_INBOX} messages before this side was set up`,
      );
  }

  #makeIncoming(frame: Frame): IncomingRequest {
    const incoming = new Incoming(this, this.#incoming, frame);
    this.#incoming.set(frame.requestId, incoming);
    return incoming;
  }
}

/**
 * A request the peer sent, as handed to the request handler. A class rather than closures (one
 * object per request, nothing else), and its AbortController is made only when someone asks
 * for the signal or the request is cancelled.
 */
class Incoming implements IncomingRequest {
  readonly requestId: number;
  readonly kind: number;
  readonly meta: unknown;
  readonly attachments: Uint8Array[];
  readonly #connection: RpcConnection;
  /** The connection's requests in progress; a request the peer cancelled is already gone from it. */
  readonly #open: Map<number, Incoming>;
  #controller: AbortController | undefined;
  #settled = false;
  /** Flow control of partial frames, once `openStream` was called. */
  #window: number | undefined;
  /** Partial frames that may be sent now. */
  #credit = 0;
  /** Partial frames sent whose credit has not come back. */
  #unacknowledged = 0;
  /** Wakes a `partial` waiting for credit (or for the abort). */
  #creditWaiter: (() => void) | undefined;

  constructor(connection: RpcConnection, open: Map<number, Incoming>, frame: Frame) {
    this.#connection = connection;
    this.#open = open;
    this.requestId = frame.requestId;
    this.kind = frame.kind;
    this.meta = frame.meta;
    this.attachments = frame.attachments;
  }

  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  abort(reason: InfergridError): void {
    this.#controller ??= new AbortController();
    this.#controller.abort(reason);
    this.#creditWaiter?.();
  }

  openStream(window: number): void {
    if (this.#window !== undefined) throw new InfergridError('INTERNAL', 'openStream() called twice');
    this.#window = window;
    this.#credit = window;
  }

  /** Credit from the peer; more than the frames it has not acknowledged is a lie. */
  credit(credits: number): void {
    if (this.#window === undefined || credits > this.#unacknowledged) {
      throw new InfergridError(
        'PROTOCOL_ERROR',
        `STREAM_CREDIT of ${credits} for request ${this.requestId}, which has ${this.#window === undefined ? 'no stream' : `${this.#unacknowledged} unacknowledged partial responses`}`,
      );
    }
    this.#unacknowledged -= credits;
    this.#credit += credits;
    this.#creditWaiter?.();
  }

  /** Partial frames sent and not yet acknowledged (for statistics and tests). */
  get unacknowledged(): number {
    return this.#unacknowledged;
  }

  async partial(kind: number, meta: unknown, attachments: Uint8Array[] = []): Promise<void> {
    if (this.#window === undefined) throw new InfergridError('INTERNAL', 'partial() before openStream()');
    await this.#waitForCredit();
    if (this.#settled || !this.#open.has(this.requestId)) this.#throwAborted();
    this.#credit--;
    this.#unacknowledged++;
    this.#connection.send(kind, meta, attachments, this.requestId, 0);
    await this.#waitForCredit();
  }

  async #waitForCredit(): Promise<void> {
    while (this.#credit === 0) {
      if (this.#controller?.signal.aborted || this.#settled) this.#throwAborted();
      if (this.#creditWaiter)
        throw new InfergridError('INTERNAL', 'partial() called before the previous one resolved');
      await new Promise<void>((resolve) => {
        this.#creditWaiter = resolve;
      });
      this.#creditWaiter = undefined;
    }
  }

  #throwAborted(): never {
    const reason = this.#controller?.signal.reason;
    throw reason instanceof InfergridError
      ? reason
      : new InfergridError('CANCELLED', 'the request was cancelled or already answered');
  }

  /** Marks the request answered; false when it already was, or the peer no longer wants it. */
  #settle(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#creditWaiter?.();
    return this.#open.delete(this.requestId);
  }

  reply(kind: number, meta: unknown, attachments: Uint8Array[] = [], final = true): void {
    if (this.#settled) return;
    if (final ? !this.#settle() : !this.#open.has(this.requestId)) return;
    const flags = final ? FRAME_FLAG.FINAL : 0;
    try {
      this.#connection.send(kind, meta, attachments, this.requestId, flags);
    } catch (err) {
      // the answer could not be encoded (e.g. over maxFrameBytes): the peer still gets an
      // answer, as this side's failure — not the FRAME_TOO_LARGE a request body would be
      const error = new InfergridError(
        'INTERNAL',
        `the response could not be sent: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
      this.#connection.send(MESSAGE_KIND.ERROR, error.toWire(), [], this.requestId, FRAME_FLAG.FINAL);
    }
  }

  fail(error: InfergridError): void {
    if (!this.#settle()) return;
    this.#connection.send(MESSAGE_KIND.ERROR, error.toWire(), [], this.requestId, FRAME_FLAG.FINAL);
  }
}
