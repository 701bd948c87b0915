// The log for a person at a terminal: each JSON line pino writes becomes one readable line, time of day,
// level word, message, then key=value of the rest. Machines keep the JSON (`--log-format json`, the
// default when stdout is not a terminal): this is a view of the same records, not a second format.
// Values come from the network (HELO names, addresses, reasons): strings that would break the line are
// quoted as JSON, and every line goes through terminalSafe so no escape sequence reaches the terminal.
import { terminalSafe } from './cli/terminal-safe.js';

const LEVEL_WORDS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
/** Fields every line has and a reader does not need again: the fixed service name. */
const LEFT_OUT = new Set(['time', 'level', 'msg', 'service']);
/** A bare value is one word: no spaces, quotes, `=` or control characters, and not empty. */
const BARE = /^[^\s"'=\\\x00-\x1f\x7f]+$/;

export type LogFormat = 'json' | 'pretty';

/** One pino JSON line as a readable line (ending in a newline); a line that is not a JSON object is shown as it is. */
export function formatLogLine(line: string): string {
  let record: unknown;
  try {
    record = JSON.parse(line);
  } catch {
    return `${terminalSafe(line.replace(/\r?\n/g, ' '))}\n`;
  }
  if (record === null || typeof record !== 'object' || Array.isArray(record)) return `${terminalSafe(line)}\n`;
  const fields = record as Record<string, unknown>;
  const parts = [timeOfDay(fields.time), levelWord(fields.level)];
  if (fields.msg !== undefined) parts.push(String(fields.msg).replace(/\r?\n/g, '\\n'));
  for (const [key, value] of Object.entries(fields)) {
    if (LEFT_OUT.has(key) || value === undefined) continue;
    parts.push(`${key}=${formatValue(key, value)}`);
  }
  return `${terminalSafe(parts.join(' '))}\n`;
}

/** A destination for pino that writes each record as formatLogLine to `out`. */
export function prettyDestination(out: { write(text: string): unknown }): { write(chunk: string): void } {
  return {
    write(chunk: string): void {
      for (const line of chunk.split('\n')) if (line !== '') out.write(formatLogLine(line));
    },
  };
}

/** pretty on a terminal, json otherwise, unless asked. */
export function defaultLogFormat(stdoutIsTerminal: boolean | undefined): LogFormat {
  return stdoutIsTerminal ? 'pretty' : 'json';
}

function timeOfDay(time: unknown): string {
  // pino's isoTime: 2026-11-23T12:38:38.123Z; the date is left out, the zone (UTC) kept.
  if (typeof time === 'string') {
    const match = /T(\d\d:\d\d:\d\d(?:\.\d+)?Z?)$/.exec(time);
    if (match) return match[1]!;
    return time;
  }
  if (typeof time === 'number') return new Date(time).toISOString().slice(11);
  return '-';
}

function levelWord(level: unknown): string {
  const word = typeof level === 'number' ? LEVEL_WORDS[level] ?? `L${level}` : String(level ?? '-').toUpperCase();
  return word.padEnd(5);
}

function formatValue(key: string, value: unknown): string {
  if (typeof value === 'string') return BARE.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  // An error, as pino's serializer gives it: its type and message; the stack is in the JSON log.
  if (key === 'err' && typeof value === 'object' && typeof (value as { message?: unknown }).message === 'string') {
    const error = value as { type?: unknown; message: string };
    return JSON.stringify(typeof error.type === 'string' ? `${error.type}: ${error.message}` : error.message);
  }
  return JSON.stringify(value);
}
