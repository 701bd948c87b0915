// Command/response pairs of one session, the raw material of the entropy status.
// A reply that expects an answer opens a pair; the client's next command (or, after 354, the end
// of the message) closes it as normal; a session that ends while a pair is open (the client timed
// out or dropped) closes it as abnormal. Replies after which the server itself hangs up (221 after
// QUIT, any 421, a refusal at connect) expect nothing and are not pairs.

export interface PairCounts {
  normal: number;
  abnormal: number;
}

export class PairTracker {
  normal = 0;
  abnormal = 0;
  private open = false;
  private openedAtMs = 0;

  /** A reply was sent; `final` when the server closes the connection right after it. */
  replySent(code: number, final = false, nowMs = Date.now()): void {
    // A final reply opens nothing, and leaves an earlier unanswered reply open: the client that
    // ignored the greeting until our 421 timeout is exactly the abnormal pair.
    if (final || code === 221 || code === 421) return;
    this.open = true;
    this.openedAtMs = nowMs;
  }

  /**
   * The pair open since before `olderThanMs` times out: it is abnormal now, and a late answer will
   * not make it normal. True when that happened (the caller counts it).
   */
  expireOpenPair(olderThanMs: number): boolean {
    if (!this.open || this.openedAtMs > olderThanMs) return false;
    this.open = false;
    this.abnormal += 1;
    return true;
  }

  /** The client answered: a command line, or the end of a message after 354. True when that closed a pair. */
  clientAnswered(): boolean {
    const closed = this.open;
    if (closed) this.normal += 1;
    this.open = false;
    return closed;
  }

  /** The session is over; an unanswered reply is the abnormal pair. Returns the totals. */
  end(): PairCounts {
    if (this.open) this.abnormal += 1;
    this.open = false;
    return { normal: this.normal, abnormal: this.abnormal };
  }
}
