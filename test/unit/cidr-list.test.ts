// Allow/deny CIDR lists: parsing (with positions of bad entries) and lookups, IPv4, IPv6 and IPv4-mapped IPv6.
import { describe, expect, it } from 'vitest';
import { CidrListError, parseCidr, parseCidrList } from '../../src/policy/cidr-list.js';

function issuesOf(parse: () => unknown): CidrListError['issues'] {
  try {
    parse();
  } catch (error) {
    if (error instanceof CidrListError) return error.issues;
    throw error;
  }
  throw new Error('expected a CidrListError');
}

describe('parseCidr', () => {
  it('reads ranges and bare addresses in canonical form', () => {
    expect(parseCidr('192.0.2.0/24').text).toBe('192.0.2.0/24');
    expect(parseCidr('192.0.2.7').text).toBe('192.0.2.7/32');
    expect(parseCidr('2001:DB8::/32').text).toBe('2001:db8::/32');
    expect(parseCidr('2001:db8::1').text).toBe('2001:db8::1/128');
    expect(parseCidr('0.0.0.0/0').text).toBe('0.0.0.0/0');
  });

  it('turns IPv4-mapped IPv6 entries into IPv4', () => {
    expect(parseCidr('::ffff:192.0.2.7')).toMatchObject({ family: 'ipv4', text: '192.0.2.7/32' });
    expect(parseCidr('::ffff:192.0.2.0/120')).toMatchObject({ family: 'ipv4', text: '192.0.2.0/24' });
    expect(parseCidr('::ffff:0:0/96')).toMatchObject({ family: 'ipv4', text: '0.0.0.0/0' });
  });

  it.each([
    ['192.0.2.1/24', /host bits.*192\.0\.2\.0\/24/],
    ['192.0.2.0/33', /longer than 32/],
    ['2001:db8::/129', /longer than 128/],
    ['::ffff:0:0/80', /\/96 or longer/],
    ['192.0.2.0/024', /bad prefix length/],
    ['192.0.2.0/', /bad prefix length/],
    ['10.1/16', /not an IP address/],
    ['fe80::1%eth0', /zone/],
    ['mail.example.org', /not an IP address/],
  ])('refuses %s', (entry, message) => {
    expect(() => parseCidr(entry)).toThrow(message);
  });
});

describe('CidrList lookups', () => {
  const list = parseCidrList(['192.0.2.0/24', '192.0.2.128/25', '198.51.100.7', '2001:db8::/32', '::ffff:203.0.113.0/120']);

  it('matches IPv4 and IPv6 addresses inside the ranges, reporting the most specific entry', () => {
    expect(list.size).toBe(5);
    expect(list.match('192.0.2.1')).toBe('192.0.2.0/24');
    expect(list.match('192.0.2.200')).toBe('192.0.2.128/25');
    expect(list.matches('198.51.100.7')).toBe(true);
    expect(list.matches('198.51.100.8')).toBe(false);
    expect(list.match('2001:db8:ffff::1')).toBe('2001:db8::/32');
    expect(list.matches('2001:db9::1')).toBe(false);
  });

  it('treats IPv4-mapped IPv6 as IPv4 on both sides', () => {
    expect(list.match('::ffff:192.0.2.1')).toBe('192.0.2.0/24');
    expect(list.match('203.0.113.44')).toBe('203.0.113.0/24');
    expect(list.match('::ffff:203.0.113.44')).toBe('203.0.113.0/24');
  });

  it('keeps plain IPv6 ranges for IPv6 clients only, and matches nothing for unparsable input', () => {
    const everyIpv6 = parseCidrList(['::/0']);
    expect(everyIpv6.matches('2001:db8::1')).toBe(true);
    expect(everyIpv6.matches('192.0.2.1')).toBe(false);
    expect(list.matches('not-an-address')).toBe(false);
    expect(parseCidrList([]).matches('192.0.2.1')).toBe(false);
  });
});

describe('parse errors', () => {
  it('lists every bad entry with its index, trimming whitespace', () => {
    const issues = issuesOf(() => parseCidrList([' 192.0.2.0/24 ', 'bogus', '10.0.0.1/8', '2001:db8::/32']));
    expect(issues).toEqual([
      { index: 1, entry: 'bogus', message: 'not an IP address: "bogus"' },
      { index: 2, entry: '10.0.0.1/8', message: expect.stringMatching(/10\.0\.0\.0\/8/) },
    ]);
  });
});
