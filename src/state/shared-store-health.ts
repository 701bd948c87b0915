// Health of the shared (Redis) pair store as seen by one proxy: whether its view can be trusted, counters for
// metrics, and one log line per outage and per recovery, however many calls fail in between. The recorder
// reports flushes, the status monitor reports window reads; both share one instance.

/** The minimal logger we need; pino satisfies it. */
export interface HealthLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export type SharedOperation = 'flush' | 'window';

export interface SharedStoreCounters {
  /** Calls sent to the shared store: one round trip each (plus one more for EVAL after a NOSCRIPT reply). */
  roundTrips: number;
  /** Calls that failed or timed out. */
  errors: number;
  outages: number;
}

export class TimeoutError extends Error {
  constructor(what: string, timeoutMs: number) {
    super(`${what} timed out after ${timeoutMs} ms`);
    this.name = 'TimeoutError';
  }
}

/**
 * Settles with the promise or rejects with TimeoutError after timeoutMs, whichever comes first. A late outcome of
 * the original promise is ignored (it may still have taken effect, which is why callers never retry a write).
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TimeoutError(what, timeoutMs)), timeoutMs);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

export interface SharedStoreHealthOptions {
  logger: HealthLogger;
  storeKind: 'memory' | 'redis';
  now?: () => number;
}

/**
 * Degraded from the first failure of either operation. Healthy again only after a window read succeeds with no
 * flush failing since the previous read: a Redis that answers reads but refuses writes (maxmemory, read-only
 * replica after failover) lacks our pairs, so it stays degraded instead of flapping once a second.
 */
export class SharedStoreHealth {
  private readonly logger: HealthLogger;
  private readonly storeKind: 'memory' | 'redis';
  private readonly now: () => number;
  private degradedSinceMs: number | undefined;
  private flushFailedSinceRead = false;
  private readonly counts: SharedStoreCounters = { roundTrips: 0, errors: 0, outages: 0 };

  constructor(options: SharedStoreHealthOptions) {
    this.logger = options.logger;
    this.storeKind = options.storeKind;
    this.now = options.now ?? Date.now;
  }

  get degraded(): boolean {
    return this.degradedSinceMs !== undefined;
  }

  counters(): SharedStoreCounters {
    return { ...this.counts };
  }

  /** Runs one shared-store call under a timeout and records its outcome; rethrows the failure. */
  async track<T>(operation: SharedOperation, call: () => Promise<T>, timeoutMs: number): Promise<T> {
    this.counts.roundTrips += 1;
    try {
      const result = await withTimeout(Promise.resolve().then(call), timeoutMs, `shared pair store ${operation}`);
      this.succeeded(operation);
      return result;
    } catch (error) {
      this.failed(operation, error);
      throw error;
    }
  }

  private succeeded(operation: SharedOperation): void {
    if (operation !== 'window') return;
    const flushFailed = this.flushFailedSinceRead;
    this.flushFailedSinceRead = false;
    if (this.degradedSinceMs === undefined || flushFailed) return;
    const outageMs = this.now() - this.degradedSinceMs;
    this.degradedSinceMs = undefined;
    this.logger.info({ store: this.storeKind, outageMs }, 'shared pair store is back; status uses the cluster-wide window again');
  }

  private failed(operation: SharedOperation, error: unknown): void {
    this.counts.errors += 1;
    if (operation === 'flush') this.flushFailedSinceRead = true;
    else this.flushFailedSinceRead = false;
    if (this.degradedSinceMs !== undefined) return;
    this.degradedSinceMs = this.now();
    this.counts.outages += 1;
    const message = error instanceof Error ? error.message : String(error);
    this.logger.warn(
      { store: this.storeKind, operation, err: message },
      'shared pair store unavailable; status falls back to this node\'s local window until it answers again',
    );
  }
}
