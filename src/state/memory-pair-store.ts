// In-process pair store: a ring of windowSeconds/bucketSeconds buckets, each with totals and a capped map of
// per-source counts. Used alone on a single node, and always as the node-local view behind the shared store.
// Memory is bounded by (buckets x maxSourcesPerBucket) source entries; a bucket's map is dropped as soon as
// the bucket leaves the window (on the next add or window call that sees it expired).
import {
  UNTRACKED_SOURCE,
  assertIncrements,
  assertTopSources,
  bucketNumber,
  bucketsPerWindow,
  compareSources,
  resolvePairWindowOptions,
  type PairIncrement,
  type PairStore,
  type PairWindow,
  type PairWindowOptions,
  type SourcePairs,
} from './pair-store.js';

interface Bucket {
  /** Bucket number this slot currently holds; -Infinity while the slot is empty. */
  number: number;
  normal: number;
  abnormal: number;
  untrackedPairs: number;
  sources: Map<string, SourcePairs>;
}

function emptyBucket(): Bucket {
  return { number: Number.NEGATIVE_INFINITY, normal: 0, abnormal: 0, untrackedPairs: 0, sources: new Map() };
}

function resetBucket(bucket: Bucket, number: number): void {
  bucket.number = number;
  bucket.normal = 0;
  bucket.abnormal = 0;
  bucket.untrackedPairs = 0;
  // A fresh map rather than clear(): a flood-sized map should give its memory back, not keep its capacity.
  bucket.sources = new Map();
}

/** The k best items by compare (best first), keeping only k in memory instead of sorting everything. */
export function selectTop<T>(items: Iterable<T>, k: number, compare: (left: T, right: T) => number): T[] {
  const best: T[] = [];
  if (k === 0) return best;
  for (const item of items) {
    if (best.length === k && compare(item, best[k - 1]!) >= 0) continue;
    let low = 0;
    let high = best.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compare(best[middle]!, item) <= 0) low = middle + 1;
      else high = middle;
    }
    best.splice(low, 0, item);
    if (best.length > k) best.pop();
  }
  return best;
}

export class MemoryPairStore implements PairStore {
  readonly kind = 'memory' as const;
  readonly windowSeconds: number;
  readonly bucketSeconds: number;
  private readonly options: PairWindowOptions;
  private readonly bucketCount: number;
  private readonly ring: Bucket[];

  constructor(options: Partial<PairWindowOptions> = {}) {
    this.options = resolvePairWindowOptions(options);
    this.windowSeconds = this.options.windowSeconds;
    this.bucketSeconds = this.options.bucketSeconds;
    this.bucketCount = bucketsPerWindow(this.options);
    this.ring = Array.from({ length: this.bucketCount }, emptyBucket);
  }

  add(increments: readonly PairIncrement[], nowMs: number): Promise<void> {
    try {
      this.addNow(increments, nowMs);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Synchronous add, for callers on the hot path that hold a MemoryPairStore directly. */
  addNow(increments: readonly PairIncrement[], nowMs: number): void {
    assertIncrements(increments);
    const number = bucketNumber(nowMs, this.options.bucketSeconds);
    const bucket = this.slot(number);
    // The slot already holds a newer bucket: these pairs are older than that bucket's window, so they no longer count.
    if (bucket.number > number) return;
    if (bucket.number < number) resetBucket(bucket, number);
    for (const { source, normal, abnormal } of increments) {
      if (normal === 0 && abnormal === 0) continue;
      bucket.normal += normal;
      bucket.abnormal += abnormal;
      const counts = source === UNTRACKED_SOURCE ? undefined : bucket.sources.get(source);
      if (counts) {
        counts.normal += normal;
        counts.abnormal += abnormal;
      } else if (source !== UNTRACKED_SOURCE && bucket.sources.size < this.options.maxSourcesPerBucket) {
        bucket.sources.set(source, { source, normal, abnormal });
      } else {
        bucket.untrackedPairs += normal + abnormal;
      }
    }
  }

  window(nowMs: number, topSources: number): Promise<PairWindow> {
    try {
      return Promise.resolve(this.windowNow(nowMs, topSources));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  windowNow(nowMs: number, topSources: number): PairWindow {
    assertTopSources(topSources);
    const newest = bucketNumber(nowMs, this.options.bucketSeconds);
    const oldest = newest - this.bucketCount + 1;
    const live: Bucket[] = [];
    for (const bucket of this.ring) {
      if (bucket.number < oldest && bucket.number !== Number.NEGATIVE_INFINITY) resetBucket(bucket, Number.NEGATIVE_INFINITY);
      else if (bucket.number >= oldest && bucket.number <= newest) live.push(bucket);
    }
    const result: PairWindow = { windowSeconds: this.windowSeconds, normal: 0, abnormal: 0, untrackedPairs: 0, sources: [] };
    for (const bucket of live) {
      result.normal += bucket.normal;
      result.abnormal += bucket.abnormal;
      result.untrackedPairs += bucket.untrackedPairs;
    }
    if (topSources > 0) {
      // Copies: the ranked entries may be a live bucket's own counters, which later adds keep changing.
      result.sources = selectTop(this.mergeSources(live), topSources, compareSources).map((counts) => ({ ...counts }));
    }
    return result;
  }

  close(): Promise<void> {
    for (const bucket of this.ring) resetBucket(bucket, Number.NEGATIVE_INFINITY);
    return Promise.resolve();
  }

  private slot(number: number): Bucket {
    const index = ((number % this.bucketCount) + this.bucketCount) % this.bucketCount;
    return this.ring[index]!;
  }

  private mergeSources(live: readonly Bucket[]): Iterable<SourcePairs> {
    if (live.length === 1) return live[0]!.sources.values();
    const merged = new Map<string, SourcePairs>();
    for (const bucket of live) {
      for (const counts of bucket.sources.values()) {
        const sum = merged.get(counts.source);
        if (sum) {
          sum.normal += counts.normal;
          sum.abnormal += counts.abnormal;
        } else {
          merged.set(counts.source, { ...counts });
        }
      }
    }
    return merged.values();
  }
}
