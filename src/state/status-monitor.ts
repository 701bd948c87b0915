// Keeps the server's entropy status current. Every statusIntervalMs it reads the window from the shared store (one
// round trip, under a timeout) and computes the status; while the shared store is out (see SharedStoreHealth) it
// uses this node's local window instead and says so. Sessions and /status read current(), which never does I/O.
import { DEFAULT_ENTROPY_OPTIONS, windowEntropy, type EntropyOptions, type ServerStatus, type StatusReason } from '../detect/entropy.js';
import type { MemoryPairStore } from './memory-pair-store.js';
import type { PairStore, PairWindow, SourcePairs } from './pair-store.js';
import type { SharedStoreHealth } from './shared-store-health.js';

export interface StatusSnapshot {
  status: ServerStatus;
  reason: StatusReason;
  normalPairs: number;
  abnormalPairs: number;
  /** Pairs counted in the totals but attributed to no source (source caps hit, e.g. a spoofed flood). */
  untrackedPairs: number;
  hNormal: number;
  hAbnormal: number;
  /** D in bits; ±Infinity when one count is zero, which JSON.stringify writes as null. */
  distance: number;
  deltaBits: number;
  minPairs: number;
  windowSeconds: number;
  /** Where this window came from: the shared store, or 'memory' for this node's local view. */
  store: 'memory' | 'redis';
  degraded: boolean;
  topSources: SourcePairs[];
  /** Epoch ms of the computation; 0 until the first tick has run. */
  computedAt: number;
}

export interface StatusMonitorCounters {
  ticks: number;
  /** Ticks computed from the local view because the shared store was out. */
  degradedTicks: number;
}

export interface StatusMonitorOptions {
  shared: PairStore;
  local: MemoryPairStore;
  health: SharedStoreHealth;
  entropy?: Partial<EntropyOptions>;
  statusIntervalMs?: number;
  /** Longest wait for the shared window; beyond it the tick uses the local view. */
  readTimeoutMs?: number;
  topSources?: number;
  now?: () => number;
  /** Called after every tick with the new snapshot (metrics gauges, policy caches). Must not throw. */
  onSnapshot?: (snapshot: StatusSnapshot) => void;
}

export const DEFAULT_STATUS_INTERVAL_MS = 1_000;
export const DEFAULT_READ_TIMEOUT_MS = 500;
export const DEFAULT_TOP_SOURCES = 10;

export function snapshotFromWindow(
  window: PairWindow,
  entropy: EntropyOptions,
  context: { store: 'memory' | 'redis'; degraded: boolean; computedAt: number },
): StatusSnapshot {
  const reading = windowEntropy({ normal: window.normal, abnormal: window.abnormal }, entropy);
  return {
    status: reading.status,
    reason: reading.reason,
    normalPairs: window.normal,
    abnormalPairs: window.abnormal,
    untrackedPairs: window.untrackedPairs,
    hNormal: reading.hNormal,
    hAbnormal: reading.hAbnormal,
    distance: reading.distance,
    deltaBits: entropy.deltaBits,
    minPairs: entropy.minPairs,
    windowSeconds: window.windowSeconds,
    store: context.store,
    degraded: context.degraded,
    topSources: window.sources,
    computedAt: context.computedAt,
  };
}

export class StatusMonitor {
  private readonly shared: PairStore;
  private readonly local: MemoryPairStore;
  private readonly health: SharedStoreHealth;
  private readonly entropy: EntropyOptions;
  private readonly statusIntervalMs: number;
  private readonly readTimeoutMs: number;
  private readonly topSources: number;
  private readonly now: () => number;
  private readonly onSnapshot: ((snapshot: StatusSnapshot) => void) | undefined;
  private snapshot: StatusSnapshot;
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly counts: StatusMonitorCounters = { ticks: 0, degradedTicks: 0 };

  constructor(options: StatusMonitorOptions) {
    this.shared = options.shared;
    this.local = options.local;
    this.health = options.health;
    this.entropy = {
      deltaBits: options.entropy?.deltaBits ?? DEFAULT_ENTROPY_OPTIONS.deltaBits,
      minPairs: options.entropy?.minPairs ?? DEFAULT_ENTROPY_OPTIONS.minPairs,
    };
    this.statusIntervalMs = options.statusIntervalMs ?? DEFAULT_STATUS_INTERVAL_MS;
    this.readTimeoutMs = options.readTimeoutMs ?? DEFAULT_READ_TIMEOUT_MS;
    this.topSources = options.topSources ?? DEFAULT_TOP_SOURCES;
    this.now = options.now ?? Date.now;
    this.onSnapshot = options.onSnapshot;
    if (!Number.isSafeInteger(this.statusIntervalMs) || this.statusIntervalMs < 1) throw new RangeError('statusIntervalMs must be a whole number >= 1');
    if (!Number.isSafeInteger(this.readTimeoutMs) || this.readTimeoutMs < 1) throw new RangeError('readTimeoutMs must be a whole number >= 1');
    // Validates the entropy options now rather than on the first tick.
    windowEntropy({ normal: 0, abnormal: 0 }, this.entropy);
    // Until the first tick: an empty, quiet window, so a proxy that starts during an outage still answers.
    const empty: PairWindow = { windowSeconds: this.local.windowSeconds, normal: 0, abnormal: 0, untrackedPairs: 0, sources: [] };
    this.snapshot = snapshotFromWindow(empty, this.entropy, { store: 'memory', degraded: false, computedAt: 0 });
  }

  /** The latest snapshot; synchronous, no I/O. */
  current(): StatusSnapshot {
    return this.snapshot;
  }

  /** Starts the timer and resolves once the first snapshot is computed. */
  start(): Promise<void> {
    if (!this.timer) {
      this.timer = setInterval(() => void this.refresh(), this.statusIntervalMs);
      this.timer.unref();
    }
    return this.refresh();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }

  /** Recomputes now; a call while a tick runs joins it. Never rejects. */
  refresh(): Promise<void> {
    this.inFlight ??= this.tick().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  counters(): StatusMonitorCounters {
    return { ...this.counts };
  }

  private async tick(): Promise<void> {
    const nowMs = this.now();
    let window: PairWindow | undefined;
    try {
      window = await this.health.track('window', () => this.shared.window(nowMs, this.topSources), this.readTimeoutMs);
    } catch {
      // Recorded by health; the local view below takes over.
    }
    const degraded = this.health.degraded;
    const store = window && !degraded ? this.shared.kind : this.local.kind;
    if (!window || degraded) window = this.local.windowNow(nowMs, this.topSources);
    this.counts.ticks += 1;
    if (degraded) this.counts.degradedTicks += 1;
    this.snapshot = snapshotFromWindow(window, this.entropy, { store, degraded, computedAt: nowMs });
    this.onSnapshot?.(this.snapshot);
  }
}
