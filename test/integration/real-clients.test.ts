// Real SMTP clients through the proxy: nodemailer, Python's smtplib and swaks, including a 20 MB
// message, and PROXY protocol v1 from a trusted load balancer only, which must name the client.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const run = promisify(execFile);
let upstream: FakeUpstream;
let proxy: TestProxy;

beforeEach(async () => {
  upstream = await FakeUpstream.start({
    recipientReplies: { 'nobody@example.test': '550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown' },
  });
  proxy = await startTestProxy(upstream.address, 'limits:\n  maxMessageBytes: 30000000\n');
});

afterEach(async () => {
  await proxy.stop();
  await upstream.close();
});

/** A raw message of roughly `bytes`, CRLF lines, with dot lines and 8-bit bytes in it. */
function rawMessage(bytes: number): Buffer {
  const head = 'From: a@sender.test\r\nTo: b@example.test\r\nSubject: big\r\n\r\n.starts with a dot\r\n';
  const lines: string[] = [];
  let size = head.length;
  while (size < bytes) {
    const line = `${randomBytes(36).toString('base64')}${lines.length % 50 === 0 ? '\r\n.' : ''}`;
    lines.push(line);
    size += line.length + 2;
  }
  return Buffer.concat([Buffer.from(head), Buffer.from(lines.join('\r\n') + '\r\n', 'latin1'), Buffer.from('caf\xe9\r\n', 'latin1')]);
}

describe('real clients', () => {
  it('nodemailer: 20 MB raw message arrives byte-exact, unknown recipient rejected', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: proxy.port, secure: false, ignoreTLS: true });
    const raw = rawMessage(20 * 1024 * 1024);
    const info = await transport.sendMail({
      envelope: { from: 'a@sender.test', to: ['b@example.test', 'nobody@example.test'] },
      raw,
    });
    expect(info.accepted).toEqual(['b@example.test']);
    expect(info.rejected).toEqual(['nobody@example.test']);
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as FAKE1/);
    expect(upstream.messages).toHaveLength(1);
    expect(upstream.messages[0]?.body.length).toBe(raw.length);
    expect(upstream.messages[0]?.body.equals(raw)).toBe(true);
    transport.close();
  });

  it("Python's smtplib: 8-bit message with dot lines arrives byte-exact", async () => {
    const script = `
import smtplib, sys
msg = b"Subject: py\\r\\n\\r\\n.dot first\\r\\nline \\xe9\\xff\\r\\n..two\\r\\n"
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10) as s:
    s.ehlo("python.test")
    refused = s.sendmail("a@sender.test", ["b@example.test"], msg, mail_options=["BODY=8BITMIME"])
    print(len(refused))
`;
    const { stdout } = await run('python3', ['-c', script, String(proxy.port)], { timeout: 20_000 });
    expect(stdout.trim()).toBe('0');
    expect(upstream.messages[0]?.body.equals(Buffer.from('Subject: py\r\n\r\n.dot first\r\nline \xe9\xff\r\n..two\r\n', 'latin1'))).toBe(true);
    expect(upstream.messages[0]?.xclient).toMatch(/HELO=python\.test/);
  });

  it('swaks: sends a message and sees Postfix’s 550 for an unknown user', async () => {
    const common = ['--server', `127.0.0.1:${proxy.port}`, '--from', 'a@sender.test', '--helo', 'swaks.test', '--timeout', '10'];
    const ok = await run('swaks', [...common, '--to', 'b@example.test', '--body', 'hello from swaks'], { timeout: 20_000 });
    expect(ok.stdout).toMatch(/<-  250 2\.0\.0 Ok: queued as FAKE1/);
    const refused = await run('swaks', [...common, '--to', 'nobody@example.test'], { timeout: 20_000 }).catch((error: { stdout: string; code: number }) => error);
    expect(refused.stdout).toMatch(/<\*\* 550 5\.1\.1 <nobody@example\.test>: Recipient address rejected/);
    expect(upstream.messages).toHaveLength(1);
    expect(upstream.messages[0]?.body.toString()).toMatch(/hello from swaks/);
  });
});

describe('PROXY protocol', () => {
  it('takes the client address from a trusted load balancer and refuses the header from anyone else', async () => {
    await proxy.stop();
    proxy = await startTestProxy(upstream.address, 'server:\n  proxyProtocolFrom: ["127.0.0.2"]\n');
    const trusted = await new Promise<net.Socket>((resolve) => {
      const socket = net.connect({ port: proxy.port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve(socket));
    });
    trusted.write('PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n');
    const dialogued = await new Promise<string>((resolve) => {
      let text = '';
      trusted.on('data', (chunk) => {
        text += chunk.toString();
        if (text.includes('220 ') && !text.includes('EHLO-sent')) {
          trusted.write('EHLO lb.test\r\nMAIL FROM:<a@sender.test>\r\nQUIT\r\n');
          text += 'EHLO-sent';
        }
        if (text.includes('221')) resolve(text);
      });
    });
    expect(dialogued).toMatch(/221/);
    const xclient = upstream.commands.find((line) => line.startsWith('XCLIENT'));
    expect(xclient).toMatch(/^XCLIENT ADDR=198\.51\.100\.7 PORT=40000 /);
    trusted.destroy();

    // From an untrusted peer the header is just a bad command: the session never takes its address.
    const untrusted = await SmtpDialog.connect(proxy.port);
    expect((await untrusted.reply()).code).toBe(220);
    expect((await untrusted.command('PROXY TCP4 203.0.113.9 127.0.0.1 40000 25')).code).toBe(502);
    untrusted.destroy();
    const records = await proxy.waitForSessions(2);
    expect(records.map((record) => record.client)).toEqual(['198.51.100.7', '127.0.0.1']);
  });

  it('refuses a session whose PROXY header gives no client address, rather than take the balancer as the client', async () => {
    await proxy.stop();
    // Listed as IPv4-mapped IPv6 (a dual-stack habit): the same balancer as 127.0.0.2.
    proxy = await startTestProxy(upstream.address, 'server:\n  proxyProtocolFrom: ["::ffff:127.0.0.2"]\n');
    for (const header of ['PROXY UNKNOWN', 'PROXY TCP4 127.0.0.2 127.0.0.1 40000 25']) {
      const dialog = await SmtpDialog.connect(proxy.port, { localAddress: '127.0.0.2' });
      dialog.write(`${header}\r\n`);
      expect(await dialog.reply()).toEqual({ code: 421, text: `4.7.0 ${proxy.policy.server.hostname} PROXY header without a client address` });
      expect(await dialog.closedByServer()).toBe(true);
      dialog.destroy();
    }
    const records = await proxy.waitForSessions(2);
    expect(records.map((record) => [record.client, record.end])).toEqual([['127.0.0.2', 'refused'], ['127.0.0.2', 'refused']]);
    expect(upstream.connectionsOpened).toBe(0);
  });
});
