/**
 * Sends prepared inference requests again and again over keep-alive connections (node:http,
 * lower per-request cost than fetch): the same body every time, or several bodies in turn. A
 * success's body is drained unread; only an error's body is parsed, for its KServe `code`.
 */

import { Agent as HttpAgent, type IncomingMessage, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/** How one request ended. `kind` groups errors: `429 OVERLOADED`, `503`, `network ECONNRESET`, `timeout`. */
export type SendOutcome = { ok: true } | { ok: false; kind: string; message: string };

/** Sends one request; never rejects: every failure is an outcome. */
export interface RequestSender {
  /** `loop`: which closed loop sends it (per-loop connections); open loops leave it out. */
  send(loop?: number): Promise<SendOutcome>;
  /** Closes the kept-alive connections. */
  close(): void;
}

/** One request's bytes and headers (content-length is added). */
export interface HttpBody {
  body: Buffer;
  headers: Record<string, string>;
}

export interface HttpSenderOptions {
  /** The full inference URL. */
  url: URL;
  /** Sent in turn, one per request, whichever loop sends it: usually just one. */
  bodies: readonly HttpBody[];
  /** Connections kept open at most; at least the requests in flight, so none waits for a socket. */
  maxSockets: number;
  /**
   * `shared` (default): one pool of `maxSockets` connections. `per-loop`: closed loop i always
   * uses its own connection, so a caller can open them all before load starts (see send's `loop`).
   */
  connections?: 'shared' | 'per-loop';
  /** No answer after this long: the request ends as a `timeout` error, ms. */
  timeoutMs: number;
  /**
   * For an https: URL, the CA certificates (PEM) the server's certificate must chain to, in place
   * of the system's (a private or test CA). Ignored for http:.
   */
  ca?: string | Buffer;
}

const OK: SendOutcome = { ok: true };
/** An error body is read up to this size for its code and message. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

function httpFailure(status: number, body: Buffer): SendOutcome {
  let code: string | undefined;
  let message = body.toString('utf8', 0, Math.min(body.byteLength, 300));
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { code?: unknown; error?: unknown };
    if (typeof parsed.code === 'string') code = parsed.code;
    if (typeof parsed.error === 'string') message = parsed.error;
  } catch {
    // not JSON (a proxy's error page, say): the status alone is the kind
  }
  return { ok: false, kind: code ? `${status} ${code}` : String(status), message };
}

function networkFailure(err: NodeJS.ErrnoException): SendOutcome {
  return { ok: false, kind: `network ${err.code ?? err.name}`, message: err.message };
}

export function createHttpSender(options: HttpSenderOptions): RequestSender {
  const { url, timeoutMs } = options;
  if (options.bodies.length === 0) throw new RangeError('createHttpSender needs at least one body');
  const https = url.protocol === 'https:';
  const newAgent = (maxSockets: number) => {
    // the default keeps 256 idle sockets; beyond that connections would be closed and reopened
    const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
    // the TLS session is set up once per kept-alive connection, like the TCP one
    return https ? new HttpsAgent({ ...agentOptions, ca: options.ca }) : new HttpAgent(agentOptions);
  };
  const agents: HttpAgent[] = [];
  // request options built once per agent, not per request: the client shares the cores it measures
  const withAgent = (agent: HttpAgent) => {
    agents.push(agent);
    return options.bodies.map(({ body, headers }) => ({
      body,
      options: {
        agent,
        method: 'POST',
        headers: { ...headers, 'content-length': String(body.byteLength) },
        timeout: timeoutMs,
      },
    }));
  };
  const shared = withAgent(newAgent(options.maxSockets));
  const perLoop: (typeof shared)[] = [];
  const requestsFor = (loop: number | undefined) => {
    if (options.connections !== 'per-loop' || loop === undefined) return shared;
    perLoop[loop] ??= withAgent(newAgent(1));
    return perLoop[loop];
  };
  const request = https ? httpsRequest : httpRequest;
  let next = 0;

  const send = (loop?: number): Promise<SendOutcome> =>
    new Promise<SendOutcome>((resolve) => {
      const requests = requestsFor(loop);
      const { body, options: requestOptions } = requests[next++ % requests.length]!;
      const req = request(url, requestOptions, (res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        res.on('error', (err) => resolve(networkFailure(err)));
        if (status >= 200 && status < 300) {
          res.on('end', () => resolve(OK));
          res.resume();
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          if (size < MAX_ERROR_BODY_BYTES) chunks.push(chunk);
          size += chunk.byteLength;
        });
        res.on('end', () => resolve(httpFailure(status, Buffer.concat(chunks))));
      });
      req.on('timeout', () => {
        // settled first: the error the destroyed socket raises next is then ignored
        resolve({ ok: false, kind: 'timeout', message: `no answer within ${timeoutMs} ms` });
        req.destroy();
      });
      req.on('error', (err) => resolve(networkFailure(err)));
      req.end(body);
    });

  const close = (): void => {
    for (const agent of agents) agent.destroy();
  };
  return { send, close };
}
