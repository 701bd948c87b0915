// One bounded class of entries of the memory store (memory-kv.ts): a Map of entries plus a min-heap ordered by
// expiry time. Time is the caller's nowMs, so there is no timer: reads drop an expired entry they meet, and sweep()
// drops up to SWEEP_PER_WRITE entries whose time has come from the top of the heap, which keeps ahead of the one
// heap node a write adds.
//
// Memory is bounded by maxEntries. When a new key arrives at the bound, the entry of this class expiring soonest is
// evicted (expired ones first, as they sit on top of the heap): it has the least life left to lose, and the same
// heap already serves the sweep, so eviction costs O(log n). Only entries of the same class compete for room.

/** Expired heap nodes a write removes before doing its own work: bounds the pause any single write can take. */
const SWEEP_PER_WRITE = 64;

/** Stale heap nodes allowed beyond twice the entry count before the heap is rebuilt from the map. */
const HEAP_SLACK_NODES = 1_024;

export interface ExpiringEntry<V> {
  value: V;
  expiresAtMs: number;
}

/**
 * A heap node is current while the map still holds its entry object with the same expiry. Replacing a key's value
 * or moving its expiry leaves the old node behind as stale; stale nodes are skipped when they reach the top and
 * dropped in bulk when the heap outgrows the map (compact).
 */
interface HeapNode<V> {
  key: string;
  entry: ExpiringEntry<V>;
  expiresAtMs: number;
}

export class ExpiringMap<V> {
  private readonly entries = new Map<string, ExpiringEntry<V>>();
  private heap: Array<HeapNode<V>> = [];
  private evicted = 0;

  constructor(readonly maxEntries: number) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a whole number >= 1, got ${maxEntries}`);
  }

  /** Entries held, including expired ones not yet swept. */
  get size(): number {
    return this.entries.size;
  }

  /** Live entries evicted because this class was full. */
  get evictedEntries(): number {
    return this.evicted;
  }

  /** The entry if present and unexpired; an expired one is dropped on the way. */
  live(key: string, nowMs: number): ExpiringEntry<V> | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.expiresAtMs > nowMs) return entry;
    this.entries.delete(key);
    return undefined;
  }

  /** Adds or replaces the key's entry; a key new to this class first makes room for itself. */
  put(key: string, value: V, expiresAtMs: number, nowMs: number): void {
    if (!this.live(key, nowMs)) this.makeRoom(nowMs);
    const entry = { value, expiresAtMs };
    this.entries.set(key, entry);
    this.push({ key, entry, expiresAtMs });
    this.compactIfBloated();
  }

  /** Moves the expiry of an entry this class holds (a sliding window). */
  reschedule(key: string, entry: ExpiringEntry<V>, expiresAtMs: number): void {
    if (expiresAtMs === entry.expiresAtMs) return;
    entry.expiresAtMs = expiresAtMs;
    this.push({ key, entry, expiresAtMs });
    this.compactIfBloated();
  }

  delete(key: string): void {
    // The heap node goes stale and is dropped when it surfaces or on the next compaction.
    if (this.entries.delete(key)) this.compactIfBloated();
  }

  /** Live entries, in no particular order. */
  *liveEntries(nowMs: number): IterableIterator<[string, ExpiringEntry<V>]> {
    for (const item of this.entries) if (item[1].expiresAtMs > nowMs) yield item;
  }

  sweep(nowMs: number): void {
    for (let budget = SWEEP_PER_WRITE; budget > 0 && this.heap.length > 0 && this.heap[0]!.expiresAtMs <= nowMs; budget--) {
      const node = this.pop();
      if (this.isCurrent(node)) this.entries.delete(node.key);
    }
  }

  clear(): void {
    this.entries.clear();
    this.heap = [];
  }

  private isCurrent(node: HeapNode<V>): boolean {
    return this.entries.get(node.key) === node.entry && node.entry.expiresAtMs === node.expiresAtMs;
  }

  /** Called before adding a new key: frees one slot if the class is full, taking the entry expiring soonest. */
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

  private push(node: HeapNode<V>): void {
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
  private pop(): HeapNode<V> {
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
