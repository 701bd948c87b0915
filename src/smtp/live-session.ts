// The state of one client session while it runs, fed by the protocol events the listener observes
// (every command and reply), and turned into the SessionRecord at its end. No smtp-server types
// here: the listener translates its events into these calls.
import type { ReverseDnsResult } from '../dns/fcrdns.js';
import type { RelayReply, SessionRelay } from '../relay/session-relay.js';
import type { UpstreamSlot } from '../relay/upstream-share.js';
import {
  MAX_LISTED_REJECTIONS,
  MAX_LISTED_TRANSACTIONS,
  noMisbehaviour,
  sessionOutcome,
  type Misbehaviour,
  type SessionEnd,
  type SessionRecord,
  type TransactionOutcome,
  type TransactionRecord,
} from '../session/record.js';
import { SEGMENT_BYTES } from '../detect/sfds.js';
import { PairTracker } from './pair-tracker.js';
import type { ConcurrencyExcess } from './source-concurrency.js';

/** The part of smtp-server's connection object we use: its id, addresses, socket and reply channel. */
export interface SmtpConnectionHandle {
  id: string;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  send(code: number, text: string, context?: unknown): void;
  close(): void;
  _socket?: { on(event: 'data', listener: (chunk: Buffer) => void): unknown; setTimeout(milliseconds: number): unknown; destroySoon(): void };
}

/** What the screen stage decided for a session at connect; the listener carries it out. */
export interface ScreenDecision {
  action: 'pass' | 'tarpit' | 'defer' | 'reject' | 'quarantine';
  /** Wait before the greeting: the greet wait for unproven clients, longer when tarpitted. */
  greetDelayMs: number;
  /** Wait before each later reply (MAIL, RCPT, DATA): the tarpit. */
  replyDelayMs: number;
  /** Refuse the session at connect with this reply (421 defer, 554 reject). */
  refuse?: RelayReply;
  /** Refuse every recipient with this reply, without opening the upstream (450 defer at RCPT). */
  refuseRecipients?: RelayReply;
  /** Accept the mail into the quarantine instead of relaying it (recipients still checked live with Postfix). */
  quarantine?: { reasons: string[]; score: number };
  /** For the session log: "pass", "pass:proven", "tarpit", "observe:defer" ... */
  label: string;
}

export const PASS: ScreenDecision = Object.freeze({ action: 'pass', greetDelayMs: 0, replyDelayMs: 0, label: 'pass' });

const HTTP_COMMAND = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|TRACE|CONNECT|PATCH) \S+ HTTP\/\d/i;

export class LiveSession {
  readonly startedAtMs = Date.now();
  readonly pairs = new PairTracker();
  /** The first MAX_LISTED_TRANSACTIONS transactions; later ones are counted by outcome when they end. */
  readonly transactions: TransactionRecord[] = [];
  private readonly transactionsNotListed: Partial<Record<TransactionOutcome, number>> = {};
  /** The latest transaction when it is beyond the listed ones: counted once it is over. */
  private unlisted: TransactionRecord | undefined;
  /** 4xx and 5xx replies so far (Postfix's error_count, which its smtpd_hard_error_limit bounds). */
  errorReplies = 0;
  readonly misbehaviour: Misbehaviour = noMisbehaviour();
  current: TransactionRecord | undefined;
  decision: ScreenDecision = PASS;
  tarpitted = false;
  /** The Postfix process this session holds a share of, from its first MAIL until it lets the upstream go. */
  upstreamSlot: UpstreamSlot | undefined;
  /**
   * When we last answered the client's MAIL or RCPT (or its message), epoch ms: since then the client
   * has had the turn, and a transaction that makes no progress is its doing. Not lastActivityMs, which
   * any NOOP refreshes: a half-open client chattering NOOPs would never look silent.
   */
  lastEnvelopeMs = 0;
  /** A MAIL or RCPT is with Postfix (or the tarpit's delay): the turn is ours, so the client is not silent. */
  envelopePending = false;
  commands = 0;
  lastCommand = '';
  greeted = false;
  closed = false;
  /** Between our 354 and the end of the client's message: its lines are not commands. */
  inData = false;
  /** The client's message is complete and waits for Postfix's (or the spool's) verdict. */
  awaitingFinalReply = false;
  /** A 421 (deadline, end of a drain) held back until that final reply has gone out. */
  closingReply: RelayReply | undefined;
  end: SessionEnd | undefined;
  /** Set while we refuse the session at connect, so that reply is not counted as a pair. */
  refusing = false;
  /** The connect, then each command received: eviction takes the longest idle first. */
  lastActivityMs = this.startedAtMs;
  /** Closed with 421 to make room for a newcomer: no longer holds a slot. */
  evicted = false;
  /** Arrived with every slot taken and nothing to evict: refused at connect. */
  overCapacity = false;
  /** The address and network keys this session is counted under (SourceConcurrency). */
  concurrencyKeys: string[] = [];
  /** Over a per-address or per-network limit on arrival (not counted in): refused unless trusted. */
  concurrencyExcess: ConcurrencyExcess | undefined;
  bytesIn = 0;
  bytesOut = 0;
  packets = 0;
  helo?: string;
  clientName?: string;
  /** The client's forward-confirmed reverse DNS, started at connect. */
  reverseDns?: Promise<ReverseDnsResult> | undefined;
  /** MAIL FROM parameters of the current transaction, kept for the quarantine record. */
  mailParams: Record<string, string | true> = {};
  /** DSN parameters of the current transaction's accepted recipients, for the quarantine record. */
  recipientParams: Record<string, string> = {};

  constructor(
    readonly connection: SmtpConnectionHandle,
    readonly relay: SessionRelay,
    readonly deadline: NodeJS.Timeout,
  ) {}

  get id(): string {
    return this.connection.id;
  }

  get client(): string {
    return this.connection.remoteAddress;
  }

  /** A new transaction (MAIL FROM): listed while there is room, else counted when it is over. */
  startTransaction(transaction: TransactionRecord): void {
    this.settleUnlisted();
    this.current = transaction;
    if (this.transactions.length < MAX_LISTED_TRANSACTIONS) this.transactions.push(transaction);
    else this.unlisted = transaction;
  }

  /** A refused recipient: listed while there is room, else counted (memory and log line stay bounded). */
  recipientRefused(transaction: TransactionRecord, rcpt: string, reply: string): void {
    if (transaction.rejected.length < MAX_LISTED_REJECTIONS) transaction.rejected.push({ rcpt: rcpt.slice(0, 256), reply: reply.slice(0, 512) });
    else transaction.rejectedNotListed = (transaction.rejectedNotListed ?? 0) + 1;
  }

  /** A command line arrived. Returns true when it answered an open pair (a normal pair). */
  commandReceived(line: string): boolean {
    this.commands += 1;
    this.lastActivityMs = Date.now();
    this.packets += 1;
    this.bytesIn += line.length + 2;
    this.lastCommand = line.slice(0, 4).toUpperCase().trim();
    if (!this.greeted) {
      this.misbehaviour.earlyTalker = true;
      if (this.end === undefined) this.end = 'early-talker';
    }
    if (HTTP_COMMAND.test(line)) this.misbehaviour.nonSmtp += 1;
    return this.pairs.clientAnswered();
  }

  /** A reply went out (the first line decides its code). */
  replySent(payload: string): void {
    const code = Number(payload.slice(0, 3));
    this.packets += 1;
    this.bytesOut += payload.length + 2;
    if (!this.greeted && code === 220) this.greeted = true;
    if (code === 354) this.inData = true;
    if (code === 500 || code === 502) this.misbehaviour.unknownCommands += 1;
    if (code >= 500) this.misbehaviour.errors += 1;
    if (code >= 400) this.errorReplies += 1;
    if (code === 421 && this.end === undefined) this.end = endFromClosingReply(payload, this.greeted);
    this.pairs.replySent(code, this.refusing);
  }

  /** The client's message ended (or broke off). Returns true when it answered our 354. */
  messageEnded(bytes: number, complete: boolean): boolean {
    this.inData = false;
    this.bytesIn += bytes;
    this.packets += Math.ceil(bytes / SEGMENT_BYTES);
    return complete && this.pairs.clientAnswered();
  }

  /** MAIL accepted or tried, and its final reply not yet given (RSET ends it): eviction spares it. */
  get inTransaction(): boolean {
    return this.inData || this.awaitingFinalReply || (this.current !== undefined && this.lastCommand !== 'RSET');
  }

  /** Raw bytes from the client (only watched when PIPELINING is hidden): several lines at once is pipelining. */
  rawChunk(chunk: Buffer): void {
    if (this.inData || !this.greeted) return;
    let lines = 0;
    for (let index = chunk.indexOf(0x0a); index !== -1 && lines < 2; index = chunk.indexOf(0x0a, index + 1)) lines += 1;
    if (lines >= 2) this.misbehaviour.pipelining += 1;
  }

  /** The transaction before this one was not listed: its outcome is final now, count it. */
  private settleUnlisted(): void {
    if (!this.unlisted) return;
    const { outcome } = this.unlisted;
    this.transactionsNotListed[outcome] = (this.transactionsNotListed[outcome] ?? 0) + 1;
    this.unlisted = undefined;
  }

  /** Closes the books: the abnormal pair if any, and the record to log. */
  finish(): SessionRecord {
    this.closed = true;
    this.settleUnlisted();
    const end = this.end ?? (this.lastCommand === 'QUIT' ? 'quit' : 'dropped');
    const record: SessionRecord = {
      session: this.id,
      client: this.connection.remoteAddress,
      clientPort: this.connection.remotePort,
      local: this.connection.localAddress,
      localPort: this.connection.localPort,
      transactions: this.transactions,
      outcome: sessionOutcome(this.transactions, end, this.transactionsNotListed),
      end,
      pairs: this.pairs.end(),
      commands: this.commands,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      packets: this.packets,
      misbehaviour: this.misbehaviour,
      screen: this.decision.label,
      durationMs: Date.now() - this.startedAtMs,
    };
    if (Object.keys(this.transactionsNotListed).length > 0) record.transactionsNotListed = { ...this.transactionsNotListed };
    if (this.clientName) record.clientName = this.clientName;
    if (this.helo) record.helo = this.helo;
    if (this.relay.upstreamConnectMs !== undefined) {
      record.upstreamConnectMs = this.relay.upstreamConnectMs;
      record.xclient = this.relay.xclientSent;
    }
    return record;
  }
}

function endFromClosingReply(text: string, greeted: boolean): SessionEnd {
  if (/Too many connected clients/i.test(text)) return 'too-many-clients';
  if (/Timeout/i.test(text)) return 'idle-timeout';
  if (/shutting down/i.test(text)) return 'server-shutdown';
  return greeted ? 'refused' : 'early-talker';
}
