import {
  BenchRun,
  DEFAULT_MAX_IN_FLIGHT,
  benchReport,
  createHttpSender,
  fetchModelMetadata,
  formatReport,
  modelPath,
  parseBenchOptions,
  type RunResult,
  prepareRequestBody,
  startProgressBar,
} from './bench/index.ts';
import { parseCommandArgs } from './args.ts';

export const BENCH_HELP = `Usage: infergrid bench --model <name> [options]

Measures a running coordinator: sends one model's inference requests at a fixed concurrency
(closed loop) or a fixed rate (open loop), then reports throughput, latency percentiles and
errors by kind.

Target:
      --url <url>           the coordinator                  (default http://127.0.0.1:8000)
  -m, --model <name>        model to drive (required)
      --version <v>         a fixed version       (default: newest, or the model's traffic split)
      --api-key <key>       sent as Authorization: Bearer (or INFERGRID_API_KEY), for a
                            coordinator with API keys

Load (one of):
  -c, --concurrency <n>     closed loop: n requests in flight, the next sent as one answers (default 1)
  -r, --rate <per-second>   open loop: requests start on schedule whether or not earlier ones
                            answered; those sent over 5ms late are counted
      --max-in-flight <n>   open loop: a request due while n are outstanding is dropped (default ${DEFAULT_MAX_IN_FLIGHT})

Length:
  -d, --duration <time>     measured time: 500ms, 10s, 1m             (default 10s)
  -n, --requests <n>        measured requests; with --duration, whichever ends first
      --warmup <time>       load applied first and left out of the results (default 0s)
      --timeout <time>      a request unanswered this long is a "timeout" error (default 30s)

Request body (built once, sent every time):
                            default: generated from the model's metadata, -1 dims as 1
      --data <random|zero>  generated values: fixed pseudo-random ones, or zeros (default random)
      --shape <in>=<dims>   a generated input's shape, e.g. x=1,3,48,192; repeatable
  -i, --input <file>        a KServe v2 JSON request body; any other file (an image, say) is
                            sent as the model's single BYTES input, as binary tensor data
      --binary              send every tensor as binary tensor data, ask for binary outputs
      --cache <bypass|use>  bypass: every request carries parameters.cache "bypass", so a model's
                            response cache does not answer the same body every time (default);
                            use: measure the cache

Output:
      --json                one JSON object on stdout instead of the table
  -q, --quiet               no progress bar (drawn on stderr only when it is a terminal)
  -h, --help                show this help

Ctrl-C stops early and reports what was measured. Exits 0 when the run completes, even if
requests failed (they are reported by kind); 1 when the flags are wrong or the coordinator
cannot be reached or does not serve the model (ready).`;

export async function runBenchCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('bench', argv, {
    url: { type: 'string' },
    model: { type: 'string', short: 'm' },
    version: { type: 'string' },
    concurrency: { type: 'string', short: 'c' },
    rate: { type: 'string', short: 'r' },
    'max-in-flight': { type: 'string' },
    duration: { type: 'string', short: 'd' },
    requests: { type: 'string', short: 'n' },
    warmup: { type: 'string' },
    timeout: { type: 'string' },
    data: { type: 'string' },
    cache: { type: 'string' },
    shape: { type: 'string', multiple: true },
    input: { type: 'string', short: 'i' },
    binary: { type: 'boolean' },
    json: { type: 'boolean' },
    quiet: { type: 'boolean', short: 'q' },
    'api-key': { type: 'string' },
  });
  if (values.help) {
    console.log(BENCH_HELP);
    return;
  }
  const options = parseBenchOptions(values);
  const apiKey = (values['api-key'] as string | undefined) ?? process.env.INFERGRID_API_KEY;
  const auth: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {};
  const metadata = await fetchModelMetadata(options.url, options.model, options.version, auth);
  const body = await prepareRequestBody(metadata, options);
  const { mode } = options;
  const sender = createHttpSender({
    url: new URL(`${options.url}${modelPath(options.model, options.version)}/infer`),
    bodies: [{ body: body.body, headers: { ...body.headers, ...auth } }],
    maxSockets: mode.kind === 'concurrency' ? mode.concurrency : mode.maxInFlight,
    timeoutMs: options.timeoutMs,
  });
  const plan = {
    mode,
    durationMs: options.durationMs,
    requests: options.requests,
    warmupMs: options.warmupMs,
  };
  const run = new BenchRun(plan, sender);
  // the first Ctrl-C ends the run with a report; a second one (default handling) kills it
  const interrupt = (): void => run.stop();
  process.once('SIGINT', interrupt);
  const running = run.run(); // started: the progress bar reads a running clock
  const progress =
    !options.quiet && process.stderr.isTTY ? startProgressBar(run, plan, process.stderr) : undefined;
  let result: RunResult;
  try {
    result = await running;
  } finally {
    progress?.stop();
    process.removeListener('SIGINT', interrupt);
    sender.close();
  }
  const report = benchReport(options, body.description, result);
  console.log(options.json ? JSON.stringify(report) : formatReport(report));
}
