/**
 * Prometheus metrics (prom-client), named after Triton's and vLLM's where the meaning matches.
 *
 * Workers: per model, success and failure counts by reason, inference count vs execution count
 * (their ratio is the mean batch size), executions per batch size, queue and compute duration
 * histograms, pending requests and readiness; the process's CPU and memory. Counts are read from
 * the worker's own statistics when scraped; only the two histograms are fed per event, through
 * label-bound children made once per model, so serving a request allocates nothing here.
 *
 * Coordinator: per model, requests answered by outcome and end-to-end duration (children cached
 * per model and code); at scrape time, workers' health and load, retries and hedges, circuit
 * opens, cache hits and misses, pipeline runs, and its own process figures. `GET /metrics` on
 * the coordinator adds every worker's metrics with a `worker` label, so one scrape sees the fleet.
 */

import client, { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelStatsSnapshot, StatsObserver } from '../batching/index.ts';
import type { LlmLoopStats } from '../protocol/index.ts';

/**
 * How often the event loop's delay is sampled for nodejs_eventloop_lag_* (a timer on the loop).
 * prom-client's 10 ms wakes every process 100 times a second whether or not it has work: a fleet
 * of 64 idle workers was 6,400 wake-ups a second. Sampled every 100 ms, a stall still shows in full
 * (the timer fires that much late).
 */
const EVENT_LOOP_SAMPLE_MS = 100;

/** The event-loop delay gauges prom-client fills from its sampling histogram. */
const SAMPLED_LAG_GAUGES = ['min', 'max', 'mean', 'p50', 'p90', 'p99'].map(
  (stat) => `nodejs_eventloop_lag_${stat}_seconds`,
);

/**
 * prom-client's default process metrics, with the event loop sampled every EVENT_LOOP_SAMPLE_MS.
 * Node's delay histogram records the whole time between two timer ticks, the sampling interval
 * included (idle, prom-client's p50 read 0.0101 s at 10 ms and 0.1005 s at 100 ms): the interval is
 * taken off here so the gauges say how late the loop was. A histogram with no sample since the
 * last scrape (scrapes closer than the interval) leaves the previous value rather than NaN or
 * the empty histogram's 2^63 ns.
 */
function collectProcessMetrics(registry: Registry): void {
  client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  const intervalS = EVENT_LOOP_SAMPLE_MS / 1000;
  for (const name of SAMPLED_LAG_GAUGES) {
    const gauge = registry.getSingleMetric(name) as client.Gauge | undefined;
    if (!gauge) continue;
    const set = gauge.set.bind(gauge) as (labels: client.LabelValues<string>, value: number) => void;
    // prom-client calls set(labels, value) on this object at every scrape
    (gauge as unknown as { set: typeof set }).set = (labels, value) => {
      if (Number.isFinite(value) && value < 1e6) set(labels, Math.max(0, value - intervalS));
    };
  }
}

export const PROMETHEUS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** Duration buckets, seconds: 0.5 ms to 30 s. */
export const DURATION_BUCKETS_S = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

const MODEL_LABELS = ['model', 'version'] as const;

/** A worker process's metrics. */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly #queue: Histogram<'model' | 'version'>;
  readonly #compute: Histogram<'model' | 'version'>;

  /**
   * @param snapshots the worker's per-model statistics, read at scrape time
   * @param ready the ready state per `model@version`
   * @param inFlight requests the worker is running or has queued
   */
  constructor(source: {
    snapshots: () => ModelStatsSnapshot[];
    ready: () => { model: string; version: string; ready: boolean }[];
    inFlight: () => number;
  }) {
    const registers = [this.registry];
    collectProcessMetrics(this.registry);
    this.#queue = new Histogram({
      name: 'infergrid_inference_queue_duration_seconds',
      help: 'Time requests waited in the queue before their batch started',
      labelNames: MODEL_LABELS,
      buckets: DURATION_BUCKETS_S,
      registers,
    });
    this.#compute = new Histogram({
      name: 'infergrid_inference_compute_duration_seconds',
      help: 'Time of each model execution (one batch)',
      labelNames: MODEL_LABELS,
      buckets: DURATION_BUCKETS_S,
      registers,
    });
    const fromSnapshots = (
      name: string,
      help: string,
      value: (s: ModelStatsSnapshot) => number,
    ): Counter<'model' | 'version'> =>
      new Counter({
        name,
        help,
        labelNames: MODEL_LABELS,
        registers,
        collect() {
          this.reset();
          for (const s of source.snapshots()) this.inc({ model: s.name, version: s.version }, value(s));
        },
      });
    fromSnapshots(
      'infergrid_inference_request_success_total',
      'Requests the model answered (nv_inference_request_success)',
      (s) => s.success.count,
    );
    fromSnapshots(
      'infergrid_inference_count_total',
      'Rows (first-dimension items) run through the model (nv_inference_count)',
      (s) => s.inferenceCount,
    );
    fromSnapshots(
      'infergrid_inference_exec_count_total',
      'Model executions, one per batch (nv_inference_exec_count); inference_count / exec_count is the mean batch size',
      (s) => s.executionCount,
    );
    new Counter({
      name: 'infergrid_inference_request_failure_total',
      help: 'Requests that failed on the worker, by reason (nv_inference_request_failure)',
      labelNames: [...MODEL_LABELS, 'reason'],
      registers,
      collect() {
        this.reset();
        for (const s of source.snapshots()) {
          const m = { model: s.name, version: s.version };
          this.inc({ ...m, reason: 'error' }, s.fail.count);
          this.inc({ ...m, reason: 'overloaded' }, s.rejected.overloaded);
          this.inc({ ...m, reason: 'deadline' }, s.rejected.deadline);
          this.inc({ ...m, reason: 'cancelled' }, s.rejected.cancelled);
        }
      },
    });
    new Counter({
      name: 'infergrid_inference_batch_executions_total',
      help: 'Model executions by batch size (rows)',
      labelNames: [...MODEL_LABELS, 'batch_size'],
      registers,
      collect() {
        this.reset();
        for (const s of source.snapshots())
          for (const b of s.batchStats)
            this.inc(
              { model: s.name, version: s.version, batch_size: String(b.batchSize) },
              b.computeInfer.count,
            );
      },
    });
    new Gauge({
      name: 'infergrid_inference_pending_requests',
      help: 'Requests queued for the model, not yet running (nv_inference_pending_request_count)',
      labelNames: MODEL_LABELS,
      registers,
      collect() {
        this.reset();
        for (const s of source.snapshots()) this.set({ model: s.name, version: s.version }, s.queueDepth);
      },
    });
    const llmGauge = (name: string, help: string, value: (l: LlmLoopStats) => number) =>
      new Gauge({
        name,
        help,
        labelNames: MODEL_LABELS,
        registers,
        collect() {
          this.reset();
          for (const s of source.snapshots())
            if (s.llm) this.set({ model: s.name, version: s.version }, value(s.llm));
        },
      });
    llmGauge(
      'infergrid_llm_num_requests_running',
      'Requests holding a sequence (vllm:num_requests_running)',
      (l) => l.running,
    );
    llmGauge(
      'infergrid_llm_num_requests_waiting',
      'Requests waiting for a free sequence (vllm:num_requests_waiting)',
      (l) => l.waiting,
    );
    llmGauge(
      'infergrid_llm_kv_cache_usage_ratio',
      'Share of the sequences\u2019 KV cache holding tokens, 0..1 (vllm:kv_cache_usage_perc)',
      (l) => (l.kvCapacityTokens > 0 ? l.kvTokens / l.kvCapacityTokens : 0),
    );
    fromSnapshots(
      'infergrid_llm_decode_steps_total',
      'Decode steps run, one batch each',
      (s) => s.llm?.steps ?? 0,
    );
    fromSnapshots(
      'infergrid_llm_prefix_cache_queries_total',
      'Prompt tokens of admitted requests, in tokens (vllm:prefix_cache_queries)',
      (s) => s.llm?.promptTokens ?? 0,
    );
    fromSnapshots(
      'infergrid_llm_prefix_cache_hits_total',
      'Prompt tokens found already in a sequence and not evaluated again (vllm:prefix_cache_hits)',
      (s) => s.llm?.cachedPromptTokens ?? 0,
    );
    new Gauge({
      name: 'infergrid_model_ready',
      help: '1 when the model is loaded and ready on this worker',
      labelNames: MODEL_LABELS,
      registers,
      collect() {
        this.reset();
        for (const m of source.ready()) this.set({ model: m.model, version: m.version }, m.ready ? 1 : 0);
      },
    });
    new Gauge({
      name: 'infergrid_worker_in_flight_requests',
      help: 'Requests the worker is running or has queued, all models',
      registers,
      collect() {
        this.set(source.inFlight());
      },
    });
  }

  /** The histogram feed for one model's statistics; label children bound once. */
  observer(model: string, version: string): StatsObserver {
    const queue = this.#queue.labels(model, version);
    const compute = this.#compute.labels(model, version);
    return {
      queued: (seconds) => queue.observe(seconds),
      executed: (seconds) => compute.observe(seconds),
    };
  }
}

type Json = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/**
 * One Prometheus page from several registries' JSON: `sources[i].labels` are added to every
 * value of `sources[i].metrics` (e.g. `{worker: "w1"}`), so series from different processes
 * stay apart under one metric name.
 */
export async function mergeExposition(
  sources: { metrics: Json; labels?: Record<string, string> }[],
): Promise<string> {
  const labelled = sources.map(({ metrics, labels }) =>
    labels
      ? metrics.map((m) => ({
          ...m,
          values: (m.values ?? []).map((v) => ({ ...v, labels: { ...v.labels, ...labels } })),
        }))
      : metrics,
  );
  return client.AggregatorRegistry.aggregate(labelled as Json[]).metrics();
}

/** What the coordinator's metrics read at scrape time. */
export interface CoordinatorMetricsSource {
  /** The coordinator's fleet snapshot (coordinator/fleet.ts). */
  workers: () => readonly { id: string; health: string; draining: boolean; inFlight: number }[];
  retries: () => number;
  hedges: () => number;
  /** Circuit opens per model version and worker. */
  circuits: () => { model: string; version: string; worker: string; opens: number }[];
  cache: () => Record<string, { hits: number; misses: number; joins: number }>;
  readyReplicas: () => { model: string; version: string; replicas: number }[];
  pipelineRuns: () => number;
  pipelineStepRuns: () => number;
  /** The prefix-aware router's lookups and the ones that found a worker holding a prefix. */
  prefixRouting: () => { queries: number; hits: number; entries: number };
}

interface ModelSeries {
  ok: Counter.Internal;
  duration: Histogram.Internal<'model' | 'version'>;
  failures: Map<string, Counter.Internal>;
}

/** A coordinator process's metrics. */
export class CoordinatorMetrics {
  readonly registry = new Registry();
  readonly #requests: Counter<'model' | 'version' | 'code'>;
  readonly #duration: Histogram<'model' | 'version'>;
  /** Label children per model version (keyed by the registry entry), made on first use. */
  readonly #series = new WeakMap<object, ModelSeries>();
  /** Workers whose metrics the last scrape could (1) or could not (0) fetch. */
  readonly scraped = new Map<string, boolean>();

  constructor(source: CoordinatorMetricsSource) {
    const registers = [this.registry];
    const scraped = this.scraped;
    collectProcessMetrics(this.registry);
    this.#requests = new Counter({
      name: 'infergrid_requests_total',
      help: 'Inference requests answered by the coordinator, by model and outcome (code "OK" or the error code)',
      labelNames: [...MODEL_LABELS, 'code'],
      registers,
    });
    this.#duration = new Histogram({
      name: 'infergrid_request_duration_seconds',
      help: 'End-to-end time of inference requests at the coordinator (successful ones)',
      labelNames: MODEL_LABELS,
      buckets: DURATION_BUCKETS_S,
      registers,
    });
    const gauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge<string>) => void) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          fill(this);
        },
      });
    const counter = (name: string, help: string, labelNames: string[], fill: (c: Counter<string>) => void) =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          fill(this);
        },
      });
    gauge(
      'infergrid_worker_healthy',
      'Connected workers: 1 when health checks pass and it is not draining',
      ['worker'],
      (g) => {
        for (const w of source.workers())
          g.set({ worker: w.id }, w.health === 'healthy' && !w.draining ? 1 : 0);
      },
    );
    gauge(
      'infergrid_worker_requests_in_flight',
      'Requests this coordinator has sent to a worker and not yet seen settle',
      ['worker'],
      (g) => {
        for (const w of source.workers()) g.set({ worker: w.id }, w.inFlight);
      },
    );
    gauge('infergrid_pending_requests', 'Requests in flight to workers from this coordinator', [], (g) => {
      g.set(source.workers().reduce((n, w) => n + w.inFlight, 0));
    });
    gauge(
      'infergrid_model_ready_replicas',
      'Workers with the model version ready',
      [...MODEL_LABELS],
      (g) => {
        for (const r of source.readyReplicas()) g.set({ model: r.model, version: r.version }, r.replicas);
      },
    );
    gauge(
      'infergrid_worker_metrics_up',
      '1 when the last scrape got the worker\u2019s metrics',
      ['worker'],
      (g) => {
        for (const [worker, up] of scraped) g.set({ worker }, up ? 1 : 0);
      },
    );
    counter(
      'infergrid_llm_router_prefix_queries_total',
      'Prefix-aware picks that looked up the prompt (requests of models routed prefix-aware)',
      [],
      (c) => c.inc(source.prefixRouting().queries),
    );
    counter(
      'infergrid_llm_router_prefix_hits_total',
      'Prefix-aware picks that found a worker holding a prefix of the prompt',
      [],
      (c) => c.inc(source.prefixRouting().hits),
    );
    gauge(
      'infergrid_llm_router_prefix_entries',
      'Prompt-prefix blocks the router remembers (bounded by routing.prefix.maxEntries)',
      [],
      (g) => g.set(source.prefixRouting().entries),
    );
    counter('infergrid_retries_total', 'Attempts retried on another worker', [], (c) =>
      c.inc(source.retries()),
    );
    counter('infergrid_hedges_total', 'Hedged copies sent to a second worker', [], (c) =>
      c.inc(source.hedges()),
    );
    counter(
      'infergrid_circuit_opens_total',
      'Times a model\u2019s circuit on a worker opened',
      [...MODEL_LABELS, 'worker'],
      (c) => {
        for (const x of source.circuits())
          c.inc({ model: x.model, version: x.version, worker: x.worker }, x.opens);
      },
    );
    const cache = (what: 'hits' | 'misses' | 'joins', help: string) =>
      counter(`infergrid_cache_${what}_total`, help, ['model'], (c) => {
        for (const [model, s] of Object.entries(source.cache())) c.inc({ model }, s[what]);
      });
    cache('hits', 'Requests answered from the response cache');
    cache('misses', 'Cacheable requests computed by a worker (and stored)');
    cache('joins', 'Requests that joined an identical request being computed');
    counter('infergrid_pipeline_runs_total', 'Pipeline requests run', [], (c) =>
      c.inc(source.pipelineRuns()),
    );
    counter('infergrid_pipeline_step_runs_total', 'Pipeline steps run', [], (c) =>
      c.inc(source.pipelineStepRuns()),
    );
  }

  #seriesOf(entry: { name: string; version: string }): ModelSeries {
    let s = this.#series.get(entry);
    if (!s) {
      s = {
        ok: this.#requests.labels(entry.name, entry.version, 'OK'),
        duration: this.#duration.labels(entry.name, entry.version),
        failures: new Map(),
      };
      this.#series.set(entry, s);
    }
    return s;
  }

  /**
   * Records one answered inference request: `code` undefined for success (its duration is
   * observed), else the error code. `entry` undefined: the model could not be resolved; it
   * counts under `countedModel` (the served name it named, or "") with version "".
   */
  onRequest(
    entry: { name: string; version: string } | undefined,
    countedModel: string,
    code: string | undefined,
    seconds: number,
  ): void {
    if (!entry) {
      // refused before resolving: under the served name it named (version ""), else under ""
      this.#requests.inc({ model: countedModel, version: '', code: code ?? 'OK' });
      return;
    }
    const s = this.#seriesOf(entry);
    if (code === undefined) {
      s.ok.inc();
      s.duration.observe(seconds);
      return;
    }
    let failure = s.failures.get(code);
    if (!failure) {
      failure = this.#requests.labels(entry.name, entry.version, code);
      s.failures.set(code, failure);
    }
    failure.inc();
  }
}
