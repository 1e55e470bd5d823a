/**
 * What every HTTP request passes before a route sees it, in this order:
 *   1. Host: one of the configured names (or, listening on loopback, a loopback name), so a
 *      DNS-rebound page cannot reach a local server under its own name (health routes excepted:
 *      probes name the address, and liveness tells a page nothing).
 *   2. Origin: a browser's cross-origin request is refused unless the origin is allowed
 *      (coordinator.corsOrigins, then answered with CORS headers by @fastify/cors).
 *   3. The admin listener: when one is configured, admin routes live only there.
 *   4. Credentials and rate limit (src/api/auth.ts); the principal goes on the request.
 * Content types are checked where bodies are parsed (http-server.ts), with `isBrowser`.
 */

import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { CoordinatorConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { type ApiKeyAuth, type Principal, scopeOf } from './auth.ts';
import { sendError } from './errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who sent the request; set before any route runs. */
    principal: Principal;
  }
}

/** Which routes a listener serves: `main` leaves admin routes to the admin listener when there is one. */
export type Surface = 'main' | 'admin';

export interface FrontGuardOptions {
  config: Readonly<CoordinatorConfig>;
  auth: ApiKeyAuth;
  surface: Surface;
}

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '::1'];

/** Whether a listen address only takes connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** The host name of a Host header or an origin's authority, lower case, without port or brackets. */
export function hostName(authority: string): string {
  const a = authority.trim().toLowerCase();
  if (a.startsWith('[')) return a.slice(1, a.indexOf(']') > 0 ? a.indexOf(']') : undefined);
  const colon = a.lastIndexOf(':');
  return colon >= 0 && a.indexOf(':') === colon ? a.slice(0, colon) : a;
}

/**
 * The Host check: a pattern is a name (any port), `name:port`, or `*.suffix`. None configured:
 * loopback names when the server listens on loopback, else every name.
 */
export function hostAllowed(
  host: string | undefined,
  patterns: readonly string[],
  listenHost: string,
): boolean {
  if (host === undefined) return false;
  const list = patterns.length > 0 ? patterns : isLoopbackHost(listenHost) ? LOOPBACK_NAMES : undefined;
  if (list === undefined) return true;
  const name = hostName(host);
  const full = host.trim().toLowerCase();
  return list.some((raw) => {
    const p = raw.toLowerCase();
    if (p === '*') return true;
    if (p.startsWith('*.')) return name.endsWith(p.slice(1));
    const withPort = /^\[[^\]]*\]:\d+$/.test(p) || /^[^:]+:\d+$/.test(p);
    return withPort ? p === full : hostName(p) === name;
  });
}

/**
 * A request a browser sent: browsers add Origin to every cross-origin POST and Sec-Fetch-Site to
 * every request. (Node's fetch sends Sec-Fetch-Mode too, so that one says nothing.)
 */
export function isBrowser(req: FastifyRequest): boolean {
  const h = req.headers;
  return h.origin !== undefined || h['sec-fetch-site'] !== undefined;
}

function crossOrigin(req: FastifyRequest): string | undefined {
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let authority: string;
    try {
      authority = new URL(origin).host;
    } catch {
      return origin;
    }
    return authority.toLowerCase() === (req.headers.host ?? '').toLowerCase() ? undefined : origin;
  }
  // a cross-site navigation or no-cors fetch that carries no Origin still says so here
  return req.headers['sec-fetch-site'] === 'cross-site' ? '(cross-site)' : undefined;
}

/** Dashboard pages: a strict CSP (its files are all same-origin), never framed. */
const HELMET_OPTIONS = {
  global: false,
  contentSecurityPolicy: {
    directives: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'"],
      imgSrc: ["'self'", 'data:'],
      connectSrc: ["'self'"],
      frameAncestors: ["'none'"],
      formAction: ["'self'"],
      baseUri: ["'self'"],
      objectSrc: ["'none'"],
    },
  },
};

export function installFrontGuard(app: FastifyInstance, options: FrontGuardOptions): void {
  const { config, auth, surface } = options;
  const listenHost = surface === 'admin' && config.admin ? config.admin.host : config.host;
  const allowedOrigins = new Set(config.corsOrigins);
  const adminElsewhere = surface === 'main' && config.admin !== undefined;
  // helmet's reply.helmet(), used by the dashboard's routes only: JSON answers need no CSP
  void app.register(helmet, HELMET_OPTIONS);
  if (allowedOrigins.size > 0) {
    void app.register(cors, {
      origin: allowedOrigins.has('*') ? true : [...allowedOrigins],
      methods: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'],
      allowedHeaders: [
        'authorization',
        'content-type',
        'inference-header-content-length',
        'prefer',
        'traceparent',
      ],
      exposedHeaders: ['inference-header-content-length', 'location', 'retry-after'],
      maxAge: 600,
    });
  }
  app.decorateRequest('principal', undefined as unknown as Principal);
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    // liveness and readiness answer whatever the Host (a load balancer's probe names the address);
    // they tell a rebound page nothing
    const path = req.url.split('?', 1)[0]!;
    if (!path.startsWith('/v2/health/') && !hostAllowed(req.headers.host, config.allowedHosts, listenHost)) {
      return sendError(
        reply,
        new InfergridError(
          'INVALID_ARGUMENT',
          `Host ${JSON.stringify(req.headers.host ?? '')} is not a name this server answers to; add it to coordinator.allowedHosts`,
        ),
      );
    }
    const foreign = crossOrigin(req);
    if (foreign !== undefined && !allowedOrigins.has('*') && !allowedOrigins.has(foreign)) {
      return sendError(
        reply,
        new InfergridError(
          'PERMISSION_DENIED',
          `cross-origin requests from ${foreign} are refused; list the origin in coordinator.corsOrigins to allow it`,
        ),
      );
    }
    // a CORS preflight carries no credentials and runs nothing; @fastify/cors answers it
    if (req.method === 'OPTIONS' && allowedOrigins.size > 0) return;
    // the route that matched, never the URL's text: the router decodes %-escapes, so /%61dmin/…
    // reaches /admin/… (unmatched URLs are 404s and need infer)
    const need = scopeOf(req.method, req.routeOptions.url ?? path);
    if (adminElsewhere && need === 'admin') {
      return sendError(
        reply,
        new InfergridError(
          'NOT_FOUND',
          `${req.method} ${path} is served on the admin listener only (coordinator.admin)`,
        ),
      );
    }
    const decision = auth.check(req.headers.authorization, need);
    req.principal = decision.principal;
    if (decision.error) {
      if (decision.error.code === 'UNAUTHENTICATED')
        reply.header('www-authenticate', 'Bearer realm="infergrid"');
      return sendError(reply, decision.error);
    }
  });
}
