export { type LogLevel, type Logger, createLogger, silentLogger } from './logger.ts';
