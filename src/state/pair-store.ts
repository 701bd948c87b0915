// Pair store: counts normal and abnormal command/response pairs per client source in a rolling window of
// fixed buckets, cluster-wide. Like anvil it only counts; what the counts mean is decided in detect/ and policy/.
// This file holds the interface and the bucket maths shared by the memory and Redis implementations.

/** An increment recorded under this source counts toward the window totals but toward no source. */
export const UNTRACKED_SOURCE = '';

export interface PairIncrement {
  /** Client IP as a string, or UNTRACKED_SOURCE. */
  source: string;
  normal: number;
  abnormal: number;
}

export interface SourcePairs {
  source: string;
  normal: number;
  abnormal: number;
}

export interface PairWindow {
  windowSeconds: number;
  normal: number;
  abnormal: number;
  /**
   * Pairs (normal + abnormal) that are in the totals but not attributed to any source, because a bucket already
   * tracked maxSourcesPerBucket sources (a spoofed flood) or the recorder's own cap overflowed.
   */
  untrackedPairs: number;
  /** Top sources by abnormal desc, then normal desc, then source asc (so equal counts order the same everywhere). */
  sources: SourcePairs[];
}

/**
 * Time (nowMs) is expected to move forward across calls, as the clock does: a store may forget buckets that fell
 * out of the newest window it has seen, so reading an older window afterwards can come back short.
 */
export interface PairStore {
  readonly kind: 'memory' | 'redis';
  readonly windowSeconds: number;
  readonly bucketSeconds: number;
  /** Adds a batch, all of it to the bucket holding nowMs. Counts must be whole numbers >= 0. */
  add(increments: readonly PairIncrement[], nowMs: number): Promise<void>;
  /** Sums the buckets of the window ending at nowMs (current bucket included) and the top topSources sources. */
  window(nowMs: number, topSources: number): Promise<PairWindow>;
  close(): Promise<void>;
}

export interface PairWindowOptions {
  /** Window length; a whole multiple of bucketSeconds. */
  windowSeconds: number;
  /** Bucket granularity: the window slides in steps of this. */
  bucketSeconds: number;
  /**
   * Distinct sources tracked per bucket. Beyond it, new sources still count in the totals (untrackedPairs) but get
   * no entry of their own, so a flood from ever-new addresses (a botnet, IPv6 rotation) cannot grow memory or the
   * ranking work without bound. Ranking cost grows with buckets x cap: on Redis 7 a fully capped 10-bucket window
   * took about 13 ms of Redis time at 2,000 sources per bucket and about 110 ms at 10,000, per proxy per status
   * tick; reading totals only (topSources = 0) stays under 1 ms.
   */
  maxSourcesPerBucket: number;
}

export const DEFAULT_PAIR_WINDOW_OPTIONS: Readonly<PairWindowOptions> = Object.freeze({
  windowSeconds: 10,
  bucketSeconds: 1,
  maxSourcesPerBucket: 2_000,
});

/** Upper bound on buckets per window: the Redis scripts pass one key per bucket and Lua's stack is finite. */
export const MAX_BUCKETS_PER_WINDOW = 1_000;

function positiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a whole number >= 1, got ${value}`);
}

/** Validates and fills defaults; throws RangeError on settings that cannot form a window. */
export function resolvePairWindowOptions(options: Partial<PairWindowOptions> = {}): PairWindowOptions {
  // Field by field, so an explicit undefined (an unset config value passed through) still gets the default.
  const resolved: PairWindowOptions = {
    windowSeconds: options.windowSeconds ?? DEFAULT_PAIR_WINDOW_OPTIONS.windowSeconds,
    bucketSeconds: options.bucketSeconds ?? DEFAULT_PAIR_WINDOW_OPTIONS.bucketSeconds,
    maxSourcesPerBucket: options.maxSourcesPerBucket ?? DEFAULT_PAIR_WINDOW_OPTIONS.maxSourcesPerBucket,
  };
  positiveInteger('windowSeconds', resolved.windowSeconds);
  positiveInteger('bucketSeconds', resolved.bucketSeconds);
  positiveInteger('maxSourcesPerBucket', resolved.maxSourcesPerBucket);
  if (resolved.windowSeconds % resolved.bucketSeconds !== 0) {
    throw new RangeError(
      `windowSeconds (${resolved.windowSeconds}) must be a whole multiple of bucketSeconds (${resolved.bucketSeconds})`,
    );
  }
  if (resolved.windowSeconds / resolved.bucketSeconds > MAX_BUCKETS_PER_WINDOW) {
    throw new RangeError(`a window may hold at most ${MAX_BUCKETS_PER_WINDOW} buckets`);
  }
  return resolved;
}

/** Bucket number holding nowMs: whole bucketSeconds periods since the Unix epoch. */
export function bucketNumber(nowMs: number, bucketSeconds: number): number {
  return Math.floor(nowMs / (bucketSeconds * 1000));
}

export function bucketsPerWindow(options: Pick<PairWindowOptions, 'windowSeconds' | 'bucketSeconds'>): number {
  return options.windowSeconds / options.bucketSeconds;
}

/** Bucket numbers of the window ending at nowMs, oldest first. */
export function windowBucketNumbers(nowMs: number, options: Pick<PairWindowOptions, 'windowSeconds' | 'bucketSeconds'>): number[] {
  const newest = bucketNumber(nowMs, options.bucketSeconds);
  const count = bucketsPerWindow(options);
  return Array.from({ length: count }, (_, i) => newest - count + 1 + i);
}

/** The ranking order of PairWindow.sources, as a sort comparator. */
export function compareSources(left: SourcePairs, right: SourcePairs): number {
  if (left.abnormal !== right.abnormal) return right.abnormal - left.abnormal;
  if (left.normal !== right.normal) return right.normal - left.normal;
  if (left.source === right.source) return 0;
  return left.source < right.source ? -1 : 1;
}

/** Rejects counts that would corrupt a counter (negative, fractional, NaN); both stores call it first. */
export function assertIncrements(increments: readonly PairIncrement[]): void {
  for (const { source, normal, abnormal } of increments) {
    if (!Number.isSafeInteger(normal) || normal < 0 || !Number.isSafeInteger(abnormal) || abnormal < 0) {
      throw new RangeError(`pair counts must be whole numbers >= 0 (source "${source}": ${normal}/${abnormal})`);
    }
  }
}

export function assertTopSources(topSources: number): void {
  if (!Number.isSafeInteger(topSources) || topSources < 0) {
    throw new RangeError(`topSources must be a whole number >= 0, got ${topSources}`);
  }
}
