// The terminal view of the log: one readable line per JSON record, and nothing from the network that
// could drive the terminal.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { defaultLogFormat, formatLogLine } from '../../src/log-pretty.js';

const LISTENING = JSON.stringify({
  level: 30, time: '2026-11-23T12:38:38.123Z', service: 'smtp-pushback', listen: '127.0.0.1:25', admin: '127.0.0.1:8025',
  store: 'memory', maxClients: 20000, degraded: false, msg: 'smtp-pushback listening',
});

describe('formatLogLine', () => {
  it('prints time of day, the level word, the message, then key=value of the rest, on one line', () => {
    expect(formatLogLine(LISTENING)).toBe(
      '12:38:38.123Z INFO  smtp-pushback listening listen=127.0.0.1:25 admin=127.0.0.1:8025 store=memory maxClients=20000 degraded=false\n',
    );
  });

  it('names every pino level', () => {
    const words = [10, 20, 30, 40, 50, 60].map((level) => formatLogLine(JSON.stringify({ level, time: '2026-01-01T00:00:00.000Z', msg: 'm' })).split(' ')[1]);
    expect(words).toEqual(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']);
  });

  it('quotes strings that are not one word, and prints objects and arrays as compact JSON', () => {
    const line = formatLogLine(JSON.stringify({
      level: 40, time: '2026-11-23T12:38:38.123Z', msg: 'verdict', scope: '127.0.0.1', reasons: ['sfds: minute: 121 flows'],
      expiresInSeconds: 120, note: 'two words', empty: '', pairs: { normal: 6, abnormal: 0 }, nothing: null,
    }));
    expect(line).toBe(
      '12:38:38.123Z WARN  verdict scope=127.0.0.1 reasons=["sfds: minute: 121 flows"] expiresInSeconds=120 note="two words" empty="" '
      + 'pairs={"normal":6,"abnormal":0} nothing=null\n',
    );
  });

  it('shows an error by its type and message (the stack stays in the JSON log)', () => {
    const line = formatLogLine(JSON.stringify({
      level: 60, time: '2026-11-23T12:38:38.123Z', msg: 'cannot start',
      err: { type: 'Error', message: "EACCES: permission denied, mkdir '/var/spool/smtp-pushback'", stack: 'Error: EACCES\n    at x' },
    }));
    expect(line).toBe(`12:38:38.123Z FATAL cannot start err="Error: EACCES: permission denied, mkdir '/var/spool/smtp-pushback'"\n`);
  });

  it('keeps every record on one line and lets no escape sequence or bidi control through', () => {
    const line = formatLogLine(JSON.stringify({
      level: 30, time: '2026-11-23T12:38:38.123Z', msg: 'session\nforged line', helo: '\u001b]0;owned\u0007', name: 'abc\u202edef', c1: 'x\u009by',
    }));
    expect(line.split('\n')).toEqual([expect.any(String), '']);
    expect(line).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/);
    expect(line).toContain('session\\nforged line');
    expect(line).toContain('helo="\\u001b]0;owned\\u0007"');
    expect(line).toContain('name=abc\\u202edef');
    expect(line).toContain('c1=x\\x9by');
  });

  it('passes a line that is not a JSON object through, made safe', () => {
    expect(formatLogLine('not json \u001b[2J')).toBe('not json \\x1b[2J\n');
  });
});

describe('the logger in either format', () => {
  function capture(): { text: () => string; stream: Writable } {
    const chunks: string[] = [];
    return { text: () => chunks.join(''), stream: new Writable({ write(chunk, _encoding, done) { chunks.push(String(chunk)); done(); } }) };
  }

  it('writes JSON by default and readable lines with pretty, from the same record', () => {
    const json = capture();
    createLogger('info', json.stream).info({ client: '198.51.100.7' }, 'session');
    expect(JSON.parse(json.text())).toMatchObject({ level: 30, service: 'smtp-pushback', client: '198.51.100.7', msg: 'session' });

    const pretty = capture();
    createLogger('info', pretty.stream, 'pretty').warn({ client: '198.51.100.7' }, 'session');
    expect(pretty.text()).toMatch(/^\d\d:\d\d:\d\d\.\d{3}Z WARN  session client=198\.51\.100\.7\n$/);
  });

  it('chooses pretty only for a terminal', () => {
    expect(defaultLogFormat(true)).toBe('pretty');
    expect(defaultLogFormat(false)).toBe('json');
    expect(defaultLogFormat(undefined)).toBe('json');
  });
});
