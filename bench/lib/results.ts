import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = fileURLToPath(new URL('../results/', import.meta.url));

/** What machine a result came from: cores, CPU model and Node version. */
export function machine() {
  const cpu = cpus();
  return {
    cores: cpu.length,
    cpu: cpu[0]?.model ?? 'unknown',
    node: process.version,
    platform: process.platform,
  };
}

/** Prints the result as one JSON line and writes it to bench/results/<name>-<timestamp>.json. */
export function report(name: string, result: Record<string, unknown>): void {
  const line = { bench: name, at: new Date().toISOString(), machine: machine(), ...result };
  console.log(JSON.stringify(line));
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    `${RESULTS_DIR}${name}-${line.at.replaceAll(':', '-')}.json`,
    `${JSON.stringify(line, null, 2)}\n`,
  );
}
