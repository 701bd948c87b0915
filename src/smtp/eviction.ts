// Eviction instead of refusal: when client slots run short, the session that least looks like mail
// makes room for a newcomer, instead of the newcomer being told 421. An idle-connection flood (the
// entropy paper's attack: connect, take the greeting, say nothing) otherwise fills every slot in seconds and
// shuts legitimate senders out for as long as it lasts. postscreen answers "all server ports busy"
// and spamd hands its slots out first come; neither frees a slot a silent client holds.
// Pure: the listener gives a view of each session and closes the one chosen here.

/** Why a session was chosen, worst first; also the label of smtp_pushback_sessions_evicted_total. */
export type EvictionReason = 'silent' | 'idle-after-helo' | 'suspect' | 'idle' | 'trusted-idle';

/** Also counted: a transaction silent the longest, cut to free its Postfix process (upstream-share.ts). */
export type EvictionCount = EvictionReason | 'half-open';

/**
 * A transaction must have been silent this long, counted from our last reply to it, before it may be cut
 * for another client's upstream slot. A floor of seconds would let a half-open flood of a few hundred a
 * second keep every slot younger than it (the untrusted share turns over at most share / floor times a
 * second), and newcomers get 451. The floor is only the worst case: the longest silent goes first, so a
 * client answering within its round trip is cut only once the flood outpaces share / round trip.
 */
export const HALF_OPEN_MIN_IDLE_MS = 100;
/**
 * For one address over its own share, the transaction it cuts is its own: only one silent this long, so
 * a sender that pipelines several transactions at once is told 451 rather than cut mid-way.
 */
export const SAME_ADDRESS_MIN_IDLE_MS = 2_000;

/**
 * Of the sessions holding a Postfix process for an untrusted client in a transaction, the one silent the longest,
 * silent at least HALF_OPEN_MIN_IDLE_MS and not in DATA (its message is being relayed or answered) nor waiting for
 * a reply of ours (the caller marks those closing). Undefined: none.
 */
export function chooseHalfOpen<T>(sessions: Iterable<T>, view: (session: T) => { holdsUntrustedSlot: boolean; inData: boolean; closing: boolean; lastActivityMs: number; sameAddress: boolean }, nowMs: number, sameAddressOnly: boolean): T | undefined {
  let best: T | undefined;
  let bestSince = nowMs - (sameAddressOnly ? SAME_ADDRESS_MIN_IDLE_MS : HALF_OPEN_MIN_IDLE_MS);
  for (const session of sessions) {
    const seen = view(session);
    if (!seen.holdsUntrustedSlot || seen.inData || seen.closing || (sameAddressOnly && !seen.sameAddress)) continue;
    if (seen.lastActivityMs <= bestSince) {
      best = session;
      bestSince = seen.lastActivityMs;
    }
  }
  return best;
}

/** What eviction needs to know of one open session. */
export interface EvictionView {
  /** MAIL accepted and its transaction not over (final reply not sent): never evicted. */
  inTransaction: boolean;
  /** Already being closed (evicted, refused, timed out): neither a candidate nor a slot to count. */
  closing: boolean;
  /** Commands received since the greeting. */
  commands: number;
  /** Transactions started (MAIL FROM accepted or tried). */
  transactions: number;
  /** Abnormal pairs so far, or a verdict other than pass for its source. */
  suspect: boolean;
  /** Allow-listed or proven sender: evicted only when no other candidate exists. */
  trusted: boolean;
  /** Last command received (or the connect), epoch ms: the longest idle goes first within a class. */
  lastActivityMs: number;
}

const RANK: Readonly<Record<EvictionReason, number>> = { silent: 0, 'idle-after-helo': 1, suspect: 2, idle: 3, 'trusted-idle': 4 };

/** The class of an open session, or undefined when it may not be evicted at all. */
export function evictionReason(view: EvictionView): EvictionReason | undefined {
  if (view.inTransaction || view.closing) return undefined;
  if (view.trusted) return 'trusted-idle';
  if (view.commands === 0) return 'silent';
  if (view.suspect) return 'suspect';
  if (view.transactions === 0) return 'idle-after-helo';
  return 'idle';
}

export interface EvictionChoice<T> {
  session: T;
  reason: EvictionReason;
}

/**
 * The session to evict among `sessions` (oldest first, as a Map iterates), looking at most at
 * scanLimit of them: the lowest class, and within it the longest idle. A silent session found
 * first is taken at once: in connect order, the first silent one has been idle the longest.
 */
export function chooseEviction<T>(sessions: Iterable<T>, view: (session: T) => EvictionView, scanLimit: number): EvictionChoice<T> | undefined {
  let best: EvictionChoice<T> | undefined;
  let bestIdleSince = Number.POSITIVE_INFINITY;
  let scanned = 0;
  for (const session of sessions) {
    if (scanned++ >= scanLimit) break;
    const seen = view(session);
    const reason = evictionReason(seen);
    if (reason === undefined) continue;
    if (reason === 'silent') return { session, reason };
    if (best === undefined || RANK[reason] < RANK[best.reason] || (RANK[reason] === RANK[best.reason] && seen.lastActivityMs < bestIdleSince)) {
      best = { session, reason };
      bestIdleSince = seen.lastActivityMs;
    }
  }
  return best;
}

/** Idle sessions closed by a shortened time-out are closed at most this many a second. */
export const IDLE_CLOSES_PER_SECOND = 500;
/** The shortest time-out a re-armed idle session gets: one already overdue still has a moment to speak. */
export const MIN_REARMED_IDLE_MS = 1_000;

/**
 * When the idle time-out is shortened (stress begins), when to close each idle session: at what is
 * left of the new time-out counted from its last command (so the flood goes in the order it went
 * quiet), but never sooner than MIN_REARMED_IDLE_MS and never more than IDLE_CLOSES_PER_SECOND: a
 * loopback write of the 421 and a close cost ~0.1 ms each, and ten thousand in one instant stalled
 * every live session. `idleForMs` in any order; returns the delays in the same order.
 */
export function spreadIdleCloses(idleForMs: readonly number[], timeoutMs: number, closesPerSecond = IDLE_CLOSES_PER_SECOND): number[] {
  const order = idleForMs.map((_, index) => index).sort((a, b) => (idleForMs[b] as number) - (idleForMs[a] as number));
  const delays: number[] = new Array<number>(idleForMs.length);
  const gapMs = 1000 / closesPerSecond;
  let previous = Number.NEGATIVE_INFINITY;
  for (const index of order) {
    const natural = Math.max(MIN_REARMED_IDLE_MS, timeoutMs - (idleForMs[index] as number));
    const delay = Math.max(natural, previous + gapMs);
    delays[index] = Math.round(delay);
    previous = delay;
  }
  return delays;
}
