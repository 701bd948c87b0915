// Client slots under an idle flood: eviction instead of refusal, and per-address and per-network
// concurrency limits (Postfix's anvil, which Postfix no longer applies behind an XCLIENT proxy).
// Real listener on an ephemeral port, sources bound across 127.0.0.0/8, a scripted upstream.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';

let upstream: FakeUpstream;
let proxy: TestProxy | undefined;
let dialogs: SmtpDialog[];

beforeEach(async () => {
  upstream = await FakeUpstream.start();
  dialogs = [];
});

afterEach(async () => {
  for (const dialog of dialogs) dialog.destroy();
  await proxy?.stop();
  await upstream.close();
  proxy = undefined;
});

async function connect(localAddress: string): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(proxy!.port, { localAddress });
  dialogs.push(dialog);
  return dialog;
}

/** A client that takes the greeting and says nothing: the entropy paper's attacker. */
async function silent(localAddress: string): Promise<SmtpDialog> {
  const dialog = await connect(localAddress);
  expect((await dialog.reply()).code).toBe(220);
  return dialog;
}

describe('eviction instead of refusal', () => {
  it('makes room by closing the silent sessions, oldest first; a transaction in progress and an allow-listed sender survive', async () => {
    proxy = await startTestProxy(upstream.address, [
      'server: { maxClients: 10, evictAbovePercent: 50 }',
      'pushback: { allow: ["127.0.0.22"] }',
    ].join('\n'));
    const sender = await connect('127.0.0.21');
    expect((await sender.reply()).code).toBe(220);
    await sender.command('EHLO sender.test');
    expect((await sender.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await sender.command('RCPT TO:<b@example.test>')).code).toBe(250);
    const trusted = await silent('127.0.0.22');
    const idle = [await silent('127.0.0.31'), await silent('127.0.0.32'), await silent('127.0.0.33')];
    // Five held: the mark. Each newcomer now closes one silent session, the oldest first.
    for (let index = 0; index < 3; index++) {
      const newcomer = await connect(`127.0.0.${41 + index}`);
      expect((await newcomer.reply()).code).toBe(220);
      const evicted = await idle[index]!.reply();
      expect(evicted).toMatchObject({ code: 421, text: expect.stringMatching(/^4\.7\.0 .* Error: too many connections, closing idle session$/) });
      expect(await idle[index]!.closedByServer()).toBe(true);
    }
    // Newcomers that went silent go next, before the allow-listed one.
    const fourth = await connect('127.0.0.44');
    expect((await fourth.reply()).code).toBe(220);
    expect((await trusted.command('NOOP')).code).toBe(250);
    // The transaction completes: it was never a candidate.
    expect((await sender.command('DATA')).code).toBe(354);
    expect((await sender.command('Subject: kept\r\n\r\nbody\r\n.')).code).toBe(250);
    await sender.command('QUIT');
    const records = await proxy.waitForSessions(5);
    const evictedRecords = records.filter((record) => record.end === 'evicted');
    expect(evictedRecords.map((record) => record.client).slice(0, 3)).toEqual(['127.0.0.31', '127.0.0.32', '127.0.0.33']);
    // The greeting those clients never answered is an abnormal pair.
    expect(evictedRecords.every((record) => record.pairs.abnormal === 1)).toBe(true);
    const metrics = await (await fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}/metrics`)).text();
    expect(metrics).toMatch(/smtp_pushback_sessions_evicted_total\{reason="silent"\} [4-9]/);
  });

  it('closes a client idle after EHLO before one that has sent mail, and refuses the newcomer only when nothing can go', async () => {
    proxy = await startTestProxy(upstream.address, 'server: { maxClients: 3, evictAbovePercent: 67 }\n');
    const mailer = await connect('127.0.0.51');
    await mailer.reply();
    await mailer.command('EHLO mailer.test');
    await mailer.command('MAIL FROM:<a@sender.test>');
    await mailer.command('RCPT TO:<b@example.test>');
    await mailer.command('DATA');
    expect((await mailer.command('Subject: x\r\n\r\nx\r\n.')).code).toBe(250);
    const helloOnly = await connect('127.0.0.52');
    await helloOnly.reply();
    await helloOnly.command('EHLO idle.test');
    // Three held, the mark is two: the EHLO-only session goes, not the one that sent mail.
    const third = await connect('127.0.0.53');
    expect((await third.reply()).code).toBe(220);
    expect((await helloOnly.reply()).code).toBe(421);
    expect((await mailer.command('NOOP')).code).toBe(250);
    // Now everyone is in a transaction: the next newcomer is refused.
    for (const dialog of [mailer, third]) {
      if (dialog === third) await dialog.command('EHLO third.test');
      expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    }
    const fourth = await connect('127.0.0.54');
    expect((await fourth.reply()).code).toBe(220);
    await fourth.command('EHLO fourth.test');
    expect((await fourth.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    const fifth = await connect('127.0.0.55');
    const refused = await fifth.reply();
    expect(refused.code).toBe(421);
    expect(refused.text).toMatch(/too many connected clients/);
  });
});

describe('concurrency per address and per network', () => {
  it('allows at most maxSessionsPerAddress at once from one address; the allow list is exempt', async () => {
    proxy = await startTestProxy(upstream.address, [
      'server: { maxSessionsPerAddress: 3 }',
      'pushback: { allow: ["127.0.0.62"] }',
    ].join('\n'));
    for (let index = 0; index < 3; index++) await silent('127.0.0.61');
    const over = await connect('127.0.0.61');
    expect(await over.reply()).toMatchObject({ code: 421, text: expect.stringMatching(/Error: too many connections from 127\.0\.0\.61$/) });
    for (let index = 0; index < 5; index++) await silent('127.0.0.62');
    // One ends, one more may come.
    dialogs[0]!.destroy();
    await proxy.waitForSessions(2);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await (await connect('127.0.0.61')).reply()).code).toBe(220);
  });

  it('allows at most maxSessionsPerPrefixV4 at once from one /24', async () => {
    proxy = await startTestProxy(upstream.address, 'server: { maxSessionsPerPrefixV4: 4 }\n');
    for (let index = 1; index <= 4; index++) await silent(`127.0.9.${index}`);
    const over = await connect('127.0.9.5');
    expect(await over.reply()).toMatchObject({ code: 421, text: expect.stringMatching(/Error: too many connections from 127\.0\.9\.0\/24$/) });
    expect((await (await connect('127.0.10.1')).reply()).code).toBe(220);
  });

  it('one address opening 1,000 connections never has more than the per-address limit open', async () => {
    proxy = await startTestProxy(upstream.address);
    const limit = proxy.policy.server.maxSessionsPerAddress;
    const replies = await Promise.all(Array.from({ length: 1_000 }, async () => {
      const dialog = await connect('127.0.0.71');
      return (await dialog.reply(10_000)).code;
    }));
    expect(replies.filter((code) => code === 220)).toHaveLength(limit);
    expect(replies.filter((code) => code === 421)).toHaveLength(1_000 - limit);
  });
});
