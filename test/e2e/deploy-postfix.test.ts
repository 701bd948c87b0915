// The Postfix snippets of deploy/postfix with a real Postfix behind the proxy: mail for a local
// mailbox is delivered, relaying elsewhere is refused, and it stays refused when XCLIENT is missing
// (upstream.xclient: off), because the proxy's address is not in mynetworks. With Debian's stock
// mynetworks (127.0.0.0/8) instead, the same session relays: the open relay the snippet prevents.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { masterCfOverrides, parseMainCf, readRepoFile } from '../support/deploy-files.js';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

// In CI Postfix is installed by .ci/install-deps.sh, so a missing Postfix there is a failure, not a skip.
const runE2e = postfixAvailable() || process.env.CI === 'true';
if (!runE2e) console.warn(`skipping Postfix e2e: ${postfixUnavailableReason()}`);

const CLIENT = '127.0.0.5';

describe.skipIf(!runE2e)('Postfix configured with deploy/postfix behind the proxy', () => {
  const snippet = parseMainCf(readRepoFile('deploy/postfix/main.cf.snippet'));
  const service = masterCfOverrides(readRepoFile('deploy/postfix/master.cf.snippet'), '127.0.0.1:10025') ?? {};
  const xclientHosts = (service.smtpd_authorized_xclient_hosts ?? '').split(/[\s,]+/).filter(Boolean);
  let postfix: PostfixInstance;
  let stockPostfix: PostfixInstance;
  const proxies: TestProxy[] = [];

  beforeAll(async () => {
    [postfix, stockPostfix] = await Promise.all([
      startPostfix({ users: ['alice'], xclientHosts, mainCf: snippet }),
      startPostfix({ users: ['alice'], xclientHosts, mainCf: { ...snippet, mynetworks: '127.0.0.0/8 [::1]/128' } }),
    ]);
  });

  afterAll(async () => {
    await Promise.all(proxies.map((proxy) => proxy.stop()));
    await Promise.all([postfix?.stop(), stockPostfix?.stop()]);
  });

  async function proxyTo(instance: PostfixInstance, xclient: 'required' | 'off'): Promise<TestProxy> {
    const proxy = await startTestProxy(`${instance.host}:${instance.port}`, `upstream: { xclient: ${xclient} }\n`);
    proxies.push(proxy);
    return proxy;
  }

  /** A client outside every trusted network: the replies to MAIL and to each RCPT. */
  async function recipients(proxy: TestProxy, rcpts: string[]): Promise<{ dialog: SmtpDialog; replies: string[] }> {
    const dialog = await SmtpDialog.connect(proxy.port, { localAddress: CLIENT });
    expect((await dialog.reply()).code).toBe(220);
    expect((await dialog.command('EHLO client.outside.test')).code).toBe(250);
    const replies = [await dialog.command('MAIL FROM:<someone@outside.test>')];
    for (const rcpt of rcpts) replies.push(await dialog.command(`RCPT TO:<${rcpt}>`));
    return { dialog, replies: replies.map((reply) => `${reply.code} ${reply.text}`) };
  }

  it('delivers to a local mailbox and refuses relaying, judging the real client through XCLIENT', async () => {
    const proxy = await proxyTo(postfix, 'required');
    const { dialog, replies } = await recipients(proxy, ['victim@elsewhere.test', 'alice@example.test']);
    expect(replies[0]).toMatch(/^250 /);
    expect(replies[1]).toMatch(/^554 5\.7\.1 <victim@elsewhere\.test>: Relay access denied/);
    expect(replies[2]).toMatch(/^250 /);
    expect((await dialog.command('DATA')).code).toBe(354);
    expect((await dialog.command('Subject: deploy\r\n\r\nthrough the snippets\r\n.')).text).toMatch(/queued as/);
    await dialog.command('QUIT');
    dialog.destroy();
    await postfix.waitForMail('alice', 1, 10_000);
    await postfix.waitForLog(new RegExp(`client=unknown\\[${CLIENT.replace(/\./g, '\\.')}\\]`), 5_000);
  });

  it('still refuses relaying when XCLIENT is missing, as the proxy is not in mynetworks', async () => {
    const proxy = await proxyTo(postfix, 'off');
    const { dialog, replies } = await recipients(proxy, ['victim@elsewhere.test']);
    expect(replies[1]).toMatch(/^554 5\.7\.1 <victim@elsewhere\.test>: Relay access denied/);
    dialog.destroy();
  });

  it('with the proxy inside mynetworks, the same client relays: what the snippet prevents', async () => {
    const proxy = await proxyTo(stockPostfix, 'off');
    const { dialog, replies } = await recipients(proxy, ['victim@elsewhere.test']);
    // Past the relay restrictions: only the test instance's disabled outbound transport stops it.
    expect(replies[1]).not.toMatch(/Relay access denied/);
    expect(replies[1]).toMatch(/outbound mail disabled in the test instance/);
    await dialog.command('RSET');
    dialog.destroy();
  });
});
