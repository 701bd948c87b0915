// Shared key-value store with expiry: verdicts every node enforces until they expire, proven-sender counters,
// per-source misbehaviour counters. Like Postfix's anvil it only stores strings and counts; what a key or a count
// means is decided in policy/. This file holds the interface and the argument checks both implementations share.
//
// Three kinds of entries, kept apart because a flood writes one kind by the thousand and must not push out the
// others: counters (increment, and counter records: several counts of one source under one key), plain values
// (set) and listed values (setListed: the verdicts, in an index the firewall export reads without walking the
// keyspace). The memory store bounds each kind on its own, so no number of counters evicts a value.
//
// Calls are not wrapped in timeouts here: the caller wraps each one with withTimeout (shared-store-health.ts) and
// decides what a failure means (the verdict stage fails open), because only it knows what a late answer costs.

export interface KvIncrement {
  key: string;
  /** Whole number, may be negative. */
  by: number;
  /** Time to live set when the key is created (or on every increment when slide is true); whole ms >= 1. */
  ttlMs: number;
  /** Restart the TTL on this increment too: a sliding window instead of a fixed one. */
  slide?: boolean;
}

export interface KvEntry {
  key: string;
  value: string;
  /** Remaining life; Infinity for a key something outside this store wrote without an expiry. */
  ttlMs: number;
}

/**
 * nowMs is the clock of the memory store (injected so tests and replays control time). Redis expires keys by its
 * own clock and ignores nowMs, so every node agrees on when a shared verdict ends whatever its local clock says.
 */
export interface SharedKv {
  readonly kind: 'memory' | 'redis';
  /** Values of these keys (undefined when absent or expired), in ONE round trip. */
  getMany(keys: readonly string[], nowMs: number): Promise<Array<string | undefined>>;
  /** Sets the value with a time to live, replacing any value and TTL the key had. */
  set(key: string, value: string, ttlMs: number, nowMs: number): Promise<void>;
  /**
   * Adds `by` to an integer counter and returns the new value; the TTL is set when the key is created and NOT
   * extended by later increments (a fixed window), unless `slide` is true. Rejects when the key holds a value
   * that is not a whole number.
   */
  increment(key: string, by: number, ttlMs: number, nowMs: number, slide?: boolean): Promise<number>;
  /**
   * Several increments in ONE round trip (the hot path batches per-source counters), returning the new values in
   * the order given; a key listed twice is incremented twice. Not atomic on failure: if one item is rejected (a
   * non-integer value), the items before it stay applied, in both stores.
   */
  incrementMany(items: readonly KvIncrement[], nowMs: number): Promise<number[]>;
  /**
   * Adds to the integer fields of one counter record (a Redis hash) in ONE round trip and returns every field the
   * record then holds. Fields incremented by 0 are not written, so a record holds only what happened, and a record
   * nothing was added to is not created (its current fields are still returned). The TTL is set when the record is
   * created and not extended (a fixed window). Rejects when the key holds a plain or listed value.
   */
  incrementRecord(key: string, increments: Readonly<Record<string, number>>, ttlMs: number, nowMs: number): Promise<Record<string, number>>;
  /**
   * Like set, and lists the key in the store's index of listed entries. Write a listed key again only with setListed
   * (set() takes it off the list; what an increment of it does to the list is unspecified).
   */
  setListed(key: string, value: string, ttlMs: number, nowMs: number): Promise<void>;
  /**
   * Live listed entries, at most `limit`, sorted by key; when more are listed, those expiring last are kept. Costs
   * what the listed entries cost, whatever else the store holds (no scan): a few round trips.
   */
  listed(limit: number, nowMs: number): Promise<KvEntry[]>;
  /** Removes these keys (off the list too); absent keys are ignored. */
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Live plain, listed and counter entries (not counter records) whose key starts with `keyPrefix`, for admin
   * listings: may be slow (in Redis it walks the keyspace), never for the hot path or a periodic read. At most
   * `limit`, sorted by key. Which ones come back when more than `limit` match is unspecified.
   */
  scan(keyPrefix: string, limit: number, nowMs: number): Promise<KvEntry[]>;
  close(): Promise<void>;
}

/** TTLs are whole milliseconds >= 1: what Redis PX and PEXPIRE accept. */
export function assertTtlMs(ttlMs: number): void {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) throw new RangeError(`ttlMs must be a whole number >= 1, got ${ttlMs}`);
}

export function assertIncrementBy(by: number): void {
  if (!Number.isSafeInteger(by)) throw new RangeError(`increment must be a whole number, got ${by}`);
}

export function assertIncrements(items: readonly KvIncrement[]): void {
  for (const item of items) {
    assertIncrementBy(item.by);
    assertTtlMs(item.ttlMs);
  }
}

export function assertRecordIncrements(increments: Readonly<Record<string, number>>): void {
  for (const by of Object.values(increments)) assertIncrementBy(by);
}

export function assertScanLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError(`limit must be a whole number >= 0, got ${limit}`);
}

/** Sort order of scan results. */
export function compareEntryKeys(left: KvEntry, right: KvEntry): number {
  if (left.key === right.key) return 0;
  return left.key < right.key ? -1 : 1;
}
