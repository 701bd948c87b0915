// The pure parts of FCrDNS: which PTR names count as host names (DNS answers are hostile), address
// normalisation, PTR query names; and the outcome for answers no real zone file can carry.
import { describe, expect, it } from 'vitest';
import { arpaName, canonicalHostname, forwardConfirmedReverse, normalizeAddress } from '../../src/dns/fcrdns.js';
import { DnsLookupError, type DnsResolver } from '../../src/dns/resolver.js';

describe('canonicalHostname', () => {
  it('takes letters, digits, hyphens and underscores, in lower case without the final dot', () => {
    expect(canonicalHostname('Mail-1.Example.ORG.')).toBe('mail-1.example.org');
    expect(canonicalHostname('dsl_pool.isp.example')).toBe('dsl_pool.isp.example');
    expect(canonicalHostname('localhost')).toBe('localhost');
  });

  it('refuses control bytes, spaces and other punctuation', () => {
    for (const name of ['evil\r\n250 ok.example', 'nul\0.example', 'tab\t.example', 'sp ace.example', 'x!y.example', 'back\\slash.example', 'a/b.example', 'é.example']) {
      expect(canonicalHostname(name), JSON.stringify(name)).toBeUndefined();
    }
  });

  it('refuses empty labels, hyphens at a label end, and overlong labels or names', () => {
    const label63 = 'a'.repeat(63);
    expect(canonicalHostname(`${label63}.example`)).toBe(`${label63}.example`);
    expect(canonicalHostname(`${label63}a.example`)).toBeUndefined();
    const name253 = `${'b'.repeat(61)}.${'c'.repeat(61)}.${'d'.repeat(61)}.${'e'.repeat(61)}.example`.slice(-253);
    expect(name253).toHaveLength(253);
    expect(canonicalHostname(name253)).toBe(name253);
    expect(canonicalHostname(`x${name253}`)).toBeUndefined();
    for (const name of ['', '.', 'a..b.example', '.a.example', '-dash.example', 'dash-.example']) {
      expect(canonicalHostname(name), JSON.stringify(name)).toBeUndefined();
    }
  });

  it('refuses addresses in disguise (an all-numeric last label)', () => {
    expect(canonicalHostname('192.0.2.1')).toBeUndefined();
    expect(canonicalHostname('host.123')).toBeUndefined();
    expect(canonicalHostname('1host.example')).toBe('1host.example');
  });
});

describe('addresses', () => {
  it('normalises IPv4-mapped IPv6 to IPv4 and IPv6 to one spelling', () => {
    expect(normalizeAddress('::ffff:192.0.2.1')?.toString()).toBe('192.0.2.1');
    expect(normalizeAddress('2001:DB8:0::1')?.toNormalizedString()).toBe(normalizeAddress('2001:db8::1')?.toNormalizedString());
    expect(normalizeAddress('not an address')).toBeUndefined();
  });

  it('builds the PTR query names', () => {
    expect(arpaName(normalizeAddress('192.0.2.9')!)).toBe('9.2.0.192.in-addr.arpa');
    expect(arpaName(normalizeAddress('::ffff:192.0.2.9')!)).toBe('9.2.0.192.in-addr.arpa');
    expect(arpaName(normalizeAddress('2001:db8::1')!)).toBe('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
  });
});

describe('forwardConfirmedReverse on answers a zone file cannot hold', () => {
  const answering = (ptr: string[], a: Record<string, string[]>): DnsResolver => ({
    resolvePtr: async () => ptr,
    resolve4: async (name) => a[name] ?? [],
    resolve6: async () => [],
    resolveTxt: async () => [],
  });

  it('never confirms nor reports a name with control bytes or over 253 characters, even if its A record matches', async () => {
    const evil = 'trusted.partner.example\r\n250 ok';
    const long = `${'a.'.repeat(130)}example`;
    expect(await forwardConfirmedReverse(answering([evil, long], { [evil]: ['192.0.2.9'], [long]: ['192.0.2.9'] }), '192.0.2.9')).toEqual({ status: 'none' });
  });

  it('compares IPv6 answers by value, and never an A answer with an IPv6 client', async () => {
    const resolver: DnsResolver = { ...answering(['v6.example'], {}), resolve6: async () => ['2001:DB8:0:0::1'] };
    expect(await forwardConfirmedReverse(resolver, '2001:db8::1')).toMatchObject({ status: 'confirmed', confirmedName: 'v6.example' });
    expect(await forwardConfirmedReverse(answering(['v4.example'], { 'v4.example': ['::ffff:192.0.2.1'] }), '2001:db8::1')).toEqual({ status: 'unconfirmed', reverseName: 'v4.example' });
  });

  it('treats an unparsable PTR answer as no name (permanent) and a refused query as an error (for now)', async () => {
    const failing = (kind: 'bad-answer' | 'failure'): DnsResolver => ({ ...answering([], {}), resolvePtr: async (name) => { throw new DnsLookupError(kind, `PTR ${name}`); } });
    expect(await forwardConfirmedReverse(failing('bad-answer'), '192.0.2.1')).toEqual({ status: 'none' });
    expect(await forwardConfirmedReverse(failing('failure'), '192.0.2.1')).toEqual({ status: 'error' });
  });
});
