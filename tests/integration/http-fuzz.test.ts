/**
 * Property-based fuzzing of the HTTP front door against a real coordinator and a real sim
 * worker (issue 14): mutated JSON infer bodies, binary-extension bodies that lie about their
 * lengths, hostile headers, and arbitrary URLs under /v2. Whatever a client sends, the answer
 * is below 500 or a declared 503/504, every error has the engine's shape, the coordinator stays
 * live after every batch, and its memory stays bounded over the run.
 *
 * Trade-off: each property runs a fixed, modest number of cases (seeded by fast-check as usual,
 * the seed printed on failure) so the file stays well under a minute on a busy machine; the
 * generators lean on the edges (limits, lies, odd types) rather than on volume.
 */

import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { test } from 'node:test';
import fc from 'fast-check';
import { encodeBytesElements } from '../../src/tensor/index.ts';
import {
  NotSendable,
  type RawRequest,
  type RawResponse,
  assertEngineAnswer,
  coordinatorRssBytes,
  sendRaw,
} from '../fixtures/http-raw.ts';
import {
  type RunningCoordinator,
  type Spawned,
  startCoordinator,
  startWorker,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';

const CONFIG = `
coordinator:
  requestTimeoutMs: 5000
  maxRequestTimeoutMs: 5000
  bodyLimitBytes: 1048576
models:
  - name: m
    backend: sim
    maxBatchSize: 4
    inputs: [{ name: x, datatype: FP32, shape: [-1] }]
    outputs: [{ name: y, datatype: FP32, shape: [-1] }]
  - name: b
    backend: sim
    cache: { enabled: true }
    inputs: [{ name: s, datatype: BYTES, shape: [-1] }, { name: n, datatype: INT64, shape: [-1, 2] }]
    outputs: [{ name: t, datatype: BYTES, shape: [-1] }, { name: k, datatype: INT64, shape: [-1, 2] }]
`;

/** Cases per property: enough to cover the generators' edges, few enough for a busy 2-core CI box. */
const RUNS = 120;
/** Resident memory the coordinator may gain over the whole run; generous, to catch a leak per request, not noise. */
const MAX_RSS_GROWTH_BYTES = 300 * 1024 * 1024;

interface Fixture {
  coordinator: RunningCoordinator;
  worker: Spawned;
  agent: Agent;
}

/** Sends a generated request and checks the engine's contract on the answer; unsendable cases are skipped. */
async function exchange(f: Fixture, req: RawRequest): Promise<RawResponse | undefined> {
  let res: RawResponse;
  try {
    res = await sendRaw(f.coordinator.url, f.agent, req);
  } catch (err) {
    if (err instanceof NotSendable) return undefined;
    throw err;
  }
  assertEngineAnswer(req, res);
  return res;
}

/** The coordinator and the worker are both still running and the coordinator answers liveness. */
async function assertAlive(f: Fixture): Promise<void> {
  assert.equal(f.coordinator.child.exitCode, null, `coordinator exited:\n${f.coordinator.output()}`);
  assert.equal(f.worker.child.exitCode, null, `worker exited:\n${f.worker.output()}`);
  const res = await fetch(`${f.coordinator.url}/v2/health/live`);
  assert.equal(res.status, 200);
  // and it still serves: a well-formed request is answered
  const ok = await f.coordinator.client.infer('m', [
    { name: 'x', datatype: 'FP32', shape: [2], data: [1, 2] },
  ]);
  assert.deepEqual(ok.outputs[0]!.data, [1, 2]);
}

async function setup(t: import('node:test').TestContext): Promise<Fixture> {
  const config = writeConfig(t, CONFIG);
  const coordinator = await startCoordinator(t, config);
  const worker = await startWorker(t, config, 'w', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['m', 'b']);
  // a connection per request: a socket the server closed is never reused for the next case
  const agent = new Agent({ keepAlive: false });
  t.after(() => agent.destroy());
  return { coordinator, worker, agent };
}

// ---------------------------------------------------------------- generators

/** Any JSON value, unicode strings and odd numbers included. */
const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  fc.constantFrom(
    null,
    true,
    0,
    -1,
    1.5,
    -0.5,
    2 ** 31,
    2 ** 32,
    2 ** 53,
    2 ** 64,
    1e308,
    -1e308,
    '',
    '0',
    '-1',
    'NaN',
    'Infinity',
    'true',
    '__proto__',
    'constructor',
    [],
    {},
    [[]],
    { __proto__: null },
  ),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
);

/** A shape: usually sensible, sometimes hostile (huge, negative, fractional, deep, not numbers). */
const shapeArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.nat(4), { minLength: 1, maxLength: 3 }) },
  fc.array(
    fc.oneof(
      fc.integer({ min: -3, max: 3 }),
      fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 60, 1e300, 1.5, -0, 0.1),
      anyJson,
    ),
    { maxLength: 6 },
  ),
  fc.nat(70).map((n) => Array.from({ length: n }, () => 1)),
  anyJson,
);

/** Elements of a tensor: right type, wrong type, or a mix. */
const elementArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  fc.integer(),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.boolean(),
  anyJson,
);

/**
 * Data nested `depth` levels deep around `leaf` (past the engine's JSON depth limit and far past
 * it). It stays a marker until the body is serialised (see bodyText): fast-check prints
 * counterexamples and JSON.stringify writes arrays recursively, and either would overflow its
 * stack on a value thousands of levels deep.
 */
class Nested {
  constructor(
    readonly depth: number,
    readonly leaf: unknown,
  ) {}

  toJSON(): string {
    return `${NESTED_MARK}${this.depth}:${JSON.stringify(this.leaf) ?? 'null'}${NESTED_MARK}`;
  }

  [fc.toStringMethod](): string {
    return `<${this.depth} nested arrays around ${fc.stringify(this.leaf)}>`;
  }
}

const NESTED_MARK = '@@nested@@';
const NESTED_RE = new RegExp(`"${NESTED_MARK}(\\d+):(.*?)${NESTED_MARK}"`, 'g');

/** The body as JSON text, with every Nested marker expanded into its arrays. */
function bodyText(body: unknown): string {
  return JSON.stringify(body).replace(NESTED_RE, (_m, depth: string, leaf: string) => {
    const n = Number(depth);
    return `${'['.repeat(n)}${JSON.parse(`"${leaf}"`)}${']'.repeat(n)}`;
  });
}

const dataArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.array(elementArb, { maxLength: 12 }) },
  fc.array(fc.array(elementArb, { maxLength: 4 }), { maxLength: 4 }),
  fc
    .record({
      depth: fc.oneof(fc.integer({ min: 60, max: 70 }), fc.integer({ min: 1000, max: 5000 })),
      leaf: elementArb,
    })
    .map(({ depth, leaf }) => new Nested(depth, leaf)),
  anyJson,
);

/** Parameter values of every type, including the engine's own parameters' names. */
const parametersArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.dictionary(
    fc.oneof(
      fc.constantFrom(
        'timeout',
        'timeout_ms',
        'async',
        'priority',
        'binary_data_output',
        'binary_data',
        'binary_data_size',
        'content_type',
        'shard_key',
        'cache',
        'infergrid_cache',
        '__proto__',
      ),
      fc.string({ unit: 'grapheme', maxLength: 12 }),
    ),
    anyJson,
    { maxKeys: 4 },
  ),
  anyJson,
);

const datatypeArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom('FP32', 'FP16', 'FP64', 'INT8', 'INT64', 'UINT64', 'BOOL', 'BYTES', 'BF16', 'fp32', ''),
  anyJson,
);

/** A well-formed request for model m or b. */
const validBodyArb = fc.oneof(
  fc
    .array(fc.double({ noNaN: true, noDefaultInfinity: true }), { minLength: 1, maxLength: 8 })
    .map((data) => ({
      model: 'm',
      body: { inputs: [{ name: 'x', datatype: 'FP32', shape: [data.length], data }] } as Record<
        string,
        unknown
      >,
    })),
  fc.array(fc.string({ unit: 'grapheme', maxLength: 8 }), { minLength: 1, maxLength: 4 }).map((strings) => ({
    model: 'b',
    body: {
      inputs: [
        { name: 's', datatype: 'BYTES', shape: [strings.length], data: strings },
        { name: 'n', datatype: 'INT64', shape: [1, 2], data: [1, 2] },
      ],
    } as Record<string, unknown>,
  })),
);

type Mutation =
  | { op: 'replace'; at: number; value: unknown }
  | { op: 'delete'; at: number }
  | { op: 'add'; at: number; key: string; value: unknown }
  | { op: 'shape'; input: number; value: unknown }
  | { op: 'data'; input: number; value: unknown }
  | { op: 'datatype'; input: number; value: unknown }
  | { op: 'parameters'; input: number | undefined; value: unknown }
  | { op: 'top'; key: string; value: unknown };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('replace' as const), at: fc.nat(), value: anyJson }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({
    op: fc.constant('add' as const),
    at: fc.nat(),
    key: fc.string({ unit: 'grapheme', maxLength: 10 }),
    value: anyJson,
  }),
  fc.record({ op: fc.constant('shape' as const), input: fc.nat(2), value: shapeArb }),
  fc.record({ op: fc.constant('data' as const), input: fc.nat(2), value: dataArb }),
  fc.record({ op: fc.constant('datatype' as const), input: fc.nat(2), value: datatypeArb }),
  fc.record({
    op: fc.constant('parameters' as const),
    input: fc.option(fc.nat(2), { nil: undefined }),
    value: parametersArb,
  }),
  fc.record({
    op: fc.constant('top' as const),
    key: fc.constantFrom('id', 'outputs', 'parameters', 'inputs', 'model_name', 'extra'),
    value: fc.oneof(
      anyJson,
      fc.string({ unit: 'grapheme', maxLength: 300 }),
      fc.array(
        fc.record({
          name: fc.oneof(fc.constantFrom('y', 't', 'k', 'nope'), anyJson),
          parameters: parametersArb,
        }),
        {
          maxLength: 3,
        },
      ),
    ),
  }),
);

/** Every (container, key) in a JSON value, depth first. */
function slots(value: unknown, out: [Record<string, unknown> | unknown[], string | number][] = []) {
  if (Array.isArray(value)) {
    value.forEach((v, i) => {
      out.push([value, i]);
      slots(v, out);
    });
  } else if (typeof value === 'object' && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      out.push([value as Record<string, unknown>, k]);
      slots(v, out);
    }
  }
  return out;
}

function applyMutation(body: Record<string, unknown>, m: Mutation): void {
  const inputs = Array.isArray(body.inputs) ? (body.inputs as Record<string, unknown>[]) : [];
  const input = (i: number | undefined) =>
    i === undefined || inputs.length === 0 ? undefined : inputs[i % inputs.length];
  switch (m.op) {
    case 'replace':
    case 'delete':
    case 'add': {
      const all = slots(body);
      if (all.length === 0) return;
      const [container, key] = all[m.at % all.length]!;
      if (m.op === 'replace') (container as Record<string | number, unknown>)[key] = m.value;
      else if (m.op === 'delete') {
        if (Array.isArray(container)) container.splice(key as number, 1);
        else delete container[key as string];
      } else {
        const target = (container as Record<string | number, unknown>)[key];
        if (Array.isArray(target)) target.push(m.value);
        else if (typeof target === 'object' && target !== null)
          (target as Record<string, unknown>)[m.key] = m.value;
        else (container as Record<string | number, unknown>)[key] = { [m.key]: m.value };
      }
      return;
    }
    case 'shape':
    case 'data':
    case 'datatype': {
      const target = input(m.input);
      if (target && typeof target === 'object') target[m.op] = m.value;
      return;
    }
    case 'parameters': {
      const target = m.input === undefined ? body : input(m.input);
      if (target && typeof target === 'object') target.parameters = m.value;
      return;
    }
    case 'top':
      body[m.key] = m.value;
      return;
  }
}

/** The JSON text, sometimes broken: cut short, or with a byte changed. */
const textDamageArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  fc.record({ cut: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({
    at: fc.double({ min: 0, max: 1, noNaN: true }),
    char: fc.string({ unit: 'binary', minLength: 1, maxLength: 2 }),
  }),
);

function damage(text: string, d: { cut?: number; at?: number; char?: string } | undefined): string {
  if (!d) return text;
  if (d.cut !== undefined) return text.slice(0, Math.floor(text.length * d.cut));
  const i = Math.floor(text.length * d.at!);
  return text.slice(0, i) + d.char! + text.slice(i + 1);
}

const modelNameArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  fc.constantFrom('nope', 'M', 'm ', '%6d', '..', '.', '%2e%2e', '%00', '%', '%zz', 'm%2Fb', 'b/versions/1'),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).map(encodeURIComponent),
);

/** A path segment as a client might send it: raw when node will put it on the wire, encoded otherwise. */
function segment(s: string): string {
  return /^[\u0021-\u00ff]*$/.test(s) && !/[/?#]/.test(s) ? s : encodeURIComponent(s);
}

const timeoutHeaderArb = fc.oneof(
  fc.constantFrom(
    '1',
    '0',
    '-1',
    '1.5',
    '1e309',
    'NaN',
    'Infinity',
    '',
    ' ',
    '99999999999999999999',
    '0x10',
    '2000',
    '5000',
  ),
  fc.integer().map(String),
  fc.string({ maxLength: 12 }),
);

/** Header values node will send: printable latin1, as a client's header could hold. */
const headerValueArb = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({
    unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c === 0x7f ? 0x20 : c)),
    maxLength: 60,
  }),
  fc.nat(4000).map((n) => 'x'.repeat(n)),
);

const traceparentArb = fc.oneof(
  fc.constantFrom(
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-00000000000000000000000000000000-0000000000000000-01',
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
    '00-zz-yy-01',
  ),
  fc
    .tuple(
      fc.stringMatching(/^[0-9a-f]{2}$/),
      fc.stringMatching(/^[0-9a-f]{32}$/),
      fc.stringMatching(/^[0-9a-f]{16}$/),
      fc.stringMatching(/^[0-9a-f]{2}$/),
    )
    .map((p) => p.join('-')),
  headerValueArb,
);

const headersArb = fc.record(
  {
    'content-type': fc.oneof(
      fc.constantFrom(
        'application/json',
        'application/octet-stream',
        'text/plain',
        'application/json; charset=latin1',
        'multipart/form-data; boundary=x',
        '',
      ),
      headerValueArb,
    ),
    'infergrid-timeout-ms': timeoutHeaderArb,
    traceparent: traceparentArb,
    tracestate: headerValueArb,
    'x-request-id': headerValueArb,
    prefer: fc.oneof(
      fc.constantFrom('respond-async', 'RESPOND-ASYNC, wait=1', 'respond-async;x=1', 'wait=10', ''),
      headerValueArb,
    ),
  },
  { requiredKeys: [] },
);

// ---------------------------------------------------------------- properties

test('http fuzz - mutated JSON infer bodies and hostile headers get a typed answer, never a 5xx of the engine', {
  timeout: 180_000,
}, async (t) => {
  const f = await setup(t);
  const rssBefore = await coordinatorRssBytes(f.coordinator.url);
  await fc.assert(
    fc.asyncProperty(
      validBodyArb,
      fc.array(mutationArb, { maxLength: 4 }),
      modelNameArb,
      headersArb,
      textDamageArb,
      async ({ model, body }, mutations, name, headers, broken) => {
        for (const m of mutations) applyMutation(body, m);
        const text = damage(bodyText(body), broken);
        await exchange(f, {
          method: 'POST',
          path: `/v2/models/${name ?? model}/infer`,
          headers: headers as Record<string, string>,
          body: text,
        });
      },
    ),
    { numRuns: RUNS * 2 },
  );
  await assertAlive(f);
  const rssAfter = await coordinatorRssBytes(f.coordinator.url);
  t.diagnostic(
    `coordinator RSS ${(rssBefore / 2 ** 20).toFixed(0)} MiB -> ${(rssAfter / 2 ** 20).toFixed(0)} MiB`,
  );
  assert.ok(rssAfter - rssBefore < MAX_RSS_GROWTH_BYTES, `RSS grew by ${rssAfter - rssBefore} bytes`);
});

test('http fuzz - binary-extension bodies whose lengths lie get a typed answer', {
  timeout: 180_000,
}, async (t) => {
  const f = await setup(t);
  const headerLie = fc.oneof(
    { weight: 3, arbitrary: fc.constant(undefined) },
    fc.integer({ min: -40, max: 40 }),
    fc.constantFrom('', ' ', 'abc', '-1', '1.5', '1e3', '0x10', '99999999999999999999', '00', ' 12 '),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { maxLength: 8 }),
      fc.array(fc.string({ unit: 'grapheme', maxLength: 6 }), { maxLength: 4 }),
      fc.record({
        headerLie,
        sizeLie: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.integer({ min: -9, max: 9 }), anyJson),
        cut: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.nat(40)),
        extra: fc.oneof(
          { weight: 3, arbitrary: fc.constant(new Uint8Array()) },
          fc.uint8Array({ maxLength: 20 }),
        ),
        shapeLie: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, shapeArb),
        bytesModel: fc.boolean(),
        garbage: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, fc.uint8Array({ maxLength: 64 })),
      }),
      headersArb,
      async (floats, strings, lie, headers) => {
        let json: Record<string, unknown>;
        let raw: Buffer;
        let path: string;
        // the first input's bytes follow the JSON; its shape and size may lie below
        const binaryInput = (name: string, datatype: string, shape: unknown) => ({
          name,
          datatype,
          shape: lie.shapeLie ?? shape,
          parameters: { binary_data_size: raw.length },
        });
        if (lie.bytesModel) {
          raw = Buffer.from(encodeBytesElements(strings.map((s) => Buffer.from(s))));
          json = {
            inputs: [
              binaryInput('s', 'BYTES', [strings.length]),
              { name: 'n', datatype: 'INT64', shape: [1, 2], data: [1, 2] },
            ],
            outputs: [{ name: 't', parameters: { binary_data: true } }, { name: 'k' }],
          };
          path = '/v2/models/b/infer';
        } else {
          raw = Buffer.from(new Float32Array(floats).buffer);
          json = {
            inputs: [binaryInput('x', 'FP32', [floats.length])],
            parameters: { binary_data_output: true },
          };
          path = '/v2/models/m/infer';
        }
        const input = (json.inputs as { parameters: Record<string, unknown> }[])[0]!;
        if (typeof lie.sizeLie === 'number') input.parameters.binary_data_size = raw.length + lie.sizeLie;
        else input.parameters.binary_data_size = lie.sizeLie;
        const header = Buffer.from(JSON.stringify(json));
        let body = Buffer.concat([header, raw, lie.extra]);
        body = body.subarray(0, Math.max(0, body.length - lie.cut));
        if (lie.garbage) body = Buffer.from(lie.garbage);
        const length =
          lie.headerLie === undefined
            ? String(header.length)
            : typeof lie.headerLie === 'number'
              ? String(header.length + lie.headerLie)
              : lie.headerLie;
        const res = await exchange(f, {
          method: 'POST',
          path,
          headers: {
            ...(headers as Record<string, string>),
            'content-type': 'application/octet-stream',
            'inference-header-content-length': length,
          },
          body,
        });
        // an honest binary request for m (within its maxBatchSize) is answered with its binary output
        if (
          res &&
          lie.headerLie === undefined &&
          lie.sizeLie === 0 &&
          lie.cut === 0 &&
          lie.extra.length === 0 &&
          !lie.garbage &&
          !lie.shapeLie &&
          !lie.bytesModel &&
          floats.length > 0 &&
          floats.length <= 4 &&
          headers['infergrid-timeout-ms'] === undefined &&
          !headers.prefer
        ) {
          assert.equal(res.status, 200, res.body.toString());
        }
      },
    ),
    { numRuns: RUNS },
  );
  await assertAlive(f);
});

test('http fuzz - any method on any URL under /v2 gets a typed answer', { timeout: 180_000 }, async (t) => {
  const f = await setup(t);
  const segmentArb = fc.oneof(
    fc.constantFrom(
      'models',
      'm',
      'b',
      'versions',
      '1',
      'infer',
      'ready',
      'stats',
      'requests',
      'health',
      'live',
      'repository',
      'index',
      'load',
      'unload',
      'config',
      '..',
      '.',
      '',
      '%2e%2e',
      '%2F',
      '%00',
      '%',
      '%zz',
      '%ff',
      '%c0%af',
      '?',
      '#',
    ),
    fc.string({ unit: 'grapheme', maxLength: 16 }).map(segment),
    fc.string({ unit: 'binary', maxLength: 16 }).map(segment),
    fc.nat(9000).map((n) => 'a'.repeat(n)),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'),
      fc.array(segmentArb, { maxLength: 6 }),
      fc.oneof(
        { weight: 3, arbitrary: fc.constant('') },
        fc.string({ maxLength: 20 }).map((q) => `?${segment(q)}`),
      ),
      fc.oneof(
        { weight: 2, arbitrary: fc.constant(undefined) },
        validBodyArb.map((b) => bodyText(b.body)),
        fc.string({ maxLength: 40 }),
      ),
      headersArb,
      async (method, segments, query, body, headers) => {
        const path = `/v2/${segments.join('/')}${query}`;
        const sendsBody = body !== undefined && method !== 'GET' && method !== 'HEAD';
        await exchange(f, {
          method,
          path,
          headers: headers as Record<string, string>,
          ...(sendsBody ? { body } : {}),
        });
      },
    ),
    { numRuns: RUNS },
  );
  await assertAlive(f);
});
