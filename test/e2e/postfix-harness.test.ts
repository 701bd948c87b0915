// The throwaway Postfix itself: delivers to virtual maildirs, rejects unknown users at RCPT, honours
// XCLIENT from loopback (and then applies relay rules to the handed-over client), and leaves no
// process or directory behind. The proxy's e2e suites build on exactly these behaviours.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  liveGroupMembers,
  postfixAvailable,
  postfixUnavailableReason,
  startPostfix,
  type PostfixInstance,
} from '../support/postfix.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

const skipReason = postfixUnavailableReason();
if (skipReason !== undefined) console.warn(`skipping Postfix e2e: ${skipReason}`);

describe.skipIf(!postfixAvailable() && process.env.CI !== 'true')('throwaway Postfix harness', () => {
  let postfix: PostfixInstance;

  beforeAll(async () => {
    postfix = await startPostfix({ users: ['alice', 'bob'] });
  });

  afterAll(async () => {
    await postfix?.stop();
  });

  it('delivers a message to a known user as one maildir file', async () => {
    const transport = nodemailer.createTransport({
      host: postfix.host,
      port: postfix.port,
      secure: false,
      ignoreTLS: true,
      name: 'sender.test',
    });
    const marker = `harness-body-${Date.now()}`;
    const info = await transport.sendMail({
      from: 'someone@sender.test',
      to: `alice@${postfix.domain}`,
      subject: 'harness delivery',
      text: `hello from the harness test\n${marker}\n`,
    });
    transport.close();
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-F]+/);

    const [file] = await postfix.waitForMail('alice', 1, 10_000);
    const delivered = await readFile(file as string, 'utf8');
    expect(delivered).toContain(marker);
    expect(delivered).toContain(`Delivered-To: alice@${postfix.domain}`);
    await postfix.waitForLog(/status=sent \(delivered to maildir\)/, 5_000);
  });

  it('rejects an unknown user with 550 at RCPT', async () => {
    const transport = nodemailer.createTransport({
      host: postfix.host,
      port: postfix.port,
      secure: false,
      ignoreTLS: true,
    });
    const failure = await transport
      .sendMail({ from: 'someone@sender.test', to: `nobody@${postfix.domain}`, subject: 'x', text: 'x' })
      .then(() => undefined, (error: unknown) => error as { responseCode?: number; response?: string; command?: string });
    transport.close();
    expect(failure?.responseCode).toBe(550);
    expect(failure?.response).toMatch(/^550 5\.1\.1 .*User unknown in virtual mailbox table/);
    await postfix.waitForLog(/NOQUEUE: reject: RCPT from .*: 550 5\.1\.1 <nobody@example\.test>/, 5_000);
  });

  it('accepts XCLIENT from loopback and logs the handed-over client', async () => {
    await postfix.markLog();
    const dialog = await SmtpDialog.connect(postfix.port, { host: postfix.host });
    const line = async (command: string): Promise<string> => {
      const reply = await dialog.command(command);
      return `${reply.code} ${reply.text}`;
    };
    try {
      expect((await dialog.reply()).text).toMatch(/^postfix\.test ESMTP/);
      expect(await line('EHLO proxy.test')).toMatch(/\bXCLIENT .*\bADDR\b/);
      // Success is a fresh 220 greeting, after which the session starts over with EHLO.
      expect(await line('XCLIENT ADDR=203.0.113.7 NAME=client.example.org')).toMatch(/^220 /);
      expect(await line('EHLO client.example.org')).toMatch(/^250 /);
      expect(await line('MAIL FROM:<sender@client.example.org>')).toMatch(/^250 /);
      // The handed-over client is outside mynetworks, so relaying elsewhere is refused.
      expect(await line('RCPT TO:<someone@elsewhere.test>')).toMatch(/^554 5\.7\.1 .*Relay access denied/);
      expect(await line(`RCPT TO:<bob@${postfix.domain}>`)).toMatch(/^250 /);
      expect(await line('DATA')).toMatch(/^354 /);
      expect(await line('Subject: via xclient\r\n\r\nxclient body\r\n.')).toMatch(/^250 .*queued as/);
      expect(await line('QUIT')).toMatch(/^221 /);
    } finally {
      dialog.destroy();
    }

    expect(await postfix.waitForLog(/connect from unknown\[127\.0\.0\.1\]/, 5_000)).toBeTruthy();
    expect(await postfix.waitForLog(/: client=client\.example\.org\[203\.0\.113\.7\]$/, 5_000)).toBeTruthy();
    await postfix.waitForLog(/NOQUEUE: reject: RCPT from client\.example\.org\[203\.0\.113\.7\]: 554 5\.7\.1/, 5_000);
    const [file] = await postfix.waitForMail('bob', 1, 10_000);
    expect(await readFile(file as string, 'utf8')).toMatch(/^Received: from client\.example\.org \(client\.example\.org \[203\.0\.113\.7\]\)/m);
  });
});

describe.skipIf(!postfixAvailable() && process.env.CI !== 'true')('throwaway Postfix lifecycle', () => {
  it('runs instances side by side and leaves nothing behind after stop', async () => {
    const [first, second] = await Promise.all([startPostfix(), startPostfix()]);
    expect(first.port).not.toBe(second.port);
    expect(first.queueDir).not.toBe(second.queueDir);
    expect(liveGroupMembers(first.masterPid).length).toBeGreaterThan(0);

    await Promise.all([first.stop(), second.stop()]);
    await first.stop(); // idempotent
    for (const instance of [first, second]) {
      expect(existsSync(instance.dir)).toBe(false);
      expect(liveGroupMembers(instance.masterPid)).toEqual([]);
    }
  });

  it('refuses a port that is already taken instead of sharing it', async () => {
    // Postfix binds with SO_REUSEPORT: without this check two instances would split the connections.
    const holder = await startPostfix();
    try {
      await expect(startPostfix({ port: holder.port })).rejects.toThrow(/is in use/);
    } finally {
      await holder.stop();
    }
  });

  it('says why Postfix refused its config, and cleans up', async () => {
    const started = startPostfix({ mainCf: { message_size_limit: 'lots' } });
    const failure = await started.then(
      async (instance) => {
        await instance.stop();
        return 'started anyway';
      },
      (error: unknown) => String(error),
    );
    expect(failure).toMatch(/fatal: bad numerical configuration: message_size_limit = lots/);
    const dir = /Postfix in (\S+)/.exec(failure)?.[1];
    expect(dir).toMatch(/^\/tmp\/smtp-pushback-postfix-/);
    expect(existsSync(dir as string)).toBe(false);
  });
});
