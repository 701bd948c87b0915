// The pure parts of client capacity: which session eviction picks, the per-address and per-network
// counts, and maxClients against the descriptor limit.
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_CLIENTS, planCapacity, RESERVED_DESCRIPTORS } from '../../src/capacity.js';
import { chooseEviction, evictionReason, type EvictionView } from '../../src/smtp/eviction.js';
import { concurrencyKeys, SourceConcurrency } from '../../src/smtp/source-concurrency.js';

const idle = (overrides: Partial<EvictionView>): EvictionView => ({
  inTransaction: false, closing: false, commands: 1, transactions: 1, suspect: false, trusted: false, lastActivityMs: 1_000, ...overrides,
});

describe('eviction', () => {
  it('classes sessions worst first and never picks one in a transaction or already closing', () => {
    expect(evictionReason(idle({ commands: 0, transactions: 0 }))).toBe('silent');
    expect(evictionReason(idle({ transactions: 0 }))).toBe('idle-after-helo');
    expect(evictionReason(idle({ suspect: true }))).toBe('suspect');
    expect(evictionReason(idle({}))).toBe('idle');
    expect(evictionReason(idle({ trusted: true, commands: 0 }))).toBe('trusted-idle');
    expect(evictionReason(idle({ inTransaction: true, commands: 0 }))).toBeUndefined();
    expect(evictionReason(idle({ closing: true, commands: 0 }))).toBeUndefined();
  });

  it('takes the lowest class, the longest idle within it, and a trusted one only when nothing else is left', () => {
    const sessions: Array<[string, EvictionView]> = [
      ['in-transaction', idle({ inTransaction: true, commands: 0 })],
      ['trusted', idle({ trusted: true, lastActivityMs: 1 })],
      ['idle-recent', idle({ lastActivityMs: 900 })],
      ['idle-old', idle({ lastActivityMs: 100 })],
      ['helo-only', idle({ transactions: 0, lastActivityMs: 950 })],
    ];
    const pick = (list: Array<[string, EvictionView]>, scan = 100) => chooseEviction(list, ([, view]) => view, scan)?.session[0];
    expect(pick(sessions)).toBe('helo-only');
    expect(pick(sessions.filter(([name]) => name !== 'helo-only'))).toBe('idle-old');
    expect(pick(sessions.filter(([name]) => name === 'trusted' || name === 'in-transaction'))).toBe('trusted');
    expect(pick(sessions.filter(([name]) => name === 'in-transaction'))).toBeUndefined();
    // The scan is bounded: a candidate past the limit is not seen.
    expect(pick(sessions, 2)).toBe('trusted');
    // The first silent session is taken at once, in connect order.
    expect(pick([...sessions, ['silent-1', idle({ commands: 0, transactions: 0 })], ['silent-2', idle({ commands: 0, transactions: 0 })]])).toBe('silent-1');
  });
});

describe('source concurrency', () => {
  it('keys an address and its /24 or /64, mapped IPv6 as IPv4', () => {
    expect(concurrencyKeys('192.0.2.77')).toEqual({ address: '192.0.2.77', prefix: '192.0.2.0/24' });
    expect(concurrencyKeys('::ffff:192.0.2.77')).toEqual({ address: '192.0.2.77', prefix: '192.0.2.0/24' });
    expect(concurrencyKeys('2001:db8:1:2:3:4:5:6')).toEqual({ address: '2001:db8:1:2:3:4:5:6', prefix: '2001:db8:1:2::/64' });
    expect(concurrencyKeys('not-an-address')).toBeUndefined();
  });

  it('counts in arrival order, refuses past each limit without counting, and forgets a key at zero', () => {
    const counts = new SourceConcurrency({ perAddress: 2, perPrefixV4: 3, perPrefixV6: 2 });
    const a1 = counts.enter('192.0.2.1');
    const a2 = counts.enter('192.0.2.1');
    expect(counts.enter('192.0.2.1').excess).toEqual({ scope: 'address', key: '192.0.2.1', limit: 2 });
    const b1 = counts.enter('192.0.2.2');
    expect(counts.enter('192.0.2.3').excess).toEqual({ scope: 'prefix', key: '192.0.2.0/24', limit: 3 });
    // A /64 holding a whole rotation of addresses is one network.
    counts.enter('2001:db8::1');
    counts.enter('2001:db8::2');
    expect(counts.enter('2001:db8::3').excess?.key).toBe('2001:db8::/64');
    for (const entered of [a1, a2, b1]) counts.leave(entered.keys);
    expect(counts.enter('192.0.2.3').excess).toBeUndefined();
    // 2001:db8::1, ::2, their /64, and 192.0.2.3 with its /24: nothing of the sessions that ended.
    expect(counts.size).toBe(5);
  });
});

describe('capacity against the descriptor limit', () => {
  const admin = 32;
  it('gives the default when the limit holds it, and lowers the default, not a set value, when it does not', () => {
    expect(planCapacity(undefined, { soft: 65_536, hard: 65_536 }, admin)).toEqual({ maxClients: DEFAULT_MAX_CLIENTS, descriptorsNeeded: 2 * DEFAULT_MAX_CLIENTS + admin + RESERVED_DESCRIPTORS });
    const lowered = planCapacity(undefined, { soft: 20_000, hard: 20_000 }, admin);
    expect(lowered.lowered).toBe(true);
    expect(lowered.maxClients).toBe(Math.floor((20_000 - admin - RESERVED_DESCRIPTORS) / 2));
    expect(lowered.descriptorsNeeded).toBeLessThanOrEqual(20_000);
    expect(planCapacity(5_000, { soft: 20_000, hard: 20_000 }, admin)).toEqual({ maxClients: 5_000, descriptorsNeeded: 10_000 + admin + RESERVED_DESCRIPTORS });
    const refused = planCapacity(50_000, { soft: 20_000, hard: 20_000 }, admin);
    expect(refused.refusal).toMatch(/server\.maxClients 50000 needs 100160 file descriptors .* the limit is 20000 .* at most 9920/);
  });
});
