// The entropy paper's pair rules for one session, including the time-out that makes an unanswered reply
// abnormal while the session is still open.
import { describe, expect, it } from 'vitest';
import { PairTracker } from '../../src/smtp/pair-tracker.js';

describe('PairTracker', () => {
  it('counts answered replies as normal, the last unanswered one as abnormal, and no pair for 221 or 421', () => {
    const pairs = new PairTracker();
    pairs.replySent(220, false, 0);
    expect(pairs.clientAnswered()).toBe(true);
    pairs.replySent(250, false, 1);
    pairs.replySent(421, false, 2); // our timeout: the 250 stays unanswered
    expect(pairs.end()).toEqual({ normal: 1, abnormal: 1 });
    const polite = new PairTracker();
    polite.replySent(220, false, 0);
    polite.clientAnswered();
    polite.replySent(221, false, 1);
    expect(polite.end()).toEqual({ normal: 1, abnormal: 0 });
  });

  it('a reply refused at connect (final) is not a pair', () => {
    const pairs = new PairTracker();
    pairs.replySent(554, true, 0);
    expect(pairs.end()).toEqual({ normal: 0, abnormal: 0 });
  });

  it('times out an unanswered reply once; a late answer does not make it normal', () => {
    const pairs = new PairTracker();
    pairs.replySent(220, false, 1_000);
    expect(pairs.expireOpenPair(500)).toBe(false);
    expect(pairs.expireOpenPair(1_000)).toBe(true);
    expect(pairs.expireOpenPair(2_000)).toBe(false);
    expect(pairs.clientAnswered()).toBe(false);
    expect(pairs.end()).toEqual({ normal: 0, abnormal: 1 });
  });
});
