// Verdict precedence: allow list → deny list → cached verdict → proven sender → detectors and the action table.
import { describe, expect, it } from 'vitest';
import { defaultPolicy } from '../../src/config/load.js';
import { decide, type DecisionInput, type DecisionPolicy, type Verdict } from '../../src/policy/precedence.js';

const NOW = 1_700_000_000_000;

const POLICY: DecisionPolicy = {
  denyAction: 'reject',
  provenAfterCleanSessions: 3,
  actionTable: [
    { status: [0, -1], minScore: 10, action: 'defer' },
    { status: [0, -1], minScore: 5, action: 'tarpit' },
  ],
  verdictTtlMs: 60_000,
};

const CACHED_DEFER: Verdict = { action: 'defer', source: 'detectors', reasons: ['sfds: paper-hourly'], score: 10, expiresAtMs: NOW + 1 };

/** Everything present at once: each test removes the layers above the one it checks. */
function everything(): DecisionInput {
  return {
    nowMs: NOW,
    allowListMatch: '192.0.2.0/24',
    denyListMatch: '192.0.2.7/32',
    cachedVerdict: CACHED_DEFER,
    provenSender: { cleanSessions: 3, expiresAtMs: NOW + 1 },
    serverStatus: -1,
    findings: [
      { detector: 'sfds', score: 10, reason: 'paper-hourly: 200 flows per period' },
      { detector: 'prefix', score: 5, reason: 'inside 192.0.2.0/24' },
    ],
  };
}

describe('decide', () => {
  it('1. the permanent allow list wins over everything', () => {
    expect(decide(everything(), POLICY)).toEqual({ action: 'pass', source: 'allow-list', reasons: ['allow list 192.0.2.0/24'], score: 0 });
  });

  it('2. then the permanent deny list', () => {
    const input = { ...everything(), allowListMatch: undefined };
    expect(decide(input, POLICY)).toEqual({ action: 'reject', source: 'deny-list', reasons: ['deny list 192.0.2.7/32'], score: 0 });
    expect(decide(input, { ...POLICY, denyAction: 'defer' }).action).toBe('defer');
  });

  it('3. then an unexpired cached verdict, as it was', () => {
    const input = { ...everything(), allowListMatch: undefined, denyListMatch: undefined };
    expect(decide(input, POLICY)).toEqual({ ...CACHED_DEFER, source: 'cached' });
  });

  it('ignores a cached verdict that expired or never had an expiry', () => {
    const base = { ...everything(), allowListMatch: undefined, denyListMatch: undefined };
    expect(decide({ ...base, cachedVerdict: { ...CACHED_DEFER, expiresAtMs: NOW } }, POLICY).source).toBe('proven');
    const { expiresAtMs: _dropped, ...noExpiry } = CACHED_DEFER;
    expect(decide({ ...base, cachedVerdict: noExpiry }, POLICY).source).toBe('proven');
  });

  it('4. then a proven sender passes untouched, whatever the detectors say', () => {
    const input = { ...everything(), allowListMatch: undefined, denyListMatch: undefined, cachedVerdict: undefined };
    expect(decide(input, POLICY)).toEqual({ action: 'pass', source: 'proven', reasons: ['proven sender: 3 clean sessions'], score: 0 });
  });

  it('needs N clean sessions and an unexpired entry to count as proven', () => {
    const base = { ...everything(), allowListMatch: undefined, denyListMatch: undefined, cachedVerdict: undefined };
    expect(decide({ ...base, provenSender: { cleanSessions: 2, expiresAtMs: NOW + 1 } }, POLICY).source).toBe('detectors');
    expect(decide({ ...base, provenSender: { cleanSessions: 3, expiresAtMs: NOW } }, POLICY).source).toBe('detectors');
  });

  it('5. then the detectors: scores add up, the table picks the action, the verdict is cacheable', () => {
    const input = { ...everything(), allowListMatch: undefined, denyListMatch: undefined, cachedVerdict: undefined, provenSender: undefined };
    expect(decide(input, POLICY)).toEqual({
      action: 'defer',
      source: 'detectors',
      score: 15,
      reasons: ['sfds: paper-hourly: 200 flows per period', 'prefix: inside 192.0.2.0/24', 'rule 1: status -1, score 15 >= 10 → defer'],
      expiresAtMs: NOW + 60_000,
    });
  });

  it('passes without caching when no row matches, leaving out findings worth nothing', () => {
    const input: DecisionInput = {
      ...everything(), allowListMatch: undefined, denyListMatch: undefined, cachedVerdict: undefined, provenSender: undefined,
      serverStatus: 1,
      findings: [{ detector: 'sfds', score: 10, reason: 'flooding' }, { detector: 'entropy', score: 0, reason: 'nothing' }],
    };
    expect(decide(input, POLICY)).toEqual({ action: 'pass', source: 'detectors', score: 10, reasons: ['sfds: flooding'] });
  });

  it('does not cache when verdictTtlMs is 0', () => {
    const input = { ...everything(), allowListMatch: undefined, denyListMatch: undefined, cachedVerdict: undefined, provenSender: undefined };
    expect(decide(input, { ...POLICY, verdictTtlMs: 0 })).not.toHaveProperty('expiresAtMs');
  });

  it('works with the policy file’s default action table', () => {
    const defaults = defaultPolicy({});
    if (!defaults.ok) throw new Error('defaults refused');
    const { pushback } = defaults.policy;
    const policy: DecisionPolicy = { denyAction: 'reject', provenAfterCleanSessions: pushback.proven.sessions, actionTable: pushback.actions, verdictTtlMs: pushback.verdictTtlSeconds * 1000 };
    const input: DecisionInput = {
      nowMs: NOW, allowListMatch: undefined, denyListMatch: undefined, cachedVerdict: undefined, provenSender: undefined,
      serverStatus: 0, findings: [{ detector: 'sfds', score: 15, reason: 'flooding' }],
    };
    expect(decide(input, policy)).toMatchObject({ action: 'quarantine', expiresAtMs: NOW + 600_000 });
  });
});
