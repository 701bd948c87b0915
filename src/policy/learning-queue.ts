// What the proxy learns from ended sessions (SFDS observations, the screen's counters and verdicts)
// is work that can wait a few milliseconds; the live sessions' replies cannot. When a flood's
// connections end together (the attacker stops, or the stress time-out cuts thousands of idle
// clients in the same second), learning from all of them at once blocked the event loop for more
// than a second, and every legitimate client waited that long for its next reply. So ended sessions
// are queued, and learned from in slices between I/O turns: at most a few milliseconds, and a
// bounded number of store calls in flight. The queue itself is bounded too: beyond it a record is
// counted and dropped (a flood that big has already been seen by the records before it).

export interface LearningQueueOptions<T> {
  /** Learns from one item; its promise settles when what it stores has been stored (or failed). */
  learn(item: T): Promise<void> | void;
  /** Items waiting beyond this are dropped (counted by onDropped). */
  maxQueued: number;
  /** Most items started in one slice, and the time a slice may take, whichever comes first. */
  maxPerSlice: number;
  sliceMs: number;
  /** Most learn() calls whose promises are pending at once (the store's round trips in flight). */
  maxInFlight: number;
  onDropped?(item: T): void;
  onError?(error: Error, item: T): void;
}

export class LearningQueue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  private inFlight = 0;
  private scheduled = false;
  private dropped = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: LearningQueueOptions<T>) {}

  /** Queues an item; false when the queue is full and the item was dropped. */
  push(item: T): boolean {
    if (this.queued >= this.options.maxQueued) {
      this.dropped += 1;
      this.options.onDropped?.(item);
      return false;
    }
    this.items.push(item);
    this.schedule();
    return true;
  }

  get queued(): number {
    return this.items.length - this.head;
  }

  stats(): { queued: number; inFlight: number; dropped: number } {
    return { queued: this.queued, inFlight: this.inFlight, dropped: this.dropped };
  }

  /** Resolves once nothing is queued or in flight (at stop: the last sessions reach the store). */
  idle(): Promise<void> {
    if (this.queued === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queued === 0 || this.inFlight >= this.options.maxInFlight) return;
    this.scheduled = true;
    // setImmediate, not a microtask: the sockets' I/O callbacks run between two slices.
    setImmediate(() => {
      this.scheduled = false;
      this.runSlice();
    });
  }

  private runSlice(): void {
    const started = performance.now();
    let startedItems = 0;
    while (this.queued > 0 && this.inFlight < this.options.maxInFlight && startedItems < this.options.maxPerSlice) {
      if (startedItems > 0 && performance.now() - started >= this.options.sliceMs) break;
      const item = this.items[this.head] as T;
      this.items[this.head] = undefined;
      this.head += 1;
      startedItems += 1;
      this.start(item);
    }
    this.compact();
    this.schedule();
    this.notifyIfIdle();
  }

  private start(item: T): void {
    let pending: Promise<void> | void;
    try {
      pending = this.options.learn(item);
    } catch (error) {
      this.options.onError?.(error as Error, item);
      return;
    }
    if (!pending) return;
    this.inFlight += 1;
    pending.then(
      () => this.settled(),
      (error: Error) => {
        this.options.onError?.(error, item);
        this.settled();
      },
    );
  }

  private settled(): void {
    this.inFlight -= 1;
    this.schedule();
    this.notifyIfIdle();
  }

  /** Drops the consumed front of the array once it is most of it (amortised O(1) per item). */
  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1_024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }

  private notifyIfIdle(): void {
    if (this.queued > 0 || this.inFlight > 0 || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
