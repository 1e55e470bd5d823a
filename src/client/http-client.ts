/**
 * A small KServe v2 HTTP client (fetch-based) for examples, tests and benchmarks. Errors from
 * the server come back as InferenceClientError with the HTTP status and the server's code.
 */

export interface ClientTensor {
  name: string;
  datatype: string;
  shape: number[];
  data: ArrayLike<number> | readonly string[] | readonly boolean[];
}

export interface InferOutput {
  name: string;
  datatype: string;
  shape: number[];
  data: unknown[];
}

export interface InferResponse {
  model_name: string;
  model_version: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: InferOutput[];
}

export interface InferOptions {
  version?: string;
  outputs?: string[];
  parameters?: Record<string, string | number | boolean>;
  id?: string;
  /** Sent as the infergrid-timeout-ms header. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export class InferenceClientError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  readonly retryAfter: string | null;

  constructor(status: number, message: string, code: string | undefined, retryAfter: string | null) {
    super(message);
    this.name = 'InferenceClientError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function toJsonData(data: ClientTensor['data']): unknown[] {
  // typed arrays serialise as objects; BigInt does not serialise at all
  return Array.from(data as ArrayLike<unknown>, (v) => (typeof v === 'bigint' ? Number(v) : v));
}

export class InferenceClient {
  readonly baseUrl: string;

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  async #request<T>(
    method: string,
    path: string,
    body?: unknown,
    init: { headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<T> {
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      ...(init.signal ? { signal: init.signal } : {}),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!response.ok) {
      const err = parsed as { error?: string; code?: string } | undefined;
      throw new InferenceClientError(
        response.status,
        err?.error ?? `HTTP ${response.status}: ${text.slice(0, 200)}`,
        err?.code,
        response.headers.get('retry-after'),
      );
    }
    return parsed as T;
  }

  infer(model: string, inputs: ClientTensor[], options: InferOptions = {}): Promise<InferResponse> {
    const path = options.version
      ? `/v2/models/${encodeURIComponent(model)}/versions/${encodeURIComponent(options.version)}/infer`
      : `/v2/models/${encodeURIComponent(model)}/infer`;
    const body = {
      ...(options.id ? { id: options.id } : {}),
      ...(options.parameters ? { parameters: options.parameters } : {}),
      inputs: inputs.map((t) => ({
        name: t.name,
        datatype: t.datatype,
        shape: t.shape,
        data: toJsonData(t.data),
      })),
      ...(options.outputs ? { outputs: options.outputs.map((name) => ({ name })) } : {}),
    };
    return this.#request<InferResponse>('POST', path, body, {
      ...(options.timeoutMs ? { headers: { 'infergrid-timeout-ms': String(options.timeoutMs) } } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  modelMetadata(
    model: string,
  ): Promise<{ name: string; versions: string[]; platform: string; inputs: unknown[]; outputs: unknown[] }> {
    return this.#request('GET', `/v2/models/${encodeURIComponent(model)}`);
  }

  async modelReady(model: string): Promise<boolean> {
    try {
      await this.#request('GET', `/v2/models/${encodeURIComponent(model)}/ready`);
      return true;
    } catch (err) {
      if (err instanceof InferenceClientError && err.status === 503) return false;
      throw err;
    }
  }

  async serverReady(): Promise<boolean> {
    try {
      await this.#request('GET', '/v2/health/ready');
      return true;
    } catch (err) {
      if (err instanceof InferenceClientError && err.status === 503) return false;
      throw err;
    }
  }
}
