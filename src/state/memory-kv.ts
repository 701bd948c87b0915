// In-process SharedKv for a single node. Entries live in three bounded classes (expiring-map.ts), each a Map plus
// a min-heap by expiry: counters (increment and counter records), plain values (set: proven-sender marks) and
// listed values (setListed: verdicts). A key lives in one class at a time; getMany, increment and delete find it
// in whichever holds it.
//
// Why classes: what fills the store in a flood is a stream of per-source counters from ever-new addresses. In one
// shared pool, evicting the soonest-expiring entry let hour-long counters push out ten-minute verdicts, and a
// rejected source walked free. Bounded apart, counters only ever evict counters, so no number of them can evict a
// verdict or a proven mark; within a class the entry expiring soonest goes first, having the least life to lose.
import { ExpiringMap, type ExpiringEntry } from './expiring-map.js';
import {
  assertIncrementBy,
  assertIncrements,
  assertRecordIncrements,
  assertScanLimit,
  assertTtlMs,
  compareEntryKeys,
  type KvEntry,
  type KvIncrement,
  type SharedKv,
} from './shared-kv.js';

export type KvClass = 'counters' | 'values' | 'listed';

export interface MemoryKvOptions {
  /**
   * Most entries held at once per class (one number for every class, or some classes); a new key beyond its
   * class's bound evicts the entry of that class expiring soonest.
   */
  maxEntries?: number | Partial<Record<KvClass, number>>;
}

/**
 * Counters: one record per IPv4 address or IPv6 /64 and hour, so 200,000 sources an hour before the oldest
 * window is cut short. Values and listed: proven senders and verdicts, more than pushback.firewall.maxEntries.
 */
export const DEFAULT_MAX_KV_ENTRIES: Readonly<Record<KvClass, number>> = Object.freeze({ counters: 200_000, values: 100_000, listed: 100_000 });

const KV_CLASSES: readonly KvClass[] = ['counters', 'values', 'listed'];

/** Same rule as Redis INCRBY: an optional minus and digits without leading zeros. */
const INTEGER_VALUE = /^(?:0|-?[1-9]\d*)$/;

/** A counter record: field → count (a Redis hash of integers). */
type CounterRecord = Map<string, number>;
type Value = string | CounterRecord;

export class MemoryKv implements SharedKv {
  readonly kind = 'memory' as const;
  private readonly classes: Readonly<Record<KvClass, ExpiringMap<Value>>>;

  constructor(options: MemoryKvOptions = {}) {
    const bound = (kvClass: KvClass): number => (typeof options.maxEntries === 'number' ? options.maxEntries : (options.maxEntries?.[kvClass] ?? DEFAULT_MAX_KV_ENTRIES[kvClass]));
    this.classes = { counters: new ExpiringMap(bound('counters')), values: new ExpiringMap(bound('values')), listed: new ExpiringMap(bound('listed')) };
  }

  /** Entries held in every class, including expired ones not yet swept. */
  get storedEntries(): number {
    return KV_CLASSES.reduce((sum, kvClass) => sum + this.classes[kvClass].size, 0);
  }

  /** Live entries evicted because their class was full (a metric: non-zero means a bound is too small, or a flood). */
  get evictedEntries(): number {
    return KV_CLASSES.reduce((sum, kvClass) => sum + this.classes[kvClass].evictedEntries, 0);
  }

  storedEntriesOf(kvClass: KvClass): number {
    return this.classes[kvClass].size;
  }

  evictedEntriesOf(kvClass: KvClass): number {
    return this.classes[kvClass].evictedEntries;
  }

  maxEntriesOf(kvClass: KvClass): number {
    return this.classes[kvClass].maxEntries;
  }

  getMany(keys: readonly string[], nowMs: number): Promise<Array<string | undefined>> {
    return settle(() =>
      keys.map((key) => {
        const value = this.find(key, nowMs)?.entry.value;
        // A counter record is not a string: Redis MGET answers nil for a hash too.
        return typeof value === 'string' ? value : undefined;
      }),
    );
  }

  set(key: string, value: string, ttlMs: number, nowMs: number): Promise<void> {
    return settle(() => {
      assertTtlMs(ttlMs);
      this.put('values', key, value, nowMs + ttlMs, nowMs);
    });
  }

  setListed(key: string, value: string, ttlMs: number, nowMs: number): Promise<void> {
    return settle(() => {
      assertTtlMs(ttlMs);
      this.put('listed', key, value, nowMs + ttlMs, nowMs);
    });
  }

  listed(limit: number, nowMs: number): Promise<KvEntry[]> {
    return settle(() => {
      assertScanLimit(limit);
      const live: KvEntry[] = [];
      for (const [key, entry] of this.classes.listed.liveEntries(nowMs)) live.push({ key, value: entry.value as string, ttlMs: entry.expiresAtMs - nowMs });
      // Those expiring last are kept, as the Redis store's index gives them.
      if (live.length > limit) live.sort((left, right) => right.ttlMs - left.ttlMs).length = limit;
      return live.sort(compareEntryKeys);
    });
  }

  increment(key: string, by: number, ttlMs: number, nowMs: number, slide = false): Promise<number> {
    return settle(() => {
      assertIncrementBy(by);
      assertTtlMs(ttlMs);
      this.sweep(nowMs);
      return this.incrementNow({ key, by, ttlMs, slide }, nowMs);
    });
  }

  incrementMany(items: readonly KvIncrement[], nowMs: number): Promise<number[]> {
    return settle(() => {
      assertIncrements(items);
      this.sweep(nowMs);
      return items.map((item) => this.incrementNow(item, nowMs));
    });
  }

  incrementRecord(key: string, increments: Readonly<Record<string, number>>, ttlMs: number, nowMs: number): Promise<Record<string, number>> {
    return settle(() => {
      assertRecordIncrements(increments);
      assertTtlMs(ttlMs);
      this.sweep(nowMs);
      const found = this.find(key, nowMs);
      if (found && typeof found.entry.value === 'string') throw new Error(`"${key}" holds a value, not a counter record`);
      const written = Object.entries(increments).filter(([, by]) => by !== 0);
      let record = found?.entry.value as CounterRecord | undefined;
      if (!record && written.length > 0) {
        record = new Map();
        this.classes.counters.put(key, record, nowMs + ttlMs, nowMs);
      }
      if (!record) return {};
      // Checked before any field changes, so a rejected call leaves the record as it was.
      const sums = written.map(([field, by]) => [field, (record.get(field) ?? 0) + by] as const);
      for (const [field, sum] of sums) if (!Number.isSafeInteger(sum)) throw new RangeError(`field "${field}" of "${key}" would leave the safe integer range`);
      for (const [field, sum] of sums) record.set(field, sum);
      return Object.fromEntries(record);
    });
  }

  delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) for (const kvClass of KV_CLASSES) this.classes[kvClass].delete(key);
    return Promise.resolve();
  }

  scan(keyPrefix: string, limit: number, nowMs: number): Promise<KvEntry[]> {
    return settle(() => {
      assertScanLimit(limit);
      const found: KvEntry[] = [];
      for (const kvClass of KV_CLASSES) {
        for (const [key, entry] of this.classes[kvClass].liveEntries(nowMs)) {
          if (found.length >= limit) break;
          if (!key.startsWith(keyPrefix) || typeof entry.value !== 'string') continue;
          found.push({ key, value: entry.value, ttlMs: entry.expiresAtMs - nowMs });
        }
      }
      return found.sort(compareEntryKeys);
    });
  }

  close(): Promise<void> {
    for (const kvClass of KV_CLASSES) this.classes[kvClass].clear();
    return Promise.resolve();
  }

  /** The live entry of the key and the class holding it. */
  private find(key: string, nowMs: number): { kvClass: KvClass; entry: ExpiringEntry<Value> } | undefined {
    for (const kvClass of KV_CLASSES) {
      const entry = this.classes[kvClass].live(key, nowMs);
      if (entry) return { kvClass, entry };
    }
    return undefined;
  }

  /** Writes the key into this class, taking it out of any other. */
  private put(kvClass: KvClass, key: string, value: string, expiresAtMs: number, nowMs: number): void {
    this.sweep(nowMs);
    for (const other of KV_CLASSES) if (other !== kvClass) this.classes[other].delete(key);
    this.classes[kvClass].put(key, value, expiresAtMs, nowMs);
  }

  private sweep(nowMs: number): void {
    for (const kvClass of KV_CLASSES) this.classes[kvClass].sweep(nowMs);
  }

  /** A new counter goes to the counters class; an integer written by set() is counted where it is. */
  private incrementNow({ key, by, ttlMs, slide = false }: KvIncrement, nowMs: number): number {
    const found = this.find(key, nowMs);
    if (!found) {
      this.classes.counters.put(key, String(by), nowMs + ttlMs, nowMs);
      return by;
    }
    const { kvClass, entry } = found;
    if (typeof entry.value !== 'string') throw new Error(`"${key}" holds a counter record, not an integer`);
    if (!INTEGER_VALUE.test(entry.value)) throw new Error(`value of "${key}" is not an integer`);
    const sum = Number(entry.value) + by;
    if (!Number.isSafeInteger(sum)) throw new RangeError(`counter "${key}" would leave the safe integer range`);
    entry.value = String(sum);
    if (slide) this.classes[kvClass].reschedule(key, entry, nowMs + ttlMs);
    return sum;
  }
}

/** Runs synchronous work as a promise, so a thrown RangeError becomes a rejection like the Redis store's. */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}
