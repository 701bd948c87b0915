// The process logger: structured JSON lines on stdout (pino), one per session plus lifecycle events;
// `pretty` shows the same records as readable lines (src/log-pretty.ts), for a terminal.
import { pino, type Logger } from 'pino';
import { prettyDestination, type LogFormat } from './log-pretty.js';

export function createLogger(level: string, destination?: NodeJS.WritableStream, format: LogFormat = 'json'): Logger {
  const sink = destination ?? pino.destination({ fd: 1, sync: false });
  return pino(
    { level, base: { service: 'smtp-pushback' }, timestamp: pino.stdTimeFunctions.isoTime },
    format === 'pretty' ? prettyDestination(sink) : sink,
  );
}
