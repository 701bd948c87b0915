// What one client session did, as logged once at its end (and handed to the accounting stage).
// Built up by the listener; the summary functions here are pure so they can be tested alone.
import type { PairCounts } from '../smtp/pair-tracker.js';

/** Refused recipients listed per transaction, and transactions listed per session; beyond, counted. */
export const MAX_LISTED_REJECTIONS = 10;
export const MAX_LISTED_TRANSACTIONS = 20;

export type TransactionOutcome = 'relayed' | 'quarantined' | 'rejected' | 'deferred' | 'aborted' | 'incomplete';

export interface TransactionRecord {
  from: string;
  /** Recipients Postfix accepted. */
  rcpt: string[];
  /**
   * Recipients refused, with the reply the client got: the first MAX_LISTED_REJECTIONS of them, so
   * a client that sends RCPT after RCPT grows neither the session's memory nor its log line.
   */
  rejected: Array<{ rcpt: string; reply: string }>;
  /** Refusals beyond those listed. */
  rejectedNotListed?: number;
  outcome: TransactionOutcome;
  /** The last reply of the transaction as the client got it (queue id included when relayed). */
  reply?: string;
  bytes?: number;
  dataMs?: number;
  /** The quarantine entry, when the message was held instead of relayed. */
  quarantineId?: string;
}

export type SessionEnd = 'quit' | 'dropped' | 'idle-timeout' | 'deadline' | 'refused' | 'early-talker' | 'too-many-clients' | 'evicted' | 'server-shutdown';

/** Protocol misbehaviour seen in one session (postscreen's tests); the screen stage scores it. */
export interface Misbehaviour {
  /** Talked before our greeting. */
  earlyTalker: boolean;
  /** HTTP or other non-SMTP commands. */
  nonSmtp: number;
  /** Sent several commands in one go while PIPELINING was not offered. */
  pipelining: number;
  unknownCommands: number;
  /** 5xx replies we gave (syntax errors, out-of-sequence commands, refusals). */
  errors: number;
}

export function noMisbehaviour(): Misbehaviour {
  return { earlyTalker: false, nonSmtp: 0, pipelining: 0, unknownCommands: 0, errors: 0 };
}

export interface SessionRecord {
  session: string;
  client: string;
  clientPort: number;
  clientName?: string;
  helo?: string;
  local: string;
  localPort: number;
  /** The first MAX_LISTED_TRANSACTIONS transactions; the outcomes of later ones are only counted. */
  transactions: TransactionRecord[];
  transactionsNotListed?: Partial<Record<TransactionOutcome, number>>;
  outcome: TransactionOutcome | 'no-transaction' | SessionEnd;
  end: SessionEnd;
  pairs: PairCounts;
  commands: number;
  /** Bytes the client sent and we sent it, at the SMTP layer (for SFDS). */
  bytesIn: number;
  bytesOut: number;
  /** SFDS "packets": command lines received plus replies sent plus DATA segments (see README). */
  packets: number;
  misbehaviour: Misbehaviour;
  /** What the screen decided at connect, e.g. "pass", "pass:proven", "tarpit", "observe:defer". */
  screen: string;
  durationMs: number;
  upstreamConnectMs?: number;
  xclient?: boolean;
}

/**
 * One word for the whole session: the best thing that happened to its mail, or, when no
 * transaction was started, the way it ended (refused, early talker, timeout ...).
 */
export function sessionOutcome(
  transactions: TransactionRecord[],
  end: SessionEnd,
  notListed: Partial<Record<TransactionOutcome, number>> = {},
): SessionRecord['outcome'] {
  const ranking: TransactionOutcome[] = ['relayed', 'quarantined', 'deferred', 'rejected', 'aborted', 'incomplete'];
  for (const outcome of ranking) {
    if ((notListed[outcome] ?? 0) > 0 || transactions.some((transaction) => transaction.outcome === outcome)) return outcome;
  }
  return end === 'quit' || end === 'dropped' ? 'no-transaction' : end;
}

/** Outcome of a finished DATA from the reply code the client got. */
export function dataOutcome(code: number): TransactionOutcome {
  if (code >= 200 && code < 300) return 'relayed';
  return code >= 400 && code < 500 ? 'deferred' : 'rejected';
}
