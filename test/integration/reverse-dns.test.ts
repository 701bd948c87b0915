// Forward-confirmed reverse DNS through the proxy's real resolver, against a real dnsmasq on a
// loopback port with records chosen here: only a name whose A/AAAA hold the address is a name; a
// PTR claiming trusted.partner.example is at most REVERSE_NAME; hostile PTR names are no names;
// every lookup is bounded by dns.timeoutMs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardConfirmedReverse, MAX_PTR_NAMES } from '../../src/dns/fcrdns.js';
import { NodeDnsResolver, type DnsResolver } from '../../src/dns/resolver.js';
import { parseHostPort } from '../../src/util/host-port.js';
import { clientNameFields, xclientCommand } from '../../src/upstream/xclient.js';
import { freeUdpPort, startDnsmasq, startSilentDns, type SilentDns, type TestDns } from '../support/dnsmasq.js';

/** What Postfix 3.7 advertises. */
const POSTFIX_XCLIENT = 'NAME ADDR PORT PROTO HELO REVERSE_NAME IDENT LOGIN DESTADDR DESTPORT';
const TIMEOUT_MS = 300;
/** Timer and scheduling slack on a busy CI machine. */
const SLACK_MS = 250;

let dns: TestDns;
let silent: SilentDns;
let resolver: NodeDnsResolver;

const resolverFor = (server: string, timeoutMs = TIMEOUT_MS): NodeDnsResolver =>
  new NodeDnsResolver({ servers: [parseHostPort(server)], timeoutMs });

beforeAll(async () => {
  silent = await startSilentDns();
  dns = await startDnsmasq([
    // Confirmed, both families (host-record publishes the PTRs too).
    '--host-record=mail.good.example,192.0.2.10,2001:db8::10',
    // The spoof: the owner of 192.0.2.9's reverse zone claims a partner's name, which points elsewhere.
    '--ptr-record=9.2.0.192.in-addr.arpa,trusted.partner.example',
    '--host-record=trusted.partner.example,198.51.100.200',
    '--ptr-record=6.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa,trusted.partner.example',
    // Hostile names: a space, shell and escape characters, a leading hyphen.
    '--ptr-record=11.2.0.192.in-addr.arpa,trusted.partner.example relay.ok',
    '--ptr-record=11.2.0.192.in-addr.arpa,x!y.example',
    '--ptr-record=11.2.0.192.in-addr.arpa,back\\slash.example',
    '--ptr-record=11.2.0.192.in-addr.arpa,-dash.example',
    // A hostile name beside a good one: the good one still counts.
    '--ptr-record=12.2.0.192.in-addr.arpa,bad name.example',
    '--ptr-record=12.2.0.192.in-addr.arpa,OK.Hostile.Example',
    '--host-record=ok.hostile.example,192.0.2.12',
    // Eight PTR names, none pointing back: only the first MAX_PTR_NAMES are looked up.
    ...Array.from({ length: 8 }, (_, index) => `--ptr-record=13.2.0.192.in-addr.arpa,name${index}.many.example`),
    ...Array.from({ length: 8 }, (_, index) => `--host-record=name${index}.many.example,198.51.100.${index + 1}`),
    // A PTR whose forward zone never answers (dnsmasq forwards it to the silent port).
    '--ptr-record=14.2.0.192.in-addr.arpa,mx.slow.example',
    `--server=/slow.example/127.0.0.1#${silent.port}`,
  ]);
  resolver = resolverFor(dns.server);
});

afterAll(async () => {
  await dns?.stop();
  await silent?.stop();
});

describe('FCrDNS through the real resolver (dnsmasq)', () => {
  it('confirms a name whose A record holds the address', async () => {
    expect(await forwardConfirmedReverse(resolver, '192.0.2.10')).toEqual({ status: 'confirmed', confirmedName: 'mail.good.example', reverseName: 'mail.good.example' });
  });

  it('confirms IPv6 by AAAA, in any spelling, and an IPv4-mapped address by A', async () => {
    const confirmed = { status: 'confirmed', confirmedName: 'mail.good.example', reverseName: 'mail.good.example' };
    expect(await forwardConfirmedReverse(resolver, '2001:db8::10')).toEqual(confirmed);
    expect(await forwardConfirmedReverse(resolver, '2001:DB8:0:0::0010')).toEqual(confirmed);
    expect(await forwardConfirmedReverse(resolver, '::ffff:192.0.2.10')).toEqual(confirmed);
  });

  it('leaves a PTR that claims trusted.partner.example unconfirmed: its A record holds another address', async () => {
    expect(await forwardConfirmedReverse(resolver, '192.0.2.9')).toEqual({ status: 'unconfirmed', reverseName: 'trusted.partner.example' });
    // IPv6: the name has no AAAA at all.
    expect(await forwardConfirmedReverse(resolver, '2001:db8::66')).toEqual({ status: 'unconfirmed', reverseName: 'trusted.partner.example' });
  });

  it('drops hostile PTR names: no name, no reverse name', async () => {
    expect(await forwardConfirmedReverse(resolver, '192.0.2.11')).toEqual({ status: 'none' });
  });

  it('still confirms a good PTR name beside a hostile one, in lower case', async () => {
    expect(await forwardConfirmedReverse(resolver, '192.0.2.12')).toEqual({ status: 'confirmed', confirmedName: 'ok.hostile.example', reverseName: 'ok.hostile.example' });
  });

  it('looks up the forward records of at most MAX_PTR_NAMES names', async () => {
    const forward: string[] = [];
    const counting: DnsResolver = {
      resolvePtr: (name) => resolver.resolvePtr(name),
      resolve4: (name) => {
        forward.push(name);
        return resolver.resolve4(name);
      },
      resolve6: (name) => resolver.resolve6(name),
      resolveTxt: (name) => resolver.resolveTxt(name),
    };
    expect((await resolver.resolvePtr('13.2.0.192.in-addr.arpa')).length).toBe(8);
    const result = await forwardConfirmedReverse(counting, '192.0.2.13');
    expect(result.status).toBe('unconfirmed');
    expect(forward).toHaveLength(MAX_PTR_NAMES);
  });

  it('says none for an address without PTR', async () => {
    expect(await forwardConfirmedReverse(resolver, '192.0.2.99')).toEqual({ status: 'none' });
  });

  it('times out within dns.timeoutMs when the server never answers', async () => {
    const before = silent.queries();
    const startedAt = Date.now();
    expect(await forwardConfirmedReverse(resolverFor(silent.server), '192.0.2.10')).toEqual({ status: 'timeout' });
    const elapsedMs = Date.now() - startedAt;
    expect(elapsedMs).toBeGreaterThanOrEqual(TIMEOUT_MS - 20);
    expect(elapsedMs).toBeLessThan(TIMEOUT_MS + SLACK_MS);
    expect(silent.queries()).toBeGreaterThan(before);
  });

  it('times out on the forward lookup within two time-outs, keeping the PTR name as the reverse name', async () => {
    const startedAt = Date.now();
    expect(await forwardConfirmedReverse(resolver, '192.0.2.14')).toEqual({ status: 'timeout', reverseName: 'mx.slow.example' });
    expect(Date.now() - startedAt).toBeLessThan(2 * TIMEOUT_MS + SLACK_MS);
  });

  it('says error when the server cannot be reached', async () => {
    const closed = `127.0.0.1:${await freeUdpPort()}`;
    expect(await forwardConfirmedReverse(resolverFor(closed), '192.0.2.10')).toEqual({ status: 'error' });
  });

  it('fails a query at once as busy beyond maxInFlight', async () => {
    const narrow = new NodeDnsResolver({ servers: [parseHostPort(silent.server)], timeoutMs: TIMEOUT_MS, maxInFlight: 1 });
    const first = narrow.resolve4('a.example');
    await expect(narrow.resolve4('b.example')).rejects.toMatchObject({ kind: 'busy' });
    await expect(first).rejects.toMatchObject({ kind: 'timeout' });
  });
});

describe('the XCLIENT line from a real lookup', () => {
  const xclientFor = async (address: string): Promise<string> => {
    const names = clientNameFields(await forwardConfirmedReverse(resolver, address));
    return xclientCommand({ address, port: 40000, helo: 'client.example', protocol: 'ESMTP', ...names }, POSTFIX_XCLIENT);
  };

  it('sends a confirmed name as NAME and REVERSE_NAME', async () => {
    expect(await xclientFor('192.0.2.10')).toBe('XCLIENT ADDR=192.0.2.10 PORT=40000 NAME=mail.good.example REVERSE_NAME=mail.good.example HELO=client.example PROTO=ESMTP');
  });

  it('sends the spoofed PTR only as REVERSE_NAME, NAME=[UNAVAILABLE]', async () => {
    expect(await xclientFor('192.0.2.9')).toBe('XCLIENT ADDR=192.0.2.9 PORT=40000 NAME=[UNAVAILABLE] REVERSE_NAME=trusted.partner.example HELO=client.example PROTO=ESMTP');
  });

  it('sends nothing of a hostile PTR', async () => {
    expect(await xclientFor('192.0.2.11')).toBe('XCLIENT ADDR=192.0.2.11 PORT=40000 NAME=[UNAVAILABLE] REVERSE_NAME=[UNAVAILABLE] HELO=client.example PROTO=ESMTP');
  });

  it('says [TEMPUNAVAIL] for a lookup that timed out, so Postfix defers rather than rejects', async () => {
    expect(await xclientFor('192.0.2.14')).toBe('XCLIENT ADDR=192.0.2.14 PORT=40000 NAME=[TEMPUNAVAIL] REVERSE_NAME=mx.slow.example HELO=client.example PROTO=ESMTP');
  });
});
