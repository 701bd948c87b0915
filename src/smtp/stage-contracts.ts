// What the listener asks of the other stages of a session (screen, quarantine, accounting, tarpit cap),
// as interfaces: the stages implement them without importing the listener, and the listener calls them
// without knowing which implementation main.ts wired in.
import type { ReplySource } from '../detect/upstream-pressure.js';
import type { RelayReply } from '../relay/session-relay.js';
import type { SessionRecord } from '../session/record.js';
import type { EvictionCount } from './eviction.js';
import type { ScreenDecision } from './live-session.js';

export type { ScreenDecision } from './live-session.js';

/** The accounting stage: told of every pair and command as it happens and of each session at its end. */
export interface SessionObserver {
  /** A pair closed: normal ones as they happen, the abnormal one when the session ends. */
  pair(source: string, kind: 'normal' | 'abnormal'): void;
  command(): void;
  /** A reply of Postfix's (code undefined: a time-out) to the session of source: back-pressure counts 4xx per source. */
  upstreamReply(step: string, milliseconds: number, code: number | undefined, source: ReplySource): void;
  sessionEnded(record: SessionRecord): void;
  /** A session was closed to make room for a newcomer (smtp_pushback_sessions_evicted_total). */
  evicted?(reason: EvictionCount): void;
  /** A connection refused at accept on a recent verdict, no session built (counted as a refused session). */
  refusedAtAccept?(): void;
}

/** The screen stage, as the listener sees it: a decision per new client. */
export interface SessionScreen {
  atConnect(client: { address: string; port: number }): Promise<ScreenDecision>;
}

/** The quarantine stage, as the listener sees it: durable acceptance of one message. */
export interface QuarantineSink {
  /** Whether a message of this size (0: unknown) fits now. */
  canAccept(sizeBytes: number): boolean;
  /** Resolves only once the message and its metadata are durable (fsynced). */
  store(entry: QuarantineEntry, message: NodeJS.ReadableStream, refuseChunk?: () => Error | undefined): Promise<QuarantineResult>;
}

export interface QuarantineEntry {
  client: { address: string; port: number; hostname?: string; helo: string };
  mailFrom: { address: string; params: Record<string, string | true> };
  recipients: string[];
  /** DSN parameters per accepted recipient (NOTIFY, ORCPT), as the client sent them: a release carries them. */
  recipientParams?: Record<string, string>;
  verdict: { reasons: string[]; score: number };
  protocol: string;
}

export type QuarantineResult = { stored: true; id: string } | { stored: false; reason: 'full' | 'client-gone' | 'aborted' | 'failed'; detail: string };

/** The cap on sessions tarpitted at once (OpenBSD spamd's -B). */
export interface TarpitSlots {
  tryEnter(): boolean;
  leave(): void;
}

export class MessageTooBigError extends Error {
  constructor() {
    super('message over the size limit');
    this.name = 'MessageTooBigError';
  }
}
