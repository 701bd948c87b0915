// Detection and pushback on loopback, sources bound across 127.0.0.0/8: floods get verdicts that the
// next connections feel (at connect, for the whole prefix once k suspects share it), legitimate
// crowds and proven or allow-listed senders pass, and observe mode enforces nothing.
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { waitForAsync } from '../support/redis-server.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { abandonedSession, completeSession, inParallel } from '../support/sessions.js';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

const FAST = 'entropy: { statusIntervalMs: 100 }\nstate: { flushIntervalMs: 50 }\n';

async function start(policy: string): Promise<TestProxy> {
  upstream = await FakeUpstream.start();
  proxy = await startTestProxy(upstream.address, `${FAST}${policy}`);
  return proxy;
}

async function metric(test: TestProxy, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${test.proxy.adminAddress.port}/metrics`)).text();
  return text.split('\n').filter((line) => pattern.test(line)).reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

/** Connects from an address and reports the first thing the server says, bounded. */
async function firstReply(port: number, localAddress: string): Promise<{ code: number; text: string }> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  try {
    return await dialog.reply(20_000);
  } finally {
    dialog.destroy();
  }
}

/** A client that talks before the greeting, as bots do. */
async function earlyTalker(port: number, localAddress: string): Promise<number> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  dialog.write('EHLO bot.example\r\n');
  try {
    return (await dialog.reply()).code;
  } finally {
    dialog.destroy();
  }
}

/** The screen label of this address's nth session (1-based), once it has ended. */
async function label(test: TestProxy, address: string, nth: number): Promise<string | undefined> {
  const mine = () => test.sessions.filter((record) => record.client === address);
  await waitForAsync(async () => mine().length >= nth, 5_000, `session ${nth} of ${address} to end`);
  return mine()[nth - 1]?.screen;
}

describe('pushback', () => {
  it('an abandoned-handshake flood flips the status, then its sources and their /24 are deferred at connect', async () => {
    const test = await start('');
    await inParallel(100, 25, (index) => abandonedSession(test.port, `127.10.1.${index + 1}`));
    await waitForAsync(async () => test.proxy.status().status === -1, 5_000, 'status -1');
    // The same sources again, now that the server is in danger: their abandoned sessions earn verdicts.
    await inParallel(20, 10, (index) => abandonedSession(test.port, `127.10.1.${index + 1}`));
    await waitForAsync(async () => (await metric(test, /^smtp_pushback_verdicts_total\{action="defer",detector="prefix"\}/)) > 0, 5_000, 'a prefix verdict');
    // A source seen before, and one never seen, from the same /24: both refused before any SMTP.
    expect(await firstReply(test.port, '127.10.1.3')).toEqual({ code: 421, text: expect.stringMatching(/^4\.7\.0 .*try again later/) });
    expect((await firstReply(test.port, '127.10.1.250')).code).toBe(421);
    expect(await label(test, '127.10.1.250', 1)).toBe('defer:cached');
    expect(upstream!.connectionsOpened).toBe(0);
  });

  it('catches a botnet of one early-talking connection per address through its /24s, widening to the /16', async () => {
    const test = await start('');
    const subnets = [1, 2, 3, 4, 5, 6];
    for (const subnet of subnets) {
      const codes = await inParallel(6, 6, (host) => earlyTalker(test.port, `127.11.${subnet}.${host + 1}`));
      expect(codes.every((code) => code === 421)).toBe(true);
      await waitForAsync(async () => test.sessions.filter((record) => record.client.startsWith(`127.11.${subnet}.`)).length === 6, 5_000, 'the sessions to end');
    }
    // Four /24s become suspect, then the fifth makes their /16 suspect, which holds the sixth already.
    await waitForAsync(async () => (await metric(test, /^smtp_pushback_verdicts_total\{.*detector="prefix"\}/)) === 5, 5_000, 'four /24 and one /16 verdicts');
    const status = (await (await fetch(`http://127.0.0.1:${test.proxy.adminAddress.port}/status`)).json()) as { suspectPrefixes: Array<{ prefix: string }> };
    expect(status.suspectPrefixes[0]).toMatchObject({ prefix: '127.11.0.0/16' });
    // An address never seen, in a /24 never used, inside the /16: the widened prefix holds it.
    const dialog = await SmtpDialog.connect(test.port, { localAddress: '127.11.200.9' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    dialog.destroy();
    // Early talk (10) plus the prefix (5) is 15: the prefix's verdict under the default action table.
    expect(await label(test, '127.11.200.9', 1)).toBe('quarantine:cached');
  });

  it('tarpits an early talker on its next connection', async () => {
    const test = await start('');
    expect(await earlyTalker(test.port, '127.12.0.1')).toBe(421);
    await waitForAsync(async () => (await metric(test, /^smtp_pushback_verdicts_total\{action="tarpit",detector="early-talker"\}/)) === 1, 5_000, 'the verdict');
    const dialog = await SmtpDialog.connect(test.port, { localAddress: '127.12.0.1' });
    await new Promise((resolve) => setTimeout(resolve, 500));
    dialog.destroy();
    await waitForAsync(async () => test.sessions.length === 2, 5_000, 'the second session');
    expect(test.sessions[1]?.screen).toBe('tarpit:cached');
    // The tarpit held the greeting back (1 s + 0.5 s x score 10): the client heard nothing in 0.5 s.
    expect(test.sessions[1]?.pairs).toEqual({ normal: 0, abnormal: 0 });
  });

  it('quarantines the mail of a single source sending complete sessions at a high rate (SFDS)', async () => {
    const test = await start('pushback: { sfds: { sets: [{ name: fast, periodSeconds: 3600, minMeanPacketBytes: 60, minFlowsPerPeriod: 20, minDurationPeriods: 0 }] } }\n');
    const codes = await inParallel(40, 1, () => completeSession(test.port, '127.13.0.1', 'b@example.test', 2_000));
    // Every message is accepted (nothing lost, nothing bounced), but once SFDS has fired (after 21
    // sessions in the period) they go to the quarantine, durable, instead of to Postfix.
    expect(codes.every((code) => code === 250)).toBe(true);
    expect(upstream!.messages.length).toBeLessThanOrEqual(22);
    await test.waitForSessions(40);
    const quarantined = test.sessions.filter((record) => record.outcome === 'quarantined');
    expect(quarantined.length).toBe(40 - upstream!.messages.length);
    expect(quarantined.every((record) => record.transactions[0]?.reply?.startsWith('250 2.0.0 Ok: queued as '))).toBe(true);
    expect(await metric(test, /^smtp_pushback_quarantine_entries /)).toBe(quarantined.length);
    // The recipients were still checked with Postfix, live, before the message went to the spool.
    expect(upstream!.commands.filter((line) => line.startsWith('RCPT')).length).toBe(40);
    expect(await metric(test, /^smtp_pushback_verdicts_total\{action="quarantine",detector="sfds"\}/)).toBe(1);
    const top = (await (await fetch(`http://127.0.0.1:${test.proxy.adminAddress.port}/sources?top=5`)).json()) as { sources: Array<{ source: string; flows: number; meanPacketBytes: number }> };
    expect(top.sources[0]).toMatchObject({ source: '127.13.0.1', flows: 40, set: 'fast' });
    expect(top.sources[0]!.meanPacketBytes).toBeGreaterThan(60);
  });

  it('does not punish a flash crowd of legitimate complete sessions', async () => {
    const test = await start('');
    const codes = await inParallel(200, 50, (index) => completeSession(test.port, `127.14.${Math.floor(index / 100)}.${(index % 100) + 1}`));
    expect(codes.filter((code) => code !== 250)).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(test.proxy.status().status).toBe(1);
    expect(await metric(test, /^smtp_pushback_verdicts_total/)).toBe(0);
    expect(upstream!.messages).toHaveLength(200);
  });

  it('lets allow-listed and proven senders pass untouched during a flood', async () => {
    const test = await start('pushback: { allow: ["127.15.0.1/32"] }\n');
    for (let index = 0; index < 3; index += 1) expect(await completeSession(test.port, '127.15.0.2')).toBe(250);
    await waitForAsync(async () => test.sessions.length === 3, 5_000, 'the proving sessions');
    await new Promise((resolve) => setTimeout(resolve, 200)); // the proven mark is written after the session
    await inParallel(100, 25, (index) => abandonedSession(test.port, `127.16.0.${index + 1}`));
    await waitForAsync(async () => test.proxy.status().status === -1, 5_000, 'status -1');
    expect(await completeSession(test.port, '127.15.0.1')).toBe(250);
    expect(await completeSession(test.port, '127.15.0.2')).toBe(250);
    expect(await label(test, '127.15.0.1', 1)).toBe('pass:allow-list');
    expect(await label(test, '127.15.0.2', 4)).toBe('pass:proven');
  });

  it('treats a slow or temp-failing Postfix as an attack: the status the screen acts on drops to 0', async () => {
    upstream = await FakeUpstream.start({ mailReply: '451 4.3.0 Queue file write error' });
    proxy = await startTestProxy(upstream.address, `${FAST}pushback: { upstreamPressure: { minReplies: 5, windowSeconds: 30 } }\n`);
    for (let index = 0; index < 6; index += 1) expect(await completeSession(proxy.port, `127.18.0.${index + 1}`)).toBe(451);
    await waitForAsync(async () => proxy!.proxy.effectiveStatus() === 0, 5_000, 'upstream pressure');
    // The pairs themselves look normal: only Postfix's 4xx share says the server is in trouble.
    expect(proxy.proxy.status().status).toBe(1);
    const status = (await (await fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}/status`)).json()) as { effectiveStatus: number; upstreamPressure: { pressured: boolean; tempFailRate: number } };
    expect(status).toMatchObject({ effectiveStatus: 0, upstreamPressure: { pressured: true, tempFailRate: 1 } });
  });

  it('one client provoking 4xx replies does not flip the status for everyone: 200 RCPTs answered 450', async () => {
    // Postfix's unknown_address_reject_code = 450 (or a relay attempt under defer_unauth_destination).
    const unknown = Array.from({ length: 20 }, (_, index) => `nobody${index}@example.test`);
    upstream = await FakeUpstream.start({ recipientReplies: Object.fromEntries(unknown.map((address) => [address, `450 4.1.1 <${address}>: Recipient address rejected: unverified address`])) });
    proxy = await startTestProxy(upstream.address, FAST);
    const greetingMs = async (localAddress: string): Promise<number> => {
      const started = performance.now();
      const dialog = await SmtpDialog.connect(proxy!.port, { localAddress });
      try {
        expect((await dialog.reply(5_000)).code).toBe(220);
        return performance.now() - started;
      } finally {
        dialog.destroy();
      }
    };
    const before = await greetingMs('127.19.0.2');
    for (let session = 0; session < 10; session += 1) {
      const dialog = await SmtpDialog.connect(proxy.port, { localAddress: '127.19.0.1' });
      try {
        expect((await dialog.reply(5_000)).code).toBe(220);
        await dialog.command('EHLO prober.example');
        expect((await dialog.command('MAIL FROM:<a@prober.example>')).code).toBe(250);
        for (const address of unknown) expect((await dialog.command(`RCPT TO:<${address}>`)).code).toBe(450);
        await dialog.command('QUIT');
      } finally {
        dialog.destroy();
      }
    }
    expect(upstream.commands.filter((line) => line.startsWith('RCPT')).length).toBe(200);
    // Past the reading's reuse (250 ms): what the screen acts on now.
    await new Promise((resolve) => setTimeout(resolve, 400));
    // Screened as a plain pass all along: its 4xx counted, capped at its share, not left out as a suspect's.
    expect(proxy.sessions.filter((record) => record.client === '127.19.0.1').map((record) => record.screen)).toEqual(Array(10).fill('pass'));
    expect(proxy.proxy.effectiveStatus()).toBe(1);
    const status = (await (await fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}/status`)).json()) as { effectiveStatus: number; upstreamPressure: Record<string, unknown> };
    expect(status).toMatchObject({ effectiveStatus: 1, upstreamPressure: { pressured: false, tempFailSources: 1 } });
    // Other clients are greeted as before (no critical greet wait of 1 s).
    const after = await greetingMs('127.19.0.3');
    expect(after).toBeLessThan(before + 300);
  });

  it('observe mode computes and logs verdicts but enforces nothing', async () => {
    const test = await start('mode: observe\n');
    // Not cut: the early talker gets the greeting (test/integration/observe-mode.test.ts), and is counted.
    expect(await earlyTalker(test.port, '127.17.0.1')).toBe(220);
    await waitForAsync(async () => (await metric(test, /^smtp_pushback_verdicts_total\{action="tarpit"/)) === 1, 5_000, 'the verdict');
    expect(await completeSession(test.port, '127.17.0.1')).toBe(250);
    expect(await label(test, '127.17.0.1', 2)).toBe('observe:tarpit:cached');
    expect(await metric(test, /^smtp_pushback_actions_total\{action="tarpit",enforced="false"\}/)).toBe(1);
    expect(await metric(test, /^smtp_pushback_actions_total\{action="tarpit",enforced="true"\}/)).toBe(0);
  });
});
