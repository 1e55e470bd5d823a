import { pino } from 'pino';
import pretty from 'pino-pretty';

export type Logger = pino.Logger;
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * Structured logs to stdout (or another stream), one logger per process, passed down: JSON
 * lines, or with `pretty` (and `auto` on a terminal) coloured lines for people.
 * INFERGRID_LOG_FORMAT overrides the format.
 */
export function createLogger(options: {
  level: LogLevel;
  name: string;
  format?: LogFormat;
  destination?: NodeJS.WritableStream;
}): Logger {
  const destination = options.destination ?? process.stdout;
  const format = (process.env.INFERGRID_LOG_FORMAT as LogFormat | undefined) ?? options.format ?? 'auto';
  const isTty = (destination as { isTTY?: boolean }).isTTY === true;
  const usePretty = format === 'pretty' || (format === 'auto' && isTty);
  const settings = { level: options.level, name: options.name, base: { pid: process.pid } };
  if (!usePretty) return pino(settings, destination);
  return pino(
    settings,
    pretty({ destination, colorize: isTty, sync: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }),
  );
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
