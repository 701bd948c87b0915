// What the detectors know about one source, and the findings (points with their reasons) it earns:
// the scoring half of the screen; precedence.ts adds them up and picks the action. Pure: numbers in,
// findings out, each naming its detector and the numbers behind it.
import type { ServerStatus } from '../detect/entropy.js';
import type { Policy } from '../config/schema.js';
import type { DetectorFinding } from './precedence.js';

export interface SourceEvidence {
  /** The effective server status: the pair entropy status, at most 0 under upstream pressure. */
  status: ServerStatus;
  /** Pairs of this source over the misbehaviour memory (misbehaviourTtlSeconds). */
  abnormalPairs: number;
  normalPairs: number;
  earlyTalks: number;
  nonSmtp: number;
  pipelining: number;
  unknownCommands: number;
  /** The SFDS threshold set this source floods under, with its numbers, if any. */
  sfds?: { set: string; flowsPerPeriod: number; meanPacketBytes: number; durationPeriods: number } | undefined;
  /** The suspect prefix holding this source (k suspects inside), if any. */
  prefix?: { prefix: string; members: number } | undefined;
}

/** Unknown commands a source may send before they count (typos, probing clients). */
const FREE_UNKNOWN_COMMANDS = 2;

export function findingsFor(evidence: SourceEvidence, pushback: Policy['pushback']): DetectorFinding[] {
  const findings: DetectorFinding[] = [];
  const { scores } = pushback;
  const pairs = evidence.abnormalPairs + evidence.normalPairs;
  if (
    evidence.status <= 0
    && evidence.abnormalPairs >= pushback.entropyMinAbnormalPairs
    && pairs > 0
    && evidence.abnormalPairs / pairs >= pushback.entropyMinAbnormalShare
  ) {
    findings.push({
      detector: 'entropy',
      score: scores.entropy,
      reason: `${evidence.abnormalPairs} abnormal of ${pairs} pairs while the server status is ${evidence.status}`,
    });
  }
  if (evidence.sfds) {
    const { set, flowsPerPeriod, meanPacketBytes, durationPeriods } = evidence.sfds;
    findings.push({
      detector: 'sfds',
      score: scores.sfds,
      reason: `${set}: ${Math.round(flowsPerPeriod)} flows per period, ${Math.round(meanPacketBytes)} bytes per packet, ${durationPeriods} periods`,
    });
  }
  if (evidence.earlyTalks > 0) findings.push({ detector: 'early-talker', score: scores.earlyTalker, reason: `talked before the greeting ${evidence.earlyTalks}x` });
  if (evidence.nonSmtp > 0) findings.push({ detector: 'non-smtp', score: scores.nonSmtp, reason: `${evidence.nonSmtp} non-SMTP commands` });
  if (evidence.pipelining > 0) findings.push({ detector: 'pipelining', score: scores.pipelining, reason: `pipelined ${evidence.pipelining}x without PIPELINING` });
  const countedUnknown = evidence.unknownCommands - FREE_UNKNOWN_COMMANDS;
  if (countedUnknown > 0) {
    findings.push({ detector: 'unknown-commands', score: countedUnknown * scores.unknownCommand, reason: `${evidence.unknownCommands} unknown commands` });
  }
  if (evidence.prefix) {
    findings.push({ detector: 'prefix', score: scores.prefix, reason: `inside ${evidence.prefix.prefix} with ${evidence.prefix.members} suspects` });
  }
  return findings;
}

/** The detector that gave the most points: the verdict's label in logs and metrics. */
export function strongestDetector(findings: readonly DetectorFinding[]): string {
  let best: DetectorFinding | undefined;
  for (const finding of findings) if (!best || finding.score > best.score) best = finding;
  return best?.detector ?? 'none';
}
