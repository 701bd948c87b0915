// One notice per contact per period: the first claim in the shared store wins (on any node), the period
// is the store's TTL, a failed notice gives its claim back, and a failing store falls back to this node's
// own note (a duplicate across nodes rather than no notice). Time is injected (the memory store's clock).
import { describe, expect, it } from 'vitest';
import { NoticeLimiter, noticeKey } from '../../src/enforce/notice-limit.js';
import { MemoryKv } from '../../src/state/memory-kv.js';
import type { SharedKv } from '../../src/state/shared-kv.js';

const PERIOD_MS = 24 * 3_600_000;
const T0 = Date.UTC(2025, 0, 6, 12, 0, 0);
const OPTIONS = { timeoutMs: 100, maxLocalNotes: 100 };

/** A store whose every call fails, as an unreachable Redis does. */
function failingKv(): SharedKv {
  const fail = async (): Promise<never> => {
    throw new Error('connection refused');
  };
  return { kind: 'redis', getMany: fail, set: fail, setListed: fail, listed: fail, increment: fail, incrementMany: fail, incrementRecord: fail, delete: fail, scan: fail, close: async () => undefined };
}

describe('NoticeLimiter', () => {
  it('grants one notice per contact per period, case-insensitively, and again after the period', async () => {
    const limiter = new NoticeLimiter(new MemoryKv(), OPTIONS);
    expect(await limiter.claim('Abuse@School.example', PERIOD_MS, T0)).toEqual({ granted: true, shared: true });
    expect(limiter.sentHere('abuse@school.example', T0 + 1)).toBe(true);
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0 + PERIOD_MS - 1)).toEqual({ granted: false, reason: 'sent-here' });
    // Another contact is limited on its own.
    expect(await limiter.claim('noc@isp.example', PERIOD_MS, T0 + 1)).toMatchObject({ granted: true });
    expect(limiter.sentHere('abuse@school.example', T0 + PERIOD_MS)).toBe(false);
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0 + PERIOD_MS)).toEqual({ granted: true, shared: true });
  });

  it('shares the limit through the store: a second node sharing it sends nothing that period', async () => {
    const kv = new MemoryKv();
    const nodeA = new NoticeLimiter(kv, OPTIONS);
    const nodeB = new NoticeLimiter(kv, OPTIONS);
    expect(await nodeA.claim('abuse@school.example', PERIOD_MS, T0)).toMatchObject({ granted: true });
    expect(await nodeB.claim('abuse@school.example', PERIOD_MS, T0 + 1_000)).toEqual({ granted: false, reason: 'sent-elsewhere' });
    expect(await nodeB.claim('abuse@school.example', PERIOD_MS, T0 + PERIOD_MS)).toMatchObject({ granted: true });
  });

  it('gives a claim back when the notice failed, so a later verdict may send it', async () => {
    const kv = new MemoryKv();
    const limiter = new NoticeLimiter(kv, OPTIONS);
    await limiter.claim('abuse@school.example', PERIOD_MS, T0);
    await limiter.release('abuse@school.example');
    expect(await kv.getMany([noticeKey('abuse@school.example')], T0 + 1)).toEqual([undefined]);
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0 + 2)).toEqual({ granted: true, shared: true });
  });

  it('falls back to its own note when the store fails: it sends (not shared), once per period', async () => {
    const limiter = new NoticeLimiter(failingKv(), OPTIONS);
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0)).toEqual({ granted: true, shared: false });
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0 + 60_000)).toEqual({ granted: false, reason: 'sent-here' });
    await limiter.release('abuse@school.example');
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0 + 120_000)).toEqual({ granted: true, shared: false });
  });

  it('treats a store slower than timeoutMs as failed', async () => {
    const slow: SharedKv = { ...failingKv(), increment: () => new Promise<number>(() => undefined) };
    const limiter = new NoticeLimiter(slow, { timeoutMs: 20, maxLocalNotes: 100 });
    expect(await limiter.claim('abuse@school.example', PERIOD_MS, T0)).toEqual({ granted: true, shared: false });
  });

  it('keeps at most maxLocalNotes notes, dropping expired ones first', async () => {
    const limiter = new NoticeLimiter(failingKv(), { timeoutMs: 100, maxLocalNotes: 2 });
    await limiter.claim('a@one.example', 1_000, T0);
    await limiter.claim('b@two.example', PERIOD_MS, T0);
    await limiter.claim('c@three.example', PERIOD_MS, T0 + 2_000);
    expect(limiter.sentHere('b@two.example', T0 + 3_000)).toBe(true);
    expect(limiter.sentHere('c@three.example', T0 + 3_000)).toBe(true);
    // Full of live notes: the oldest goes.
    await limiter.claim('d@four.example', PERIOD_MS, T0 + 4_000);
    expect(limiter.sentHere('b@two.example', T0 + 5_000)).toBe(false);
    expect(limiter.sentHere('d@four.example', T0 + 5_000)).toBe(true);
  });
});
