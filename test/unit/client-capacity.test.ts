// The pure parts of client capacity: which session eviction picks, the per-address and per-network
// counts, and maxClients against the descriptor limit.
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_CLIENTS, planCapacity, RESERVED_DESCRIPTORS } from '../../src/capacity.js';
import { chooseEviction, evictionReason, IDLE_CLOSES_PER_SECOND, MIN_REARMED_IDLE_MS, spreadIdleCloses, type EvictionView } from '../../src/smtp/eviction.js';
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

describe('idle sessions closed when stress shortens the time-out', () => {
  it('closes each at what is left of the new time-out, counted from its last command', () => {
    expect(spreadIdleCloses([3_000, 500], 10_000)).toEqual([7_000, 9_500]);
  });

  it('spreads those already past it, longest idle first, never more than IDLE_CLOSES_PER_SECOND', () => {
    const idleForMs = Array.from({ length: 7_000 }, (_, index) => 60_000 - index);
    const delays = spreadIdleCloses(idleForMs, 10_000);
    expect(delays[0]).toBe(MIN_REARMED_IDLE_MS);
    for (let index = 1; index < delays.length; index += 1) expect(delays[index] as number).toBeGreaterThanOrEqual(delays[index - 1] as number);
    const perSecond = new Map<number, number>();
    for (const delay of delays) perSecond.set(Math.floor(delay / 1000), (perSecond.get(Math.floor(delay / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(IDLE_CLOSES_PER_SECOND + 1);
    expect(delays.at(-1)).toBe(MIN_REARMED_IDLE_MS + Math.round((6_999 * 1000) / IDLE_CLOSES_PER_SECOND));
  });

  it('keeps the natural order when sessions went quiet at a rate below the cap', () => {
    // Went quiet 100 ms apart: each closes at its own time, later than any spreading would put it.
    expect(spreadIdleCloses([9_000, 8_900, 8_800], 10_000)).toEqual([1_000, 1_100, 1_200]);
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
  const others = { admin: 32, upstream: 102 };
  const fixed = others.admin + others.upstream + RESERVED_DESCRIPTORS;
  it('gives the default when the limit holds it, and lowers the default, not a set value, when it does not', () => {
    // One descriptor a client plus a tenth; Postfix's connections are capped apart, not one per client.
    expect(planCapacity(undefined, { soft: 65_536, hard: 65_536 }, others)).toEqual({ maxClients: DEFAULT_MAX_CLIENTS, descriptorsNeeded: DEFAULT_MAX_CLIENTS + DEFAULT_MAX_CLIENTS / 10 + fixed });
    const lowered = planCapacity(undefined, { soft: 20_000, hard: 20_000 }, others);
    expect(lowered.lowered).toBe(true);
    expect(lowered.maxClients).toBe(17_943);
    expect(lowered.maxClients).toBeGreaterThan(10_000);
    expect(lowered.descriptorsNeeded).toBeLessThanOrEqual(20_000);
    expect(planCapacity(5_000, { soft: 20_000, hard: 20_000 }, others)).toEqual({ maxClients: 5_000, descriptorsNeeded: 5_500 + fixed });
    const refused = planCapacity(50_000, { soft: 20_000, hard: 20_000 }, others);
    expect(refused.refusal).toMatch(/server\.maxClients 50000 needs 55262 file descriptors \(1\.1 per session, 102 to Postfix, 32 admin, 128 reserved\) but the limit is 20000 .* at most 17943/);
  });
});
