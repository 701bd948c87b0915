// Bad input and limits: every malformed command, overlong line, early talker, idle or dripping
// client gets a proper SMTP reply or a clean close, and the proxy keeps serving the next client.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

let upstream: FakeUpstream;
let proxy: TestProxy | undefined;

beforeEach(async () => {
  upstream = await FakeUpstream.start();
});

afterEach(async () => {
  await proxy?.stop();
  await upstream.close();
  proxy = undefined;
});

/**
 * After each case the proxy must still relay a normal session, from another address: the
 * misbehaving one may rightly be pushed back now (test/integration/pushback.test.ts).
 */
async function stillServes(port: number): Promise<void> {
  const dialog = await SmtpDialog.connect(port, { localAddress: '127.0.0.200' });
  expect((await dialog.reply()).code).toBe(220);
  expect((await dialog.command('EHLO client.test')).code).toBe(250);
  expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
  expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
  expect((await dialog.command('QUIT')).code).toBe(221);
}

describe('bad input', () => {
  it('answers 502 to unknown commands (Postfix\'s code) and 421 after ten of them', async () => {
    proxy = await startTestProxy(upstream.address);
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    for (let index = 0; index < 9; index += 1) expect(await dialog.command(`BOGUS${index}`)).toMatchObject({ code: 502, text: '5.5.2 Error: command not recognized' });
    expect((await dialog.command('BOGUS9')).code).toBe(421);
    expect(await dialog.closedByServer()).toBe(true);
    await stillServes(proxy.port);
  });

  it('answers 501 to malformed MAIL and RCPT and 503 out of sequence', async () => {
    proxy = await startTestProxy(upstream.address);
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(503);
    await dialog.command('EHLO client.test');
    expect((await dialog.command('MAIL FROM:broken<')).code).toBe(501);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(503);
    expect((await dialog.command('DATA')).code).toBe(503);
    expect(upstream.connectionsOpened).toBe(0);
    dialog.destroy();
  });

  it('closes on an overlong command line with 421', async () => {
    proxy = await startTestProxy(upstream.address, 'limits:\n  maxLineBytes: 1024\n');
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    const reply = await dialog.command(`EHLO ${'a'.repeat(5000)}`);
    expect(reply.code).toBe(421);
    expect(await dialog.closedByServer()).toBe(true);
    await stillServes(proxy.port);
  });

  it('holds the greeting of a client not trusted for the early-talker test, and not an allow-listed one\'s', async () => {
    proxy = await startTestProxy(upstream.address, 'pushback: { allow: ["127.0.0.210/32"] }\n');
    const msToGreeting = async (localAddress: string): Promise<number> => {
      const startedMs = performance.now();
      const dialog = await SmtpDialog.connect(proxy!.port, { localAddress });
      expect((await dialog.reply()).code).toBe(220);
      const elapsedMs = performance.now() - startedMs;
      dialog.destroy();
      return elapsedMs;
    };
    const unknownMs = await msToGreeting('127.0.0.211');
    const allowListedMs = await msToGreeting('127.0.0.210');
    // A wait can only be longer than set, never shorter: the lower bound holds on any machine.
    expect(unknownMs).toBeGreaterThanOrEqual(95);
    // Before, smtp-server's fixed 100 ms delay held both alike.
    expect(allowListedMs).toBeLessThan(unknownMs - 50);
  });

  it('refuses an early talker and records it', async () => {
    proxy = await startTestProxy(upstream.address);
    const dialog = await SmtpDialog.connect(proxy.port);
    dialog.write('EHLO too.early\r\n');
    const reply = await dialog.reply();
    expect(reply.code).toBe(421);
    expect(reply.text).toMatch(/talk too soon/);
    const [record] = await proxy.waitForSessions(1);
    expect(record?.end).toBe('early-talker');
    expect(record?.pairs).toEqual({ normal: 0, abnormal: 0 });
    await stillServes(proxy.port);
  });

  it('refuses HTTP spoken to the SMTP port', async () => {
    proxy = await startTestProxy(upstream.address);
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    expect((await dialog.command('GET / HTTP/1.1')).code).toBe(421);
    expect(await dialog.closedByServer()).toBe(true);
  });

  it('answers 452 beyond the recipient limit', async () => {
    proxy = await startTestProxy(upstream.address, 'limits:\n  maxRecipients: 2\n');
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    await dialog.command('MAIL FROM:<a@sender.test>');
    expect((await dialog.command('RCPT TO:<one@example.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<two@example.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<three@example.test>')).code).toBe(452);
    dialog.destroy();
  });

  it('announces SIZE from the policy', async () => {
    proxy = await startTestProxy(upstream.address, 'limits:\n  maxMessageBytes: 123456\n');
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    const ehlo = await dialog.command('EHLO client.test');
    expect(ehlo.text).toMatch(/^SIZE 123456$/m);
    expect(ehlo.text).toMatch(/^PIPELINING$/m);
    expect(ehlo.text).not.toMatch(/AUTH|STARTTLS/);
    dialog.destroy();
  });
});

describe('session limits', () => {
  it('closes an idle client with 421 and counts the unanswered reply as abnormal', async () => {
    proxy = await startTestProxy(upstream.address, 'limits:\n  idleTimeoutSeconds: 1\n');
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    const reply = await dialog.reply(3_000);
    expect(reply.code).toBe(421);
    expect(await dialog.closedByServer()).toBe(true);
    const [record] = await proxy.waitForSessions(1);
    expect(record?.end).toBe('idle-timeout');
    expect(record?.pairs).toEqual({ normal: 1, abnormal: 1 });
  });

  it('ends a session that drips past its deadline, even mid-DATA, and forwards nothing', async () => {
    proxy = await startTestProxy(upstream.address, 'limits:\n  sessionDeadlineSeconds: 1\n  idleTimeoutSeconds: 60\n');
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    await dialog.command('MAIL FROM:<a@sender.test>');
    await dialog.command('RCPT TO:<b@example.test>');
    expect((await dialog.command('DATA')).code).toBe(354);
    // One byte every 100 ms keeps the idle timer happy; only the deadline can end this.
    const drip = setInterval(() => dialog.write('x'), 100);
    try {
      const reply = await dialog.reply(4_000);
      expect(reply.code).toBe(421);
      expect(reply.text).toMatch(/deadline/);
      expect(await dialog.closedByServer()).toBe(true);
    } finally {
      clearInterval(drip);
    }
    const [record] = await proxy.waitForSessions(1);
    expect(record?.end).toBe('deadline');
    await upstream.waitForIdle();
    expect(upstream.messages).toHaveLength(0);
    expect(upstream.abortedData).toBe(1);
  });

  it('turns away clients beyond maxClients with 421 when no session can be evicted (both in a transaction)', async () => {
    proxy = await startTestProxy(upstream.address, 'server:\n  maxClients: 2\n');
    const inTransaction = async (): Promise<SmtpDialog> => {
      const dialog = await SmtpDialog.connect(proxy!.port);
      expect((await dialog.reply()).code).toBe(220);
      await dialog.command('EHLO client.test');
      expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
      return dialog;
    };
    const first = await inTransaction();
    const second = await inTransaction();
    const third = await SmtpDialog.connect(proxy.port);
    const reply = await third.reply();
    expect(reply.code).toBe(421);
    expect(reply.text).toMatch(/too many connected clients/);
    expect(await third.closedByServer()).toBe(true);
    first.destroy();
    second.destroy();
    const records = await proxy.waitForSessions(3);
    expect(records.map((record) => record.end)).toContain('too-many-clients');
  });
});

describe('pairs', () => {
  // These pin the smtp-server logger events the pair tracker depends on ("command" and "send"):
  // if smtp-server stopped reporting them, these counts would be zero.
  it('counts every answered reply of a complete session as normal', async () => {
    proxy = await startTestProxy(upstream.address);
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply(); // greeting
    await dialog.command('EHLO client.test');
    await dialog.command('NOOP');
    await dialog.command('VRFY someone');
    await dialog.command('BOGUS');
    await dialog.command('MAIL FROM:<a@sender.test>');
    await dialog.command('RCPT TO:<b@example.test>');
    await dialog.command('RSET');
    await dialog.command('MAIL FROM:<a@sender.test>');
    await dialog.command('RCPT TO:<b@example.test>');
    await dialog.command('DATA');
    dialog.write('Subject: p\r\n\r\nx\r\n.\r\n');
    await dialog.reply();
    await dialog.command('QUIT');
    const [record] = await proxy.waitForSessions(1);
    // greeting, EHLO, NOOP, VRFY, BOGUS, MAIL, RCPT, RSET, MAIL, RCPT, 354, end of data: 12 pairs;
    // the 221 after QUIT expects nothing.
    expect(record?.pairs).toEqual({ normal: 12, abnormal: 0 });
    expect(record?.commands).toBe(11);
  });

  it('counts a reply left unanswered past the pair time-out as abnormal while the client still holds on', async () => {
    proxy = await startTestProxy(upstream.address, 'entropy: { pairTimeoutSeconds: 1, statusIntervalMs: 100 }\n');
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    const status = (): { abnormalPairs: number } => proxy!.proxy.status();
    const deadline = Date.now() + 5_000;
    while (status().abnormalPairs === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(status().abnormalPairs).toBe(1);
    expect(dialog.closed).toBe(false);
    dialog.destroy();
    const [record] = await proxy.waitForSessions(1);
    expect(record?.pairs).toEqual({ normal: 0, abnormal: 1 });
  });

  it('counts the greeting of a client that never speaks as one abnormal pair', async () => {
    proxy = await startTestProxy(upstream.address);
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    dialog.destroy();
    const [record] = await proxy.waitForSessions(1);
    expect(record?.pairs).toEqual({ normal: 0, abnormal: 1 });
    expect(record?.end).toBe('dropped');
    expect(record?.outcome).toBe('no-transaction');
  });
});
