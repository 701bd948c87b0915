// The verdict for a connecting source, in one place and one order: permanent allow list → permanent deny
// list → cached verdict → proven sender → live detectors and the action table. Every input is a plain value
// the caller has already looked up (list matches, store entries, detector findings), so the order itself is
// a pure function that reads top to bottom and is tested on its own.
import type { ServerStatus } from '../detect/entropy.js';
import { chooseActionRule, type Action, type ActionTable } from './actions.js';

export type VerdictSource = 'allow-list' | 'deny-list' | 'cached' | 'proven' | 'detectors';

export interface Verdict {
  action: Action;
  source: VerdictSource;
  reasons: string[];
  score: number;
  /** Present only on verdicts worth caching for the source until then: detector verdicts that push back. */
  expiresAtMs?: number;
}

/** What one live detector says about the source. Scores add up; a detector with nothing to say gives none. */
export interface DetectorFinding {
  /** e.g. "sfds", "prefix", "misbehaviour". */
  detector: string;
  score: number;
  /** For logs and /status, e.g. "hourly: 212 flows/period for 6 periods, 140 bytes/packet". */
  reason: string;
}

/** The temporary allow list's entry for the source: clean sessions it completed, and until when it is trusted. */
export interface ProvenSender {
  cleanSessions: number;
  expiresAtMs: number;
}

export interface DecisionInput {
  nowMs: number;
  /** The permanent allow-list entry holding the source (CidrList.match), if any. */
  allowListMatch: string | undefined;
  /** The permanent deny-list entry holding the source, if any. */
  denyListMatch: string | undefined;
  /** The verdict cached for the source, if any (expired ones are ignored here). */
  cachedVerdict: Verdict | undefined;
  provenSender: ProvenSender | undefined;
  /** The entropy status of the server right now. */
  serverStatus: ServerStatus;
  findings: readonly DetectorFinding[];
}

export interface DecisionPolicy {
  /** What a deny-listed source gets. */
  denyAction: Exclude<Action, 'pass'>;
  /** N: clean sessions after which a source is passed untouched while its proven entry lasts. */
  provenAfterCleanSessions: number;
  actionTable: ActionTable;
  /** How long a detector verdict that pushes back is cached for the source; 0 disables caching. */
  verdictTtlMs: number;
}

/** The policy comes from the policy file (config/schema.ts holds the defaults, in one place). */
export function decide(input: DecisionInput, policy: DecisionPolicy): Verdict {
  const { nowMs } = input;

  if (input.allowListMatch !== undefined) {
    return { action: 'pass', source: 'allow-list', reasons: [`allow list ${input.allowListMatch}`], score: 0 };
  }

  if (input.denyListMatch !== undefined) {
    return { action: policy.denyAction, source: 'deny-list', reasons: [`deny list ${input.denyListMatch}`], score: 0 };
  }

  const cached = input.cachedVerdict;
  if (cached?.expiresAtMs !== undefined && cached.expiresAtMs > nowMs) {
    return { ...cached, source: 'cached', reasons: [...cached.reasons] };
  }

  const proven = input.provenSender;
  if (proven !== undefined && proven.cleanSessions >= policy.provenAfterCleanSessions && proven.expiresAtMs > nowMs) {
    return { action: 'pass', source: 'proven', reasons: [`proven sender: ${proven.cleanSessions} clean sessions`], score: 0 };
  }

  const score = input.findings.reduce((sum, finding) => sum + finding.score, 0);
  const reasons = input.findings.filter((finding) => finding.score !== 0).map((finding) => `${finding.detector}: ${finding.reason}`);
  const { action, matched } = chooseActionRule(input.serverStatus, score, policy.actionTable);
  if (matched !== undefined) {
    reasons.push(`rule ${matched.index + 1}: status ${input.serverStatus}, score ${score} >= ${matched.rule.minScore} → ${action}`);
  }
  const verdict: Verdict = { action, source: 'detectors', reasons, score };
  // A pass is never cached: a source that starts flooding a second later must meet the detectors again.
  if (action !== 'pass' && policy.verdictTtlMs > 0) verdict.expiresAtMs = nowMs + policy.verdictTtlMs;
  return verdict;
}
