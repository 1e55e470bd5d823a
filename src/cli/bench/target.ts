/**
 * What `bench` learns from the coordinator before it starts: that it answers, that the model
 * exists and is ready, and the model's inputs. Every failure here is the user's to fix before
 * any load is applied, so it is an InfergridError with a message that says what to do.
 */

import { InfergridError } from '../../errors.ts';

export interface ModelMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: { name: string; datatype: string; shape: number[] }[];
  outputs: { name: string; datatype: string; shape: number[] }[];
}

/** How long the coordinator gets to answer a start-up question, ms. */
const PROBE_TIMEOUT_MS = 10_000;

export function modelPath(model: string, version: string | undefined): string {
  const base = `/v2/models/${encodeURIComponent(model)}`;
  return version === undefined ? base : `${base}/versions/${encodeURIComponent(version)}`;
}

async function probe(
  url: string,
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  let response: Response;
  try {
    response = await fetch(`${url}${path}`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS), headers });
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') {
      throw new InfergridError(
        'UNAVAILABLE',
        `the coordinator at ${url} did not answer GET ${path} within ${PROBE_TIMEOUT_MS} ms`,
        { cause: err },
      );
    }
    const cause = (err as { cause?: NodeJS.ErrnoException }).cause;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new InfergridError(
      'UNAVAILABLE',
      `cannot reach the coordinator at ${url} (${why}); is it running, and is --url right?`,
      { cause: err },
    );
  }
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { error: text.slice(0, 200) };
  }
  return { status: response.status, body };
}

/** The model's metadata, once it is known to exist and be ready. */
export async function fetchModelMetadata(
  url: string,
  model: string,
  version: string | undefined,
  headers: Record<string, string> = {},
): Promise<ModelMetadata> {
  const path = modelPath(model, version);
  const meta = await probe(url, path, headers);
  if (meta.status === 401 || meta.status === 403) {
    throw new InfergridError(
      meta.status === 401 ? 'UNAUTHENTICATED' : 'PERMISSION_DENIED',
      `GET ${url}${path} answered ${meta.status}: ${String(meta.body.error)}; pass an API key with the infer scope (--api-key or INFERGRID_API_KEY)`,
    );
  }
  if (meta.status === 404 && meta.body.code === 'MODEL_NOT_FOUND') {
    throw new InfergridError('MODEL_NOT_FOUND', `${String(meta.body.error)} (at ${url})`);
  }
  if (meta.status !== 200 || !Array.isArray(meta.body.inputs)) {
    throw new InfergridError(
      'UNAVAILABLE',
      `GET ${url}${path} answered ${meta.status}${meta.body.error ? `: ${String(meta.body.error)}` : ' without model metadata'}; is --url an infergrid (KServe v2) server?`,
    );
  }
  const ready = await probe(url, `${path}/ready`, headers);
  if (ready.status !== 200) {
    throw new InfergridError(
      'MODEL_NOT_READY',
      `model "${model}" is not ready at ${url} (GET ${path}/ready answered ${ready.status}): no worker has it loaded; wait for it, or see GET /admin/workers`,
    );
  }
  return meta.body as unknown as ModelMetadata;
}
