/**
 * Tracing settings: the `tracing:` config section with the standard OTEL_* environment
 * variables applied over it. Pure: it reads only the config and the env object it is given (never
 * `process.env` itself), so a test states the environment it means. Every problem is reported at
 * once, as one CONFIG_INVALID listing them.
 */

import { InfergridError } from '../errors.ts';

export type TracingExporter = 'otlp' | 'console';
export type TracingRole = 'coordinator' | 'worker';

/** The `tracing:` config section (see configSchema). */
export interface TracingConfig {
  enabled: boolean;
  exporter: TracingExporter;
  endpoint?: string | undefined;
  sampleRatio: number;
  serviceName?: string | undefined;
}

export const DEFAULT_TRACING_CONFIG: Readonly<TracingConfig> = {
  enabled: false,
  exporter: 'otlp',
  sampleRatio: 1,
};

/** Where spans go when no endpoint is configured (a local collector's OTLP/HTTP port). */
export const DEFAULT_OTLP_TRACES_ENDPOINT = 'http://localhost:4318/v1/traces';

/** Tracing settings after the environment has been applied over the config. */
export interface TracingSettings {
  enabled: boolean;
  exporters: TracingExporter[];
  /** The OTLP/HTTP traces URL. */
  endpoint: string;
  sampler: { name: string; ratio: number };
  serviceName: string;
}

/** Environment variables, as `process.env` holds them. */
export type Env = Record<string, string | undefined>;

const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;

/** A base URL with no path gets the OTLP traces path, as OTEL_EXPORTER_OTLP_ENDPOINT does. */
function tracesUrl(url: string, where: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InfergridError(
      'CONFIG_INVALID',
      `${where}: "${url}" is not a URL; expected e.g. ${DEFAULT_OTLP_TRACES_ENDPOINT}`,
    );
  }
  return parsed.pathname === '/' || parsed.pathname === '' ? `${url.replace(/\/$/, '')}/v1/traces` : url;
}

/**
 * Applies the standard OTEL_* variables over the `tracing:` section: OTEL_TRACES_EXPORTER
 * (otlp, console, none; a list is allowed) or an OTLP endpoint variable switches tracing on,
 * `none` or OTEL_SDK_DISABLED=true switches it off. Unknown values are a CONFIG_INVALID.
 */
export function resolveTracingSettings(
  config: Readonly<TracingConfig>,
  env: Env,
  role: TracingRole,
): TracingSettings {
  const issues: string[] = [];
  let enabled = config.enabled;
  let exporters: TracingExporter[] = [config.exporter];
  const envExporters = env.OTEL_TRACES_EXPORTER?.trim();
  const envEndpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || undefined;
  const envBase = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || undefined;
  if (envExporters) {
    const names = envExporters
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const unknown = names.filter((n) => n !== 'otlp' && n !== 'console' && n !== 'none');
    if (unknown.length)
      issues.push(`OTEL_TRACES_EXPORTER: "${unknown.join(',')}" is not supported; use otlp, console or none`);
    if (names.includes('none')) enabled = false;
    else {
      exporters = names.filter((n): n is TracingExporter => n === 'otlp' || n === 'console');
      enabled = exporters.length > 0;
    }
  } else if (envEndpoint || envBase) {
    enabled = true;
    exporters = ['otlp'];
  }
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') enabled = false;

  let endpoint = DEFAULT_OTLP_TRACES_ENDPOINT;
  try {
    // the signal-specific variable is used as given; the base one gets /v1/traces
    if (envEndpoint) endpoint = envEndpoint;
    else if (envBase) endpoint = `${envBase.replace(/\/$/, '')}/v1/traces`;
    else if (config.endpoint) endpoint = tracesUrl(config.endpoint, 'tracing.endpoint');
  } catch (err) {
    issues.push((err as Error).message);
  }

  let sampler = { name: 'parentbased_traceidratio', ratio: config.sampleRatio };
  const envSampler = env.OTEL_TRACES_SAMPLER?.trim();
  if (envSampler) {
    if (!(SAMPLERS as readonly string[]).includes(envSampler))
      issues.push(`OTEL_TRACES_SAMPLER: "${envSampler}" is not supported; use one of ${SAMPLERS.join(', ')}`);
    const arg = env.OTEL_TRACES_SAMPLER_ARG?.trim();
    const ratio = arg ? Number(arg) : 1;
    if (envSampler.endsWith('traceidratio') && !(ratio >= 0 && ratio <= 1))
      issues.push(`OTEL_TRACES_SAMPLER_ARG: "${arg}" is not a ratio from 0 to 1`);
    sampler = { name: envSampler, ratio };
  }
  if (issues.length) {
    throw new InfergridError('CONFIG_INVALID', `tracing is misconfigured:\n  ${issues.join('\n  ')}`);
  }
  return {
    enabled,
    exporters,
    endpoint,
    sampler,
    serviceName: env.OTEL_SERVICE_NAME?.trim() || config.serviceName || `infergrid-${role}`,
  };
}
