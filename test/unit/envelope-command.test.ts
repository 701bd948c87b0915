// MAIL/RCPT parsing kept as sent, the parameter refusals, and the proxy's replies in Postfix's words.
import { describe, expect, it } from 'vitest';
import { formatParameters, isSyntaxError, parseEnvelopeCommand, refuseParameters, type EnvelopeCommand } from '../../src/smtp/envelope-command.js';
import { postfixWords } from '../../src/smtp/reply-words.js';

function parsed(verb: 'MAIL' | 'RCPT', line: string): EnvelopeCommand {
  const result = parseEnvelopeCommand(verb, line);
  if (isSyntaxError(result)) throw new Error(`refused: ${result.code} ${result.text}`);
  return result;
}

describe('parseEnvelopeCommand', () => {
  it.each([
    ['MAIL FROM:<"john doe"@example.org>', '"john doe"@example.org'],
    ['MAIL FROM:<a..b@example.org>', 'a..b@example.org'],
    ['MAIL FROM:<.a@example.org>', '.a@example.org'],
    ['MAIL FROM:<user@example.org.>', 'user@example.org.'],
    ['MAIL FROM:<"a\\"> b"@example.org>', '"a\\"> b"@example.org'],
    ['MAIL FROM:<@a.example,@b.example:user@example.org>', '@a.example,@b.example:user@example.org'],
    ['mail from: <x@example.org>', 'x@example.org'],
    ['MAIL FROM:bare@example.org', 'bare@example.org'],
    ['MAIL FROM:<>', ''],
  ])('%s keeps the path %s', (line, path) => {
    expect(parsed('MAIL', line).path).toBe(path);
  });

  it('keeps parameters as sent, keyword upper-cased, xtext left encoded', () => {
    const command = parsed('RCPT', 'RCPT TO:<a@example.test>  notify=SUCCESS,DELAY ORCPT=rfc822;a+2Bb@example.test');
    expect(command.parameters).toEqual([{ keyword: 'NOTIFY', value: 'SUCCESS,DELAY' }, { keyword: 'ORCPT', value: 'rfc822;a+2Bb@example.test' }]);
    expect(formatParameters(command.parameters)).toBe(' NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+2Bb@example.test');
    expect(parsed('MAIL', 'MAIL FROM:<a@x> SMTPUTF8').parameters).toEqual([{ keyword: 'SMTPUTF8' }]);
  });

  it('decodes the path as UTF-8 for records but keeps its bytes', () => {
    const line = Buffer.from('MAIL FROM:<jösé@exämple.org>', 'utf8').toString('latin1');
    const command = parsed('MAIL', line);
    expect(command.address).toBe('jösé@exämple.org');
    expect(Buffer.from(command.path, 'latin1').toString('utf8')).toBe('jösé@exämple.org');
  });

  it.each([
    ['MAIL', 'MAIL FROM:<"open@example.org>', 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', 'MAIL FROM:<a<b@example.org>', 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', 'MAIL FROM:<a@example.org', 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', 'MAIL FROM:<a\x00b@example.org>', 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', 'MAIL FROM:<a\rb@example.org>', 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', 'MAIL FROM:<a@example.org>junk', 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', `MAIL FROM:<${'a'.repeat(1001)}@x>`, 501, '5.1.7 Bad sender address syntax'],
    ['MAIL', 'MAIL FROM <a@example.org>', 501, '5.5.4 Syntax: MAIL FROM:<address>'],
    ['RCPT', 'RCPT TO:<>', 501, '5.1.3 Bad recipient address syntax'],
    ['RCPT', 'RCPT TO:<a@x> NOTIFY=', 501, '5.5.4 Syntax error in parameters or arguments'],
    ['RCPT', 'RCPT TO:<a@x> -BAD', 501, '5.5.4 Syntax error in parameters or arguments'],
    ['RCPT', 'RCPT TO:<a@x> X=\x01', 501, '5.5.4 Syntax error in parameters or arguments'],
  ] as const)('%s %j → %d', (verb, line, code, text) => {
    expect(parseEnvelopeCommand(verb, line)).toEqual({ code, text });
  });
});

describe('refuseParameters', () => {
  const offered = { dsn: true, smtputf8: true, maxMessageBytes: 1000 };
  const refusal = (verb: 'MAIL' | 'RCPT', line: string, extensions = offered) => refuseParameters(verb, parsed(verb, line).parameters, extensions);

  it('lets through what is offered', () => {
    expect(refusal('MAIL', 'MAIL FROM:<a@x> SIZE=1000 BODY=8bitmime SMTPUTF8 RET=FULL ENVID=x+2B')).toBeUndefined();
    expect(refusal('RCPT', 'RCPT TO:<a@x> NOTIFY=NEVER ORCPT=rfc822;a@x')).toBeUndefined();
  });

  it('refuses in Postfix\'s words what is not offered or over the limit', () => {
    expect(refusal('MAIL', 'MAIL FROM:<a@x> SIZE=1001')).toEqual({ code: 552, text: '5.3.4 Message size exceeds fixed limit' });
    expect(refusal('MAIL', 'MAIL FROM:<a@x> SIZE=12a')).toEqual({ code: 501, text: '5.5.4 Bad message size syntax' });
    expect(refusal('MAIL', 'MAIL FROM:<a@x> AUTH=<>')).toEqual({ code: 555, text: '5.5.4 Unsupported option: AUTH=<>' });
    expect(refusal('MAIL', 'MAIL FROM:<a@x> RET=HDRS', { ...offered, dsn: false })).toEqual({ code: 555, text: '5.5.4 Unsupported option: RET=HDRS' });
    expect(refusal('MAIL', 'MAIL FROM:<a@x> SMTPUTF8', { ...offered, smtputf8: false })).toEqual({ code: 555, text: '5.5.4 Unsupported option: SMTPUTF8' });
    expect(refusal('RCPT', 'RCPT TO:<a@x> RET=HDRS')).toEqual({ code: 555, text: '5.5.4 Unsupported option: RET=HDRS' });
  });
});

describe('postfixWords', () => {
  it.each([
    [250, 'Flushed', 250, '2.0.0 Ok'],
    [221, 'Bye', 221, '2.0.0 Bye'],
    [500, 'Error: command not recognized', 502, '5.5.2 Error: command not recognized'],
    [503, 'Error: send HELO/EHLO first', 503, '5.5.1 Error: send HELO/EHLO first'],
    [421, 'Timeout - closing connection', 421, '4.4.2 mx.test Error: timeout exceeded'],
    [552, 'Error: message exceeds fixed maximum message size 100', 552, '5.3.4 Error: message file too big'],
    [421, 'mx.test You talk too soon', 421, '4.5.0 mx.test Error: you talk too soon'],
    [421, 'Error: Command line too long', 421, '4.5.2 mx.test Error: command line too long'],
    [451, '4.3.0 Internal error, try again later', 451, '4.3.0 Internal error, try again later'],
    [220, 'mx.test ESMTP', 220, 'mx.test ESMTP'],
    [354, 'End data with <CR><LF>.<CR><LF>', 354, 'End data with <CR><LF>.<CR><LF>'],
  ])('%d %s → %d %s', (code, text, wordedCode, wordedText) => {
    expect(postfixWords(code, text, 'mx.test')).toEqual({ code: wordedCode, text: wordedText });
  });
});
