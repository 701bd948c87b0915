// End to end: quarantined messages from two original clients force-released into a throwaway Postfix. The
// maildir files hold the stored bytes, Postfix's log names the ORIGINAL clients and their HELO (XCLIENT), and a
// recipient Postfix does not know gets the entry rejected and kept, with a delivery status notice to the sender.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import { ReleaseScheduler } from '../../src/quarantine/release-scheduler.js';
import { QuarantineSpool } from '../../src/quarantine/spool.js';
import type { NewEntry } from '../../src/quarantine/spool-entry.js';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../support/postfix.js';

// In CI Postfix is installed by .ci/install-deps.sh, so a missing Postfix there is a failure, not a skip.
const runE2e = postfixAvailable() || process.env.CI === 'true';
if (!runE2e) console.warn(`skipping Postfix e2e: ${postfixUnavailableReason()}`);

function message(subject: string, from: string, to: string): Buffer {
  return Buffer.from(
    `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: Wed, 15 Jan 2025 12:00:00 +0000\r\n` +
    `Message-ID: <${subject}@remote.test>\r\n\r\n.leading dot\r\n..two dots\r\ncaf\xe9 8-bit \xff\r\n.\r\nend of ${subject}\r\n`,
    'latin1',
  );
}

describe.skipIf(!runE2e)('quarantine release into a real Postfix', () => {
  let postfix: PostfixInstance;
  let dir: string;
  let spool: QuarantineSpool;
  let scheduler: ReleaseScheduler;

  beforeAll(async () => {
    postfix = await startPostfix({ users: ['alice', 'bob'] });
    dir = await mkdtemp(join(tmpdir(), 'pushback-release-e2e-'));
    spool = await QuarantineSpool.open(dir, { maxBytes: 1e8, maxMessages: 100 }, { hostname: 'proxy.test' });
    const parsed = parsePolicyText(JSON.stringify({
      server: { hostname: 'proxy.test' },
      upstream: { address: `${postfix.host}:${postfix.port}`, xclient: 'required', replyTimeoutMs: 10_000 },
      quarantine: { release: { messagesPerSecond: 20, concurrency: 2, bounceRejected: true } },
    }), 'e2e', {});
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
    const policy = parsed.policy;
    scheduler = new ReleaseScheduler({
      spool,
      policy: () => policy,
      // A danger status and no window: only force releases anything here.
      status: () => -1,
      upstreamLatencyMs: () => null,
      stillSuspect: async () => undefined,
      logger: { info: () => undefined, warn: () => undefined, error: (fields, text) => console.error(text, fields) },
      metrics: { released: () => undefined, retried: () => undefined, rejected: () => undefined, expired: () => undefined },
    });
  });

  afterAll(async () => {
    await scheduler?.stop();
    await spool?.close();
    await postfix?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('delivers force-released mail as the original clients, and keeps what Postfix rejects', async () => {
    const entry = (client: NewEntry['client'], sender: string, recipient: string): NewEntry => ({
      client, mailFrom: { address: sender, params: { BODY: '8BITMIME' } }, recipients: [recipient], verdict: { reasons: ['sfds:flood'], score: 20 },
    });
    const seven = { address: '127.0.0.7', port: 40_007, helo: 'seven.client.test' };
    const nine = { address: '198.51.100.9', port: 40_009, helo: 'nine.remote.test' };
    const toAlice = await spool.write(entry(seven, 'sender@remote.test', 'alice@example.test'), Readable.from([message('for-alice', 'sender@remote.test', 'alice@example.test')]));
    const toBob = await spool.write(entry(nine, 'sender@remote.test', 'bob@example.test'), Readable.from([message('for-bob', 'sender@remote.test', 'bob@example.test')]));
    const toNobody = await spool.write(entry(nine, 'bob@example.test', 'nobody@example.test'), Readable.from([message('for-nobody', 'bob@example.test', 'nobody@example.test')]));
    const stored = new Map<string, string>();
    for (const meta of [toAlice, toBob]) {
      const chunks: Buffer[] = [];
      for await (const chunk of await spool.readMessage(meta.id)) chunks.push(chunk as Buffer);
      stored.set(meta.id, Buffer.concat(chunks).toString('latin1').replace(/\r\n/g, '\n'));
    }

    expect(await scheduler.release([toAlice.id], { force: false })).toMatchObject([{ outcome: 'scheduled' }]);
    const results = await scheduler.release([toAlice.id, toBob.id, toNobody.id], { force: true });
    expect(results.map((result) => result.outcome)).toEqual(['released', 'released', 'rejected']);

    // Maildir files use LF line ends; Postfix adds its own headers above ours. Our Received header and the
    // client's headers and body are otherwise exactly what was stored.
    const [aliceFile] = await postfix.waitForMail('alice', 1, 10_000);
    const alice = await readFile(aliceFile!, 'latin1');
    expect(alice.endsWith(stored.get(toAlice.id)!)).toBe(true);
    expect(alice).toMatch(/^Received: from seven\.client\.test \(unknown \[127\.0\.0\.7\]\)\n\tby /m);
    const bobFiles = await postfix.waitForMail('bob', 2, 10_000);
    const bob = await Promise.all(bobFiles.map((file) => readFile(file, 'latin1')));
    const bobMessage = bob.find((text) => text.includes('Subject: for-bob'));
    expect(bobMessage?.endsWith(stored.get(toBob.id)!)).toBe(true);
    expect(bobMessage).toMatch(/^Received: from nine\.remote\.test \(unknown \[198\.51\.100\.9\]\)\n\tby /m);

    await postfix.waitForLog(/: client=unknown\[127\.0\.0\.7\]/, 5_000);
    await postfix.waitForLog(/: client=unknown\[198\.51\.100\.9\]/, 5_000);
    await postfix.waitForLog(/reject: RCPT from unknown\[198\.51\.100\.9\]: 550 5\.1\.1 <nobody@example\.test>.*helo=<nine\.remote\.test>/, 5_000);

    expect(spool.get(toAlice.id)).toBeUndefined();
    expect(spool.get(toBob.id)).toBeUndefined();
    expect(spool.get(toNobody.id)).toMatchObject({ state: 'rejected', attempts: 1 });
    expect(spool.get(toNobody.id)?.lastError).toMatch(/^nobody@example\.test: 550 5\.1\.1 <nobody@example\.test>: Recipient address rejected/);

    // bounceRejected: the sender (bob) gets a delivery status notice from <>, quoting only the headers.
    const notice = bob.find((text) => text.includes('report-type=delivery-status'));
    expect(notice).toMatch(/^Return-Path: <>$/m);
    expect(notice).toContain('Final-Recipient: rfc822; nobody@example.test\nAction: failed\nStatus: 5.1.1\n');
    expect(notice).toContain('Subject: for-nobody');
    expect(notice).not.toContain('end of for-nobody');
  });
});
