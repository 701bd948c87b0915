// What real MTAs do that our own clients never did, through the real listener to a scripted
// upstream that records every byte: a FIN right after the final dot (Exim), DSN parameters in
// xtext, addresses Postfix accepts and smtp-server did not, HELO clients, and the replies the proxy
// makes itself in Postfix's words. The same behaviours against a real Postfix and real MTAs are in
// test/e2e/real-mtas.test.ts.
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

let upstream: FakeUpstream;
let proxy: TestProxy;

beforeEach(async () => {
  upstream = await FakeUpstream.start({ recipientReplies: { 'nobody@example.test': '550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown' } });
  proxy = await startTestProxy(upstream.address);
});

afterEach(async () => {
  await proxy.stop();
  await upstream.close();
});

/** Sends everything in one write, then a FIN; collects all the proxy says until it closes. */
function sendThenHalfClose(port: number, text: string, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let heard = '';
    let sent = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; heard: ${heard}`));
    }, timeoutMs);
    socket.on('data', (chunk) => {
      heard += chunk.toString('latin1');
      if (!sent && heard.includes('220 ')) {
        sent = true;
        socket.end(text);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(heard);
    });
  });
}

const MESSAGE = 'Subject: half-close\r\n\r\nbody line\r\n';
const TRANSACTION = `EHLO exim.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n${MESSAGE}.\r\n`;

describe('a FIN ends the input, not the session', () => {
  it('message, dot, QUIT and a FIN in one write: 250 and 221 are heard, delivered once, 10 of 10', async () => {
    for (let attempt = 0; attempt < 10; attempt += 1) {
      const heard = await sendThenHalfClose(proxy.port, `${TRANSACTION}QUIT\r\n`);
      expect(heard).toMatch(new RegExp(`250 2\\.0\\.0 Ok: queued as FAKE${attempt + 1}\\r\\n221 2\\.0\\.0 Bye\\r\\n$`));
    }
    expect(upstream.messages).toHaveLength(10);
    expect(upstream.messages.every((message) => message.body.toString('latin1') === MESSAGE)).toBe(true);
    const records = await proxy.waitForSessions(10);
    expect(records.every((record) => record.outcome === 'relayed' && record.end === 'quit')).toBe(true);
  });

  it('a FIN after the dot without QUIT: the final reply is written, then the proxy closes', async () => {
    const heard = await sendThenHalfClose(proxy.port, TRANSACTION);
    expect(heard).toMatch(/250 2\.0\.0 Ok: queued as FAKE1\r\n$/);
    expect(upstream.messages).toHaveLength(1);
  });

  it('a FIN with nothing pending closes the session at once', async () => {
    const started = Date.now();
    const heard = await sendThenHalfClose(proxy.port, 'EHLO quiet.test\r\n');
    expect(heard).toMatch(/250 SMTPUTF8\r\n$/);
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(upstream.connectionsOpened).toBe(0);
  });

  it('a FIN in the middle of the message sends no dot: nothing is delivered', async () => {
    const heard = await sendThenHalfClose(proxy.port, `EHLO cut.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: cut\r\n\r\nhalf a`);
    expect(heard).not.toMatch(/queued as/);
    await upstream.waitForIdle();
    expect(upstream.messages).toHaveLength(0);
    expect(upstream.dataEnded).toBe(0);
  });
});

describe('the envelope as the client sent it', () => {
  const senders = ['"john doe"@example.org', 'a..b@example.org', '.a@example.org', 'user@example.org.', '"a>b"@example.org', '@relay.example:route@example.org', '"a.b"@example.org'];

  it.each(senders)('MAIL FROM:<%s> reaches Postfix byte for byte and the client hears Postfix', async (sender) => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    expect(await dialog.command(`MAIL FROM:<${sender}>`)).toEqual({ code: 250, text: '2.1.0 Ok' });
    expect(await dialog.command(`RCPT TO:<${sender.replace('example.org', 'example.test')}>`)).toEqual({ code: 250, text: '2.1.5 Ok' });
    expect(upstream.commands).toContain(`MAIL FROM:<${sender}>`);
    expect(upstream.commands).toContain(`RCPT TO:<${sender.replace('example.org', 'example.test')}>`);
    dialog.destroy();
  });

  it('UTF-8 (and bytes that are not UTF-8) in a path go out unchanged', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    const utf8 = Buffer.from('MAIL FROM:<jösé@exämple.org> SMTPUTF8\r\n', 'utf8');
    dialog.write(utf8);
    expect(await dialog.reply()).toEqual({ code: 250, text: '2.1.0 Ok' });
    dialog.write(Buffer.from('RCPT TO:<b\xff\xfe@example.test>\r\n', 'latin1'));
    expect((await dialog.reply()).code).toBe(250);
    expect(upstream.commands).toContain(utf8.subarray(0, -2).toString('latin1'));
    expect(upstream.commands).toContain('RCPT TO:<b\xff\xfe@example.test>');
    dialog.destroy();
  });

  it('DSN is offered and its parameters pass on in the client\'s own xtext', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    const ehlo = await dialog.command('EHLO client.test');
    expect(ehlo.text.split('\n')).toEqual(expect.arrayContaining(['DSN', 'ENHANCEDSTATUSCODES', '8BITMIME', 'SMTPUTF8', 'PIPELINING']));
    expect((await dialog.command('MAIL FROM:<a@sender.test> RET=HDRS ENVID=abc+2Bdef+3D BODY=8BITMIME')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Btag@example.test')).code).toBe(250);
    expect(upstream.commands).toContain('MAIL FROM:<a@sender.test> RET=HDRS ENVID=abc+2Bdef+3D BODY=8BITMIME');
    expect(upstream.commands).toContain('RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Btag@example.test');
    dialog.destroy();
  });

  it('refuses what the proxy itself cannot carry: control bytes, unbalanced quotes or brackets, parameters it does not offer', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    expect(await dialog.command('MAIL FROM:<"unbalanced@example.org>')).toEqual({ code: 501, text: '5.1.7 Bad sender address syntax' });
    expect(await dialog.command('MAIL FROM:<a<b@example.org>')).toEqual({ code: 501, text: '5.1.7 Bad sender address syntax' });
    dialog.write(Buffer.from('MAIL FROM:<a\x00b@example.org>\r\n', 'latin1'));
    expect(await dialog.reply()).toEqual({ code: 501, text: '5.1.7 Bad sender address syntax' });
    dialog.write(Buffer.from('MAIL FROM:<a\rb@example.org>\r\n', 'latin1'));
    expect(await dialog.reply()).toEqual({ code: 501, text: '5.1.7 Bad sender address syntax' });
    expect(await dialog.command('MAIL FROM:<a@sender.test> XVERP')).toEqual({ code: 555, text: '5.5.4 Unsupported option: XVERP' });
    expect(await dialog.command('MAIL FROM:<a@sender.test> SIZE=99999999999')).toEqual({ code: 552, text: '5.3.4 Message size exceeds fixed limit' });
    expect(await dialog.command('MAIL FROM:<a@sender.test> BODY=BINARYMIME')).toEqual({ code: 555, text: '5.5.4 Unsupported option: BODY=BINARYMIME' });
    expect(upstream.connectionsOpened).toBe(0);
    dialog.destroy();
  });
});

describe('replies in Postfix\'s words', () => {
  it('RSET, NOOP, QUIT, unknown commands, DATA without recipients, nested MAIL', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    expect((await dialog.reply()).code).toBe(220);
    expect(await dialog.command('MAIL FROM:<a@sender.test>')).toEqual({ code: 503, text: '5.5.1 Error: send HELO/EHLO first' });
    await dialog.command('EHLO client.test');
    expect(await dialog.command('DATA')).toEqual({ code: 503, text: '5.5.1 Error: need RCPT command' });
    expect(await dialog.command('RCPT TO:<b@example.test>')).toEqual({ code: 503, text: '5.5.1 Error: need MAIL command' });
    expect(await dialog.command('MAIL FROM:<a@sender.test>')).toEqual({ code: 250, text: '2.1.0 Ok' });
    expect(await dialog.command('MAIL FROM:<a@sender.test>')).toEqual({ code: 503, text: '5.5.1 Error: nested MAIL command' });
    expect(await dialog.command('RCPT TO:<nobody@example.test>')).toEqual({ code: 550, text: '5.1.1 <nobody@example.test>: Recipient address rejected: User unknown' });
    expect(await dialog.command('DATA')).toEqual({ code: 554, text: '5.5.1 Error: no valid recipients' });
    expect(await dialog.command('RSET')).toEqual({ code: 250, text: '2.0.0 Ok' });
    expect(await dialog.command('NOOP')).toEqual({ code: 250, text: '2.0.0 Ok' });
    expect(await dialog.command('HELP')).toEqual({ code: 502, text: '5.5.2 Error: command not recognized' });
    expect(await dialog.command('VRFY root')).toEqual({ code: 502, text: '5.5.2 Error: command not recognized' });
    expect(await dialog.command('EHLO')).toEqual({ code: 501, text: 'Syntax: EHLO hostname' });
    expect(await dialog.command('QUIT')).toEqual({ code: 221, text: '2.0.0 Bye' });
    expect(await dialog.closedByServer()).toBe(true);
  });

  it('a HELO client is handed over as HELO with PROTO=SMTP, its name as it wrote it', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    expect(await dialog.command('HELO Old.Client.Test')).toEqual({ code: 250, text: proxy.policy.server.hostname });
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    const xclient = upstream.commands.find((line) => line.startsWith('XCLIENT')) ?? '';
    expect(xclient).toMatch(/ PROTO=SMTP( |$)/);
    expect(xclient).toMatch(/ HELO=Old\.Client\.Test( |$)/);
    const afterXclient = upstream.commands[upstream.commands.indexOf(xclient) + 1];
    expect(afterXclient).toBe('HELO Old.Client.Test');
    dialog.destroy();
  });

  it('an EHLO client is handed over with PROTO=ESMTP and EHLO', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO New.Client.Test');
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    const xclient = upstream.commands.find((line) => line.startsWith('XCLIENT')) ?? '';
    expect(xclient).toMatch(/ PROTO=ESMTP( |$)/);
    expect(upstream.commands[upstream.commands.indexOf(xclient) + 1]).toBe('EHLO New.Client.Test');
    dialog.destroy();
  });
});

describe('what one session may keep', () => {
  it('closes with 421 after Postfix\'s hard error limit (20), and lists only the first refusals', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO many.test');
    await dialog.command('MAIL FROM:<a@sender.test>');
    dialog.write(Array.from({ length: 1000 }, () => 'RCPT TO:<nobody@example.test>\r\n').join(''));
    const replies = [];
    for (let index = 0; index < 21; index += 1) replies.push(await dialog.reply());
    expect(replies.slice(0, 20).every((reply) => reply.code === 550)).toBe(true);
    expect(replies[20]).toEqual({ code: 421, text: `4.7.0 ${proxy.policy.server.hostname} Error: too many errors` });
    expect(await dialog.closedByServer()).toBe(true);
    const [record] = await proxy.waitForSessions(1);
    expect(record?.transactions[0]?.rejected).toHaveLength(10);
    expect(record?.transactions[0]?.rejectedNotListed).toBe(10);
    expect(JSON.stringify(record).length).toBeLessThan(16_384);
    expect(upstream.commands.filter((line) => line.startsWith('RCPT')).length).toBe(20);
  });

  it('lists the first 20 transactions of a session and counts the rest by outcome', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO bulk.test');
    for (let index = 0; index < 25; index += 1) {
      await dialog.command('MAIL FROM:<a@sender.test>');
      await dialog.command('RCPT TO:<b@example.test>');
      await dialog.command('DATA');
      expect((await dialog.command(`Subject: ${index}\r\n\r\nbody\r\n.`)).code).toBe(250);
    }
    await dialog.command('QUIT');
    const [record] = await proxy.waitForSessions(1);
    expect(record?.transactions).toHaveLength(20);
    expect(record?.transactionsNotListed).toEqual({ relayed: 5 });
    expect(record?.outcome).toBe('relayed');
    expect(upstream.messages).toHaveLength(25);
  });
});
