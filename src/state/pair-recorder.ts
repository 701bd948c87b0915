// Hot-path side of pair accounting. Sessions call record() for every pair; it only bumps counters in a map.
// Every flushIntervalMs the pending counts go, as one batch, into this node's MemoryPairStore (always) and into
// the shared store (one round trip, under a timeout).
//
// A batch the shared store refuses or does not confirm in time is dropped from the shared view, not retried:
// keeping a backlog through an outage would grow memory without bound, replaying it later would land old pairs in
// the current bucket, and a timed-out write may in fact have been applied, so a retry could count it twice. The
// local view keeps every pair, which is what the status monitor uses while the shared store is out.
import { MemoryPairStore } from './memory-pair-store.js';
import {
  DEFAULT_PAIR_WINDOW_OPTIONS,
  UNTRACKED_SOURCE,
  type PairIncrement,
  type PairStore,
  type PairWindowOptions,
} from './pair-store.js';
import type { SharedStoreHealth } from './shared-store-health.js';

export interface PairRecorderOptions extends Partial<PairWindowOptions> {
  shared: PairStore;
  health: SharedStoreHealth;
  flushIntervalMs?: number;
  /** Longest wait for the shared store per flush; a slower flush counts as failed. */
  flushTimeoutMs?: number;
  /**
   * Distinct sources held between flushes. Further sources are counted as untracked pairs, so a flood of
   * spoofed addresses cannot grow the pending map without bound.
   */
  maxPendingSources?: number;
  now?: () => number;
}

export const DEFAULT_FLUSH_INTERVAL_MS = 250;
export const DEFAULT_FLUSH_TIMEOUT_MS = 250;

export interface PairRecorderCounters {
  pairsRecorded: number;
  /** Batches sent to the shared store, and how many of them failed or timed out. */
  flushes: number;
  flushFailures: number;
  /** Pairs left out of the shared view because their batch failed (they remain in the local view). */
  pairsDroppedFromShared: number;
}

interface PendingCounts {
  normal: number;
  abnormal: number;
}

export class PairRecorder {
  /** This node's own pairs only; read by the status monitor while the shared store is out. */
  readonly local: MemoryPairStore;
  private readonly shared: PairStore;
  private readonly health: SharedStoreHealth;
  private readonly flushIntervalMs: number;
  private readonly flushTimeoutMs: number;
  private readonly maxPendingSources: number;
  private readonly now: () => number;
  private pending = new Map<string, PendingCounts>();
  private untracked: PendingCounts = { normal: 0, abnormal: 0 };
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly counts: PairRecorderCounters = { pairsRecorded: 0, flushes: 0, flushFailures: 0, pairsDroppedFromShared: 0 };

  constructor(options: PairRecorderOptions) {
    this.shared = options.shared;
    this.health = options.health;
    this.flushIntervalMs = options.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS;
    this.flushTimeoutMs = options.flushTimeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS;
    this.maxPendingSources = options.maxPendingSources ?? DEFAULT_PAIR_WINDOW_OPTIONS.maxSourcesPerBucket;
    this.now = options.now ?? Date.now;
    for (const [name, value] of [
      ['flushIntervalMs', this.flushIntervalMs],
      ['flushTimeoutMs', this.flushTimeoutMs],
      ['maxPendingSources', this.maxPendingSources],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a whole number >= 1, got ${value}`);
    }
    // The local view mirrors the shared store's window unless told otherwise, so both views mean the same thing.
    this.local = new MemoryPairStore({
      windowSeconds: options.windowSeconds ?? options.shared.windowSeconds,
      bucketSeconds: options.bucketSeconds ?? options.shared.bucketSeconds,
      maxSourcesPerBucket: options.maxSourcesPerBucket,
    });
  }

  /** Counts pairs of one source. Synchronous and allocation-free for a source already pending. */
  record(source: string, normal: number, abnormal: number): void {
    if (!Number.isSafeInteger(normal) || normal < 0 || !Number.isSafeInteger(abnormal) || abnormal < 0) {
      throw new RangeError(`pair counts must be whole numbers >= 0, got ${normal}/${abnormal}`);
    }
    this.counts.pairsRecorded += normal + abnormal;
    let counts = source === UNTRACKED_SOURCE ? this.untracked : this.pending.get(source);
    if (counts === undefined) {
      if (this.pending.size < this.maxPendingSources) {
        counts = { normal: 0, abnormal: 0 };
        this.pending.set(source, counts);
      } else {
        counts = this.untracked;
      }
    }
    counts.normal += normal;
    counts.abnormal += abnormal;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.flush(), this.flushIntervalMs);
    this.timer.unref();
  }

  /** Stops the timer and makes a last flush, so pairs of a clean shutdown still reach the shared view. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
    await this.flush();
  }

  /**
   * Sends the pending batch. At most one flush is in flight; a call while one runs returns that one, and the
   * pairs recorded meanwhile go with the next. Never rejects: failures are counted and reported to health.
   */
  flush(): Promise<void> {
    if (this.inFlight) return this.inFlight;
    const batch = this.drain();
    if (batch.length === 0) return Promise.resolve();
    const nowMs = this.now();
    this.local.addNow(batch, nowMs);
    this.inFlight = this.send(batch, nowMs).finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  counters(): PairRecorderCounters {
    return { ...this.counts };
  }

  private async send(batch: PairIncrement[], nowMs: number): Promise<void> {
    this.counts.flushes += 1;
    try {
      await this.health.track('flush', () => this.shared.add(batch, nowMs), this.flushTimeoutMs);
    } catch {
      this.counts.flushFailures += 1;
      for (const increment of batch) this.counts.pairsDroppedFromShared += increment.normal + increment.abnormal;
    }
  }

  private drain(): PairIncrement[] {
    const batch: PairIncrement[] = [];
    for (const [source, counts] of this.pending) batch.push({ source, normal: counts.normal, abnormal: counts.abnormal });
    if (this.untracked.normal + this.untracked.abnormal > 0) {
      batch.push({ source: UNTRACKED_SOURCE, normal: this.untracked.normal, abnormal: this.untracked.abnormal });
    }
    // A new map instead of clear(): after a flood the old one would keep its grown capacity.
    this.pending = new Map();
    this.untracked = { normal: 0, abnormal: 0 };
    return batch;
  }
}
