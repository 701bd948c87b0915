// The quarantine inside the proxy: a quarantined message gets 250 only once it is durable, a full
// spool defers, a client that drops leaves nothing, and after kill -9 every message that got 250 is
// in the spool whole, none partial, none twice.
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { QuarantineSpool } from '../../src/quarantine/spool.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startProxyProcess, type ProxyProcess } from '../support/proxy-process.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { inParallel } from '../support/sessions.js';

/** Every source is quarantined: the action table's only row. */
const QUARANTINE_ALL = 'pushback: { actions: [{ status: [1, 0, -1], minScore: 0, action: quarantine }] }\n';

let upstream: FakeUpstream | undefined;
let proxy: TestProxy | undefined;
let node: ProxyProcess | undefined;

afterEach(async () => {
  await proxy?.stop();
  await node?.stop();
  await upstream?.close();
  proxy = undefined;
  node = undefined;
});

/** Sends one message; resolves with the final reply (or the first refusal). */
async function send(port: number, body: string, recipient = 'b@example.test'): Promise<{ code: number; text: string }> {
  const dialog = await SmtpDialog.connect(port);
  try {
    await dialog.reply(10_000);
    await dialog.command('EHLO sender.example');
    for (const line of ['MAIL FROM:<a@sender.example>', `RCPT TO:<${recipient}>`, 'DATA']) {
      const reply = await dialog.command(line, 10_000);
      if (reply.code >= 400) return reply;
    }
    dialog.write(`${body}.\r\n`);
    return await dialog.reply(10_000);
  } finally {
    dialog.destroy();
  }
}

describe('quarantine in the proxy', () => {
  it('checks recipients live, holds the message, and defers when the spool is full', async () => {
    upstream = await FakeUpstream.start({ recipientReplies: { 'nobody@example.test': '550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown' } });
    proxy = await startTestProxy(upstream.address, `${QUARANTINE_ALL}quarantine: { maxMessages: 2 }\n`);
    expect(await send(proxy.port, 'Subject: one\r\n\r\nfirst\r\n', 'nobody@example.test')).toEqual({ code: 550, text: expect.stringMatching(/^5\.1\.1 /) });
    const first = await send(proxy.port, 'Subject: one\r\n\r\nfirst\r\n');
    expect(first.code).toBe(250);
    expect((await send(proxy.port, 'Subject: two\r\n\r\nsecond\r\n')).code).toBe(250);
    // Two held: the third is deferred at MAIL, so the sender keeps it and retries.
    expect(await send(proxy.port, 'Subject: three\r\n\r\nthird\r\n')).toEqual({ code: 452, text: expect.stringMatching(/^4\.3\.1 /) });
    expect(upstream.messages).toHaveLength(0);
    // Postfix saw MAIL and RCPT for the recipient checks, then RSET, never DATA.
    expect(upstream.commands.filter((line) => line === 'DATA')).toHaveLength(0);
    expect(upstream.commands).toContain('RSET');
  });

  it('stores nothing of a message over the size limit, which the client is told is refused (552)', async () => {
    upstream = await FakeUpstream.start();
    const spoolDir = mkdtempSync(join(tmpdir(), 'pushback-big-'));
    proxy = await startTestProxy(upstream.address, `${QUARANTINE_ALL}limits: { maxMessageBytes: 10000 }\n`, { PUSHBACK_SPOOL_DIR: spoolDir });
    expect((await send(proxy.port, `Subject: big\r\n\r\n${'y'.repeat(200_000)}\r\n`)).code).toBe(552);
    const small = await send(proxy.port, 'Subject: small\r\n\r\nfits\r\n');
    expect(small.code).toBe(250);
    // The sender hears an id of Postfix's own shape: nothing in the reply tells it the mail was held.
    expect(small.text).toMatch(/^2\.0\.0 Ok: queued as [0-9A-F]{11}$/);
    await proxy.stop();
    proxy = undefined;
    expect(readdirSync(join(spoolDir, 'msg'))).toHaveLength(1);
    expect(readdirSync(join(spoolDir, 'tmp'))).toEqual([]);
  });

  it('stores nothing for a client that drops mid-DATA', async () => {
    upstream = await FakeUpstream.start();
    const spoolDir = mkdtempSync(join(tmpdir(), 'pushback-q-'));
    proxy = await startTestProxy(upstream.address, QUARANTINE_ALL, { PUSHBACK_SPOOL_DIR: spoolDir });
    const dialog = await SmtpDialog.connect(proxy.port);
    await dialog.reply();
    await dialog.command('EHLO sender.example');
    await dialog.command('MAIL FROM:<a@sender.example>');
    await dialog.command('RCPT TO:<b@example.test>');
    expect((await dialog.command('DATA')).code).toBe(354);
    dialog.write(`Subject: cut\r\n\r\n${'partial line\r\n'.repeat(5_000)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
    dialog.destroy();
    await proxy.waitForSessions(1);
    await proxy.stop();
    proxy = undefined;
    expect(readdirSync(join(spoolDir, 'msg'))).toEqual([]);
    expect(readdirSync(join(spoolDir, 'meta'))).toEqual([]);
    expect(readdirSync(join(spoolDir, 'tmp'))).toEqual([]);
  });

  it('after kill -9, every message that got 250 is in the spool whole, none partial, none twice', async () => {
    upstream = await FakeUpstream.start();
    const spoolDir = mkdtempSync(join(tmpdir(), 'pushback-crash-'));
    node = await startProxyProcess(`log: { level: info }\n${QUARANTINE_ALL}`, { PUSHBACK_UPSTREAM: upstream.address, PUSHBACK_SPOOL_DIR: spoolDir });
    const acknowledged = new Map<string, string>();
    let killed = false;
    const body = (index: number): string => `Subject: crash ${index}\r\nX-Index: ${index}\r\n\r\n${`line ${index} `.repeat(2_000)}\r\n`;
    const sending = inParallel(400, 20, async (index) => {
      if (killed) return;
      const reply = await send(node!.smtpPort, body(index)).catch(() => undefined);
      const id = reply?.code === 250 ? /queued as (\S+)/.exec(reply.text)?.[1] : undefined;
      if (id) acknowledged.set(id, body(index));
    });
    // Kill the proxy mid-run, with messages in every stage of being written.
    while (acknowledged.size < 40) await new Promise((resolve) => setTimeout(resolve, 10));
    const exited = once(node.child, 'exit');
    node.child.kill('SIGKILL');
    killed = true;
    await sending;
    await exited; // reaped: the dead owner's lock is now stale

    const spool = await QuarantineSpool.open(spoolDir, { maxBytes: 1e10, maxMessages: 1e6 });
    try {
      const entries = spool.list();
      const ids = new Set(entries.map((entry) => entry.id));
      for (const [id, sent] of acknowledged) {
        expect(ids.has(id)).toBe(true);
        const stored = await new Response((await spool.readMessage(id)) as unknown as ReadableStream).text();
        // Our one Received header, then the message exactly as received.
        expect(stored.startsWith('Received: from sender.example')).toBe(true);
        expect(stored.endsWith(sent)).toBe(true);
      }
      // None twice: every stored message carries a distinct X-Index.
      const indexes = await Promise.all(entries.map(async (entry) => /X-Index: (\d+)/.exec(await new Response((await spool.readMessage(entry.id)) as unknown as ReadableStream).text())?.[1]));
      expect(new Set(indexes).size).toBe(entries.length);
      expect(readdirSync(join(spoolDir, 'tmp'))).toEqual([]);
    } finally {
      await spool.close();
    }
  });
});
