// Who holds Postfix's smtpd processes: a tarpitted client waits before its command reaches Postfix
// and lets Postfix go between transactions; half-open transactions (EHLO, MAIL, RCPT, silence) of
// untrusted clients hold at most their share, the one silent longest making room for a newcomer;
// one address holds at most its own share; a session cannot make Postfix fork one smtpd per EHLO.
// Real listener on an ephemeral port, sources bound across 127.0.0.0/8, a scripted upstream.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { waitForAsync } from '../support/redis-server.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

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

const FAST = 'entropy: { statusIntervalMs: 100 }\nstate: { flushIntervalMs: 50 }\n';
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function greeted(localAddress: string): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(proxy!.port, { localAddress });
  dialogs.push(dialog);
  expect((await dialog.reply()).code).toBe(220);
  return dialog;
}

/** EHLO, MAIL, RCPT, then silence: the half-open transaction that holds one Postfix process. */
async function halfOpen(localAddress: string): Promise<SmtpDialog> {
  const dialog = await greeted(localAddress);
  await dialog.command(`EHLO half-open.test`);
  expect((await dialog.command('MAIL FROM:<a@half-open.test>')).code).toBe(250);
  expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
  return dialog;
}

describe('a tarpit holds the client, not Postfix', () => {
  it('forwards a tarpitted MAIL only once its delay is over, and lets the upstream go between transactions', async () => {
    proxy = await startTestProxy(upstream.address, `${FAST}pushback: { tarpit: { baseDelayMs: 900, perScoreDelayMs: 0 } }\n`);
    // An early talker earns a tarpit verdict (score 10) for its next sessions.
    const talker = await SmtpDialog.connect(proxy.port, { localAddress: '127.40.0.1' });
    talker.write('EHLO bot.example\r\n');
    expect((await talker.reply()).code).toBe(421);
    talker.destroy();
    await waitForAsync(async () => proxy!.sessions.length === 1, 5_000, 'the early talker to end');
    await sleep(200);
    const dialog = await SmtpDialog.connect(proxy.port, { localAddress: '127.40.0.1' });
    dialogs.push(dialog);
    expect((await dialog.reply(5_000)).code).toBe(220);
    await dialog.command('EHLO slow.test', 5_000);
    const mail = dialog.command('MAIL FROM:<a@slow.test>', 5_000);
    await sleep(500);
    // Half-way through the delay Postfix has heard nothing, not even a connection.
    expect(upstream.commands.filter((line) => line.startsWith('MAIL'))).toEqual([]);
    expect(upstream.connectionsOpened).toBe(0);
    expect((await mail).code).toBe(250);
    expect(upstream.commands.filter((line) => line.startsWith('MAIL'))).toHaveLength(1);
    expect((await dialog.command('RCPT TO:<b@example.test>', 5_000)).code).toBe(250);
    expect((await dialog.command('DATA', 5_000)).code).toBe(354);
    expect((await dialog.command('Subject: t\r\n\r\nbody\r\n.', 5_000)).code).toBe(250);
    // Between transactions the tarpitted session holds no smtpd process.
    await waitForAsync(async () => upstream.connectionsOpen === 0, 5_000, 'the upstream to be let go');
    expect(upstream.messages).toHaveLength(1);
    expect((await dialog.command('MAIL FROM:<c@slow.test>', 5_000)).code).toBe(250);
    expect(upstream.connectionsOpened).toBe(2);
  });
});

describe('the untrusted clients share of Postfix processes', () => {
  it('cuts the transaction silent the longest to make room for a newcomer, and never holds more than the share', async () => {
    proxy = await startTestProxy(upstream.address, `${FAST}upstream: { maxConnections: 5, untrustedSharePercent: 60 }\n`);
    const held = [await halfOpen('127.41.0.1'), await halfOpen('127.41.0.2'), await halfOpen('127.41.0.3')];
    expect(upstream.connectionsOpen).toBe(3);
    // NOOPs are not progress: a half-open client chattering them is still silent in its transaction.
    for (let tick = 0; tick < 3; tick++) {
      await sleep(750);
      for (const dialog of held) expect((await dialog.command('NOOP')).code).toBe(250);
    }
    const newcomer = await halfOpen('127.41.0.4');
    expect(await held[0]!.reply()).toMatchObject({ code: 421, text: expect.stringMatching(/closing idle session$/) });
    expect(await held[0]!.closedByServer()).toBe(true);
    await waitForAsync(async () => upstream.connectionsOpen === 3, 5_000, 'the cut transaction to free its upstream');
    expect((await newcomer.command('DATA')).code).toBe(354);
    expect((await newcomer.command('Subject: t\r\n\r\nbody\r\n.')).code).toBe(250);
    const metrics = await (await fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}/metrics`)).text();
    expect(metrics).toMatch(/^smtp_pushback_sessions_evicted_total\{reason="half-open"\} 1$/m);
    expect(metrics).toMatch(/^smtp_pushback_upstream_connections_held\{trust="untrusted"\} 3$/m);
  });

  it('makes room within a tenth of a second even when every half-open transaction is younger than that', async () => {
    proxy = await startTestProxy(upstream.address, `${FAST}upstream: { maxConnections: 2, untrustedSharePercent: 100 }\n`);
    const first = await halfOpen('127.42.0.1');
    await halfOpen('127.42.0.2');
    const late = await greeted('127.42.0.3');
    await late.command('EHLO late.test');
    // Before, a transaction had to be silent 2 s: a flood of a few hundred a second kept them all
    // younger, and every newcomer heard 451.
    expect((await late.command('MAIL FROM:<a@late.test>')).code).toBe(250);
    expect((await first.reply()).code).toBe(421);
    expect(upstream.connectionsOpened).toBe(3);
  });

  it('lets a network whose transactions keep being cut take free processes only, not cut others\' transactions', async () => {
    proxy = await startTestProxy(upstream.address, `${FAST}upstream: { maxConnections: 1, untrustedSharePercent: 100 }\n`);
    // Each half-open transaction of 127.48.0.0/24 cuts the one before it, three times.
    let previous = await halfOpen('127.48.0.1');
    for (const host of [2, 3, 4]) {
      await sleep(150);
      const next = await halfOpen(`127.48.0.${host}`);
      expect((await previous.reply()).code).toBe(421);
      previous = next;
    }
    await sleep(150);
    // Now an attacker set: its next newcomer hears 451 and the transaction holding the process stays.
    const fifth = await greeted('127.48.0.5');
    await fifth.command('EHLO fifth.test');
    expect(await fifth.command('MAIL FROM:<a@fifth.test>')).toMatchObject({ code: 451, text: expect.stringMatching(/all server ports are busy/) });
    expect(previous.closed).toBe(false);
    // A newcomer from another network still makes room.
    const other = await greeted('127.49.0.1');
    await other.command('EHLO other.test');
    expect((await other.command('MAIL FROM:<a@other.test>')).code).toBe(250);
    expect((await previous.reply()).code).toBe(421);
  });

  it('answers 451 when every process is busy with a transaction waiting for Postfix, and cuts none of them', async () => {
    await upstream.close();
    upstream = await FakeUpstream.start({ stallAt: 'rcpt' });
    proxy = await startTestProxy(upstream.address, `${FAST}upstream: { maxConnections: 2, untrustedSharePercent: 100 }\n`);
    const held: SmtpDialog[] = [];
    for (const address of ['127.42.1.1', '127.42.1.2']) {
      const dialog = await greeted(address);
      await dialog.command('EHLO waiting.test');
      expect((await dialog.command('MAIL FROM:<a@waiting.test>')).code).toBe(250);
      dialog.write('RCPT TO:<b@example.test>\r\n');
      held.push(dialog);
    }
    await waitForAsync(async () => upstream.commands.filter((line) => line.startsWith('RCPT')).length === 2, 5_000, 'both RCPTs at Postfix');
    await sleep(400);
    const late = await greeted('127.42.1.3');
    await late.command('EHLO late.test');
    expect(await late.command('MAIL FROM:<a@late.test>')).toMatchObject({ code: 451, text: expect.stringMatching(/^4\.3\.2 .* all server ports are busy/) });
    expect(upstream.connectionsOpened).toBe(2);
    expect(upstream.connectionsOpen).toBe(2);
  });

  it('holds at most maxConnectionsPerAddress for one address; an allow-listed address is exempt', async () => {
    proxy = await startTestProxy(upstream.address, `${FAST}upstream: { maxConnectionsPerAddress: 2 }\npushback: { allow: ["127.43.0.9"] }\n`);
    await halfOpen('127.43.0.1');
    await halfOpen('127.43.0.1');
    const third = await greeted('127.43.0.1');
    await third.command('EHLO third.test');
    expect(await third.command('MAIL FROM:<a@third.test>')).toMatchObject({ code: 451, text: expect.stringMatching(/^4\.7\.0 .* too many transactions from 127\.43\.0\.1 at once/) });
    // Another address is not affected.
    await halfOpen('127.43.0.2');
    for (let index = 0; index < 3; index++) await halfOpen('127.43.0.9');
    expect(upstream.connectionsOpen).toBe(6);
  });
});

describe('new upstream connections per session', () => {
  it('stops a client that changes its EHLO name before every MAIL after ten upstream connections', async () => {
    proxy = await startTestProxy(upstream.address, FAST);
    const dialog = await greeted('127.44.0.1');
    for (let index = 0; index < 10; index++) {
      await dialog.command(`EHLO name${index}.test`);
      expect((await dialog.command('MAIL FROM:<a@name.test>')).code).toBe(250);
    }
    await dialog.command('EHLO name10.test');
    expect(await dialog.command('MAIL FROM:<a@name.test>')).toMatchObject({ code: 421, text: expect.stringMatching(/too many new sessions/) });
    expect(upstream.connectionsOpened).toBe(10);
  });
});
