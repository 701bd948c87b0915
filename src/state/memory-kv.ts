// In-process SharedKv for a single node: a Map of entries plus a min-heap ordered by expiry time. Time is the
// caller's nowMs, so there is no timer: reads drop an expired entry they meet, and every write first drops up to
// SWEEP_PER_WRITE entries whose time has come from the top of the heap, which keeps ahead of the one heap node a
// write adds.
//
// Memory is bounded by maxEntries. When a new key arrives at the bound, the entry expiring soonest is evicted
// (expired ones first, as they sit on top of the heap). Why soonest-expiring rather than least recently used: what
// fills the store in a flood is a stream of short-lived per-source counters from ever-new addresses, and LRU would
// let that stream push out the long verdicts and proven-sender marks that matter most; the entry expiring soonest
// has the least life left to lose, and the same heap already serves the sweep, so eviction costs O(log n).
import {
  assertIncrementBy,
  assertIncrements,
  assertScanLimit,
  assertTtlMs,
  compareEntryKeys,
  type KvEntry,
  type KvIncrement,
  type SharedKv,
} from './shared-kv.js';

export interface MemoryKvOptions {
  /** Most entries held at once; a new key beyond it evicts the entry expiring soonest. */
  maxEntries?: number;
}

export const DEFAULT_MAX_KV_ENTRIES = 200_000;

/** Expired heap nodes a write removes before doing its own work: bounds the pause any single write can take. */
const SWEEP_PER_WRITE = 64;

/** Stale heap nodes allowed beyond twice the entry count before the heap is rebuilt from the map. */
const HEAP_SLACK_NODES = 1_024;

/** Same rule as Redis INCRBY: an optional minus and digits without leading zeros. */
const INTEGER_VALUE = /^(?:0|-?[1-9]\d*)$/;

interface Entry {
  value: string;
  expiresAtMs: number;
}

/**
 * A heap node is current while the map still holds its entry object with the same expiry. Replacing a key's value
 * or sliding its TTL leaves the old node behind as stale; stale nodes are skipped when they reach the top and
 * dropped in bulk when the heap outgrows the map (compact).
 */
interface HeapNode {
  key: string;
  entry: Entry;
  expiresAtMs: number;
}

export class MemoryKv implements SharedKv {
  readonly kind = 'memory' as const;
  readonly maxEntries: number;
  private readonly entries = new Map<string, Entry>();
  private heap: HeapNode[] = [];
  private evicted = 0;

  constructor(options: MemoryKvOptions = {}) {
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_KV_ENTRIES;
    if (!Number.isSafeInteger(this.maxEntries) || this.maxEntries < 1) {
      throw new RangeError(`maxEntries must be a whole number >= 1, got ${this.maxEntries}`);
    }
  }

  /** Entries held, including expired ones not yet swept. */
  get storedEntries(): number {
    return this.entries.size;
  }

  /** Live entries evicted because the store was full (a metric: non-zero means maxEntries is too small or a flood). */
  get evictedEntries(): number {
    return this.evicted;
  }

  getMany(keys: readonly string[], nowMs: number): Promise<Array<string | undefined>> {
    return settle(() => keys.map((key) => this.live(key, nowMs)?.value));
  }

  set(key: string, value: string, ttlMs: number, nowMs: number): Promise<void> {
    return settle(() => {
      assertTtlMs(ttlMs);
      this.sweep(nowMs);
      if (!this.live(key, nowMs)) this.makeRoom(nowMs);
      this.insert(key, { value, expiresAtMs: nowMs + ttlMs });
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

  delete(keys: readonly string[]): Promise<void> {
    // The heap nodes of deleted keys go stale and are dropped when they surface or on the next compaction.
    for (const key of keys) this.entries.delete(key);
    this.compactIfBloated();
    return Promise.resolve();
  }

  scan(keyPrefix: string, limit: number, nowMs: number): Promise<KvEntry[]> {
    return settle(() => {
      assertScanLimit(limit);
      const found: KvEntry[] = [];
      for (const [key, entry] of this.entries) {
        if (found.length >= limit) break;
        if (!key.startsWith(keyPrefix) || entry.expiresAtMs <= nowMs) continue;
        found.push({ key, value: entry.value, ttlMs: entry.expiresAtMs - nowMs });
      }
      return found.sort(compareEntryKeys);
    });
  }

  close(): Promise<void> {
    this.entries.clear();
    this.heap = [];
    return Promise.resolve();
  }

  private incrementNow({ key, by, ttlMs, slide = false }: KvIncrement, nowMs: number): number {
    const entry = this.live(key, nowMs);
    if (!entry) {
      this.makeRoom(nowMs);
      this.insert(key, { value: String(by), expiresAtMs: nowMs + ttlMs });
      return by;
    }
    if (!INTEGER_VALUE.test(entry.value)) throw new Error(`value of "${key}" is not an integer`);
    const sum = Number(entry.value) + by;
    if (!Number.isSafeInteger(sum)) throw new RangeError(`counter "${key}" would leave the safe integer range`);
    entry.value = String(sum);
    const expiresAtMs = nowMs + ttlMs;
    if (slide && expiresAtMs !== entry.expiresAtMs) {
      entry.expiresAtMs = expiresAtMs;
      this.push({ key, entry, expiresAtMs });
      this.compactIfBloated();
    }
    return sum;
  }

  /** The entry if present and unexpired; an expired one is dropped on the way. */
  private live(key: string, nowMs: number): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.expiresAtMs > nowMs) return entry;
    this.entries.delete(key);
    return undefined;
  }

  private insert(key: string, entry: Entry): void {
    this.entries.set(key, entry);
    this.push({ key, entry, expiresAtMs: entry.expiresAtMs });
    this.compactIfBloated();
  }

  private isCurrent(node: HeapNode): boolean {
    return this.entries.get(node.key) === node.entry && node.entry.expiresAtMs === node.expiresAtMs;
  }

  private sweep(nowMs: number): void {
    for (let budget = SWEEP_PER_WRITE; budget > 0 && this.heap.length > 0 && this.heap[0]!.expiresAtMs <= nowMs; budget--) {
      const node = this.pop();
      if (this.isCurrent(node)) this.entries.delete(node.key);
    }
  }

  /** Called before adding a new key: frees one slot if the store is full, taking the entry expiring soonest. */
  private makeRoom(nowMs: number): void {
    while (this.entries.size >= this.maxEntries && this.heap.length > 0) {
      const node = this.pop();
      if (!this.isCurrent(node)) continue;
      this.entries.delete(node.key);
      if (node.expiresAtMs > nowMs) this.evicted += 1;
    }
  }

  private compactIfBloated(): void {
    if (this.heap.length <= 2 * this.entries.size + HEAP_SLACK_NODES) return;
    this.heap = [...this.entries].map(([key, entry]) => ({ key, entry, expiresAtMs: entry.expiresAtMs }));
    for (let i = (this.heap.length >>> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  private push(node: HeapNode): void {
    const heap = this.heap;
    heap.push(node);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >>> 1;
      if (heap[parent]!.expiresAtMs <= node.expiresAtMs) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = node;
  }

  /** Removes and returns the top; callers check the heap is not empty. */
  private pop(): HeapNode {
    const heap = this.heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftDown(start: number): void {
    const heap = this.heap;
    const node = heap[start]!;
    let i = start;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.expiresAtMs < heap[left]!.expiresAtMs ? right : left;
      if (heap[child]!.expiresAtMs >= node.expiresAtMs) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = node;
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
