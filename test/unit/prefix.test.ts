// Prefix widening: address helpers, then stepwise widening and narrowing over injected time, IPv4 and IPv6.
import { describe, expect, it } from 'vitest';
import { canonicalAddress, parseAddress, PrefixAggregator, prefixLadder, prefixOf, sourceOf } from '../../src/detect/prefix.js';

const NOW = 1_000_000;

describe('address helpers', () => {
  it('computes prefixes for IPv4, IPv6 and IPv4-mapped IPv6', () => {
    expect(prefixOf('192.0.2.77', 24)).toBe('192.0.2.0/24');
    expect(prefixOf('192.0.2.77', 16)).toBe('192.0.0.0/16');
    expect(prefixOf('192.0.2.77', 32)).toBe('192.0.2.77/32');
    expect(prefixOf('::ffff:192.0.2.77', 24)).toBe('192.0.2.0/24');
    expect(prefixOf('2001:db8:1:2:3:4:5:6', 64)).toBe('2001:db8:1:2::/64');
    expect(prefixOf('2001:db8:1:2:3:4:5:6', 48)).toBe('2001:db8:1::/48');
    expect(prefixOf('2001:db8:abcd:12ff::1', 52)).toBe('2001:db8:abcd:1000::/52');
  });

  it('refuses lengths outside the family, including IPv6 lengths on mapped IPv4', () => {
    expect(() => prefixOf('192.0.2.1', 33)).toThrow(RangeError);
    expect(() => prefixOf('::ffff:192.0.2.1', 64)).toThrow(RangeError);
  });

  it('parses strictly and canonically', () => {
    expect(canonicalAddress('::FFFF:192.0.2.1')).toBe('192.0.2.1');
    expect(canonicalAddress('2001:DB8:0:0::1')).toBe('2001:db8::1');
    expect(canonicalAddress('fe80::1%eth0')).toBe('fe80::1');
    for (const bad of ['10.1', '010.0.0.1', '0x7f.0.0.1', '192.0.2.256', '', 'mail.example.org']) {
      expect(() => parseAddress(bad), bad).toThrow(RangeError);
    }
  });

  it('counts an IPv4 address on its own and an IPv6 address under its /64', () => {
    expect(sourceOf('192.0.2.77')).toBe('192.0.2.77');
    expect(sourceOf('::ffff:192.0.2.77')).toBe('192.0.2.77');
    expect(sourceOf('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(sourceOf('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(sourceOf('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
  });

  it('cuts the ladder at the shortest length allowed', () => {
    expect(prefixLadder('ipv4', 16)).toEqual([32, 24, 16]);
    expect(prefixLadder('ipv4', 20)).toEqual([32, 24]);
    expect(prefixLadder('ipv6', 64)).toEqual([128, 64]);
    expect(prefixLadder('ipv6', 0)).toEqual([128, 64, 48]);
  });
});

describe('PrefixAggregator, IPv4', () => {
  /** k = 3: three suspect addresses make a /24, three suspect /24s make a /16. */
  function aggregator(): PrefixAggregator {
    return new PrefixAggregator({ minMembers: 3 });
  }

  it('reports a lone suspect as its /32 and its neighbours as nothing', () => {
    const prefixes = aggregator();
    prefixes.addSuspect('192.0.2.1', NOW + 1_000);
    prefixes.addSuspect('192.0.2.2', NOW + 1_000);
    expect(prefixes.suspectPrefix('192.0.2.1', NOW)).toEqual({ prefix: '192.0.2.1/32', family: 'ipv4', lengthBits: 32, members: 1 });
    expect(prefixes.suspectPrefix('192.0.2.3', NOW)).toBeUndefined();
    expect(prefixes.prefixes(NOW)).toEqual([]);
  });

  it('widens to the /24 at k addresses, covering its innocent-looking neighbours too', () => {
    const prefixes = aggregator();
    for (const host of [1, 2, 3]) prefixes.addSuspect(`192.0.2.${host}`, NOW + 1_000);
    expect(prefixes.suspectPrefix('192.0.2.200', NOW)).toEqual({ prefix: '192.0.2.0/24', family: 'ipv4', lengthBits: 24, members: 3 });
    expect(prefixes.suspectPrefix('::ffff:192.0.2.200', NOW)?.prefix).toBe('192.0.2.0/24');
    expect(prefixes.suspectPrefix('192.0.3.1', NOW)).toBeUndefined();
  });

  it('widens to the /16 only at k suspect /24s, not at k addresses spread thinly', () => {
    const prefixes = aggregator();
    // Nine addresses in nine different /24s: no /24 is suspect, so neither is the /16.
    for (let net = 0; net < 9; net += 1) prefixes.addSuspect(`198.51.${net}.1`, NOW + 1_000);
    expect(prefixes.suspectPrefix('198.51.200.1', NOW)).toBeUndefined();
    // Three suspect /24s (three addresses each) make the /16 suspect.
    for (const net of [0, 1, 2]) for (const host of [2, 3]) prefixes.addSuspect(`198.51.${net}.${host}`, NOW + 1_000);
    expect(prefixes.suspectPrefix('198.51.200.1', NOW)).toEqual({ prefix: '198.51.0.0/16', family: 'ipv4', lengthBits: 16, members: 3 });
    expect(prefixes.prefixes(NOW).map((entry) => entry.prefix)).toEqual(['198.51.0.0/16', '198.51.0.0/24', '198.51.1.0/24', '198.51.2.0/24']);
  });

  it('narrows step by step as suspects expire (a suspect is active while now < expiresAtMs)', () => {
    const prefixes = aggregator();
    for (const net of [0, 1]) for (const host of [1, 2, 3]) prefixes.addSuspect(`198.51.${net}.${host}`, NOW + 10_000);
    for (const host of [1, 2]) prefixes.addSuspect(`198.51.2.${host}`, NOW + 10_000);
    prefixes.addSuspect('198.51.2.3', NOW + 5_000);
    expect(prefixes.suspectPrefix('198.51.9.9', NOW + 4_999)?.prefix).toBe('198.51.0.0/16');
    // 198.51.2.3 expires: 198.51.2.0/24 falls to 2 members, so the /16 falls to 2 suspect /24s.
    expect(prefixes.suspectPrefix('198.51.9.9', NOW + 5_000)).toBeUndefined();
    expect(prefixes.suspectPrefix('198.51.0.9', NOW + 5_000)?.prefix).toBe('198.51.0.0/24');
    expect(prefixes.suspectPrefix('198.51.2.1', NOW + 5_000)?.prefix).toBe('198.51.2.1/32');
    expect(prefixes.prefixes(NOW + 9_999).map((entry) => entry.prefix)).toEqual(['198.51.0.0/24', '198.51.1.0/24']);
    expect(prefixes.prefixes(NOW + 10_000)).toEqual([]);
    expect(prefixes.suspectCount).toBe(0);
  });

  it('extends a suspect re-added with a later expiry and ignores an earlier one', () => {
    const prefixes = aggregator();
    for (const host of [1, 2, 3]) prefixes.addSuspect(`192.0.2.${host}`, NOW + 1_000);
    prefixes.addSuspect('192.0.2.1', NOW + 5_000);
    prefixes.addSuspect('192.0.2.1', NOW + 2_000);
    expect(prefixes.suspectPrefix('192.0.2.1', NOW + 1_000)?.prefix).toBe('192.0.2.1/32');
    expect(prefixes.suspectPrefix('192.0.2.1', NOW + 5_000)).toBeUndefined();
  });

  it('never widens past the policy maximum', () => {
    const prefixes = new PrefixAggregator({ minMembers: 2, maxWidenV4: 24 });
    for (const net of [0, 1, 2]) for (const host of [1, 2]) prefixes.addSuspect(`198.51.${net}.${host}`, NOW + 1_000);
    expect(prefixes.suspectPrefix('198.51.0.9', NOW)?.prefix).toBe('198.51.0.0/24');
    expect(prefixes.suspectPrefix('198.51.9.9', NOW)).toBeUndefined();
  });

  it('holds at most maxSuspects, dropping the one closest to expiry', () => {
    const prefixes = new PrefixAggregator({ minMembers: 2, maxSuspects: 2 });
    prefixes.addSuspect('192.0.2.1', NOW + 3_000);
    prefixes.addSuspect('192.0.2.2', NOW + 1_000);
    prefixes.addSuspect('192.0.2.3', NOW + 2_000);
    expect(prefixes.evicted).toBe(1);
    expect(prefixes.suspectCount).toBe(2);
    expect(prefixes.suspectPrefix('192.0.2.2', NOW)?.prefix).toBe('192.0.2.0/24');
    expect(prefixes.prefixes(NOW)).toEqual([{ prefix: '192.0.2.0/24', family: 'ipv4', lengthBits: 24, members: 2 }]);
  });

  it('stays consistent through many re-adds (stale expiry entries are skipped)', () => {
    const prefixes = aggregator();
    for (let round = 1; round <= 200; round += 1) for (const host of [1, 2, 3]) prefixes.addSuspect(`192.0.2.${host}`, NOW + round);
    expect(prefixes.suspectPrefix('192.0.2.9', NOW + 199)?.members).toBe(3);
    expect(prefixes.suspectPrefix('192.0.2.9', NOW + 200)).toBeUndefined();
  });
});

describe('PrefixAggregator, IPv6', () => {
  it('widens /128 → /64 → /48 and narrows back', () => {
    const prefixes = new PrefixAggregator({ minMembers: 2 });
    prefixes.addSuspect('2001:db8:1:1::a', NOW + 1_000);
    prefixes.addSuspect('2001:db8:1:1::b', NOW + 1_000);
    expect(prefixes.suspectPrefix('2001:db8:1:1::ffff', NOW)).toEqual({ prefix: '2001:db8:1:1::/64', family: 'ipv6', lengthBits: 64, members: 2 });
    expect(prefixes.suspectPrefix('2001:db8:1:2::1', NOW)).toBeUndefined();
    prefixes.addSuspect('2001:db8:1:2::a', NOW + 2_000);
    prefixes.addSuspect('2001:db8:1:2::b', NOW + 2_000);
    expect(prefixes.suspectPrefix('2001:db8:1:ffff::1', NOW)).toEqual({ prefix: '2001:db8:1::/48', family: 'ipv6', lengthBits: 48, members: 2 });
    expect(prefixes.suspectPrefix('2001:db8:2::1', NOW)).toBeUndefined();
    // The first /64 expires: back to one suspect /64 and no /48.
    expect(prefixes.suspectPrefix('2001:db8:1:ffff::1', NOW + 1_000)).toBeUndefined();
    expect(prefixes.suspectPrefix('2001:db8:1:2::c', NOW + 1_000)?.prefix).toBe('2001:db8:1:2::/64');
    expect(prefixes.prefixes(NOW + 2_000)).toEqual([]);
  });

  it('keeps the families apart and lists IPv4 before IPv6', () => {
    const prefixes = new PrefixAggregator({ minMembers: 2, maxWidenV6: 64 });
    for (const address of ['192.0.2.1', '::ffff:192.0.2.2', '2001:db8::1', '2001:db8::2']) prefixes.addSuspect(address, NOW + 1_000);
    expect(prefixes.prefixes(NOW)).toEqual([
      { prefix: '192.0.2.0/24', family: 'ipv4', lengthBits: 24, members: 2 },
      { prefix: '2001:db8::/64', family: 'ipv6', lengthBits: 64, members: 2 },
    ]);
  });

  it('refuses a policy that cannot work', () => {
    expect(() => new PrefixAggregator({ minMembers: 0 })).toThrow(RangeError);
    expect(() => new PrefixAggregator({ maxWidenV4: 33 })).toThrow(RangeError);
    expect(() => new PrefixAggregator({ maxSuspects: 0 })).toThrow(RangeError);
  });
});
