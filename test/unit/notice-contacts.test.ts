// Contact lookup for notices to source networks: the longest prefix holding the source wins, IPv4 and
// IPv6, IPv4-mapped IPv6 counts as IPv4, and a source in no listed network has no contact.
import { describe, expect, it } from 'vitest';
import { ContactDirectory } from '../../src/enforce/notice-contacts.js';

const directory = new ContactDirectory([
  { cidr: '192.0.2.0/24', organisation: 'Example ISP', email: 'noc@isp.example' },
  { cidr: '192.0.2.128/25', organisation: 'Example School', email: 'abuse@school.example', name: 'Jane Doe' },
  { cidr: '192.0.2.200', organisation: 'One Host', email: 'host@one.example' },
  { cidr: '2001:db8::/32', organisation: 'Example v6 ISP', email: 'noc@v6.example' },
  { cidr: '2001:db8:1::/48', organisation: 'Example v6 Campus', email: 'abuse@campus.example' },
]);

describe('ContactDirectory', () => {
  it('gives the contact of the longest prefix holding the source', () => {
    expect(directory.lookup('192.0.2.7')).toMatchObject({ network: '192.0.2.0/24', contact: { email: 'noc@isp.example' } });
    expect(directory.lookup('192.0.2.130')).toMatchObject({ network: '192.0.2.128/25', contact: { organisation: 'Example School', name: 'Jane Doe' } });
    expect(directory.lookup('192.0.2.200')).toMatchObject({ network: '192.0.2.200/32', contact: { email: 'host@one.example' } });
  });

  it('looks up IPv6, and IPv4-mapped IPv6 as IPv4', () => {
    expect(directory.lookup('2001:db8:1:2::9')).toMatchObject({ network: '2001:db8:1::/48', contact: { email: 'abuse@campus.example' } });
    expect(directory.lookup('2001:db8:2::9')).toMatchObject({ network: '2001:db8::/32' });
    expect(directory.lookup('2001:DB8:0001::1')).toMatchObject({ network: '2001:db8:1::/48' });
    expect(directory.lookup('::ffff:192.0.2.129')).toMatchObject({ network: '192.0.2.128/25' });
  });

  it('has no contact for a source outside every network, or an unparsable one', () => {
    expect(directory.lookup('198.51.100.1')).toBeUndefined();
    expect(directory.lookup('2001:db9::1')).toBeUndefined();
    expect(directory.lookup('not-an-address')).toBeUndefined();
    expect(new ContactDirectory([]).lookup('192.0.2.7')).toBeUndefined();
  });
});
