// Release decisions for quarantined mail: whether releasing may run now, which entries go next, how fast,
// what Postfix's answer means, and what to write back after an attempt. Pure: time, randomness and readings
// are passed in. The release scheduler does the I/O (spool, upstream) and follows these answers.
import type { ServerStatus } from '../detect/entropy.js';
import type { EntryMeta, EntryPatch } from './spool-entry.js';

export interface ReleaseGateInput {
  nowMs: number;
  /** isOffPeak(nowMs, schedule). */
  offPeak: boolean;
  /** 1 safe, 0 critical, -1 danger (detect/entropy.ts). */
  serverStatus: ServerStatus;
  /** Recent upstream reply latency (the scheduler's choice of statistic); null when nothing was measured lately. */
  upstreamLatencyMs: number | null;
  upstreamLatencyLimitMs: number;
  /** An operator's pause (admin API): no releases before this instant. */
  pausedUntilMs?: number;
  /** An operator's "release now": skips every other check, including a pause. */
  force: boolean;
}

export type ReleaseGate =
  | { allowed: true; reason: 'forced' | 'off-peak' }
  | { allowed: false; reason: 'paused' | 'peak-hours' | 'server-not-safe' | 'upstream-slow' };

/**
 * Released mail is extra load, so it goes only when the server has room: off-peak, entropy status safe (a
 * critical or danger status means the server is already under pressure), and Postfix answering within the
 * limit. No latency reading counts as fast enough: nothing in the readings says Postfix is slow.
 */
export function releaseGate(input: ReleaseGateInput): ReleaseGate {
  if (input.force) return { allowed: true, reason: 'forced' };
  if (input.pausedUntilMs !== undefined && input.nowMs < input.pausedUntilMs) return { allowed: false, reason: 'paused' };
  if (!input.offPeak) return { allowed: false, reason: 'peak-hours' };
  if (input.serverStatus !== 1) return { allowed: false, reason: 'server-not-safe' };
  if (input.upstreamLatencyMs !== null && input.upstreamLatencyMs > input.upstreamLatencyLimitMs) {
    return { allowed: false, reason: 'upstream-slow' };
  }
  return { allowed: true, reason: 'off-peak' };
}

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  /** 0..1: up to this share of the delay is taken off at random, so retries of one burst spread out. Default 0. */
  jitterRatio?: number;
  /** [0, 1), e.g. Math.random; needed when jitterRatio > 0. */
  random?: () => number;
}

/** Delay before the next attempt after `attempts` failed ones (>= 1): baseMs * 2^(attempts-1), capped at maxMs. */
export function backoffMs(attempts: number, options: BackoffOptions): number {
  if (!Number.isInteger(attempts) || attempts < 1) throw new RangeError(`attempts must be an integer >= 1, got ${attempts}`);
  const { baseMs, maxMs, jitterRatio = 0, random } = options;
  if (jitterRatio < 0 || jitterRatio > 1) throw new RangeError(`jitterRatio must be within 0..1, got ${jitterRatio}`);
  const delayMs = Math.min(maxMs, baseMs * 2 ** (attempts - 1));
  if (jitterRatio === 0) return delayMs;
  if (!random) throw new RangeError('jitterRatio > 0 needs a random source');
  return Math.round(delayMs * (1 - jitterRatio * random()));
}

export type ReleaseOutcome = 'released' | 'retry' | 'rejected';

/** Postfix's reply to a release (per recipient, or to the final dot). null: no reply (connect failure, timeout). */
export function classifyReleaseReply(code: number | null): ReleaseOutcome {
  if (code === null) return 'retry';
  if (code >= 200 && code < 300) return 'released';
  if (code >= 500 && code < 600) return 'rejected';
  // 4xx, and anything a well-behaved server would not send here: try again later rather than lose the mail.
  return 'retry';
}

export interface RecipientReply {
  recipient: string;
  /** null: no reply for this recipient (the session failed before or during it). */
  code: number | null;
  text?: string;
}

export type AttemptPlan =
  | { kind: 'finished'; state: 'released' | 'rejected'; patch: EntryPatch }
  | { kind: 'retry'; patch: EntryPatch };

export interface AttemptPlanOptions {
  nowMs: number;
  backoff: BackoffOptions;
  maxAgeMs: number;
}

/**
 * What to record after one release attempt with these per-recipient outcomes (for a recipient accepted at
 * RCPT, its outcome is the final-dot reply). Recipients that got their mail or a permanent refusal drop out;
 * the rest retry after backoff, unless the entry is past maxAgeMs, which makes it rejected for good.
 * 'finished' with state 'released' when a recipient of this attempt got the message, else 'rejected' (recipients
 * delivered by earlier attempts are no longer on the entry; the release log has them).
 */
export function planAfterAttempt(entry: EntryMeta, replies: readonly RecipientReply[], options: AttemptPlanOptions): AttemptPlan {
  const attempts = entry.attempts + 1;
  const retry = replies.filter((reply) => classifyReleaseReply(reply.code) === 'retry');
  const anyReleased = replies.some((reply) => classifyReleaseReply(reply.code) === 'released');
  const failed = replies.find((reply) => classifyReleaseReply(reply.code) !== 'released');
  const lastError = failed ? `${failed.recipient}: ${failed.code ?? 'no reply'} ${failed.text ?? ''}`.trim() : undefined;
  if (retry.length === 0) {
    const state = anyReleased ? 'released' : 'rejected';
    return { kind: 'finished', state, patch: { state, attempts, lastError } };
  }
  if (expired(entry, options.nowMs, options.maxAgeMs)) {
    const patch: EntryPatch = { state: 'rejected', attempts, lastError: `expired after ${attempts} attempts; last: ${lastError}` };
    return { kind: 'finished', state: 'rejected', patch };
  }
  return {
    kind: 'retry',
    patch: {
      state: 'held',
      attempts,
      nextAttemptAtMs: options.nowMs + backoffMs(attempts, options.backoff),
      recipients: retry.map((reply) => reply.recipient),
      lastError,
    },
  };
}

/** Held entries due by nowMs, oldest first (then by id), at most maxCount. */
export function pickBatch(entries: readonly EntryMeta[], options: { nowMs: number; maxCount: number }): EntryMeta[] {
  return entries
    .filter((entry) => entry.state === 'held' && entry.nextAttemptAtMs <= options.nowMs)
    .sort((a, b) => a.receivedAtMs - b.receivedAtMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .slice(0, Math.max(0, options.maxCount));
}

/** Held longer than maxAgeMs: give up on it (Postfix's maximal_queue_lifetime plays the same role). */
export function expired(entry: Pick<EntryMeta, 'receivedAtMs'>, nowMs: number, maxAgeMs: number): boolean {
  return nowMs - entry.receivedAtMs >= maxAgeMs;
}

/**
 * Token bucket for released messages per second: `burst` tokens, refilled at ratePerSecond. Time is passed
 * in (use a monotonic clock); a clock that steps back refills nothing. Taking more than `burst` at once can
 * never succeed, and msUntilAvailable says Infinity.
 */
export class RateLimiter {
  private tokens: number;
  private updatedAtMs: number;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    nowMs: number,
  ) {
    if (!(ratePerSecond > 0) || !Number.isFinite(ratePerSecond)) throw new RangeError(`ratePerSecond must be > 0, got ${ratePerSecond}`);
    if (!(burst >= 1) || !Number.isFinite(burst)) throw new RangeError(`burst must be >= 1, got ${burst}`);
    this.tokens = burst;
    this.updatedAtMs = nowMs;
  }

  tryTake(nowMs: number, count = 1): boolean {
    this.refill(nowMs);
    if (count > this.tokens) return false;
    this.tokens -= count;
    return true;
  }

  /** 0 when `count` tokens are there now. */
  msUntilAvailable(nowMs: number, count = 1): number {
    this.refill(nowMs);
    if (count > this.burst) return Number.POSITIVE_INFINITY;
    if (count <= this.tokens) return 0;
    return Math.ceil(((count - this.tokens) / this.ratePerSecond) * 1000);
  }

  private refill(nowMs: number): void {
    if (nowMs <= this.updatedAtMs) return;
    this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.updatedAtMs) / 1000) * this.ratePerSecond);
    this.updatedAtMs = nowMs;
  }
}
