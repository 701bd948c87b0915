// What a real Postfix makes of the XCLIENT line that FCrDNS (the proxy's resolver, a real dnsmasq)
// produces: a PTR claiming trusted.partner.example no longer passes check_client_access (no relay),
// the partner's own address still does, and reject_unknown_client_hostname answers 5xx for no name
// but 4xx for a lookup that failed for now ([TEMPUNAVAIL]).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardConfirmedReverse } from '../../src/dns/fcrdns.js';
import { NodeDnsResolver } from '../../src/dns/resolver.js';
import { clientNameFields, xclientCommand } from '../../src/upstream/xclient.js';
import { parseHostPort } from '../../src/util/host-port.js';
import { startDnsmasq, startSilentDns, type SilentDns, type TestDns } from '../support/dnsmasq.js';
import { postfixAvailable, startPostfix, type PostfixInstance } from '../support/postfix.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

describe.skipIf(!postfixAvailable() && process.env.CI !== 'true')('reverse DNS as Postfix sees it', () => {
  let postfix: PostfixInstance;
  let dns: TestDns;
  let silent: SilentDns;
  let resolver: NodeDnsResolver;

  beforeAll(async () => {
    silent = await startSilentDns();
    dns = await startDnsmasq([
      // The partner's real relay, and an attacker's address whose PTR claims the partner's name.
      '--host-record=trusted.partner.example,192.0.2.20',
      '--ptr-record=9.2.0.192.in-addr.arpa,trusted.partner.example',
      '--ptr-record=14.2.0.192.in-addr.arpa,mx.slow.example',
      `--server=/slow.example/127.0.0.1#${silent.port}`,
    ]);
    resolver = new NodeDnsResolver({ servers: [parseHostPort(dns.server)], timeoutMs: 300 });
    postfix = await startPostfix({
      users: ['bob'],
      // Only the proxy is in mynetworks; the partner may relay by name, as operators do.
      mynetworks: ['127.0.0.1/32'],
      mainCf: {
        smtpd_relay_restrictions: 'permit_mynetworks, check_client_access inline:{ trusted.partner.example=OK }, reject_unauth_destination',
        smtpd_recipient_restrictions: 'permit_mynetworks, check_client_access inline:{ trusted.partner.example=OK }, reject_unknown_client_hostname',
        unknown_client_reject_code: '550',
      },
    });
  });

  afterAll(async () => {
    await postfix?.stop();
    await dns?.stop();
    await silent?.stop();
  });

  /** XCLIENT as the proxy sends it for this client (or as given), then one RCPT; Postfix's reply to it. */
  async function asClient(address: string, recipient: string, sentName?: string): Promise<{ xclient: string; reply: string }> {
    const dialog = await SmtpDialog.connect(postfix.port, { host: postfix.host });
    const line = async (command: string): Promise<string> => {
      const reply = await dialog.command(command);
      return `${reply.code} ${reply.text}`;
    };
    try {
      await dialog.reply();
      const ehlo = await line('EHLO proxy.test');
      const advertised = /^XCLIENT (.*)$/m.exec(ehlo.replace(/^\d{3} /, ''))?.[1] ?? '';
      expect(advertised).toMatch(/\bREVERSE_NAME\b/);
      const names = sentName === undefined ? clientNameFields(await forwardConfirmedReverse(resolver, address)) : { hostname: sentName };
      const command = xclientCommand({ address, port: 40000, ...names }, advertised);
      expect(await line(command)).toMatch(/^220 /);
      expect(await line('EHLO client.example')).toMatch(/^250 /);
      expect(await line('MAIL FROM:<sender@client.example>')).toMatch(/^250 /);
      return { xclient: command, reply: await line(`RCPT TO:<${recipient}>`) };
    } finally {
      dialog.destroy();
    }
  }

  it('refuses to relay for a PTR that claims trusted.partner.example', async () => {
    const { xclient, reply } = await asClient('192.0.2.9', 'someone@elsewhere.test');
    expect(xclient).toContain('NAME=[UNAVAILABLE] REVERSE_NAME=trusted.partner.example');
    expect(reply).toMatch(/^554 5\.7\.1 .*Relay access denied/);
    await postfix.waitForLog(/NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.9\]: 554 5\.7\.1/, 5_000);
    // What the bare PTR lookup used to send: Postfix trusts it, and relays for the attacker.
    const before = await asClient('192.0.2.9', 'someone@elsewhere.test', 'trusted.partner.example');
    expect(before.reply).toMatch(/Recipient address rejected: outbound mail disabled in the test instance/);
  });

  it('relays for the partner, whose name is forward-confirmed', async () => {
    const { xclient, reply } = await asClient('192.0.2.20', 'someone@elsewhere.test');
    expect(xclient).toContain('NAME=trusted.partner.example REVERSE_NAME=trusted.partner.example');
    // Past the relay restrictions: what stops it now is the test instance's error transport, not 554.
    expect(reply).toMatch(/^550 5\.1\.1 .*Recipient address rejected: outbound mail disabled in the test instance/);
  });

  it('rejects an unknown client with 550, but defers with 450 when the lookup failed for now', async () => {
    expect((await asClient('192.0.2.9', `bob@${postfix.domain}`)).reply).toMatch(/^550 5\.7\.25 .*cannot find your hostname/);
    const slow = await asClient('192.0.2.14', `bob@${postfix.domain}`);
    expect(slow.xclient).toContain('NAME=[TEMPUNAVAIL] REVERSE_NAME=mx.slow.example');
    expect(slow.reply).toMatch(/^450 4\.7\.25 .*cannot find your hostname/);
  });
});
