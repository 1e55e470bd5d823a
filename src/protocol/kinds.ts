/**
 * Every message kind that crosses a coordinator <-> worker connection, with its wire code.
 * Codes are append-only: never renumber or reuse one.
 */
export const MESSAGE_KIND = {
  /** Dialer -> listener, first frame on a connection: magic, protocol version, role, id, nonce. */
  HELLO: 1,
  /** Listener -> dialer, last handshake frame: the dialer is accepted (a refusal is an ERROR frame, then close). */
  HELLO_ACK: 2,
  /** Worker -> coordinator, after the handshake: id, address, the models it hosts with their schemas. */
  REGISTER: 3,
  /** Either way, every heartbeat interval; the worker's carries its load and model states. */
  HEARTBEAT: 4,
  /** Coordinator -> worker: run a model on tensors. */
  INFER_REQUEST: 5,
  /** Worker -> coordinator: outputs; a request may get several, the last has the FINAL flag. */
  INFER_RESPONSE: 6,
  /** A request failed (request id set) or the connection is being closed (request id 0). Always final. */
  ERROR: 7,
  /** Coordinator -> worker: stop working on a request; no response is expected. */
  CANCEL: 8,
  /** Worker -> coordinator: I am shutting down, send me nothing new. Coordinator -> worker: please drain. */
  DRAIN: 9,
  /** Liveness probe with a nonce; the peer answers PONG with the same request id. */
  PING: 10,
  PONG: 11,
  /** Coordinator -> worker: send your per-model statistics. */
  STATS_REQUEST: 12,
  /** Worker -> coordinator: `{ models: ModelStatsSnapshot[] }`. */
  STATS_RESPONSE: 13,
  /** Coordinator -> worker: load models (`{ action: 'load', models: ModelConfig[] }`) or unload (`{ action: 'unload', name, versions? }`). */
  MODEL_CONTROL_REQUEST: 14,
  /** Worker -> coordinator, once the load or unload has finished: `{ models: ModelStatus[] }`. */
  MODEL_CONTROL_RESPONSE: 15,
  /** Coordinator -> worker: send your Prometheus metrics. */
  METRICS_REQUEST: 16,
  /** Worker -> coordinator: `{ metrics }`, prom-client's getMetricsAsJSON(). */
  METRICS_RESPONSE: 17,
  /** Listener -> dialer, answering HELLO: role, id, its own nonce and its proof of the connection's key. */
  CHALLENGE: 18,
  /** Dialer -> listener, answering CHALLENGE: its proof of the connection's key. */
  PROOF: 19,
  /**
   * Coordinator -> worker, for a request sent with `stream: true`: `{ credits }`, that many more
   * partial INFER_RESPONSE frames may be sent (the receiver has taken that many). A peer that
   * predates it refuses the kind as UNKNOWN_MESSAGE and closes the connection; it is only ever
   * sent after partial frames, which such a peer never sends.
   */
  STREAM_CREDIT: 20,
} as const;

export type MessageKind = (typeof MESSAGE_KIND)[keyof typeof MESSAGE_KIND];

const KNOWN_KINDS: ReadonlySet<number> = new Set(Object.values(MESSAGE_KIND));

export function isMessageKind(kind: number): kind is MessageKind {
  return KNOWN_KINDS.has(kind);
}

export const KIND_NAME: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(MESSAGE_KIND).map(([name, code]) => [code, name]),
);

/** Frame flag bits. */
export const FRAME_FLAG = {
  /** The last frame of a response stream. INFER_RESPONSE frames without it are partial (streamed). */
  FINAL: 0x01,
} as const;
