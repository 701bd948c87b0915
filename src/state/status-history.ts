// The last hour of status snapshots, for the dashboard's plot of H(Pn), H(Pa) and S over time (the entropy
// paper's Fig. 5). A fixed-size ring: memory stays bounded by count whatever the tick rate, and ticks faster than
// the sample spacing are thinned (one point kept per spacing). No I/O; /status/history reads it.
import type { ServerStatus } from '../detect/entropy.js';
import type { StatusSnapshot } from './status-monitor.js';

export interface StatusPoint {
  /** Epoch ms of the snapshot (StatusSnapshot.computedAt). */
  computedAt: number;
  status: ServerStatus;
  /** What the screen acted on: the status, at most 0 while Postfix was under pressure. */
  effectiveStatus: ServerStatus;
  hNormal: number;
  hAbnormal: number;
  /** D in bits; null when infinite (one count is zero), as JSON would write it anyway. */
  distance: number | null;
  normalPairs: number;
  abnormalPairs: number;
}

export interface StatusHistoryOptions {
  /** How often the status is computed; spacing below the sample spacing is thinned. */
  statusIntervalMs: number;
  historySeconds?: number;
  /** Upper bound on points held, whatever the interval. */
  maxPoints?: number;
}

export const DEFAULT_HISTORY_SECONDS = 3_600;
export const DEFAULT_HISTORY_MAX_POINTS = 3_600;

export function pointFromSnapshot(snapshot: StatusSnapshot, effectiveStatus: ServerStatus): StatusPoint {
  return {
    computedAt: snapshot.computedAt,
    status: snapshot.status,
    effectiveStatus,
    hNormal: snapshot.hNormal,
    hAbnormal: snapshot.hAbnormal,
    distance: Number.isFinite(snapshot.distance) ? snapshot.distance : null,
    normalPairs: snapshot.normalPairs,
    abnormalPairs: snapshot.abnormalPairs,
  };
}

export class StatusHistory {
  readonly capacity: number;
  /** Least spacing between kept points. */
  readonly sampleMs: number;
  readonly historySeconds: number;
  readonly statusIntervalMs: number;
  private readonly ring: Array<StatusPoint | undefined>;
  /** Where the next point goes; the oldest point sits here once the ring is full. */
  private nextIndex = 0;
  private size = 0;
  private lastKept: StatusPoint | undefined;

  constructor(options: StatusHistoryOptions) {
    this.statusIntervalMs = options.statusIntervalMs;
    this.historySeconds = options.historySeconds ?? DEFAULT_HISTORY_SECONDS;
    const maxPoints = options.maxPoints ?? DEFAULT_HISTORY_MAX_POINTS;
    for (const [name, value] of [['statusIntervalMs', this.statusIntervalMs], ['historySeconds', this.historySeconds], ['maxPoints', maxPoints]] as const) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a whole number >= 1`);
    }
    const historyMs = this.historySeconds * 1_000;
    this.capacity = Math.min(maxPoints, Math.ceil(historyMs / this.statusIntervalMs));
    this.sampleMs = Math.max(this.statusIntervalMs, Math.ceil(historyMs / this.capacity));
    this.ring = new Array<StatusPoint | undefined>(this.capacity);
  }

  /** Keeps the point unless it follows the last kept one too closely; says whether it was kept. */
  record(point: StatusPoint): boolean {
    if (this.lastKept) {
      const elapsedMs = point.computedAt - this.lastKept.computedAt;
      // Half an interval of slack: timer jitter (a tick 999 ms after the last) must not drop every other point.
      // A clock stepped back (elapsed < 0) is kept, or nothing would be recorded until it caught up.
      if (elapsedMs >= 0 && elapsedMs < this.sampleMs - this.statusIntervalMs / 2) return false;
    }
    this.ring[this.nextIndex] = point;
    this.nextIndex = (this.nextIndex + 1) % this.capacity;
    this.size = Math.min(this.size + 1, this.capacity);
    this.lastKept = point;
    return true;
  }

  /** Points oldest first, within historySeconds of the newest, and after sinceMs when given (for incremental reads). */
  points(sinceMs = Number.NEGATIVE_INFINITY): StatusPoint[] {
    const newest = this.lastKept;
    if (!newest) return [];
    const oldestAllowedMs = Math.max(sinceMs, newest.computedAt - this.historySeconds * 1_000);
    const points: StatusPoint[] = [];
    for (let offset = this.size; offset >= 1; offset -= 1) {
      const point = this.ring[(this.nextIndex - offset + this.capacity) % this.capacity]!;
      if (point.computedAt > oldestAllowedMs) points.push(point);
    }
    return points;
  }
}
