// End to end: real clients -> the proxy -> a throwaway Postfix from Debian with virtual mailboxes.
// Delivered files hold the sent bytes, unknown users get Postfix's own 550 at RCPT, Postfix's log
// shows the original client through XCLIENT, and that client gets no relay it would not get anyway.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

const run = promisify(execFile);
// In CI Postfix is installed by .ci/install-deps.sh, so a missing Postfix there is a failure, not a skip.
const runE2e = postfixAvailable() || process.env.CI === 'true';
if (!runE2e) console.warn(`skipping Postfix e2e: ${postfixUnavailableReason()}`);

describe.skipIf(!runE2e)('proxy in front of a real Postfix', () => {
  let postfix: PostfixInstance;
  let proxy: TestProxy;

  beforeAll(async () => {
    postfix = await startPostfix({ users: ['alice', 'bob', 'carol'] });
    proxy = await startTestProxy(`${postfix.host}:${postfix.port}`, [
      'upstream: { xclient: required }',
      'server: { proxyProtocolFrom: ["127.0.0.2"] }',
      'limits: { maxMessageBytes: 20000000 }',
    ].join('\n'));
  });

  afterAll(async () => {
    await proxy?.stop();
    await postfix?.stop();
  });

  it('delivers byte-exact through XCLIENT; Postfix logs the original client', async () => {
    const headers = 'Subject: e2e\r\nFrom: sender@remote.test\r\n';
    const bodyText = '.leading dot\r\n..two dots\r\ncaf\xe9 8-bit \xff\r\n.\r\nend\r\n';
    const body = `${headers}\r\n${bodyText}`;
    const transport = nodemailer.createTransport({
      host: '127.0.0.1', port: proxy.port, secure: false, ignoreTLS: true, name: 'client.remote.test', localAddress: '127.0.0.5',
    });
    const info = await transport.sendMail({
      envelope: { from: 'sender@remote.test', to: ['alice@example.test', 'nobody@example.test'] },
      raw: Buffer.from(body, 'latin1'),
    });
    transport.close();
    expect(info.accepted).toEqual(['alice@example.test']);
    expect(info.rejected).toEqual(['nobody@example.test']);
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Za-z]+/);
    const queueId = /queued as ([0-9A-Za-z]+)/.exec(info.response)?.[1];

    const [file] = await postfix.waitForMail('alice', 1, 10_000);
    const delivered = await readFile(file!, 'latin1');
    // Maildir files use LF line ends, and Postfix adds its Received, Message-Id and Date headers;
    // the client's headers and body are otherwise exactly what it sent.
    expect(delivered).toContain(headers.replace(/\r\n/g, '\n'));
    expect(delivered.endsWith(`\n\n${bodyText.replace(/\r\n/g, '\n')}`)).toBe(true);
    expect(delivered).toMatch(/^Received: from client\.remote\.test \(unknown \[127\.0\.0\.5\]\)/m);
    const clientLine = await postfix.waitForLog(new RegExp(`${queueId}: client=unknown\\[127\\.0\\.0\\.5\\]`), 5_000);
    expect(clientLine).toBeTruthy();
    await postfix.waitForLog(/reject: RCPT from unknown\[127\.0\.0\.5\]: 550 5\.1\.1 <nobody@example\.test>.*helo=<client\.remote\.test>/, 5_000);
  });

  it('gives the client Postfix’s own 550 for an unknown user at RCPT time', async () => {
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.remote.test');
    expect((await dialog.command('MAIL FROM:<sender@remote.test>')).code).toBe(250);
    const reply = await dialog.command('RCPT TO:<ghost@example.test>');
    expect(reply.code).toBe(550);
    expect(reply.text).toMatch(/^5\.1\.1 <ghost@example\.test>: Recipient address rejected: User unknown/);
    await dialog.command('QUIT');
  });

  it('does not make Postfix an open relay: a remote client (PROXY protocol) is refused relaying but can deliver locally', async () => {
    const socket = await new Promise<net.Socket>((resolve) => {
      const connection = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(connection));
    });
    socket.write('PROXY TCP4 198.51.100.7 127.0.0.1 40001 25\r\n');
    const replies: string[] = [];
    let buffered = '';
    const nextReply = (): Promise<string> => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply')), 10_000);
      const check = (): void => {
        const match = /^(?:\d{3}-.*\r\n)*\d{3} .*\r\n/.exec(buffered);
        if (!match) return;
        buffered = buffered.slice(match[0].length);
        socket.off('data', onData);
        clearTimeout(timer);
        replies.push(match[0]);
        resolve(match[0]);
      };
      const onData = (chunk: Buffer): void => {
        buffered += chunk.toString('latin1');
        check();
      };
      socket.on('data', onData);
      check();
    });
    const say = async (line: string): Promise<string> => {
      socket.write(`${line}\r\n`);
      return nextReply();
    };
    expect(await nextReply()).toMatch(/^220 /);
    expect(await say('EHLO outside.example')).toMatch(/^250/);
    expect(await say('MAIL FROM:<spammer@outside.example>')).toMatch(/^250/);
    expect(await say('RCPT TO:<victim@elsewhere.test>')).toMatch(/^554 5\.7\.1 <victim@elsewhere\.test>: Relay access denied/);
    expect(await say('RCPT TO:<bob@example.test>')).toMatch(/^250/);
    expect(await say('DATA')).toMatch(/^354/);
    expect(await say('Subject: via lb\r\n\r\nthrough the load balancer\r\n.')).toMatch(/^250 2\.0\.0 Ok: queued as/);
    await say('QUIT');
    socket.destroy();
    await postfix.waitForMail('bob', 1, 10_000);
    await postfix.waitForLog(/: client=unknown\[198\.51\.100\.7\]/, 5_000);
    await postfix.waitForLog(/reject: RCPT from unknown\[198\.51\.100\.7\]: 554 5\.7\.1 <victim@elsewhere\.test>: Relay access denied/, 5_000);
  });

  it('delivers with swaks and Python’s smtplib', async () => {
    await run('swaks', ['--server', `127.0.0.1:${proxy.port}`, '--from', 'a@remote.test', '--to', 'carol@example.test', '--helo', 'swaks.remote.test', '--body', 'swaks through the proxy', '--timeout', '15'], { timeout: 30_000 });
    const script = `
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=15) as s:
    s.ehlo("python.remote.test")
    s.sendmail("a@remote.test", ["carol@example.test"], b"Subject: py\\r\\n\\r\\nsmtplib through the proxy\\r\\n")
`;
    await run('python3', ['-c', script, String(proxy.port)], { timeout: 30_000 });
    const files = await postfix.waitForMail('carol', 2, 10_000);
    const contents = await Promise.all(files.map((file) => readFile(file, 'utf8')));
    expect(contents.some((text) => text.includes('swaks through the proxy'))).toBe(true);
    expect(contents.some((text) => text.includes('smtplib through the proxy'))).toBe(true);
  });

  it('a client dropping mid-DATA leaves nothing in Postfix', async () => {
    await postfix.markLog();
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO dropper.remote.test');
    await dialog.command('MAIL FROM:<a@remote.test>');
    expect((await dialog.command('RCPT TO:<alice@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write(`Subject: never\r\n\r\n${'partial '.repeat(10_000)}\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    dialog.destroy();
    await postfix.waitForLog(/lost connection after DATA/, 5_000);
    await new Promise((resolve) => setTimeout(resolve, 500)); // a queued message would reach qmgr by now
    const log = await postfix.readLog();
    const queueId = /([0-9A-F]+): client=unknown\[127\.0\.0\.1\]/.exec(log)?.[1];
    expect(queueId).toBeTruthy();
    // Postfix opened a queue file at MAIL, but without the final dot it was never queued (no qmgr "from=").
    expect(log).not.toContain(`${queueId}: from=`);
    const alice = await postfix.mailboxFiles('alice');
    const contents = await Promise.all(alice.map((file) => readFile(file, 'utf8')));
    expect(contents.some((text) => text.includes('Subject: never'))).toBe(false);
  });
});
