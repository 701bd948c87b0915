// The relay against a scripted upstream: Postfix's replies reach the client as they are, the
// body arrives byte-exact, and nothing but a real 250 from upstream ever becomes a 250.
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream, type FakeUpstreamOptions } from '../support/fake-upstream.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

async function setUp(upstreamOptions: FakeUpstreamOptions = {}, policyYaml = ''): Promise<{ upstream: FakeUpstream; proxy: TestProxy }> {
  upstream = await FakeUpstream.start(upstreamOptions);
  proxy = await startTestProxy(upstream.address, policyYaml);
  return { upstream, proxy };
}

async function greet(port: number, helo = 'client.test'): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(port);
  expect((await dialog.reply()).code).toBe(220);
  expect((await dialog.command(`EHLO ${helo}`)).code).toBe(250);
  return dialog;
}

describe('relay', () => {
  it('relays a message byte-exact, with dot lines, 8-bit bytes and a bare final line', async () => {
    const { upstream, proxy } = await setUp();
    const body = Buffer.concat([
      Buffer.from('Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nmiddle\r\n', 'latin1'),
      Buffer.from('8-bit: caf\xe9 \xff\x80\r\n', 'latin1'),
      Buffer.from('.\r\nlast\r\n', 'latin1'),
    ]);
    const dialog = await greet(proxy.port);
    expect((await dialog.command('MAIL FROM:<a@sender.test> BODY=8BITMIME')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    const stuffed = body.toString('latin1').replace(/(^|\n)\./g, '$1..');
    dialog.write(Buffer.from(`${stuffed}.\r\n`, 'latin1'));
    const final = await dialog.reply();
    expect(final.code).toBe(250);
    expect(final.text).toMatch(/queued as FAKE1/);
    expect((await dialog.command('QUIT')).code).toBe(221);
    expect(upstream.messages).toHaveLength(1);
    expect(upstream.messages[0]?.body.equals(body)).toBe(true);
    expect(upstream.messages[0]?.rcptTo).toEqual(['b@example.test']);
    expect(upstream.commands).toContain('MAIL FROM:<a@sender.test> BODY=8BITMIME');
    const [record] = await proxy.waitForSessions(1);
    expect(record?.outcome).toBe('relayed');
    expect(record?.end).toBe('quit');
    expect(record?.transactions[0]?.reply).toMatch(/^250 2\.0\.0 Ok: queued as FAKE1/);
  });

  it('sends XCLIENT with the real client address, port and HELO', async () => {
    const { upstream, proxy } = await setUp();
    const dialog = await greet(proxy.port, 'real-client.example');
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    const xclient = upstream.commands.find((line) => line.startsWith('XCLIENT'));
    const localPort = dialog.socket.localPort;
    expect(xclient).toBe(`XCLIENT ADDR=127.0.0.1 PORT=${localPort} NAME=[UNAVAILABLE] HELO=real-client.example PROTO=ESMTP`);
    // The second EHLO after XCLIENT is what Postfix requires before MAIL.
    const ehlos = upstream.commands.filter((line) => line.startsWith('EHLO'));
    expect(ehlos).toHaveLength(2);
    dialog.destroy();
  });

  it('does not send XCLIENT when the policy turns it off', async () => {
    const { upstream, proxy } = await setUp({}, 'upstream:\n  xclient: "off"\n');
    const dialog = await greet(proxy.port);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect(upstream.commands.some((line) => line.startsWith('XCLIENT'))).toBe(false);
    dialog.destroy();
  });

  it('defers with 451 when XCLIENT is required (the default) and Postfix does not offer it', async () => {
    const { upstream, proxy } = await setUp({ xclient: false });
    expect(proxy.policy.upstream.xclient).toBe('required');
    const dialog = await greet(proxy.port);
    const reply = await dialog.command('MAIL FROM:<a@sender.test>');
    expect(reply.code).toBe(451);
    expect(upstream.commands.some((line) => line.startsWith('MAIL'))).toBe(false);
    dialog.destroy();
  });

  it('passes Postfix rejections per recipient and relays to the others', async () => {
    const { upstream, proxy } = await setUp({
      recipientReplies: {
        'nobody@example.test': '550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown',
        'later@example.test': '450 4.2.0 <later@example.test>: Recipient address rejected: greylisted',
      },
    });
    const dialog = await greet(proxy.port);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<one@example.test>')).code).toBe(250);
    const unknown = await dialog.command('RCPT TO:<nobody@example.test>');
    expect(unknown).toEqual({ code: 550, text: '5.1.1 <nobody@example.test>: Recipient address rejected: User unknown' });
    const greylisted = await dialog.command('RCPT TO:<later@example.test>');
    expect(greylisted.code).toBe(450);
    expect(greylisted.text).toMatch(/^4\.2\.0 .*greylisted/);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write('Subject: x\r\n\r\nhello\r\n.\r\n');
    expect((await dialog.reply()).code).toBe(250);
    expect(upstream.messages[0]?.rcptTo).toEqual(['one@example.test']);
    dialog.destroy();
    const [record] = await proxy.waitForSessions(1);
    expect(record?.transactions[0]?.rejected.map((entry) => entry.rcpt)).toEqual(['nobody@example.test', 'later@example.test']);
  });

  it('answers pipelined commands in order', async () => {
    const { upstream, proxy } = await setUp();
    const dialog = await greet(proxy.port);
    dialog.write('MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n');
    expect((await dialog.reply()).code).toBe(250);
    expect((await dialog.reply()).code).toBe(250);
    expect((await dialog.reply()).code).toBe(250);
    expect((await dialog.reply()).code).toBe(354);
    dialog.write('Subject: p\r\n\r\npipelined\r\n.\r\nQUIT\r\n');
    expect((await dialog.reply()).code).toBe(250);
    expect((await dialog.reply()).code).toBe(221);
    expect(upstream.messages[0]?.rcptTo).toEqual(['b@example.test', 'c@example.test']);
  });

  it('resynchronises the upstream after RSET and keeps one upstream connection per session', async () => {
    const { upstream, proxy } = await setUp();
    const dialog = await greet(proxy.port);
    expect((await dialog.command('MAIL FROM:<first@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<first@example.test>')).code).toBe(250);
    expect((await dialog.command('RSET')).code).toBe(250);
    expect((await dialog.command('MAIL FROM:<second@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<second@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write('Subject: r\r\n\r\nafter rset\r\n.\r\n');
    expect((await dialog.reply()).code).toBe(250);
    expect((await dialog.command('MAIL FROM:<third@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<third@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write('Subject: r\r\n\r\nthird\r\n.\r\n');
    expect((await dialog.reply()).code).toBe(250);
    expect(upstream.messages.map((message) => message.mailFrom)).toEqual(['second@sender.test', 'third@sender.test']);
    expect(upstream.messages[0]?.rcptTo).toEqual(['second@example.test']);
    const sequence = upstream.commands.filter((line) => /^(MAIL|RSET)/.test(line)).map((line) => line.slice(0, 4));
    expect(sequence).toEqual(['MAIL', 'RSET', 'MAIL', 'MAIL']);
    expect(upstream.connectionsOpened).toBe(1);
    dialog.destroy();
  });

  it('never forwards a message whose client dropped mid-DATA', async () => {
    const { upstream, proxy } = await setUp();
    const dialog = await greet(proxy.port);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write(`Subject: cut\r\n\r\n${'x'.repeat(100_000)}\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    dialog.destroy();
    const [record] = await proxy.waitForSessions(1);
    await upstream.waitForIdle();
    expect(upstream.messages).toHaveLength(0);
    expect(upstream.abortedData).toBe(1);
    expect(record?.end).toBe('dropped');
    expect(record?.transactions[0]?.outcome).toBe('aborted');
    expect(record?.pairs.abnormal).toBe(1);
  });

  it('refuses an oversized message with 552 and forwards nothing of it', async () => {
    const { upstream, proxy } = await setUp({}, 'limits:\n  maxMessageBytes: 10000\n');
    const dialog = await greet(proxy.port);
    expect((await dialog.command('MAIL FROM:<a@sender.test> SIZE=20000')).code).toBe(552);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write(`Subject: big\r\n\r\n${'y'.repeat(50_000)}\r\n.\r\n`);
    expect((await dialog.reply()).code).toBe(552);
    expect((await dialog.command('NOOP')).code).toBe(250);
    await upstream.waitForIdle();
    expect(upstream.messages).toHaveLength(0);
    dialog.destroy();
  });
});
