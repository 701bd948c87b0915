// Pure pieces of the upstream client: reply parsing, dot-stuffing, XCLIENT encoding.
import { describe, expect, it } from 'vitest';
import { DotStuffer } from '../../src/upstream/dot-stuffer.js';
import { ReplyParser, ReplyProtocolError, parseCapabilities, replyText } from '../../src/upstream/reply.js';
import { clientNameFields, xclientCommand, xtext } from '../../src/upstream/xclient.js';

describe('ReplyParser', () => {
  it('parses single and multi-line replies split across chunks', () => {
    const parser = new ReplyParser();
    expect(parser.feed(Buffer.from('220 mx ESMTP\r\n250-mx\r\n250-PIPE'))).toEqual([{ code: 220, lines: ['mx ESMTP'] }]);
    const [ehlo] = parser.feed(Buffer.from('LINING\r\n250-SIZE 1000\r\n250 XCLIENT NAME ADDR\r\n'));
    expect(ehlo).toEqual({ code: 250, lines: ['mx', 'PIPELINING', 'SIZE 1000', 'XCLIENT NAME ADDR'] });
    expect(parseCapabilities(ehlo!)).toEqual(new Map([['PIPELINING', ''], ['SIZE', '1000'], ['XCLIENT', 'NAME ADDR']]));
  });

  it('reads whole one-line replies (the fast path) the same as any other', () => {
    const parser = new ReplyParser();
    expect(parser.feed(Buffer.from('250 2.1.0 Ok\r\n'))).toEqual([{ code: 250, lines: ['2.1.0 Ok'] }]);
    expect(parser.feed(Buffer.from('354 go ahead\r\n'))).toEqual([{ code: 354, lines: ['go ahead'] }]);
    expect(parser.feed(Buffer.from('25'))).toEqual([]);
    expect(parser.feed(Buffer.from('0 after a split\r\n'))).toEqual([{ code: 250, lines: ['after a split'] }]);
    expect(() => parser.feed(Buffer.from('999 no\r\n'))).toThrow(ReplyProtocolError);
  });

  it('accepts bare LF and a code without text', () => {
    expect(new ReplyParser().feed(Buffer.from('250\n354 go\n'))).toEqual([{ code: 250, lines: [''] }, { code: 354, lines: ['go'] }]);
  });

  it('rejects garbage, a code change inside a reply and endless lines', () => {
    expect(() => new ReplyParser().feed(Buffer.from('hello\r\n'))).toThrow(ReplyProtocolError);
    expect(() => new ReplyParser().feed(Buffer.from('250-a\r\n550 b\r\n'))).toThrow(/code changed/);
    expect(() => new ReplyParser().feed(Buffer.alloc(5000, 0x41))).toThrow(/too long/);
  });

  it('joins multi-line text for the client', () => {
    expect(replyText({ code: 550, lines: ['5.7.1 first', '5.7.1 second'] })).toBe('5.7.1 first 5.7.1 second');
  });
});

describe('DotStuffer', () => {
  const stuffAll = (chunks: string[]): string => {
    const stuffer = new DotStuffer();
    const out = chunks.map((chunk) => stuffer.push(Buffer.from(chunk, 'latin1')).toString('latin1')).join('');
    return out + stuffer.terminator().toString('latin1');
  };

  it('doubles a dot at the start of the message and of every line', () => {
    expect(stuffAll(['.a\r\nb\r\n.\r\n..c\r\n'])).toBe('..a\r\nb\r\n..\r\n...c\r\n.\r\n');
  });

  it('finds line starts across chunk boundaries', () => {
    expect(stuffAll(['a\r\n', '.b\r', '\n', '.', 'c\r\n'])).toBe('a\r\n..b\r\n..c\r\n.\r\n');
  });

  it('ends with CRLF before the final dot when the message did not', () => {
    expect(stuffAll(['no newline'])).toBe('no newline\r\n.\r\n');
    expect(stuffAll([])).toBe('.\r\n');
    expect(stuffAll(['x\r', '\n'])).toBe('x\r\n.\r\n');
  });
});

describe('XCLIENT', () => {
  it('encodes xtext', () => {
    expect(xtext('mail.example.org')).toBe('mail.example.org');
    expect(xtext('a b+c=d')).toBe('a+20b+2Bc+3Dd');
    expect(xtext('é')).toBe('+C3+A9');
  });

  it('sends only the attributes Postfix advertised, IPv6 with its prefix', () => {
    const client = { address: '2001:db8::1', port: 4242, helo: 'client.example', protocol: 'ESMTP' as const };
    expect(xclientCommand(client, 'NAME ADDR PORT PROTO HELO LOGIN')).toBe(
      'XCLIENT ADDR=IPV6:2001:db8::1 PORT=4242 NAME=[UNAVAILABLE] HELO=client.example PROTO=ESMTP',
    );
    expect(xclientCommand({ ...client, address: '192.0.2.1', hostname: 'host.example' }, 'ADDR NAME')).toBe(
      'XCLIENT ADDR=192.0.2.1 NAME=host.example',
    );
  });

  const postfix37 = 'NAME ADDR PORT PROTO HELO REVERSE_NAME IDENT LOGIN DESTADDR DESTPORT';
  const base = { address: '192.0.2.9', port: 25000 };

  it('sends NAME only for a confirmed name, the PTR name as REVERSE_NAME where Postfix offers it', () => {
    const spoofed = clientNameFields({ status: 'unconfirmed', reverseName: 'trusted.partner.example' });
    expect(spoofed).toEqual({ reverseName: 'trusted.partner.example' });
    expect(xclientCommand({ ...base, ...spoofed }, postfix37)).toBe('XCLIENT ADDR=192.0.2.9 PORT=25000 NAME=[UNAVAILABLE] REVERSE_NAME=trusted.partner.example');
    // A Postfix without REVERSE_NAME (before 2.9) hears no name at all.
    expect(xclientCommand({ ...base, ...spoofed }, 'NAME ADDR')).toBe('XCLIENT ADDR=192.0.2.9 NAME=[UNAVAILABLE]');
    const confirmed = clientNameFields({ status: 'confirmed', confirmedName: 'mx.partner.example', reverseName: 'mx.partner.example' });
    expect(xclientCommand({ ...base, ...confirmed }, postfix37)).toBe('XCLIENT ADDR=192.0.2.9 PORT=25000 NAME=mx.partner.example REVERSE_NAME=mx.partner.example');
  });

  it('says [TEMPUNAVAIL] after a failure for now, [UNAVAILABLE] after none or with reverse DNS off', () => {
    expect(xclientCommand({ ...base, ...clientNameFields({ status: 'timeout' }) }, postfix37)).toBe('XCLIENT ADDR=192.0.2.9 PORT=25000 NAME=[TEMPUNAVAIL] REVERSE_NAME=[TEMPUNAVAIL]');
    expect(xclientCommand({ ...base, ...clientNameFields({ status: 'error', reverseName: 'mx.slow.example' }) }, postfix37)).toBe('XCLIENT ADDR=192.0.2.9 PORT=25000 NAME=[TEMPUNAVAIL] REVERSE_NAME=mx.slow.example');
    expect(xclientCommand({ ...base, ...clientNameFields({ status: 'none' }) }, postfix37)).toBe('XCLIENT ADDR=192.0.2.9 PORT=25000 NAME=[UNAVAILABLE] REVERSE_NAME=[UNAVAILABLE]');
    expect(xclientCommand({ ...base, ...clientNameFields(undefined) }, postfix37)).toBe('XCLIENT ADDR=192.0.2.9 PORT=25000 NAME=[UNAVAILABLE] REVERSE_NAME=[UNAVAILABLE]');
  });
});
