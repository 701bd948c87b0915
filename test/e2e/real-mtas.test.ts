// Interop suite: the senders a real MX meets (swaks, msmtp, curl, Python's smtplib, Postfix and
// Exim as sending MTAs, and a raw client that half-closes after the final dot) -> the proxy -> a
// throwaway Postfix. Each message must arrive exactly once with its body intact, Postfix must log
// the sender's own address for it, and the sender must hear Postfix's own "queued as" for that very
// queue id. These are the mail flows that a proxy which works with our own client alone breaks:
// deferred on a half-close, duplicated on a retry, DSN or quoted local parts mangled on the way.
import { readFile, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bodyHash, filesWithTestId, readDelivered, testMessage, waitForTestId } from '../support/delivery-check.js';
import { eximUnavailableReason, startExim } from '../support/exim.js';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { startSendingPostfix, type SendingPostfix } from '../support/postfix-sender.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { rawHalfCloseSend, runClient, runSmtplib } from '../support/real-clients.js';
import { SmtpDialog } from '../support/smtp-dialog.js';
import { makeTestCertificate, type TestCertificate } from '../support/tls-cert.js';

const runE2e = postfixAvailable() || process.env.CI === 'true';
if (!runE2e) console.warn(`skipping real-MTA interop: ${postfixUnavailableReason()}`);
const runExim = runE2e && eximUnavailableReason() === undefined;

const listUsers = Array.from({ length: 40 }, (_, index) => `list${String(index + 1).padStart(2, '0')}`);
/** A late second copy (a retry after a lost reply) would land within this; we look again after it. */
const duplicateWindowMs = 1_500;
const deliveryTimeoutMs = 30_000;
const queuedAs = /250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)/;

let sequence = 0;
function newTestId(label: string): string {
  sequence++;
  return `${label}-${process.pid}-${sequence}`;
}

describe.skipIf(!runE2e)('real MTAs and MUAs as clients, through the proxy, to a real Postfix', () => {
  let postfix: PostfixInstance;
  let proxy: TestProxy;
  let proxy6: TestProxy;
  let certificate: TestCertificate;
  let workDir: string;

  beforeAll(async () => {
    certificate = await makeTestCertificate('mx.example.test');
    workDir = await mkdtemp(join(tmpdir(), 'pushback-interop-'));
    postfix = await startPostfix({ users: ['alice', 'bob', 'carol', 'dsn', ...listUsers] });
    const policy = [
      `server: { tls: { keyFile: ${JSON.stringify(certificate.keyFile)}, certFile: ${JSON.stringify(certificate.certFile)} } }`,
      'limits: { maxMessageBytes: 12000000 }',
    ].join('\n');
    proxy = await startTestProxy(`${postfix.host}:${postfix.port}`, policy);
    proxy6 = await startTestProxy(`${postfix.host}:${postfix.port}`, policy, { PUSHBACK_LISTEN: '[::1]:0' });
  }, 60_000);

  afterAll(async () => {
    await proxy?.stop();
    await proxy6?.stop();
    await postfix?.stop();
    await certificate?.remove();
    if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
  });

  /**
   * The message reached user exactly once (looked at again after the duplicate window), its body is
   * the sent body, and Postfix logged the original client for it. Returns Postfix's queue id.
   */
  async function expectDeliveredOnce(user: string, testId: string, sent: Buffer, source: string): Promise<string> {
    const [first] = await waitForTestId(postfix, user, testId, deliveryTimeoutMs);
    await new Promise((resolve) => setTimeout(resolve, duplicateWindowMs));
    expect(await filesWithTestId(postfix, user, testId)).toHaveLength(1);
    const delivered = await readDelivered(first!);
    expect(delivered.bodySha256).toBe(bodyHash(sent));
    const escaped = source.replace(/[.[\]]/g, '\\$&');
    await postfix.waitForLog(new RegExp(`${delivered.queueId}: client=unknown\\[${escaped}\\]`), 5_000);
    return delivered.queueId;
  }

  /** The client heard Postfix's own "queued as" for the queue id the message got. */
  function expectHeardQueued(output: string, queueId: string): void {
    expect(output).toMatch(new RegExp(`250 2\\.0\\.0 Ok: queued as ${queueId}\\b`));
  }

  /** swaks always ends DATA with CRLF . CRLF after the file, so the file leaves out the last CRLF. */
  async function messageFile(message: Buffer): Promise<string> {
    const path = join(workDir, `${sequence}.eml`);
    await writeFile(path, message.subarray(0, message.length - 2));
    return path;
  }

  describe('swaks', () => {
    const source = '127.0.0.11';
    const swaks = async (testId: string, message: Buffer, extra: string[], to = 'alice@example.test'): Promise<{ exitCode: number; output: string }> =>
      runClient('swaks', [
        '--server', '127.0.0.1', '--port', String(proxy.port), '-li', source, '--helo', 'swaks.sender.test',
        '--from', 'sender@sender.test', '--to', to, '--data', `@${await messageFile(message)}`, '--suppress-data', ...extra,
      ]);

    for (const [label, extra] of [['plain', []], ['STARTTLS', ['-tls']], ['pipelining', ['--pipeline']]] as const) {
      it(`${label}: delivered once, intact, and hears Postfix's queue id`, async () => {
        const testId = newTestId(`swaks-${label}`);
        const message = testMessage(testId);
        const result = await swaks(testId, message, [...extra]);
        expect(result.exitCode, result.output).toBe(0);
        if (label === 'STARTTLS') expect(result.output).toMatch(/TLS started/);
        expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
      }, 60_000);
    }

    it('10 MB: delivered once and byte-exact', async () => {
      const testId = newTestId('swaks-10mb');
      const message = testMessage(testId, { bytes: 10_000_000 });
      const result = await swaks(testId, message, ['--pipeline'], 'bob@example.test');
      expect(result.exitCode, result.output).toBe(0);
      expectHeardQueued(result.output, await expectDeliveredOnce('bob', testId, message, source));
    }, 90_000);

    it('over the size limit: 552 5.3.4 and nothing delivered', async () => {
      const testId = newTestId('swaks-oversize');
      const message = testMessage(testId, { bytes: 13_000_000 });
      const result = await swaks(testId, message, [], 'carol@example.test');
      expect(result.output).toMatch(/552 5\.3\.4 /);
      await new Promise((resolve) => setTimeout(resolve, duplicateWindowMs));
      expect(await filesWithTestId(postfix, 'carol', testId)).toHaveLength(0);
    }, 90_000);
  });

  describe('msmtp', () => {
    const source = '127.0.0.12';
    const msmtp = (message: Buffer, extra: string[], recipients = ['alice@example.test']): Promise<{ exitCode: number; output: string }> =>
      runClient('msmtp', [
        '--host=127.0.0.1', `--port=${proxy.port}`, `--source-ip=${source}`, '--domain=msmtp.sender.test', '--auth=off',
        '--from=sender@sender.test', '--debug', ...extra, '--', ...recipients,
      ], message);

    it('plain: delivered once and hears Postfix\'s queue id', async () => {
      const testId = newTestId('msmtp-plain');
      const message = testMessage(testId);
      const result = await msmtp(message, ['--tls=off']);
      expect(result.exitCode, result.output).toBe(0);
      expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
    }, 60_000);

    for (const version of ['1.2', '1.3']) {
      it(`STARTTLS pinned to TLS ${version}`, async () => {
        const testId = newTestId(`msmtp-tls${version}`);
        const message = testMessage(testId);
        const result = await msmtp(message, [
          '--tls=on', '--tls-starttls=on', '--tls-certcheck=off', `--tls-priorities=NORMAL:-VERS-ALL:+VERS-TLS${version}`,
        ]);
        expect(result.exitCode, result.output).toBe(0);
        expect(result.output).toMatch(new RegExp(`TLS session parameters:\\s+\\(TLS${version.replace('.', '\\.')}\\)`));
        expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
      }, 60_000);
    }

    it('DSN: -N success,failure is accepted and passed on (exit 0)', async () => {
      const testId = newTestId('msmtp-dsn');
      const message = testMessage(testId);
      const result = await msmtp(message, ['--tls=off', '--dsn-notify=success,failure', '--dsn-return=hdrs']);
      expect(result.exitCode, result.output).toBe(0);
      expect(result.output).toMatch(/RCPT TO:<alice@example\.test> NOTIFY=SUCCESS,FAILURE/);
      expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
    }, 60_000);
  });

  describe('curl', () => {
    const source = '127.0.0.13';
    const curl = (message: Buffer, extra: string[], recipients: string[]): Promise<{ exitCode: number; output: string }> =>
      runClient('curl', [
        '-sS', '-v', `smtp://127.0.0.1:${proxy.port}/curl.sender.test`, '--interface', source,
        '--mail-from', 'sender@sender.test', ...recipients.flatMap((rcpt) => ['--mail-rcpt', rcpt]), '--upload-file', '-', ...extra,
      ], message);

    it('plain: delivered once and hears Postfix\'s queue id', async () => {
      const testId = newTestId('curl-plain');
      const message = testMessage(testId);
      const result = await curl(message, [], ['alice@example.test']);
      expect(result.exitCode, result.output).toBe(0);
      expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
    }, 60_000);

    it('STARTTLS pinned to TLS 1.2', async () => {
      const testId = newTestId('curl-tls12');
      const message = testMessage(testId);
      const result = await curl(message, ['--ssl-reqd', '-k', '--tlsv1.2', '--tls-max', '1.2'], ['alice@example.test']);
      expect(result.exitCode, result.output).toBe(0);
      expect(result.output).toMatch(/TLSv1\.2/);
      expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
    }, 60_000);

    it('50 recipients, 10 of them unknown: each known one gets it once, each unknown gets Postfix\'s 550', async () => {
      const testId = newTestId('curl-50');
      const message = testMessage(testId);
      const unknown = Array.from({ length: 10 }, (_, index) => `nobody${index}@example.test`);
      const recipients = [...listUsers.map((user) => `${user}@example.test`), ...unknown];
      const result = await curl(message, ['--mail-rcpt-allowfails'], recipients);
      expect(result.exitCode, result.output).toBe(0);
      expect(result.output.match(/550 5\.1\.1 <nobody\d@example\.test>: Recipient address rejected: User unknown/g)).toHaveLength(10);
      const queueId = await expectDeliveredOnce('list01', testId, message, source);
      for (const user of listUsers) expect(await filesWithTestId(postfix, user, testId), user).toHaveLength(1);
      expectHeardQueued(result.output, queueId);
    }, 90_000);
  });

  describe("Python's smtplib", () => {
    const source = '127.0.0.14';
    // job: { tls: null | "1.2" | "1.3", transactions: [{ from, to: [..], options: [..], rcptOptions: [..] }], rsetFirst }
    const script = [
      'data = sys.stdin.buffer.read().split(b"\\n--next-message--\\n")',
      'client = smtplib.SMTP(host, port, local_hostname="smtplib.sender.test", source_address=(source, 0), timeout=60)',
      'client.ehlo()',
      'if job.get("tls") is not None:',
      '    say(*client.starttls(context=tls_context(job["tls"])))',
      '    client.ehlo()',
      'if job.get("rsetFirst"):',
      '    say(*client.mail("abandoned@sender.test"))',
      '    say(*client.rcpt("alice@example.test"))',
      '    say(*client.rset())',
      'for index, transaction in enumerate(job["transactions"]):',
      '    say(*client.mail(transaction["from"], transaction.get("options", [])))',
      '    for rcpt in transaction["to"]:',
      '        say(*client.rcpt(rcpt, transaction.get("rcptOptions", [])))',
      '    say(*client.data(data[index]))',
      'say(*client.quit())',
    ].join('\n');
    const smtplib = (job: unknown, messages: Buffer[], port = proxy.port, host = '127.0.0.1', from = source) =>
      runSmtplib(script, host, port, from, job, Buffer.concat(messages.flatMap((message, index) => (index === 0 ? [message] : [Buffer.from('\n--next-message--\n'), message]))));

    for (const tls of [null, '1.2', '1.3'] as const) {
      it(`${tls === null ? 'plain' : `STARTTLS TLS ${tls}`}: delivered once and hears Postfix's queue id`, async () => {
        const testId = newTestId(`smtplib-${tls ?? 'plain'}`);
        const message = testMessage(testId);
        const result = await smtplib({ tls, transactions: [{ from: 'sender@sender.test', to: ['alice@example.test'] }] }, [message]);
        expect(result.exitCode, result.output).toBe(0);
        if (tls !== null) expect(result.output).toMatch(/^220 2\.0\.0 Ready to start TLS/m);
        expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, source));
      }, 60_000);
    }

    it('SMTPUTF8 and 8BITMIME: a UTF-8 address and an 8-bit body arrive as sent', async () => {
      const testId = newTestId('smtplib-utf8');
      const message = testMessage(testId, { headers: 'X-Greeting: Grüße, José', body: Buffer.from('Grüße aus Köln, 8-bit: \xe9\xff\r\n', 'latin1') });
      const result = await smtplib({
        tls: null,
        transactions: [{ from: 'josé@sender.test', to: ['alice@example.test'], options: ['SMTPUTF8', 'BODY=8BITMIME'] }],
      }, [message]);
      expect(result.exitCode, result.output).toBe(0);
      const queueId = await expectDeliveredOnce('alice', testId, message, source);
      expectHeardQueued(result.output, queueId);
      await postfix.waitForLog(new RegExp(`${queueId}: from=<josé@sender\\.test>`), 5_000);
      const [file] = await filesWithTestId(postfix, 'alice', testId);
      expect((await readFile(file!)).includes(Buffer.from('\nX-Greeting: Grüße, José\n', 'utf8'))).toBe(true);
    }, 60_000);

    it('RSET, then two transactions on one connection: each delivered once, each its own queue id', async () => {
      const first = newTestId('smtplib-tx1');
      const second = newTestId('smtplib-tx2');
      const messages = [testMessage(first), testMessage(second)];
      const result = await smtplib({
        tls: null,
        rsetFirst: true,
        transactions: [
          { from: 'sender@sender.test', to: ['alice@example.test'] },
          { from: 'sender@sender.test', to: ['bob@example.test'] },
        ],
      }, messages);
      expect(result.exitCode, result.output).toBe(0);
      expect(await filesWithTestId(postfix, 'alice', 'abandoned')).toHaveLength(0);
      const firstId = await expectDeliveredOnce('alice', first, messages[0]!, source);
      const secondId = await expectDeliveredOnce('bob', second, messages[1]!, source);
      expect(firstId).not.toBe(secondId);
      expectHeardQueued(result.output, firstId);
      expectHeardQueued(result.output, secondId);
    }, 60_000);

    it('IPv6: a client on ::1 is logged by Postfix as ::1', async () => {
      const testId = newTestId('smtplib-ipv6');
      const message = testMessage(testId);
      const result = await smtplib({ tls: null, transactions: [{ from: 'sender@sender.test', to: ['alice@example.test'] }] }, [message], proxy6.port, '::1', '::1');
      expect(result.exitCode, result.output).toBe(0);
      expectHeardQueued(result.output, await expectDeliveredOnce('alice', testId, message, '::1'));
    }, 60_000);
  });

  describe('Postfix as the sending MTA', () => {
    const source = '127.0.0.15';
    let senders: SendingPostfix[] = [];
    afterAll(async () => {
      await Promise.all(senders.map((sender) => sender.stop()));
      senders = [];
    });
    const sender = async (options: Parameters<typeof startSendingPostfix>[0]): Promise<SendingPostfix> => {
      const started = await startSendingPostfix(options);
      senders.push(started);
      return started;
    };

    for (const version of ['1.2', '1.3']) {
      it(`TLS ${version} required, pipelining: sent on the first attempt, delivered once`, async () => {
        const mta = await sender({
          relayHost: '127.0.0.1', relayPort: proxy.port, tlsLevel: 'encrypt', bindAddress: source,
          tlsProtocols: `>=TLSv${version}, <=TLSv${version}`, hostname: `postfix${version.replace('.', '')}.sender.test`,
        });
        const testId = newTestId(`postfix-tls${version}`);
        const message = testMessage(testId);
        await mta.submit('sender@sender.test', ['alice@example.test', 'bob@example.test'], message);
        const relayed = await mta.waitForRelay(`${testId}@sender.test`, 2, deliveryTimeoutMs);
        expect(relayed.every((line) => line.includes('status=sent')), relayed.join('\n')).toBe(true);
        const queueId = await expectDeliveredOnce('alice', testId, message, source);
        expect(await filesWithTestId(postfix, 'bob', testId)).toHaveLength(1);
        expectHeardQueued(relayed.join('\n'), queueId);
        await mta.instance.waitForLog(new RegExp(`TLSv${version.replace('.', '\\.')}`), 5_000);
      }, 90_000);
    }

    it('DSN: the success notice says the same through the proxy as straight to Postfix', async () => {
      const viaProxy = await sender({ relayHost: '127.0.0.1', relayPort: proxy.port, tlsLevel: 'none', bindAddress: source, hostname: 'dsn1.sender.test' });
      const direct = await sender({ relayHost: postfix.host, relayPort: postfix.port, tlsLevel: 'none', bindAddress: '127.0.0.1', hostname: 'dsn2.sender.test' });
      // ENVID is xtext on the wire: "+" and "=" travel as +2B and +3D and must come back decoded.
      const envid = 'env+id=1';
      const notices: string[] = [];
      for (const [mta, label] of [[viaProxy, 'proxy'], [direct, 'direct']] as const) {
        const testId = newTestId(`postfix-dsn-${label}`);
        const before = (await postfix.mailboxFiles('dsn')).length;
        await mta.submit('dsn@example.test', ['carol@example.test'], testMessage(testId), { notify: 'success', envid, ret: 'hdrs' });
        await waitForTestId(postfix, 'carol', testId, deliveryTimeoutMs);
        const files = await postfix.waitForMail('dsn', before + 1, deliveryTimeoutMs);
        const notice = await readFile(files[files.length - 1]!, 'utf8');
        expect(notice).toContain(testId);
        notices.push(notice);
      }
      const fields = (notice: string): string[] => notice.split('\n').filter((line) => /^(Original-Envelope-Id|Original-Recipient|Final-Recipient|Action|Status):/.test(line));
      expect(fields(notices[0]!)).toEqual(fields(notices[1]!));
      expect(fields(notices[0]!)).toContain(`Original-Envelope-Id: ${envid}`);
      expect(fields(notices[0]!)).toContain('Original-Recipient: rfc822;carol@example.test');
      expect(fields(notices[0]!)).toContain('Action: delivered');
    }, 120_000);
  });

  describe.skipIf(!runExim)('Exim as the sending MTA', () => {
    const source = '127.0.0.16';
    for (const tls of ['off', '1.3'] as const) {
      it(`${tls === 'off' ? 'plaintext' : 'TLS 1.3 required'}: delivered on the first attempt, once`, async () => {
        const exim = await startExim({ host: '127.0.0.1', port: proxy.port, interface: source, tls });
        try {
          const testId = newTestId(`exim-${tls}`);
          const message = testMessage(testId);
          const result = await exim.send('sender@sender.test', ['alice@example.test'], message);
          expect(result.exitCode, result.stderr).toBe(0);
          const queueId = await expectDeliveredOnce('alice', testId, message, source);
          const mainlog = await exim.mainlog();
          expect(mainlog, mainlog).toMatch(new RegExp(`=> alice@example\\.test .*C="250 2\\.0\\.0 Ok: queued as ${queueId}"`));
          expect(mainlog).not.toMatch(/==|defer/i);
          if (tls === '1.3') expect(mainlog).toMatch(/X=TLS1\.3/);
        } finally {
          await exim.stop();
        }
      }, 120_000);
    }
  });

  it('a client that sends the final dot and QUIT in one write and half-closes: 250, 221, delivered once (10 of 10)', async () => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const testId = newTestId('halfclose');
      const message = testMessage(testId);
      const result = await rawHalfCloseSend({
        host: '127.0.0.1', port: proxy.port, localAddress: '127.0.0.17', from: 'sender@sender.test', to: 'bob@example.test',
        message: message.toString('latin1').replace(/\r\n$/, '') + '\r\n', timeoutMs: 15_000,
      });
      expect(result.end, result.received).toBe('closed');
      expect(result.received).toMatch(/^221 /m);
      const queueId = /250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)/.exec(result.received)?.[1];
      expect(queueId, result.received).toBeDefined();
      expect(await expectDeliveredOnce('bob', testId, message, '127.0.0.17')).toBe(queueId);
    }
  }, 120_000);

  it('legal but unusual addresses reach Postfix as sent, and the client gets Postfix\'s own answer', async () => {
    // Postfix itself quotes a local part that needs it when it logs ("a..b"@example.org), so the
    // judge is Postfix's handling of the same envelope sent straight to it: same replies, same from=.
    const addresses = ['"john doe"@example.org', 'a..b@example.org', '.a@example.org', 'user@example.org.'];
    for (const address of addresses) {
      const seen: string[] = [];
      for (const port of [postfix.port, proxy.port]) {
        const dialog = await SmtpDialog.connect(port, { localAddress: '127.0.0.18' });
        await dialog.reply();
        await dialog.command('EHLO odd.sender.test');
        const mail = await dialog.command(`MAIL FROM:<${address}>`);
        const rcpt = await dialog.command('RCPT TO:<carol@example.test>');
        let logged = '';
        if (mail.code === 250 && rcpt.code === 250) {
          const testId = newTestId('odd');
          expect((await dialog.command('DATA')).code).toBe(354);
          const data = await dialog.command(`${testMessage(testId).toString('latin1')}.`);
          const queueId = queuedAs.exec(`${data.code} ${data.text}`)?.[1];
          expect(queueId, `${data.code} ${data.text}`).toBeDefined();
          logged = (await postfix.waitForLog(new RegExp(`${queueId}: from=<`), 5_000)).replace(/^.*: from=/, 'from=').replace(/, size=\d+/, '');
        }
        await dialog.command('QUIT');
        seen.push(`${mail.code} ${mail.text} | ${rcpt.code} ${rcpt.text} | ${logged}`);
      }
      expect(seen[1], address).toBe(seen[0]);
      expect(seen[0], address).toMatch(/^250 .*\| 250 .*\| from=</);
    }
  }, 60_000);
});
