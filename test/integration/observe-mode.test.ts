// Observe mode observes: each decision the proxy would make is still noted, and none changes what the
// client gets. Each behaviour is run in enforce mode (the decision is carried out) and in observe mode
// (the client gets the session it would get without the proxy's decisions): the early talker, a PROXY
// header from a peer not in server.proxyProtocolFrom, the stress idle time-out and the stress greet wait.
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import type { Policy } from '../../src/config/schema.js';
import { Screen } from '../../src/policy/screen.js';
import { MemoryKv } from '../../src/state/memory-kv.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

async function start(mode: 'enforce' | 'observe', yaml = ''): Promise<TestProxy> {
  upstream = await FakeUpstream.start();
  proxy = await startTestProxy(upstream.address, `mode: ${mode}\n${yaml}`);
  return proxy;
}

/** Connects and writes `line` at once, before any greeting could have come. */
async function talkFirst(port: number, line: string, localAddress: string): Promise<SmtpDialog> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  dialog.write(`${line}\r\n`);
  return dialog;
}

describe('an early talker', () => {
  it('enforce: is cut with 421 before any greeting', async () => {
    const test = await start('enforce');
    const dialog = await talkFirst(test.port, 'EHLO too.early', '127.30.0.1');
    expect(await dialog.reply()).toEqual({ code: 421, text: expect.stringMatching(/^4\.5\.0 .*you talk too soon$/) });
    expect(await dialog.closedByServer()).toBe(true);
    const [record] = await test.waitForSessions(1);
    expect(record).toMatchObject({ end: 'early-talker', misbehaviour: { earlyTalker: true } });
  });

  it('observe: gets the greeting, the answer to what it said, and a whole session; the early talk is still noted', async () => {
    const test = await start('observe');
    const dialog = await talkFirst(test.port, 'EHLO too.early', '127.30.0.2');
    expect((await dialog.reply()).code).toBe(220);
    expect(await dialog.reply()).toMatchObject({ code: 250 });
    expect((await dialog.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await dialog.command('RCPT TO:<b@example.test>')).code).toBe(250);
    expect((await dialog.command('DATA')).code).toBe(354);
    expect((await dialog.command('Subject: early\r\n\r\nbody\r\n.')).code).toBe(250);
    expect((await dialog.command('QUIT')).code).toBe(221);
    const [record] = await test.waitForSessions(1);
    expect(record).toMatchObject({ end: 'quit', outcome: 'relayed', misbehaviour: { earlyTalker: true } });
    expect(upstream!.messages).toHaveLength(1);
  });
});

describe('a PROXY header from a peer not in server.proxyProtocolFrom, sent at connect', () => {
  const HEADER = 'PROXY TCP4 198.51.100.7 192.0.2.1 40000 25';
  const BALANCER = 'server:\n  proxyProtocolFrom: [127.30.9.9]\n';

  it('enforce: is an early talker (421)', async () => {
    const test = await start('enforce', BALANCER);
    const dialog = await talkFirst(test.port, HEADER, '127.30.1.1');
    expect(await dialog.reply()).toMatchObject({ code: 421, text: expect.stringMatching(/you talk too soon/) });
    expect(await dialog.closedByServer()).toBe(true);
  });

  it('observe: gets the greeting, then the answer to an unknown command, and the session goes on', async () => {
    const test = await start('observe', BALANCER);
    const dialog = await talkFirst(test.port, HEADER, '127.30.1.2');
    expect((await dialog.reply()).code).toBe(220);
    expect(await dialog.reply()).toEqual({ code: 502, text: '5.5.2 Error: command not recognized' });
    expect((await dialog.command('EHLO client.test')).code).toBe(250);
    expect((await dialog.command('QUIT')).code).toBe(221);
    const [record] = await test.waitForSessions(1);
    expect(record).toMatchObject({ client: '127.30.1.2', end: 'quit', misbehaviour: { earlyTalker: true, unknownCommands: 1 } });
  });
});

describe('the stress idle time-out (Postfix near its process limit: one upstream connection held of one)', () => {
  const STRESS = 'upstream:\n  maxConnections: 1\nlimits:\n  idleTimeoutSeconds: 60\npushback:\n  stressIdleTimeoutSeconds: 1\nentropy:\n  statusIntervalMs: 100\n';

  /**
   * One client holds the only upstream connection in a transaction (NOOPs keep it from timing out,
   * which would end the stress); another greets and goes quiet.
   */
  async function stressedIdleClient(test: TestProxy): Promise<{ holder: SmtpDialog; idle: SmtpDialog; stop: () => void }> {
    const holder = await SmtpDialog.connect(test.port, { localAddress: '127.30.2.1' });
    expect((await holder.reply()).code).toBe(220);
    await holder.command('EHLO holder.test');
    expect((await holder.command('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect(test.proxy.listener.upstreamNearLimit).toBe(true);
    const keepAlive = setInterval(() => holder.write('NOOP\r\n'), 200);
    const idle = await SmtpDialog.connect(test.port, { localAddress: '127.30.2.2' });
    expect((await idle.reply()).code).toBe(220);
    expect((await idle.command('EHLO idle.test')).code).toBe(250);
    return { holder, idle, stop: () => { clearInterval(keepAlive); holder.destroy(); } };
  }

  it('enforce: an idle client is cut after the short time-out', async () => {
    const test = await start('enforce', STRESS);
    const { idle, stop } = await stressedIdleClient(test);
    try {
      expect(await idle.reply(10_000)).toEqual({ code: 421, text: expect.stringMatching(/^4\.4\.2 .*timeout exceeded$/) });
    } finally {
      stop();
    }
  });

  it('observe: an idle client keeps the configured idle time-out', async () => {
    const test = await start('observe', STRESS);
    const { idle, stop } = await stressedIdleClient(test);
    try {
      // Three times the stress time-out, and many status ticks: nothing comes, the session is open.
      await expect(idle.reply(3_000)).rejects.toThrow(/no reply within/);
      expect(idle.closed).toBe(false);
      expect((await idle.command('NOOP')).code).toBe(250);
    } finally {
      idle.destroy();
      stop();
    }
  });
});

describe('the stress greet wait (status 0: pushback.greetWaitMs.critical)', () => {
  function screenAt(mode: 'enforce' | 'observe'): Screen {
    const parsed = parsePolicyText(`mode: ${mode}\npushback:\n  greetWaitMs: { safe: 50, critical: 3000, danger: 6000 }\n`, 'greet-wait.yaml', {});
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    const policy: Policy = parsed.policy;
    return new Screen({
      policy: () => policy,
      kv: new MemoryKv(),
      status: () => 0,
      // The stress waits go to clients with points against them: this one sits in a suspect /24.
      prefixes: { suspectPrefix: () => ({ prefix: '192.0.2.0/24', family: 'ipv4', lengthBits: 24, members: 5 }), addSuspect: () => undefined },
      sfds: () => undefined,
      logger: pino({ level: 'silent' }),
      metrics: { verdict: () => undefined, decision: () => undefined, kvError: () => undefined },
      quarantineAvailable: () => true,
    });
  }

  it('enforce: an unproven client with points against it waits the critical greet wait', async () => {
    expect((await screenAt('enforce').atConnect({ address: '192.0.2.10', port: 1 })).greetDelayMs).toBeGreaterThanOrEqual(3000);
  });

  it('observe: an unproven client with points against it waits only the calm greet wait', async () => {
    expect((await screenAt('observe').atConnect({ address: '192.0.2.10', port: 1 })).greetDelayMs).toBe(50);
  });
});
