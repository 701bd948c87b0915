// At most one notice per contact address per period, across every node: the node whose increment of the
// contact's counter in the shared store (memory, or Redis for several nodes) returns 1 sends; the counter
// expires with the period, by the store's clock. This node also keeps its own note of what it sent.
//
// The shared store failing (or slower than timeoutMs) falls back to that local note, so the notice is sent
// unless this node sent one this period: during an outage each node may send one, a duplicate. Sending
// none instead would lose the notice exactly when it matters (a flood can be what took Redis down), and
// a second copy of a rare notice costs the contact little.
import type { SharedKv } from '../state/shared-kv.js';
import { withTimeout } from '../state/shared-store-health.js';

export interface NoticeLimiterOptions {
  /** Each shared-store call; slower counts as failed. */
  timeoutMs: number;
  /** Local notes kept at most (expired ones are dropped first): bounded memory. */
  maxLocalNotes: number;
}

export type ClaimOutcome =
  /** This node sends: the store counted it first (shared) or, the store failing, the local note allows it. */
  | { granted: true; shared: boolean }
  | { granted: false; reason: 'sent-here' | 'sent-elsewhere' };

export function noticeKey(contactEmail: string): string {
  return `notice:${contactEmail.toLowerCase()}`;
}

export class NoticeLimiter {
  /** Contact key -> until when this node counts a notice to it as sent. */
  private readonly sentUntilMs = new Map<string, number>();

  constructor(private readonly kv: SharedKv, private readonly options: NoticeLimiterOptions) {}

  /** Whether this node itself sent the contact a notice this period (no store round trip). */
  sentHere(contactEmail: string, nowMs: number): boolean {
    return (this.sentUntilMs.get(noticeKey(contactEmail)) ?? 0) > nowMs;
  }

  /** Takes the contact's notice for this period, or says who already has. */
  async claim(contactEmail: string, periodMs: number, nowMs: number): Promise<ClaimOutcome> {
    if (this.sentHere(contactEmail, nowMs)) return { granted: false, reason: 'sent-here' };
    const key = noticeKey(contactEmail);
    let shared = true;
    try {
      const count = await withTimeout(this.kv.increment(key, 1, Math.max(1, Math.round(periodMs)), nowMs), this.options.timeoutMs, 'notice limit');
      if (count > 1) return { granted: false, reason: 'sent-elsewhere' };
    } catch {
      shared = false;
    }
    this.note(key, nowMs + periodMs, nowMs);
    return { granted: true, shared };
  }

  /** Gives a claimed notice back after it failed to go out, so a later flooding verdict may try again. */
  async release(contactEmail: string): Promise<void> {
    const key = noticeKey(contactEmail);
    this.sentUntilMs.delete(key);
    try {
      await withTimeout(this.kv.delete([key]), this.options.timeoutMs, 'notice limit release');
    } catch {
      // The store keeps the claim until the period ends: no retry before then, never a duplicate.
    }
  }

  private note(key: string, untilMs: number, nowMs: number): void {
    if (this.sentUntilMs.size >= this.options.maxLocalNotes) {
      for (const [noted, until] of this.sentUntilMs) if (until <= nowMs) this.sentUntilMs.delete(noted);
      if (this.sentUntilMs.size >= this.options.maxLocalNotes) this.sentUntilMs.delete(this.sentUntilMs.keys().next().value as string);
    }
    this.sentUntilMs.set(key, untilMs);
  }
}
