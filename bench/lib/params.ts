import { parseArgs } from 'node:util';

/**
 * Benchmark parameters from flags (--name value) or environment (BENCH_NAME), with defaults;
 * every benchmark echoes the values it ran with in its result line.
 */
export function benchParams<T extends Record<string, string>>(defaults: T): { [K in keyof T]: string } {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.keys(defaults).map((k) => [k, { type: 'string' as const }])),
    allowPositionals: false,
    strict: true,
  });
  const out: Record<string, string> = {};
  for (const [key, fallback] of Object.entries(defaults)) {
    const env = process.env[`BENCH_${key.toUpperCase().replaceAll('-', '_')}`];
    out[key] = (values[key] as string | undefined) ?? env ?? fallback;
  }
  return out as { [K in keyof T]: string };
}

/**
 * Whether this is a quick (smoke) run: a bare `--quick` flag, taken out of process.argv so that
 * benchParams' parser (string flags only) does not refuse it, or BENCH_QUICK=1.
 */
export function takeQuickFlag(): boolean {
  const at = process.argv.indexOf('--quick');
  if (at >= 0) process.argv.splice(at, 1);
  return at >= 0 || process.env.BENCH_QUICK === '1';
}

export function numberList(text: string): number[] {
  return text
    .split(',')
    .map((s) => Number(s.trim()))
    .filter((n) => Number.isFinite(n) && n > 0);
}
