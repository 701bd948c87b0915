// Score → action table (first matching row wins, default pass) and the tarpit delay curve.
import { describe, expect, it } from 'vitest';
import { defaultPolicy } from '../../src/config/load.js';
import { chooseAction, chooseActionRule, tarpitDelayMs, type ActionTable } from '../../src/policy/actions.js';

const TABLE: ActionTable = [
  { status: [-1], minScore: 10, action: 'defer' },
  { status: [-1], minScore: 5, action: 'quarantine' },
  { status: [0, -1], minScore: 5, action: 'tarpit' },
  { status: [1, 0, -1], minScore: 30, action: 'reject' },
];

describe('chooseAction', () => {
  it('takes the first row matching both status and score, in table order', () => {
    expect(chooseAction(-1, 12, TABLE)).toBe('defer');
    expect(chooseAction(-1, 30, TABLE)).toBe('defer'); // the reject row comes later
    expect(chooseAction(-1, 7, TABLE)).toBe('quarantine');
    expect(chooseAction(0, 12, TABLE)).toBe('tarpit');
    expect(chooseAction(1, 30, TABLE)).toBe('reject');
  });

  it('treats minScore as inclusive', () => {
    expect(chooseAction(0, 5, TABLE)).toBe('tarpit');
    expect(chooseAction(0, 4.99, TABLE)).toBe('pass');
  });

  it('passes when no row matches, and with an empty table', () => {
    expect(chooseAction(1, 29, TABLE)).toBe('pass');
    expect(chooseAction(-1, 100, [])).toBe('pass');
    expect(chooseActionRule(1, 29, TABLE)).toEqual({ action: 'pass' });
  });

  it('says which row matched', () => {
    expect(chooseActionRule(0, 6, TABLE)).toEqual({ action: 'tarpit', matched: { index: 2, rule: TABLE[2] } });
  });

  it('grades the policy file’s default table by status and score', () => {
    const defaults = defaultPolicy({});
    if (!defaults.ok) throw new Error('defaults refused');
    const table = defaults.policy.pushback.actions;
    expect(chooseAction(1, 9, table)).toBe('pass');
    expect(chooseAction(1, 10, table)).toBe('tarpit');
    expect(chooseAction(0, 5, table)).toBe('tarpit');
    expect(chooseAction(1, 5, table)).toBe('pass');
    expect(chooseAction(-1, 10, table)).toBe('defer');
    expect(chooseAction(1, 15, table)).toBe('quarantine');
    expect(chooseAction(-1, 29, table)).toBe('quarantine');
    expect(chooseAction(1, 30, table)).toBe('reject');
  });

  it('refuses a NaN score rather than guess', () => {
    expect(() => chooseAction(0, Number.NaN, TABLE)).toThrow(RangeError);
  });
});

describe('tarpitDelayMs', () => {
  const options = { baseMs: 1_000, perScoreMs: 500, maxMs: 15_000 };

  it('grows linearly with the score from baseMs', () => {
    expect(tarpitDelayMs(0, options)).toBe(1_000);
    expect(tarpitDelayMs(5, options)).toBe(3_500);
    expect(tarpitDelayMs(10, options)).toBe(6_000);
    expect(tarpitDelayMs(10.3, options)).toBe(6_150);
  });

  it('is capped at maxMs and never below baseMs for negative scores', () => {
    expect(tarpitDelayMs(28, options)).toBe(15_000);
    expect(tarpitDelayMs(1_000, options)).toBe(15_000);
    expect(tarpitDelayMs(Number.POSITIVE_INFINITY, options)).toBe(15_000);
    expect(tarpitDelayMs(-4, options)).toBe(1_000);
  });

  it('copes with odd but valid options without failing a session', () => {
    expect(tarpitDelayMs(Number.POSITIVE_INFINITY, { baseMs: 1_000, perScoreMs: 0, maxMs: 15_000 })).toBe(1_000);
    expect(tarpitDelayMs(3, { baseMs: 5_000, perScoreMs: 100, maxMs: 2_000 })).toBe(2_000);
  });
});
