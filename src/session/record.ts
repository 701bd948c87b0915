// What one client session did, as logged once at its end (and handed to the accounting stage).
// Built up by the listener; the summary functions here are pure so they can be tested alone.
import type { PairCounts } from '../smtp/pair-tracker.js';

export type TransactionOutcome = 'relayed' | 'rejected' | 'deferred' | 'aborted' | 'incomplete';

export interface TransactionRecord {
  from: string;
  /** Recipients Postfix accepted. */
  rcpt: string[];
  /** Recipients refused, with the reply the client got. */
  rejected: Array<{ rcpt: string; reply: string }>;
  outcome: TransactionOutcome;
  /** The last reply of the transaction as the client got it (queue id included when relayed). */
  reply?: string;
  bytes?: number;
  dataMs?: number;
}

export type SessionEnd = 'quit' | 'dropped' | 'idle-timeout' | 'deadline' | 'refused' | 'early-talker' | 'too-many-clients' | 'server-shutdown';

export interface SessionRecord {
  session: string;
  client: string;
  clientPort: number;
  clientName?: string;
  helo?: string;
  local: string;
  localPort: number;
  transactions: TransactionRecord[];
  outcome: TransactionOutcome | 'no-transaction' | SessionEnd;
  end: SessionEnd;
  pairs: PairCounts;
  commands: number;
  durationMs: number;
  upstreamConnectMs?: number;
  xclient?: boolean;
}

/**
 * One word for the whole session: the best thing that happened to its mail, or, when no
 * transaction was started, the way it ended (refused, early talker, timeout ...).
 */
export function sessionOutcome(transactions: TransactionRecord[], end: SessionEnd): SessionRecord['outcome'] {
  const ranking: TransactionOutcome[] = ['relayed', 'deferred', 'rejected', 'aborted', 'incomplete'];
  for (const outcome of ranking) {
    if (transactions.some((transaction) => transaction.outcome === outcome)) return outcome;
  }
  return end === 'quit' || end === 'dropped' ? 'no-transaction' : end;
}

/** Outcome of a finished DATA from the reply code the client got. */
export function dataOutcome(code: number): TransactionOutcome {
  if (code >= 200 && code < 300) return 'relayed';
  return code >= 400 && code < 500 ? 'deferred' : 'rejected';
}
