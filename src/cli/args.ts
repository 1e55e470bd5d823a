import { type ParseArgsConfig, parseArgs } from 'node:util';
import { InfergridError } from '../errors.ts';

export type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with errors a user can act on, naming the command and pointing at --help. */
export function parseCommandArgs(
  command: string,
  argv: string[],
  options: Options,
): { values: Record<string, unknown> } {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    throw new InfergridError('CONFIG_INVALID', `${(err as Error).message}; see infergrid ${command} --help`);
  }
}

export function portFlag(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InfergridError('CONFIG_INVALID', `${flag} must be a port number (0-65535), got "${value}"`);
  return n;
}
