/**
 * The one configuration schema, with every default and its unit. `serve`, `coordinator` and
 * `worker` all read the same file; each uses the sections it needs.
 */

import { z } from 'zod';
import { DATATYPES } from '../tensor/index.ts';

const MIB = 1024 * 1024;

export const DEFAULT_HTTP_PORT = 8000;
export const DEFAULT_RPC_PORT = 9000;
/** Triton's gRPC port. */
export const DEFAULT_GRPC_PORT = 8001;
export const DEFAULT_BODY_LIMIT_BYTES = 64 * MIB;
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_FRAME_BYTES = 256 * MIB;
/** Responses smaller than this are sent uncompressed (bench/scenarios/compression.ts; docs/performance.md). */
export const DEFAULT_RESPONSE_MIN_BYTES = 1024;
export const DEFAULT_COMPRESSION_LEVEL = 1;

const port = z.number().int().min(0).max(65535);
/** Timers take at most 2^31−1 ms; a longer one would fire at once. */
const positiveMs = z.number().int().positive().max(2_147_483_647, 'at most 2147483647 ms (about 24.8 days)');
const hostPort = z.string().regex(/^(\[[^\]]+\]|[^:\s]*):\d{1,5}$/, 'expected host:port');
const name = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    'letters, digits, "_", "." and "-", starting with a letter or digit',
  );

const tensorSpec = z
  .object({
    name: z.string().min(1),
    datatype: z.enum(DATATYPES),
    shape: z.array(z.number().int().min(-1)),
  })
  .strict();

/** What one inference request may hold, whatever front door it came through (each over it is a 400). */
export const requestLimitsSchema = z
  .object({
    /** Inputs in one request. */
    maxInputs: z.number().int().positive().default(64),
    /** Characters in a request's `id`. */
    maxIdLength: z.number().int().positive().default(256),
    /** Elements across all of a request's tensors (shape products). */
    maxElements: z
      .number()
      .int()
      .positive()
      .default(64 * 1024 * 1024),
    /** BYTES elements across a request's tensors (each one is an object where it is decoded). */
    maxBytesElements: z.number().int().positive().default(65_536),
    /** Bytes in one BYTES element. */
    maxBytesElementBytes: z
      .number()
      .int()
      .positive()
      .default(16 * MIB),
  })
  .strict();

/** Certificate and key files for a TLS listener (PEM), relative to the config file's folder. */
export const tlsListenerSchema = z
  .object({
    certFile: z.string().min(1),
    keyFile: z.string().min(1),
  })
  .strict();

/** What an HTTP credential may do: `infer` (data plane), `metrics` (read-only operations), `admin` (everything). */
export const API_SCOPES = ['infer', 'metrics', 'admin'] as const;
export type ApiScope = (typeof API_SCOPES)[number];
/** Scopes a request without credentials may be granted (`health`: liveness, readiness, server metadata). */
export const ANONYMOUS_SCOPES = ['health', ...API_SCOPES] as const;
export type AnonymousScope = (typeof ANONYMOUS_SCOPES)[number];

export const rateLimitSchema = z
  .object({
    /** Sustained requests per second. */
    requestsPerSecond: z.number().positive(),
    /** Requests that may arrive at once above the rate (the bucket's size); default: one second's worth. */
    burst: z.number().int().positive().optional(),
  })
  .strict();

export const apiKeySchema = z
  .object({
    /** Who holds the key; logs, metrics and async requests name it. */
    name,
    /** SHA-256 of the key, hex (`infergrid apikey` prints it); the key itself is never stored. */
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits (infergrid apikey prints them)'),
    scopes: z.array(z.enum(API_SCOPES)).min(1),
    /** This key's request rate; none when absent. */
    rateLimit: rateLimitSchema.optional(),
  })
  .strict();

/** HTTP bodies' content codings (gzip, deflate): the decoded size a request may reach, and which responses are compressed. */
export const compressionSchema = z
  .object({
    /** Bytes a compressed request body may decode to (413 past it); default coordinator.bodyLimitBytes. */
    maxDecompressedBytes: z.number().int().positive().optional(),
    /** Compress answers for clients whose Accept-Encoding allows it: text answers of inference routes, /metrics and the dashboard; never binary tensors, streams or errors. */
    responses: z.boolean().default(true),
    /** Smallest response compressed, bytes: below it compressing costs more than the bytes it saves. */
    responseMinBytes: z.number().int().min(0).default(DEFAULT_RESPONSE_MIN_BYTES),
    /** zlib level of compressed responses: 1 fastest … 9 smallest. */
    level: z.number().int().min(1).max(9).default(DEFAULT_COMPRESSION_LEVEL),
  })
  .strict();

/**
 * The KServe v2 gRPC front door (inference.GRPCInferenceService, docs/grpc.md). On by default at
 * Triton's port, on the HTTP listener's host, with its TLS files and API keys.
 */
export const grpcSchema = z
  .object({
    /** Serve gRPC; false: no gRPC listener. */
    enabled: z.boolean().default(true),
    /** Listen address; default: coordinator.host. */
    host: z.string().optional(),
    /** Port; 0 picks a free one. */
    port: port.default(DEFAULT_GRPC_PORT),
    /** Largest request message, bytes; bigger is refused with RESOURCE_EXHAUSTED. */
    maxMessageBytes: z.number().int().positive().default(DEFAULT_BODY_LIMIT_BYTES),
    /** Calls open at once on one client connection (HTTP/2 streams). */
    maxConcurrentStreams: z.number().int().positive().default(1024),
    /** Requests of one ModelStreamInfer call running at once; the stream is read no further until one ends. */
    maxStreamRequests: z.number().int().positive().default(128),
    /** The server pings an idle connection this often, ms, and closes it when no answer comes within keepaliveTimeoutMs. */
    keepaliveTimeMs: positiveMs.default(7_200_000),
    keepaliveTimeoutMs: positiveMs.default(20_000),
  })
  .strict();

export const coordinatorSchema = z
  .object({
    /** HTTP listen address. */
    host: z.string().default('127.0.0.1'),
    /** HTTP port; 0 picks a free one. */
    port: port.default(DEFAULT_HTTP_PORT),
    /** Where workers dial in (RPC). */
    rpcHost: z.string().default('127.0.0.1'),
    /** RPC port; 0 picks a free one. */
    rpcPort: port.default(DEFAULT_RPC_PORT),
    /** Largest accepted HTTP body, bytes; bigger gets 413. */
    bodyLimitBytes: z.number().int().positive().default(DEFAULT_BODY_LIMIT_BYTES),
    /** Deadline of a request that names none, ms. */
    requestTimeoutMs: positiveMs.default(DEFAULT_REQUEST_TIMEOUT_MS),
    /** Longest deadline a request may ask for, ms. */
    maxRequestTimeoutMs: positiveMs.default(10 * 60_000),
    /** Static workers to dial (host:port), reconnected with backoff. */
    workers: z.array(hostPort).default([]),
    /** Limits on what one inference request may hold. */
    limits: requestLimitsSchema.default(requestLimitsSchema.parse({})),
    /** Time a client has to send a request's headers, ms; a slower one is closed (408). */
    headersTimeoutMs: positiveMs.default(15_000),
    /** Time a client has to send a whole request, body included, ms; a slower one is closed (408). */
    bodyTimeoutMs: positiveMs.default(120_000),
    /** Open HTTP connections at most; more are closed as they arrive. */
    maxConnections: z.number().int().positive().default(16_384),
    /** Serve HTTPS with these files; plain HTTP when absent. gRPC uses them too. */
    tls: tlsListenerSchema.optional(),
    /** The gRPC listener (KServe v2 / Triton's GRPCInferenceService). */
    grpc: grpcSchema.default(grpcSchema.parse({})),
    /**
     * A second listener for the admin routes (repository load/unload, /admin/* changes, cache
     * clear); when set, the main listener no longer serves them (like Triton's restricted API).
     */
    admin: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: port.default(0),
        tls: tlsListenerSchema.optional(),
      })
      .strict()
      .optional(),
    /**
     * Host header names accepted (a name, `name:port` or `*.suffix`), against DNS rebinding.
     * Default: when listening on loopback, localhost/127.0.0.1/[::1] only; else any.
     */
    allowedHosts: z.array(z.string().min(1)).default([]),
    /** Origins a browser may call the API from (CORS); cross-origin requests are refused when empty. */
    corsOrigins: z.array(z.string().min(1)).default([]),
    /**
     * true: a body must say it is JSON (or use the binary extension) whoever sends it. false:
     * clients that are not browsers may send JSON as text/plain or a form (curl -d, Triton's
     * asyncio client); browsers are held to JSON content types either way.
     */
    strictContentType: z.boolean().default(false),
    /** Compressed request and response bodies (Content-Encoding, Accept-Encoding). */
    compression: compressionSchema.default(compressionSchema.parse({})),
    /** Workers that POST /admin/workers may dial. */
    dial: z
      .object({
        /** Addresses allowed: `host`, `host:port`, or an IPv4/IPv6 CIDR block (`10.0.0.0/8`); loopback only by default. */
        allow: z.array(z.string().min(1)).default(['127.0.0.0/8', '::1/128', 'localhost']),
        /** Static workers at most (config ones included). */
        maxTargets: z.number().int().positive().default(256),
      })
      .strict()
      .default({ allow: ['127.0.0.0/8', '::1/128', 'localhost'], maxTargets: 256 }),
  })
  .strict();

export const rpcSchema = z
  .object({
    /** Hard limit on one RPC frame, bytes. */
    maxFrameBytes: z.number().int().min(1024).default(DEFAULT_MAX_FRAME_BYTES),
    /** Heartbeat period on every connection, ms. */
    heartbeatIntervalMs: positiveMs.default(1000),
    /** A connection that hears nothing for this long is closed, ms. */
    peerTimeoutMs: positiveMs.default(5000),
    /** Time allowed for HELLO/REGISTER after connecting, ms. */
    handshakeTimeoutMs: positiveMs.default(5000),
    /** Connections waiting for their handshake at once on a listening port; more are closed as they arrive. */
    maxPendingHandshakes: z.number().int().positive().default(64),
    /** Refused RPC connections are logged at most once per this many ms (with the count left out). */
    refusalLogIntervalMs: positiveMs.default(1000),
    /** Time allowed for a TCP connect, ms. */
    connectTimeoutMs: positiveMs.default(3000),
    /**
     * Partial responses (streamed tokens) a worker may send for one request before the
     * coordinator has taken them, frames: the coordinator's buffer per stream, and how far a
     * model runs ahead of a slow reader.
     */
    streamWindow: z.number().int().min(1).max(1024).default(16),
    /** First reconnect delay, ms (doubles up to reconnectMaxDelayMs, with jitter). */
    reconnectInitialDelayMs: positiveMs.default(100),
    reconnectMaxDelayMs: positiveMs.default(5000),
    /**
     * TLS on every RPC connection; plain TCP when absent. Paths are relative to the config
     * file's folder. A side that listens (the coordinator's RPC port, a worker's --port)
     * needs certFile and keyFile; a side that dials checks the peer's certificate against
     * caFile (default: the system's trusted CAs) for serverName (default: the host dialed).
     */
    tls: z
      .object({
        /** PEM certificate (chain) this side presents when it listens. */
        certFile: z.string().min(1).optional(),
        /** PEM private key of certFile. */
        keyFile: z.string().min(1).optional(),
        /** PEM CA certificate(s) a dialed peer's certificate must chain to. */
        caFile: z.string().min(1).optional(),
        /** Name the dialed peer's certificate must carry; default the host dialed. */
        serverName: z.string().min(1).optional(),
      })
      .strict()
      .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), {
        message: 'certFile and keyFile go together',
      })
      .optional(),
  })
  .strict();

export const workerSchema = z
  .object({
    /** Unique id; models name it in `workers:` to be placed on it. */
    id: name,
    /** Relative capacity for the `weighted` strategy (a machine twice as big: 2). */
    weight: z.number().positive().default(1),
    /** Address the worker listens on for coordinators that dial it. */
    host: z.string().default('127.0.0.1'),
    /** 0 picks a free port. */
    port: port.default(0),
    /** Serve Prometheus metrics on this port (0: any free one); none when absent. */
    metricsPort: port.optional(),
    /** The processor pool this worker belongs to (set for the workers a `pools` entry makes). */
    pool: name.optional(),
  })
  .strict();

/**
 * A pool of identical worker processes, e.g. for CPU-bound pre- and postprocessing kept apart
 * from the processes running models. `serve` starts `processes` workers with ids
 * `<name>-1` .. `<name>-<processes>`; a model with `pool: <name>` is placed on all of them.
 */
export const poolSchema = z
  .object({
    name,
    /** Worker processes in the pool. */
    processes: z.number().int().min(1).max(64).default(1),
    /** Relative capacity of each process for the `weighted` strategy. */
    weight: z.number().positive().default(1),
    host: z.string().default('127.0.0.1'),
  })
  .strict();

export const serveSchema = z
  .object({
    /** First restart delay of a crashed worker, ms (doubles up to restartMaxDelayMs). */
    restartInitialDelayMs: positiveMs.default(250),
    restartMaxDelayMs: positiveMs.default(10_000),
    /** A worker that stays up this long has its restart backoff reset, ms. */
    restartResetAfterMs: positiveMs.default(30_000),
    /** How long `serve` waits for every model to be ready before printing anyway, ms. */
    readyTimeoutMs: positiveMs.default(120_000),
    /** How long a worker gets to finish in-flight work after SIGTERM before SIGKILL, ms. */
    stopTimeoutMs: positiveMs.default(10_000),
  })
  .strict();

/**
 * The balancing strategies a config may name. The names are config's (config depends on no
 * other layer); src/routing implements one pick function per name and imports them from here.
 */
export const STRATEGIES = [
  'round-robin',
  'least-connections',
  'random',
  'least-latency',
  'power-of-two',
  'weighted',
  'prefix-aware',
] as const;
export type StrategyName = (typeof STRATEGIES)[number];

export const prefixRoutingSchema = z
  .object({
    /** A prompt prefix counts in blocks of this many bytes of the prompt input. */
    blockBytes: z.number().int().min(16).default(256),
    /** Blocks of a prompt considered at most (256 × 256 B: the first 64 KiB). */
    maxBlocks: z.number().int().min(1).default(256),
    /** Prefix entries kept at most, over all models (least recently used dropped first). */
    maxEntries: z.number().int().min(1).default(262_144),
    /** An entry unused for this long is forgotten, ms. */
    ttlMs: positiveMs.default(600_000),
    /**
     * Balance before reuse: when the most loaded eligible replica has this many more streams in
     * flight than the least loaded, and more than balanceRatio times as many, the least loaded
     * one is picked whatever it holds (SGLang's rule).
     */
    balanceAbsThreshold: z.number().int().min(0).default(16),
    balanceRatio: z.number().min(1).default(1.5),
  })
  .strict();

export const routingSchema = z
  .object({
    /** Default balancing strategy; a model may choose its own. */
    strategy: z.enum(STRATEGIES).default('least-connections'),
    retry: z
      .object({
        /** Attempts per request, the first included (1 = never retry). */
        maxAttempts: z.number().int().min(1).max(10).default(3),
        /** Retries may add at most this fraction of the request rate. */
        budgetRatio: z.number().min(0).max(10).default(0.2),
        /** Retries allowed per second whatever the request rate. */
        minRetriesPerSecond: z.number().min(0).default(10),
        /** Give up on one attempt after this long and try another worker, ms; unset: the whole deadline. */
        attemptTimeoutMs: positiveMs.optional(),
      })
      .strict()
      .default({ maxAttempts: 3, budgetRatio: 0.2, minRetriesPerSecond: 10 }),
    health: z
      .object({
        /** How often each worker is pinged over its connection, ms. */
        intervalMs: positiveMs.default(1000),
        /** A ping not answered within this is a failed check, ms. */
        timeoutMs: positiveMs.default(1000),
        /** Consecutive failed checks that make a worker unhealthy (no traffic). */
        failureThreshold: z.number().int().min(1).default(3),
        /** Consecutive good checks that make it healthy again. */
        recoveryThreshold: z.number().int().min(1).default(2),
      })
      .strict()
      .default({ intervalMs: 1000, timeoutMs: 1000, failureThreshold: 3, recoveryThreshold: 2 }),
    circuitBreaker: z
      .object({
        /** Consecutive worker-side failures of a model on a worker that open its circuit. */
        failureThreshold: z.number().int().min(1).default(5),
        /** How long an open circuit keeps traffic away before a probe, ms (doubles per failed probe). */
        openMs: positiveMs.default(2000),
        maxOpenMs: positiveMs.default(30_000),
      })
      .strict()
      .default({ failureThreshold: 5, openMs: 2000, maxOpenMs: 30_000 }),
    /** Half-life of a worker's observed latency while it gets no traffic (least-latency), ms. */
    latencyHalfLifeMs: positiveMs.default(10_000),
    /** The prefix-aware strategy's state and balance rule (LLM models; docs/routing.md). */
    prefix: prefixRoutingSchema.default(prefixRoutingSchema.parse({})),
  })
  .strict();

export const modelRoutingSchema = z
  .object({
    /** This model's balancing strategy (default: routing.strategy). */
    strategy: z.enum(STRATEGIES).optional(),
    /**
     * Hash this input's bytes as the request's shard key (requests with the same bytes go to the
     * same worker). A `shard_key` request parameter always works and wins over this.
     */
    shardKeyInput: z.string().min(1).optional(),
    /** For strategy `prefix-aware`: the input whose bytes are the prompt (default the LLM's text_input). */
    prefixInput: z.string().min(1).optional(),
    /** Attempts per request for this model (default: routing.retry.maxAttempts). */
    maxAttempts: z.number().int().min(1).max(10).optional(),
    /**
     * Hedging: when the first attempt has not answered after this model's recent latency
     * percentile (or a fixed delay), send a copy to another worker and take the first answer.
     */
    hedge: z
      .object({
        /** Fixed delay before the copy, ms; when absent the percentile is used. */
        afterMs: positiveMs.optional(),
        percentile: z.number().min(50).max(99.9).default(95),
        /** Latencies observed before a percentile is trusted. */
        minSamples: z.number().int().min(1).default(20),
      })
      .strict()
      .optional(),
  })
  .strict();

export const batchingSchema = z
  .object({
    /** Combine queued requests into batches of up to the model's maxBatchSize rows. */
    enabled: z.boolean().default(false),
    /** How long the oldest queued request may wait for company, ms; 0 never waits. */
    maxQueueDelayMs: z.number().min(0).max(60_000).default(0),
    /** Batch sizes to run as soon as they can be formed. */
    preferredBatchSizes: z.array(z.number().int().min(1)).default([]),
    /**
     * Right after a batch of several requests, hold a smaller batch (at most half that batch's
     * compute time) until as many have queued: its clients are about to come back.
     */
    refillWait: z.boolean().default(true),
    /** Requests that may wait for this model on one worker; more get OVERLOADED (429). */
    maxQueueSize: z.number().int().min(1).default(1024),
    /** Bytes of input tensors that may wait; more get OVERLOADED (429). */
    maxQueueBytes: z
      .number()
      .int()
      .min(1)
      .default(256 * MIB),
    /** Executions that may run at once on one worker. */
    instances: z.number().int().min(1).max(64).default(1),
    /** Priority levels (parameter "priority": 1 most urgent .. priorityLevels). */
    priorityLevels: z.number().int().min(1).max(16).default(2),
    /** Level of a request that names none. */
    defaultPriorityLevel: z.number().int().min(1).default(2),
  })
  .strict();

/** OpenTelemetry tracing; the standard OTEL_* environment variables override it (docs/tracing.md). */
export const tracingSchema = z
  .object({
    /** Trace requests (also switched on by OTEL_TRACES_EXPORTER or an OTLP endpoint variable). */
    enabled: z.boolean().default(false),
    /** `otlp`: OTLP over HTTP (JSON) to `endpoint`; `console`: print spans to stdout. */
    exporter: z.enum(['otlp', 'console']).default('otlp'),
    /** OTLP/HTTP traces URL; a URL with no path gets /v1/traces. Default http://localhost:4318/v1/traces. */
    endpoint: z
      .string()
      .regex(/^https?:\/\/\S+$/, 'expected an http(s) URL')
      .optional(),
    /** Share of new traces recorded, 0..1; a request with a sampled `traceparent` is always recorded. */
    sampleRatio: z.number().min(0).max(1).default(1),
    /** `service.name` of every process; default infergrid-coordinator / infergrid-worker. */
    serviceName: z.string().min(1).optional(),
  })
  .strict();

export const cacheSchema = z
  .object({
    /** Lifetime of a cached response when the model sets none, ms. */
    defaultTtlMs: positiveMs.default(300_000),
    memory: z
      .object({
        /** Bytes of cached responses held in memory (keys included). */
        maxBytes: z
          .number()
          .int()
          .min(1)
          .default(256 * MIB),
        maxEntries: z.number().int().min(1).default(100_000),
      })
      .strict()
      .default({ maxBytes: 256 * MIB, maxEntries: 100_000 }),
    /** A persistent tier under memory; on when `path` is set. */
    sqlite: z
      .object({
        /** Database file, relative to the config file's folder. */
        path: z.string().min(1),
        maxBytes: z
          .number()
          .int()
          .min(1)
          .default(1024 * MIB),
        maxRows: z.number().int().min(1).default(1_000_000),
        /** How often expired rows are deleted, ms. */
        sweepIntervalMs: positiveMs.default(60_000),
        /** false: a file that cannot be used is a warning and the tier is skipped, not a start-up error. */
        required: z.boolean().default(true),
      })
      .strict()
      .optional(),
    /** A tier shared by several coordinators; on when `url` is set. */
    redis: z
      .object({
        url: z.string().min(1),
        /** Prefix before ig:v1:cache: (keep tenants or test runs apart). */
        namespace: z.string().default(''),
        connectTimeoutMs: positiveMs.default(2000),
        /** A command slower than this counts as a miss, ms. */
        commandTimeoutMs: positiveMs.default(250),
        /** false: an unreachable Redis at start-up is a warning and the tier is skipped. */
        required: z.boolean().default(true),
      })
      .strict()
      .optional(),
  })
  .strict();

export const modelCacheSchema = z
  .object({
    /** Cache this model's responses. Off by default: only for models whose output is a pure function of the input. */
    enabled: z.boolean().default(false),
    /** Lifetime of a cached response, ms (default: cache.defaultTtlMs). */
    ttlMs: positiveMs.optional(),
  })
  .strict();

export const onnxOptionsSchema = z
  .object({
    /** Threads inside one operator. Default 1: two processes share two cores here. */
    intraOpThreads: z.number().int().min(1).default(1),
    /** Threads across independent operators. */
    interOpThreads: z.number().int().min(1).default(1),
    graphOptimizationLevel: z.enum(['disabled', 'basic', 'extended', 'all']).default('all'),
  })
  .strict();

export const simOptionsSchema = z
  .object({
    /** Fixed latency of one call, ms. 0 answers without a timer. */
    latencyMs: z.number().min(0).default(0),
    /** Extra latency per batch item (first dimension of the first input), ms. */
    perItemMs: z.number().min(0).default(0),
    /** Uniform random extra latency in [0, jitterMs), ms. */
    jitterMs: z.number().min(0).default(0),
    /** Probability in [0, 1] that a call fails with WORKER_FAULT (a sick replica: retried elsewhere, counts against its health). */
    failureRate: z.number().min(0).max(1).default(0),
    /** Seed for jitter and failures; random when absent. */
    seed: z.number().int().optional(),
    /**
     * Makes the model a generative (LLM) one for engine tests and benchmarks: input
     * `text_input`, output `text_output` (src/llm/schema.ts), streamed word tokens
     * ("tok1 tok2 …"; with `chat`, the last message's words), no compute.
     */
    generate: z
      .object({
        /** Tokens a completion has before its "end of sequence" (max_tokens, min_tokens and ignore_eos change it). */
        tokens: z.number().int().min(0).default(16),
        /** Time per token, ms; 0 yields to the event loop between tokens. */
        tokenMs: z.number().min(0).default(0),
        /** Pads each token's text to this many bytes (big tokens fill socket buffers quickly in tests); 0: no padding. */
        tokenBytes: z.number().int().min(0).max(16_777_216).default(0),
        /** Tokens one request may hold, prompt (one per word) and completion together. */
        contextSize: z.number().int().positive().default(4096),
        /** Streams generated at once; more are refused with OVERLOADED (429). */
        sequences: z.number().int().positive().default(16),
      })
      .strict()
      .optional(),
  })
  .strict();

export const llamaOptionsSchema = z
  .object({
    /** CPU threads of this model instance's context. Default 1: workers share few cores, and more threads per process only make them fight. */
    threads: z.number().int().min(1).default(1),
    /** Sequences (requests generated for at once) of one instance; each has its own KV cache. */
    sequences: z.number().int().min(1).max(256).default(4),
    /** Tokens one sequence holds, prompt and completion together (default 2048, or the model's train context if smaller). */
    contextSize: z.number().int().min(16).optional(),
    /** Token budget of one decode step: every decoding sequence's next token, then prompt chunks in what is left. */
    stepTokens: z.number().int().min(1).default(512),
    /** Most prompt tokens one sequence evaluates in one step (default: stepTokens). */
    prefillChunk: z.number().int().min(1).optional(),
    /** Prompts waiting for a free sequence; beyond it a request is refused with OVERLOADED (429). */
    maxQueued: z.number().int().min(0).default(64),
    /**
     * Prefix reuse: a request takes the free sequence whose cached tokens share the longest
     * prefix with its prompt and evaluates only the rest. Off: any free sequence, the whole
     * prompt evaluated (for measuring what reuse saves). Default true.
     */
    prefixReuse: z.boolean().default(true),
    /** Largest max_tokens a request may ask for (default: contextSize). */
    maxTokens: z.number().int().min(1).optional(),
  })
  .strict();

/** A pipeline step's name: no "." (sources are written `<step>.<output>`). */
const stepName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, 'letters, digits, "_" and "-", starting with a letter or digit');

const parameterValue = z.union([z.string(), z.number(), z.boolean()]);

export const pipelineStepSchema = z
  .object({
    /** Names the step; later steps read its outputs as `<name>.<output>`. */
    name: stepName,
    /** The model (or processor) this step runs. */
    model: name,
    /** A fixed version; when absent the model's version policy (and traffic split) decides. */
    version: z
      .union([z.string().min(1), z.number().int().nonnegative()])
      .transform(String)
      .optional(),
    /**
     * Each input of the step's model -> where its tensor comes from: `$<input>` for one of the
     * pipeline's inputs, `<step>.<output>` for an output of an earlier step.
     */
    inputs: z.record(z.string().min(1), z.string().min(1)),
    /** Request parameters for this step (merged over the request's own). */
    parameters: z.record(z.string(), parameterValue).optional(),
  })
  .strict();

export const pipelineSchema = z
  .object({
    /** Steps in an order where every step reads only pipeline inputs and earlier steps. */
    steps: z.array(pipelineStepSchema).min(1),
    /** Each pipeline output -> the step output it is: `<step>.<output>`. */
    outputs: z.record(z.string().min(1), z.string().min(1)),
    /**
     * Where the steps run. `coordinator`: each step is a request of its own through the
     * coordinator (steps may live on different workers). `worker`: the pipeline is a model the
     * workers it is placed on host, running its steps against the models of that same worker,
     * so tensors never leave the worker between steps (docs/pipelines.md).
     */
    runOn: z.enum(['coordinator', 'worker']).default('coordinator'),
  })
  .strict();

/** Which versions of a model are served: all declared ones, the newest N, or a list. */
export const versionPolicySchema = z.union([
  z.literal('all'),
  z.object({ latest: z.number().int().min(1) }).strict(),
  z
    .object({
      specific: z
        .array(z.union([z.string().min(1), z.number().int().nonnegative()]).transform(String))
        .min(1),
    })
    .strict(),
]);

export const modelSchema = z
  .object({
    name,
    /** Version label (KServe versions are strings). */
    version: z
      .union([z.string().min(1), z.number().int().nonnegative()])
      .transform(String)
      .default('1'),
    /** `pipeline`: no weights; `pipeline.steps` run, each a model of its own (on the coordinator, or on a worker: `pipeline.runOn`). */
    backend: z.enum(['onnx', 'sim', 'js', 'pipeline', 'llama']),
    /**
     * Model file (onnx, llama: a GGUF) or module (js). Relative paths are resolved against the config file's
     * folder; `pkg:<package>/<file>` finds a file inside an installed npm package.
     */
    path: z.string().min(1).optional(),
    /** Worker ids that host this model; every worker when absent (and no pool is named). */
    workers: z.array(name).min(1).optional(),
    /** A pool whose workers host this model (added to `workers`). */
    pool: name.optional(),
    /**
     * Which versions of this model name are served (versions are separate entries with the same
     * name). Default "all". Set it on one entry of the name, or the same on all.
     */
    versionPolicy: versionPolicySchema.optional(),
    /**
     * Share of unversioned requests this version gets, in percent, when several versions of the
     * name set one (a canary: 90 and 10). Absent everywhere: the newest served version takes all.
     */
    traffic: z.number().min(0).max(100).optional(),
    /** For backend `pipeline`: the steps and where the outputs come from. */
    pipeline: pipelineSchema.optional(),
    /** Whether requests may carry several items in the first dimension. */
    batchable: z.boolean().default(true),
    /** Largest first dimension accepted; 0 means no limit. */
    maxBatchSize: z.number().int().min(0).default(0),
    /** Whether the weights are quantized (informational, shown in metadata). */
    quantized: z.boolean().default(false),
    /** Declared schema; checked against what the backend reports. Required for `sim`. */
    inputs: z.array(tensorSpec).optional(),
    outputs: z.array(tensorSpec).optional(),
    /**
     * Labels for the classification extension: output name -> a text file with one label per
     * line (line i names class i). Relative paths resolve like `path`; the coordinator reads them.
     */
    labels: z.record(z.string().min(1), z.string().min(1)).optional(),
    onnx: onnxOptionsSchema.default(onnxOptionsSchema.parse({})),
    sim: simOptionsSchema.default(simOptionsSchema.parse({})),
    /** For backend `llama`: the context, its sequences and the decode loop's limits. */
    llama: llamaOptionsSchema.default(llamaOptionsSchema.parse({})),
    /** Passed as-is to a js model's `load(options)`. */
    options: z.record(z.string(), z.unknown()).default({}),
    /** How requests for this model are routed. */
    routing: modelRoutingSchema.default({}),
    /** How the worker queues and batches this model's requests. */
    batching: batchingSchema.default(batchingSchema.parse({})),
    /** Whether the coordinator caches this model's responses. */
    cache: modelCacheSchema.default({ enabled: false }),
  })
  .strict();

export const authSchema = z
  .object({
    /**
     * The cluster secret (INFERGRID_TOKEN overrides it). A coordinator derives every
     * worker's key from it; a worker given it derives its own. It never crosses the wire.
     */
    token: z.string().min(1).optional(),
    /**
     * This worker's own key, 64 hex digits from `infergrid credential --worker <id>`
     * (INFERGRID_WORKER_KEY overrides it). Preferred over the cluster secret on a worker: it
     * proves this worker's id and no other.
     */
    workerKey: z
      .string()
      .regex(
        /^[0-9a-fA-F]{64}$/,
        'a worker key is 64 hex digits, as `infergrid credential --worker <id>` prints',
      )
      .optional(),
    /** HTTP API keys (Authorization: Bearer); when none, the HTTP API is open (loopback only, unless insecure). */
    apiKeys: z.array(apiKeySchema).default([]),
    /** What a request without credentials may do when keys are configured. */
    anonymous: z.array(z.enum(ANONYMOUS_SCOPES)).default(['health']),
    /**
     * Run without credentials where they are otherwise required (--insecure), said loudly at
     * start-up: RPC without authentication when no secret or key is set (anyone who reaches the
     * RPC port can join as a worker, or control a listening worker), and an HTTP API without
     * keys beyond loopback.
     */
    insecure: z.boolean().default(false),
  })
  .strict();

/**
 * Scale-out: several coordinators over one fleet, with membership and the control plane shared
 * through Redis (docs/deploy.md). Off when absent: static addresses (`coordinator.workers`,
 * worker `--coordinator`) keep working either way.
 */
export const clusterSchema = z
  .object({
    redis: z
      .object({
        /** redis://[:password@]host:port[/db] or rediss:// for TLS. */
        url: z.string().min(1),
        /** Prefix before ig:v1:cluster: (keep clusters or test runs apart in one Redis). */
        namespace: z.string().max(128).default(''),
        connectTimeoutMs: positiveMs.default(2000),
        /** A command slower than this counts as failed, ms (serving goes on without Redis). */
        commandTimeoutMs: positiveMs.default(1000),
      })
      .strict(),
    /**
     * The host others reach this process at (a coordinator's RPC and HTTP addresses are announced
     * with it). Default: the listen host, which must then not be a wildcard (0.0.0.0, ::).
     */
    advertiseHost: z.string().min(1).optional(),
    /** A member's lease in Redis, ms; renewed every third of it. A member not renewed for this long is gone. */
    leaseMs: positiveMs.default(10_000),
    /** Full re-read of membership and control records besides the change feed, ms. */
    reconcileIntervalMs: positiveMs.default(5_000),
    /** Addresses a discovered member may be dialed at: `host`, `host:port` or a CIDR block. Default: private and loopback ranges. */
    allow: z
      .array(z.string().min(1))
      .default([
        '127.0.0.0/8',
        '::1/128',
        '10.0.0.0/8',
        '172.16.0.0/12',
        '192.168.0.0/16',
        'fc00::/7',
        'localhost',
      ]),
    /** Members considered at most; a Redis holding more (a lying or runaway writer) is truncated with a warning. */
    maxMembers: z.number().int().min(1).max(100_000).default(4096),
  })
  .strict();

export const configSchema = z
  .object({
    coordinator: coordinatorSchema.default(coordinatorSchema.parse({})),
    rpc: rpcSchema.default(rpcSchema.parse({})),
    auth: authSchema.default(authSchema.parse({})),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** `json` lines, `pretty` (coloured, for people), or `auto`: pretty on a terminal, JSON otherwise. */
        format: z.enum(['auto', 'json', 'pretty']).default('auto'),
      })
      .strict()
      .default({ level: 'info', format: 'auto' }),
    /** Local worker processes that `infergrid serve` starts and supervises. */
    workers: z.array(workerSchema).default([]),
    serve: serveSchema.default(serveSchema.parse({})),
    routing: routingSchema.default(routingSchema.parse({})),
    /** The coordinator's response cache (tiers: memory, then SQLite and/or Redis when configured). */
    cache: cacheSchema.default(cacheSchema.parse({})),
    /** Pools of worker processes `serve` starts (models name them with `pool:`). */
    pools: z.array(poolSchema).default([]),
    /** Where models may be loaded from, and what the repository load API may define (docs/repository-security.md). */
    repository: z
      .object({
        /**
         * Folders model files load from (symlinks followed), relative ones against the config
         * file's folder. Default: that folder. `pkg:<package>/<file>` paths load from inside
         * that installed package besides.
         */
        roots: z.array(z.string().min(1)).min(1).default(['.']),
        /** Let the repository load API define `js` models, whose module's code runs in the worker. */
        allowRuntimeJs: z.boolean().default(false),
      })
      .strict()
      .default({ roots: ['.'], allowRuntimeJs: false }),
    /** Asynchronous requests (`parameters.async` or `Prefer: respond-async`). */
    async: z
      .object({
        /** How long a finished request's result can be fetched, ms. */
        resultTtlMs: positiveMs.default(600_000),
        /** Requests that may be running asynchronously at once; more get OVERLOADED (429). */
        maxPending: z.number().int().min(1).default(10_000),
        /**
         * How long a DELETE sent to a coordinator that does not run the request waits for the
         * one that does to confirm the cancel, ms (Redis only); 0 answers 202 at once.
         */
        cancelWaitMs: z.number().int().min(0).max(60_000).default(2000),
      })
      .strict()
      .default({ resultTtlMs: 600_000, maxPending: 10_000, cancelWaitMs: 2000 }),
    tracing: tracingSchema.default(tracingSchema.parse({})),
    /** Several coordinators sharing one fleet through Redis; off when absent. */
    cluster: clusterSchema.optional(),
    models: z.array(modelSchema).default([]),
  })
  .strict();

export type InfergridConfig = z.infer<typeof configSchema>;
export type ModelConfig = z.infer<typeof modelSchema>;
export type WorkerConfig = z.infer<typeof workerSchema>;
export type RpcConfig = z.infer<typeof rpcSchema>;
export type CoordinatorConfig = z.infer<typeof coordinatorSchema>;
export type GrpcConfig = z.infer<typeof grpcSchema>;
export type ClusterConfig = z.infer<typeof clusterSchema>;
export type RequestLimits = z.infer<typeof requestLimitsSchema>;
export type AuthConfig = z.infer<typeof authSchema>;
export type ApiKeyConfig = z.infer<typeof apiKeySchema>;
export type TlsListenerConfig = z.infer<typeof tlsListenerSchema>;
export type SimOptions = z.infer<typeof simOptionsSchema>;
export type OnnxOptions = z.infer<typeof onnxOptionsSchema>;
export type LlamaOptions = z.infer<typeof llamaOptionsSchema>;
export type RoutingConfig = z.infer<typeof routingSchema>;
export type PrefixRoutingConfig = z.infer<typeof prefixRoutingSchema>;
export type BatchingConfig = z.infer<typeof batchingSchema>;
export type CacheConfig = z.infer<typeof cacheSchema>;
export type ModelRoutingConfig = z.infer<typeof modelRoutingSchema>;
export type PoolConfig = z.infer<typeof poolSchema>;
export type PipelineConfig = z.infer<typeof pipelineSchema>;
export type PipelineStepConfig = z.infer<typeof pipelineStepSchema>;
export type VersionPolicy = z.infer<typeof versionPolicySchema>;
