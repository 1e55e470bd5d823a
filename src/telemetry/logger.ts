import { pino } from 'pino';

export type Logger = pino.Logger;
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Structured JSON logs to stdout (or another stream), one logger per process, passed down. */
export function createLogger(options: {
  level: LogLevel;
  name: string;
  destination?: NodeJS.WritableStream;
}): Logger {
  return pino(
    { level: options.level, name: options.name, base: { pid: process.pid } },
    options.destination ?? process.stdout,
  );
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
