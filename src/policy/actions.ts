// Graded pushback: which action a suspect source gets, from the server's entropy status and the
// source's score from the live detectors. The table is the operator's: ordered rows, the first row matching
// both the status and the score wins, and a source no row matches is passed. Deciding only; the enforce
// stage carries the action out.
import type { ServerStatus } from '../detect/entropy.js';

export type Action = 'pass' | 'tarpit' | 'defer' | 'reject' | 'quarantine';

export const ACTIONS: readonly Action[] = Object.freeze(['pass', 'tarpit', 'defer', 'reject', 'quarantine']);

export interface ActionRule {
  /** Server statuses this row applies to: 1 safe, 0 critical, -1 danger. */
  status: readonly ServerStatus[];
  /** The row applies when score >= minScore (inclusive, unlike SFDS's strict thresholds). */
  minScore: number;
  action: Action;
}

export type ActionTable = readonly ActionRule[];

export interface ActionChoice {
  action: Action;
  /** The row that matched and its 0-based position; absent when none did and the source passes by default. */
  matched?: { index: number; rule: ActionRule };
}

/** The first row matching status and score, with the row itself (for the verdict's reasons). */
export function chooseActionRule(status: ServerStatus, score: number, table: ActionTable): ActionChoice {
  if (Number.isNaN(score)) throw new RangeError('score must be a number, got NaN');
  const index = table.findIndex((candidate) => candidate.status.includes(status) && score >= candidate.minScore);
  const rule = table[index];
  return rule === undefined ? { action: 'pass' } : { action: rule.action, matched: { index, rule } };
}

export function chooseAction(status: ServerStatus, score: number, table: ActionTable): Action {
  return chooseActionRule(status, score, table).action;
}

export interface TarpitOptions {
  /** Delay at score 0 (and below). */
  baseMs: number;
  /** Added per point of score. */
  perScoreMs: number;
  /** Ceiling: stays well under a client's command timeout (RFC 5321 allows it 5 minutes) so it does not give up and retry at once. */
  maxMs: number;
}

/**
 * Delay before each reply to a tarpitted client: baseMs + perScoreMs * score, capped at maxMs (maxMs wins over
 * baseMs if set lower), whole milliseconds, never negative. Options come from a validated policy, so they are
 * not checked here: a session must never fail on its tarpit arithmetic.
 */
export function tarpitDelayMs(score: number, options: TarpitOptions): number {
  if (Number.isNaN(score)) throw new RangeError('score must be a number, got NaN');
  const { baseMs, perScoreMs, maxMs } = options;
  // perScoreMs 0 with an infinite score would be 0 * Infinity = NaN.
  const growthMs = perScoreMs === 0 ? 0 : perScoreMs * Math.max(0, score);
  return Math.max(0, Math.round(Math.min(maxMs, baseMs + growthMs)));
}
