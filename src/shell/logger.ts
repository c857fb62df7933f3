import { pino, type Logger } from 'pino';
import type { LogLevel } from '../core/config.js';

/**
 * Structured JSON logs; readable text when the destination is a terminal. Only
 * explicitly chosen fields are logged: never the environment, whose variables may hold
 * secrets (DOCKER_CERT_PATH, proxy credentials).
 */
export async function createLogger(level: LogLevel, fd: 1 | 2): Promise<Logger> {
  const base = { level, base: { name: 'imds-guard' }, timestamp: pino.stdTimeFunctions.isoTime };
  const tty = (fd === 1 ? process.stdout : process.stderr).isTTY === true;
  if (tty) {
    const { default: pretty } = await import('pino-pretty');
    return pino(base, pretty({ destination: fd, sync: true, colorize: true, ignore: 'pid,hostname,name' }));
  }
  return pino(base, pino.destination({ fd, sync: true }));
}
