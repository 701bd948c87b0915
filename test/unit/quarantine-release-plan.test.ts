// Release decisions: the gate, backoff, reply classes, the plan after an attempt, batch picking, expiry and
// the token bucket. All with fixed numbers; no clock, no I/O.
import { describe, expect, it } from 'vitest';
import {
  backoffMs, classifyReleaseReply, expired, pickBatch, planAfterAttempt, RateLimiter, releaseGate, type ReleaseGateInput,
} from '../../src/quarantine/release-plan.js';
import type { EntryMeta } from '../../src/quarantine/spool-entry.js';

const HOUR_MS = 3_600_000;

function entry(id: string, overrides: Partial<EntryMeta> = {}): EntryMeta {
  return {
    version: 1,
    id,
    receivedAtMs: 1_000,
    client: { address: '192.0.2.1', port: 1025, helo: 'h' },
    mailFrom: { address: 's@example.test', params: {} },
    recipients: ['a@example.test', 'b@example.test'],
    sizeBytes: 100,
    verdict: { reasons: ['r'], score: 1 },
    attempts: 0,
    nextAttemptAtMs: 1_000,
    state: 'held',
    ...overrides,
  };
}

describe('releaseGate', () => {
  const open: ReleaseGateInput = {
    nowMs: 10_000, offPeak: true, serverStatus: 1, upstreamLatencyMs: 40, upstreamLatencyLimitMs: 500, force: false,
  };

  it('allows release off-peak with a safe server and a fast Postfix', () => {
    expect(releaseGate(open)).toEqual({ allowed: true, reason: 'off-peak' });
    expect(releaseGate({ ...open, upstreamLatencyMs: null })).toEqual({ allowed: true, reason: 'off-peak' });
    expect(releaseGate({ ...open, upstreamLatencyMs: 500 })).toEqual({ allowed: true, reason: 'off-peak' });
    expect(releaseGate({ ...open, pausedUntilMs: 10_000 })).toEqual({ allowed: true, reason: 'off-peak' });
  });

  it('holds with the first reason that applies', () => {
    expect(releaseGate({ ...open, pausedUntilMs: 10_001, offPeak: false })).toEqual({ allowed: false, reason: 'paused' });
    expect(releaseGate({ ...open, offPeak: false, serverStatus: -1 })).toEqual({ allowed: false, reason: 'peak-hours' });
    expect(releaseGate({ ...open, serverStatus: 0 })).toEqual({ allowed: false, reason: 'server-not-safe' });
    expect(releaseGate({ ...open, serverStatus: -1 })).toEqual({ allowed: false, reason: 'server-not-safe' });
    expect(releaseGate({ ...open, upstreamLatencyMs: 501 })).toEqual({ allowed: false, reason: 'upstream-slow' });
  });

  it('force overrides everything', () => {
    const worst = { ...open, offPeak: false, serverStatus: -1 as const, upstreamLatencyMs: 99_999, pausedUntilMs: 1e12 };
    expect(releaseGate({ ...worst, force: true })).toEqual({ allowed: true, reason: 'forced' });
  });
});

describe('backoffMs', () => {
  it('doubles from baseMs and stops at maxMs', () => {
    const options = { baseMs: 60_000, maxMs: 4 * HOUR_MS };
    expect([1, 2, 3, 4, 8, 9, 1_000].map((attempts) => backoffMs(attempts, options))).toEqual([
      60_000, 120_000, 240_000, 480_000, 7_680_000, 4 * HOUR_MS, 4 * HOUR_MS,
    ]);
  });

  it('takes up to jitterRatio of the delay off, from the injected random source', () => {
    const options = { baseMs: 1_000, maxMs: 60_000, jitterRatio: 0.5 };
    expect(backoffMs(3, { ...options, random: () => 0 })).toBe(4_000);
    expect(backoffMs(3, { ...options, random: () => 0.5 })).toBe(3_000);
    expect(backoffMs(3, { ...options, random: () => 0.999 })).toBe(2_002);
  });

  it('rejects nonsense', () => {
    expect(() => backoffMs(0, { baseMs: 1, maxMs: 2 })).toThrow(RangeError);
    expect(() => backoffMs(1.5, { baseMs: 1, maxMs: 2 })).toThrow(RangeError);
    expect(() => backoffMs(1, { baseMs: 1, maxMs: 2, jitterRatio: 0.1 })).toThrow(/random/);
    expect(() => backoffMs(1, { baseMs: 1, maxMs: 2, jitterRatio: 2, random: Math.random })).toThrow(RangeError);
  });
});

describe('classifyReleaseReply', () => {
  it.each([
    [250, 'released'], [251, 'released'], [421, 'retry'], [451, 'retry'], [452, 'retry'],
    [550, 'rejected'], [554, 'rejected'], [null, 'retry'], [354, 'retry'], [0, 'retry'],
  ] as const)('%s is %s', (code, outcome) => {
    expect(classifyReleaseReply(code)).toBe(outcome);
  });
});

describe('planAfterAttempt', () => {
  const options = { nowMs: 2 * HOUR_MS, backoff: { baseMs: 60_000, maxMs: HOUR_MS }, maxAgeMs: 5 * 24 * HOUR_MS };

  it('finishes as released when every recipient took it', () => {
    const plan = planAfterAttempt(entry('e', { attempts: 2, lastError: 'old' }), [
      { recipient: 'a@example.test', code: 250 }, { recipient: 'b@example.test', code: 250 },
    ], options);
    expect(plan).toEqual({ kind: 'finished', state: 'released', patch: { state: 'released', attempts: 3, lastError: undefined } });
  });

  it('retries only the deferred recipients, after backoff', () => {
    const plan = planAfterAttempt(entry('e', { attempts: 1 }), [
      { recipient: 'a@example.test', code: 250 }, { recipient: 'b@example.test', code: 451, text: '4.7.1 try later' },
    ], options);
    expect(plan).toEqual({
      kind: 'retry',
      patch: {
        state: 'held', attempts: 2, nextAttemptAtMs: 2 * HOUR_MS + 120_000, recipients: ['b@example.test'],
        lastError: 'b@example.test: 451 4.7.1 try later',
      },
    });
  });

  it('finishes as rejected when every recipient was refused for good', () => {
    const plan = planAfterAttempt(entry('e'), [
      { recipient: 'a@example.test', code: 550, text: '5.1.1 unknown' }, { recipient: 'b@example.test', code: 554 },
    ], options);
    expect(plan).toMatchObject({ kind: 'finished', state: 'rejected', patch: { state: 'rejected', lastError: 'a@example.test: 550 5.1.1 unknown' } });
  });

  it('gives up on a deferred entry past maxAgeMs', () => {
    const old = entry('e', { receivedAtMs: 0, attempts: 9 });
    const plan = planAfterAttempt(old, [{ recipient: 'a@example.test', code: null }], { ...options, nowMs: options.maxAgeMs });
    expect(plan).toEqual({
      kind: 'finished', state: 'rejected',
      patch: { state: 'rejected', attempts: 10, lastError: 'expired after 10 attempts; last: a@example.test: no reply' },
    });
  });
});

describe('pickBatch and expired', () => {
  it('takes due held entries, oldest first, at most maxCount', () => {
    const entries = [
      entry('d', { receivedAtMs: 400 }),
      entry('c', { receivedAtMs: 300, state: 'releasing' }),
      entry('b2', { receivedAtMs: 200 }),
      entry('b1', { receivedAtMs: 200 }),
      entry('a', { receivedAtMs: 100, nextAttemptAtMs: 5_001 }),
      entry('e', { receivedAtMs: 500, state: 'rejected' }),
      entry('f', { receivedAtMs: 600 }),
    ];
    expect(pickBatch(entries, { nowMs: 5_000, maxCount: 3 }).map((picked) => picked.id)).toEqual(['b1', 'b2', 'd']);
    expect(pickBatch(entries, { nowMs: 5_001, maxCount: 10 }).map((picked) => picked.id)).toEqual(['a', 'b1', 'b2', 'd', 'f']);
    expect(pickBatch(entries, { nowMs: 5_000, maxCount: 0 })).toEqual([]);
  });

  it('expires at exactly maxAgeMs', () => {
    expect(expired({ receivedAtMs: 1_000 }, 1_000 + HOUR_MS - 1, HOUR_MS)).toBe(false);
    expect(expired({ receivedAtMs: 1_000 }, 1_000 + HOUR_MS, HOUR_MS)).toBe(true);
  });
});

describe('RateLimiter', () => {
  it('allows a burst, then ratePerSecond', () => {
    const limiter = new RateLimiter(2, 3, 0);
    expect([limiter.tryTake(0), limiter.tryTake(0), limiter.tryTake(0), limiter.tryTake(0)]).toEqual([true, true, true, false]);
    expect(limiter.msUntilAvailable(0)).toBe(500);
    expect(limiter.tryTake(499)).toBe(false);
    expect(limiter.tryTake(500)).toBe(true);
    expect(limiter.msUntilAvailable(500, 2)).toBe(1_000);
  });

  it('refills to burst at most, ignores a clock that steps back, and never grants more than burst', () => {
    const limiter = new RateLimiter(10, 5, 1_000);
    for (let taken = 0; taken < 5; taken += 1) limiter.tryTake(1_000);
    expect(limiter.tryTake(500)).toBe(false);
    expect(limiter.msUntilAvailable(60_000, 5)).toBe(0);
    expect(limiter.tryTake(60_000, 6)).toBe(false);
    expect(limiter.msUntilAvailable(60_000, 6)).toBe(Number.POSITIVE_INFINITY);
    expect(limiter.tryTake(60_000, 5)).toBe(true);
  });

  it('rejects nonsense rates', () => {
    expect(() => new RateLimiter(0, 1, 0)).toThrow(RangeError);
    expect(() => new RateLimiter(1, 0.5, 0)).toThrow(RangeError);
  });
});
