// The blocked set the firewall export builds: which verdicts become elements, how overlaps collapse, and
// the nftables script (checked by nft itself where nftables is installed: it refuses overlapping
// intervals, so a collapse bug fails there too).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  blockedFromDenyList,
  blockedFromVerdicts,
  collapseBlocked,
  renderNftables,
  renderPrefixList,
  withWideningEvidence,
  type BlockedPrefix,
} from '../../src/enforce/blocked-prefixes.js';
import { parseCidrList } from '../../src/policy/cidr-list.js';

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0);
const NAMES = { table: 'smtp_pushback', setV4: 'blocked_v4', setV6: 'blocked_v6' };

function verdict(scope: string, action: string, ttlMs: number, detector = 'sfds'): { key: string; value: string; ttlMs: number } {
  return { key: `v:${scope}`, value: JSON.stringify({ action, detector, reasons: [`why ${scope}`], score: 30, scope }), ttlMs };
}

function blocked(prefix: string, expiresAtMs: number | null): BlockedPrefix {
  const [, length] = prefix.split('/');
  return { prefix, family: prefix.includes(':') ? 'ipv6' : 'ipv4', lengthBits: Number(length), action: 'reject', detector: 'test', reasons: [], expiresAtMs };
}

const nftAvailable = spawnSync('nft', ['--version']).status === 0;

describe('blockedFromVerdicts', () => {
  it('keeps the exported actions, as prefixes, expiring by the store’s remaining life', () => {
    const rows = blockedFromVerdicts([
      verdict('192.0.2.7', 'reject', 60_000),
      verdict('198.51.100.0/24', 'reject', 5_000, 'prefix'),
      verdict('2001:db8::1', 'reject', 1_000),
      verdict('203.0.113.9', 'tarpit', 60_000),
    ], new Set(['reject']), NOW);
    expect(rows.map((row) => [row.prefix, row.family, row.lengthBits, row.detector, row.expiresAtMs])).toEqual([
      ['192.0.2.7/32', 'ipv4', 32, 'sfds', NOW + 60_000],
      ['198.51.100.0/24', 'ipv4', 24, 'prefix', NOW + 5_000],
      ['2001:db8::1/128', 'ipv6', 128, 'sfds', NOW + 1_000],
    ]);
    expect(rows[0]!.reasons).toEqual(['why 192.0.2.7']);
  });

  it('skips what is not a verdict it understands, and treats a key without expiry as permanent', () => {
    const rows = blockedFromVerdicts([
      { key: 'v:192.0.2.1', value: 'not json', ttlMs: 1_000 },
      { key: 'v:not-an-address', value: JSON.stringify({ action: 'reject' }), ttlMs: 1_000 },
      { key: 'c:abnormal:192.0.2.2', value: '5', ttlMs: 1_000 },
      { key: 'v:192.0.2.3', value: JSON.stringify({ action: 'reject' }), ttlMs: Infinity },
      { key: 'v:192.0.2.4', value: JSON.stringify({ action: 7 }), ttlMs: 1_000 },
    ], new Set(['reject']), NOW);
    expect(rows).toEqual([{ prefix: '192.0.2.3/32', family: 'ipv4', lengthBits: 32, action: 'reject', detector: 'unknown', reasons: [], expiresAtMs: null }]);
  });

  it('skips a value that parses to null or a non-object (another writer’s key), without throwing', () => {
    const rows = blockedFromVerdicts([
      { key: 'v:192.0.2.1', value: 'null', ttlMs: 1_000 },
      { key: 'v:192.0.2.2', value: '"reject"', ttlMs: 1_000 },
      { key: 'v:192.0.2.3', value: '[]', ttlMs: 1_000 },
    ], new Set(['reject']), NOW);
    expect(rows).toEqual([]);
  });

  it('takes several actions when the policy exports them', () => {
    const rows = blockedFromVerdicts([verdict('192.0.2.7', 'reject', 1_000), verdict('192.0.2.8', 'defer', 1_000)], new Set(['reject', 'defer']), NOW);
    expect(rows.map((row) => row.action)).toEqual(['reject', 'defer']);
  });
});

describe('collapseBlocked', () => {
  it('drops prefixes inside wider ones and keeps the later expiry of duplicates, permanent first', () => {
    const rows = collapseBlocked([
      blocked('192.0.2.7/32', NOW + 90_000),
      blocked('192.0.2.0/24', NOW + 10_000),
      blocked('192.0.2.0/24', NOW + 20_000),
      blocked('198.51.100.0/24', NOW + 5_000),
      ...blockedFromDenyList(['198.51.100.0/24', '2001:db8::/32']),
      blocked('2001:db8:1::/48', NOW + 5_000),
      blocked('2001:db9::1/128', NOW + 5_000),
      blocked('10.0.0.1/32', NOW + 5_000),
    ]);
    expect(rows.map((row) => [row.prefix, row.expiresAtMs])).toEqual([
      ['10.0.0.1/32', NOW + 5_000],
      ['192.0.2.0/24', NOW + 20_000],
      ['198.51.100.0/24', null],
      ['2001:db8::/32', null],
      ['2001:db9::1/128', NOW + 5_000],
    ]);
  });

  it('never blocks the allow list: entries around or inside an allowed range are left out, their neighbours stay', () => {
    const rows = collapseBlocked([
      blocked('198.51.0.0/16', NOW + 60_000),
      blocked('198.51.100.7/32', NOW + 60_000),
      blocked('198.51.7.9/32', NOW + 60_000),
      blocked('203.0.113.0/24', null),
      blocked('203.0.114.0/24', null),
      blocked('2001:db8::/48', NOW + 1_000),
    ], parseCidrList(['198.51.100.0/24', '203.0.113.5', '2001:db8::/32']));
    // The /16 holds an allowed /24: it goes, and the /32 outside the allowed range is exported on its own.
    expect(rows.map((row) => row.prefix)).toEqual(['198.51.7.9/32', '203.0.114.0/24']);
  });

  it('leaves disjoint neighbours alone', () => {
    const rows = collapseBlocked([blocked('192.0.3.0/24', NOW + 1), blocked('192.0.2.0/24', NOW + 1), blocked('192.0.2.0/25', NOW + 1)]);
    expect(rows.map((row) => row.prefix)).toEqual(['192.0.2.0/24', '192.0.3.0/24']);
  });
});

describe('withWideningEvidence', () => {
  const DEFAULTS = { minSources: 16, minSharePercentV4: 10, minSharePercentV6: 0.05 };
  const addresses = (prefix: string, count: number, from = 1): BlockedPrefix[] =>
    Array.from({ length: count }, (_, index) => blocked(`${prefix}.${from + index}/32`, NOW + 60_000));
  const split = (entries: BlockedPrefix[]): { allowed: string[]; withheld: string[] } => {
    const result = withWideningEvidence(entries, DEFAULTS);
    return { allowed: result.allowed.map((entry) => entry.prefix).sort(), withheld: result.withheld.map((entry) => entry.prefix).sort() };
  };

  it('withholds a /24 that five offending addresses made suspect, and keeps the five', () => {
    const five = addresses('198.51.100', 5);
    expect(split([blocked('198.51.100.0/24', NOW + 60_000), ...five])).toEqual({ allowed: five.map((entry) => entry.prefix).sort(), withheld: ['198.51.100.0/24'] });
  });

  it('keeps a /24 with 26 offending addresses (a tenth of it), withholds one with 25, and counts only its own', () => {
    const enough = split([blocked('198.51.100.0/24', NOW + 60_000), ...addresses('198.51.100', 26)]);
    expect(enough.withheld).toEqual([]);
    expect(enough.allowed).toContain('198.51.100.0/24');
    // 25 inside, and many more next door: the neighbours are not this /24's evidence.
    expect(split([blocked('198.51.101.0/24', NOW + 60_000), ...addresses('198.51.101', 25), ...addresses('198.51.102', 100)]).withheld).toEqual(['198.51.101.0/24']);
    // The same address twice (two verdicts listed for it) is one source.
    expect(split([blocked('198.51.103.0/24', NOW + 60_000), ...addresses('198.51.103', 25), ...addresses('198.51.103', 25)]).withheld).toEqual(['198.51.103.0/24']);
  });

  it('keeps a /16 only with offenders in 26 of its /24s', () => {
    const spread = Array.from({ length: 26 }, (_, index) => blocked(`10.9.${index}.7/32`, NOW + 60_000));
    expect(split([blocked('10.9.0.0/16', NOW + 60_000), ...spread]).withheld).toEqual([]);
    // 125 offenders in five /24s (what makes the screen's /16): not spread enough for the firewall.
    const dense = Array.from({ length: 5 }, (_, block) => addresses(`10.8.${block}`, 25)).flat();
    expect(split([blocked('10.8.0.0/16', NOW + 60_000), ...dense]).withheld).toEqual(['10.8.0.0/16']);
  });

  it('counts IPv6 sources per /64, keeps a /64 verdict as one source, and passes the deny list', () => {
    const sameSlash64 = Array.from({ length: 40 }, (_, index) => blocked(`2001:db8:1:1::${index + 1}/128`, NOW + 60_000));
    const spread = Array.from({ length: 33 }, (_, index) => blocked(`2001:db8:2:${index.toString(16)}::1/128`, NOW + 60_000));
    expect(split([blocked('2001:db8:1::/48', NOW + 60_000), ...sameSlash64]).withheld).toEqual(['2001:db8:1::/48']);
    expect(split([blocked('2001:db8:2::/48', NOW + 60_000), ...spread]).withheld).toEqual([]);
    expect(split([blocked('2001:db8:3:3::/64', NOW + 60_000)]).allowed).toEqual(['2001:db8:3:3::/64']);
    const denied = blockedFromDenyList(['203.0.113.0/24']);
    expect(withWideningEvidence(denied, DEFAULTS)).toEqual({ allowed: denied, withheld: [] });
  });
});

describe('renderNftables', () => {
  const rows = collapseBlocked([
    blocked('192.0.2.7/32', NOW + 1_500),
    blocked('198.51.100.0/24', NOW + 600_000),
    blocked('198.51.100.9/32', NOW + 900_000),
    ...blockedFromDenyList(['203.0.113.0/24']),
    blocked('2001:db8::/48', NOW + 59_001),
  ]);
  const script = renderNftables(rows, NAMES, NOW);

  it('declares both sets with interval and timeout flags, flushes them and adds the elements with their timeouts', () => {
    expect(script).toContain('table inet smtp_pushback {\n\tset blocked_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval, timeout\n\t}\n\tset blocked_v6 {\n\t\ttype ipv6_addr\n\t\tflags interval, timeout\n\t}\n}\n');
    expect(script).toContain('flush set inet smtp_pushback blocked_v4\nflush set inet smtp_pushback blocked_v6\n');
    expect(script).toContain('add element inet smtp_pushback blocked_v4 { 192.0.2.7 timeout 2s, 198.51.100.0/24 timeout 600s, 203.0.113.0/24 }\n');
    expect(script).toContain('add element inet smtp_pushback blocked_v6 { 2001:db8::/48 timeout 60s }\n');
    expect(script).not.toContain('198.51.100.9');
  });

  it('adds no element statement for an empty set (nft refuses empty braces)', () => {
    const empty = renderNftables([], NAMES, NOW);
    expect(empty).not.toContain('add element');
    expect(empty).toContain('flush set inet smtp_pushback blocked_v6');
  });

  it('splits long element lists', () => {
    const many = Array.from({ length: 1_200 }, (_, index) => blocked(`10.${index >> 8}.${index & 255}.0/24`, NOW + 60_000));
    const lines = renderNftables(many, NAMES, NOW).split('\n').filter((line) => line.startsWith('add element'));
    expect(lines).toHaveLength(3);
    expect(lines.join(' ').match(/timeout 60s/g)).toHaveLength(1_200);
  });

  it('lists prefixes one per line for pullers', () => {
    expect(renderPrefixList(rows)).toBe('192.0.2.7/32\n198.51.100.0/24\n203.0.113.0/24\n2001:db8::/48\n');
  });

  it.skipIf(!nftAvailable)('passes nft -c -f, also with many overlapping prefixes collapsed', () => {
    const directory = mkdtempSync(join(tmpdir(), 'pushback-nft-'));
    const overlapping = collapseBlocked(Array.from({ length: 600 }, (_, index) => [
      blocked(`10.${index % 7}.0.0/16`, NOW + 60_000),
      blocked(`10.${index % 9}.${index % 250}.0/24`, NOW + 30_000),
      blocked(`10.${index % 11}.${index % 250}.${index % 200}/32`, NOW + 90_000),
    ]).flat());
    for (const [name, text] of [['sample.nft', script], ['empty.nft', renderNftables([], NAMES, NOW)], ['overlap.nft', renderNftables(overlapping, NAMES, NOW)]] as const) {
      const file = join(directory, name);
      writeFileSync(file, text);
      execFileSync('nft', ['-c', '-f', file], { stdio: 'pipe' });
    }
    // The check is real: overlapping elements that were not collapsed are refused.
    const bad = join(directory, 'bad.nft');
    writeFileSync(bad, renderNftables([blocked('192.0.2.0/24', NOW + 60_000), blocked('192.0.2.7/32', NOW + 60_000)], NAMES, NOW));
    expect(spawnSync('nft', ['-c', '-f', bad]).status).not.toBe(0);
  });
});
