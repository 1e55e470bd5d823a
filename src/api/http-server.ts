/**
 * The coordinator's HTTP front door (fastify). Every request passes the front guard first
 * (Host, Origin, credentials: front-guard.ts). JSON bodies are parsed by our own parser, so a
 * parse error names the problem; clients that are not browsers may send JSON under any
 * content type (`curl -d`), browsers only under a JSON one; an empty body is no body, whatever
 * its type. Bodies may come gzip- or deflate-compressed and answers go out compressed when the
 * client asks (body-encoding.ts). The body limits answer 413.
 */

import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Coordinator } from '../coordinator/index.ts';
import type { InfergridConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { type Logger, subscribeRequestEnd } from '../telemetry/index.ts';
import { registerAdminRoutes } from './admin.ts';
import { ApiKeyAuth } from './auth.ts';
import { type Surface, installFrontGuard, isBrowser } from './front-guard.ts';
import { INFERENCE_HEADER_CONTENT_LENGTH } from './binary-tensors.ts';
import { type BodyRefusal, type ContentCoding, readBody, requestCoding } from './body-encoding.ts';
import { installResponseCompression } from './response-compression.ts';
import { registerAsyncRoutes } from './async-routes.ts';
import { registerCacheAdminRoutes } from './cache-admin.ts';
import { type ClusterStatusSource, registerClusterRoutes } from './cluster-admin.ts';
import { MAX_PATH_PARAM_CHARS, answerClientError, fromFastifyError, sendError } from './errors.ts';
import { SERVER_NAME } from './infer-entry.ts';
import { registerKserveRoutes } from './kserve.ts';
import { registerOpenAiRoutes } from './openai.ts';
import { registerGenerateRoutes } from './triton-generate.ts';
import { registerOverviewRoutes } from './overview.ts';
import { RequestCounts } from './request-counts.ts';
import { registerMetricsRoutes } from './metrics.ts';
import { registerRepositoryRoutes } from './repository.ts';
import { registerStatsRoutes } from './stats.ts';

export interface HttpServerOptions {
  coordinator: Coordinator;
  config: Readonly<InfergridConfig>;
  logger: Logger;
  serverVersion: string;
  /** Credentials; shared by the listeners of one coordinator, so a key's rate limit is too. Default: from config.auth. */
  auth?: ApiKeyAuth;
  /** `admin`: the admin listener (coordinator.admin). Default `main`. */
  surface?: Surface;
  /** PEM certificate and key: serve HTTPS. */
  tls?: { cert: Buffer; key: Buffer } | undefined;
  /** The cluster membership GET /admin/cluster shows; none when the config has no `cluster`. */
  cluster?: ClusterStatusSource | undefined;
}

/** Content types a JSON body may come with: none, application/json, or any `+json`. */
function isJsonType(contentType: string | undefined): boolean {
  if (contentType === undefined) return true;
  const type = contentType.split(';', 1)[0]!.trim().toLowerCase();
  return (
    type === '' || type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))
  );
}

function parseJson(_req: unknown, body: string, done: (err: Error | null, value?: unknown) => void): void {
  try {
    done(null, JSON.parse(body));
  } catch (err) {
    done(
      new InfergridError('MALFORMED_REQUEST', `request body is not valid JSON: ${(err as Error).message}`),
    );
  }
}

export function createHttpServer(options: HttpServerOptions): FastifyInstance {
  const { config, logger } = options;
  const bodyLimitBytes = config.coordinator.bodyLimitBytes;
  // a client that trickles its headers or body holds a socket no longer than these; node checks
  // them every connectionsCheckingInterval, so that is kept well under the shorter one. Node
  // refuses a headers timeout longer than the whole request's.
  const headersTimeout = Math.min(config.coordinator.headersTimeoutMs, config.coordinator.bodyTimeoutMs);
  const serverTimeouts = {
    headersTimeout,
    requestTimeout: config.coordinator.bodyTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeout / 4))),
  };
  const app = Fastify({
    // fastify hands `https` alone to https.createServer (its `http` options are dropped): the
    // timeouts go in both
    ...(options.tls ? { https: { ...options.tls, ...serverTimeouts } } : {}),
    // errors are logged by the error handler below; one line per request is not wanted at info
    logger: false,
    bodyLimit: bodyLimitBytes,
    // keep-alive connections from load balancers and benchmarks outlive the default 72 s
    keepAliveTimeout: 65_000,
    requestTimeout: config.coordinator.bodyTimeoutMs,
    http: serverTimeouts,
    // a load balancer's or client's request id is kept (logs carry it)
    requestIdHeader: 'x-request-id',
    routerOptions: { maxParamLength: MAX_PATH_PARAM_CHARS },
    // a URL the router cannot decode is answered in the engine's error shape, like any other
    frameworkErrors: (err, _req, reply) => sendError(reply, fromFastifyError(err, bodyLimitBytes)),
    // and so is a request node's parser refuses (headers too large, not HTTP, too slow)
    clientErrorHandler: answerClientError,
  });
  // beyond the cap, new connections are closed at once (an open socket costs memory whatever it sends)
  app.server.maxConnections = config.coordinator.maxConnections;
  const auth = options.auth ?? new ApiKeyAuth(config.auth.apiKeys, config.auth.anonymous);
  installFrontGuard(app, { config: config.coordinator, auth, surface: options.surface ?? 'main' });
  app.removeAllContentTypeParsers();
  // bodies are read here, decoded per Content-Encoding as they arrive (body-encoding.ts)
  const readLimits = {
    wireLimitBytes: bodyLimitBytes,
    decodedLimitBytes: config.coordinator.compression.maxDecompressedBytes ?? bodyLimitBytes,
  };
  // requests whose refused body is read to its end and dropped: their connection may carry the next one
  const drained = new WeakSet<object>();
  app.addContentTypeParser('*', (req, payload, done) => {
    let coding: ContentCoding;
    try {
      coding = requestCoding(req.headers['content-encoding']);
    } catch (err) {
      // nothing read yet: node reads and drops a body within the limit once the answer is sent
      if (Number(req.headers['content-length'] ?? Number.NaN) <= bodyLimitBytes) drained.add(req.raw);
      done(err as Error);
      return;
    }
    readBody(payload, req.headers['content-length'], { coding, ...readLimits }, (r: BodyRefusal) => {
      if (r.drained) drained.add(req.raw);
    }).then((body) => {
      // the whole body was read: whatever is wrong with it, the connection can go on
      drained.add(req.raw);
      // an empty body is no body, whatever its content type says (aiohttp posts text/plain)
      if (body.byteLength === 0) {
        done(null, undefined);
        return;
      }
      // a body with Inference-Header-Content-Length is JSON followed by binary tensors: kept as bytes
      if (req.headers[INFERENCE_HEADER_CONTENT_LENGTH] !== undefined) {
        done(null, body);
        return;
      }
      // a browser may post text/plain or a form without a preflight: such bodies are not JSON to
      // us when a browser sends them (or whoever sends them, with strictContentType)
      const contentType = req.headers['content-type'];
      if (!isJsonType(contentType) && (config.coordinator.strictContentType || isBrowser(req))) {
        done(
          new InfergridError(
            'UNSUPPORTED_MEDIA_TYPE',
            `a ${JSON.stringify(contentType)} body is not read as JSON here; send Content-Type: application/json (or the binary tensor extension)`,
          ),
        );
        return;
      }
      parseJson(req, body.toString('utf8'), done);
    }, done);
  });
  if (config.coordinator.compression.responses)
    installResponseCompression(app, config.coordinator.compression);

  app.setErrorHandler((err: FastifyError | InfergridError, req, reply) => {
    const typed = err instanceof InfergridError ? err : fromFastifyError(err, bodyLimitBytes);
    // failures of the engine itself; not a worker gone, nothing ready, or a request out of time
    if (
      typed.httpStatus >= 500 &&
      typed.code !== 'UNAVAILABLE' &&
      typed.code !== 'CONNECTION_LOST' &&
      typed.code !== 'DEADLINE_EXCEEDED'
    ) {
      logger.error({ err, url: req.url, code: typed.code }, 'request failed');
    }
    // fastify closes the connection after any body error, in case the client sends more; a
    // body read (or being read) to its end leaves the connection for the next request
    if (drained.has(req.raw)) reply.removeHeader('connection');
    // a coding we do not read: RFC 9110 asks the 415 to say which we do
    if (typed.code === 'UNSUPPORTED_MEDIA_TYPE' && Array.isArray(typed.details?.supportedEncodings))
      reply.header('accept-encoding', (typed.details.supportedEncodings as string[]).join(', '));
    return sendError(reply, typed);
  });
  app.setNotFoundHandler((req, reply) =>
    sendError(
      reply,
      new InfergridError(
        'NOT_FOUND',
        `no route ${req.method} ${req.url.split('?')[0]}; the KServe v2 API is under /v2, the OpenAI API under /v1`,
      ),
    ),
  );

  registerAsyncRoutes(app, options.coordinator.asyncRequests);
  const requestCounts = new RequestCounts({
    versions: (name) => options.coordinator.registry.versions(name),
  });
  // the dashboard's counts: every answered or accepted request, under the model /metrics counts it under
  const unsubscribe = subscribeRequestEnd(options.coordinator, (e) => {
    if (e.phase !== 'finished') requestCounts.onEnd(e.countedModel, e.code);
  });
  app.addHook('onClose', async () => unsubscribe());
  registerKserveRoutes(app, {
    coordinator: options.coordinator,
    config,
    serverVersion: options.serverVersion,
  });
  registerOpenAiRoutes(app, { coordinator: options.coordinator, config });
  registerGenerateRoutes(app, { coordinator: options.coordinator, config });
  registerStatsRoutes(app, options.coordinator);
  registerCacheAdminRoutes(app, options.coordinator);
  registerAdminRoutes(app, options.coordinator, config.coordinator.dial);
  registerClusterRoutes(app, options.cluster);
  registerRepositoryRoutes(app, options.coordinator);
  registerOverviewRoutes(app, { ...options, requestCounts, serverName: SERVER_NAME });
  registerMetricsRoutes(app, options.coordinator);
  return app;
}
