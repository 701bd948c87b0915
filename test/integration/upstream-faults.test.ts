// Postfix down, stalling or dropping at every step of the dialogue: the client always gets a 4xx
// it can retry on, promptly (the policy's timeouts), and never a 250 for mail Postfix did not take.
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream, type UpstreamStep } from '../support/fake-upstream.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

const FAST_TIMEOUTS = `
upstream:
  connectTimeoutMs: 500
  replyTimeoutMs: 300
  dataStallTimeoutMs: 300
  dataDoneTimeoutMs: 300
`;

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

/** Runs one transaction as far as the proxy lets it and returns every reply code seen after EHLO. */
async function attemptTransaction(port: number): Promise<number[]> {
  const dialog = await SmtpDialog.connect(port);
  const codes: number[] = [];
  try {
    expect((await dialog.reply()).code).toBe(220);
    expect((await dialog.command('EHLO client.test')).code).toBe(250);
    const mail = await dialog.command('MAIL FROM:<a@sender.test>');
    codes.push(mail.code);
    if (mail.code !== 250) return codes;
    const rcpt = await dialog.command('RCPT TO:<b@example.test>');
    codes.push(rcpt.code);
    if (rcpt.code !== 250) return codes;
    const data = await dialog.command('DATA');
    codes.push(data.code);
    if (data.code !== 354) return codes;
    dialog.write('Subject: t\r\n\r\nbody\r\n.\r\n');
    codes.push((await dialog.reply()).code);
    return codes;
  } finally {
    dialog.destroy();
  }
}

describe('upstream faults', () => {
  it('defers with 451 when nothing listens upstream', async () => {
    const closed = await FakeUpstream.start();
    const address = closed.address;
    await closed.close();
    proxy = await startTestProxy(address, FAST_TIMEOUTS);
    const codes = await attemptTransaction(proxy.port);
    expect(codes).toEqual([451]);
    const [record] = await proxy.waitForSessions(1);
    expect(record?.transactions[0]?.outcome).toBe('deferred');
  });

  const steps: Array<{ step: UpstreamStep; codes: number[] }> = [
    { step: 'greeting', codes: [451] },
    { step: 'ehlo', codes: [451] },
    { step: 'xclient', codes: [451] },
    { step: 'mail', codes: [451] },
    { step: 'rcpt', codes: [250, 451] },
    // smtp-server sends its 354 before onData runs, so a DATA failure upstream is told after the dot.
    { step: 'data', codes: [250, 250, 354, 451] },
    { step: 'dot', codes: [250, 250, 354, 451] },
  ];

  for (const { step, codes } of steps) {
    it(`answers 4xx when Postfix stalls at ${step}`, async () => {
      upstream = await FakeUpstream.start({ stallAt: step });
      proxy = await startTestProxy(upstream.address, FAST_TIMEOUTS);
      // Each reply() waits at most 5 s: a proxy that hung on the stalled step fails here.
      expect(await attemptTransaction(proxy.port)).toEqual(codes);
    });

    it(`answers 4xx when Postfix drops the connection at ${step}`, async () => {
      upstream = await FakeUpstream.start({ dropAt: step });
      proxy = await startTestProxy(upstream.address, FAST_TIMEOUTS);
      expect(await attemptTransaction(proxy.port)).toEqual(codes);
    });
  }

  it('reconnects for the next transaction after an upstream failure', async () => {
    upstream = await FakeUpstream.start({ dropAt: 'rcpt' });
    proxy = await startTestProxy(upstream.address, FAST_TIMEOUTS);
    const dialog = await SmtpDialog.connect(proxy.port);
    expect((await dialog.reply()).code).toBe(220);
    expect((await dialog.command('EHLO client.test')).code).toBe(250);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(451);
    upstream.options.dropAt = undefined;
    expect((await dialog.command('RSET')).code).toBe(250);
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write('Subject: t\r\n\r\nretry\r\n.\r\n');
    expect((await dialog.reply()).code).toBe(250);
    expect(upstream.connectionsOpened).toBe(2);
    dialog.destroy();
  });

  it('passes a 4xx from Postfix at MAIL through unchanged', async () => {
    upstream = await FakeUpstream.start({ mailReply: '452 4.3.1 Insufficient system storage' });
    proxy = await startTestProxy(upstream.address, FAST_TIMEOUTS);
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO client.test');
    expect(await dialog.command('MAIL FROM:<a@sender.test>')).toEqual({ code: 452, text: '4.3.1 Insufficient system storage' });
    dialog.destroy();
  });

  it('passes a 5xx from Postfix at the final dot through unchanged', async () => {
    upstream = await FakeUpstream.start({ dotReply: '554 5.7.1 Message content rejected' });
    proxy = await startTestProxy(upstream.address, FAST_TIMEOUTS);
    expect(await attemptTransaction(proxy.port)).toEqual([250, 250, 354, 554]);
  });
});
