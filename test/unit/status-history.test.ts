// The dashboard's status history: a ring bounded by count, thinned when ticks come faster than the
// sample spacing, oldest first, limited to the last hour, and readable incrementally.
import { describe, expect, it } from 'vitest';
import { pointFromSnapshot, StatusHistory, type StatusPoint } from '../../src/state/status-history.js';
import { snapshotFromWindow } from '../../src/state/status-monitor.js';

const T0 = 1_700_000_000_000;

function point(computedAt: number, status: StatusPoint['status'] = 1): StatusPoint {
  return { computedAt, status, effectiveStatus: status, hNormal: 0, hAbnormal: 0, distance: null, normalPairs: 0, abnormalPairs: 0 };
}

function times(history: StatusHistory, sinceMs?: number): number[] {
  return history.points(sinceMs).map((kept) => kept.computedAt - T0);
}

describe('StatusHistory', () => {
  it('holds an hour of one-second ticks, and no more than its capacity', () => {
    const history = new StatusHistory({ statusIntervalMs: 1_000 });
    expect(history.capacity).toBe(3_600);
    expect(history.sampleMs).toBe(1_000);
    for (let tick = 0; tick < 5_000; tick += 1) expect(history.record(point(T0 + tick * 1_000))).toBe(true);
    const kept = times(history);
    expect(kept).toHaveLength(3_600);
    expect(kept[0]).toBe(1_400_000);
    expect(kept.at(-1)).toBe(4_999_000);
  });

  it('wraps around in order with a small ring', () => {
    const history = new StatusHistory({ statusIntervalMs: 1_000, historySeconds: 3 });
    expect(history.capacity).toBe(3);
    expect(history.points()).toEqual([]);
    history.record(point(T0));
    history.record(point(T0 + 1_000));
    expect(times(history)).toEqual([0, 1_000]);
    history.record(point(T0 + 2_000));
    history.record(point(T0 + 3_000));
    history.record(point(T0 + 4_000));
    expect(times(history)).toEqual([2_000, 3_000, 4_000]);
  });

  it('thins ticks faster than the sample spacing, bounded by maxPoints', () => {
    const history = new StatusHistory({ statusIntervalMs: 100, historySeconds: 60, maxPoints: 60 });
    expect(history.capacity).toBe(60);
    expect(history.sampleMs).toBe(1_000);
    const kept = Array.from({ length: 50 }, (_, tick) => history.record(point(T0 + tick * 100)));
    // Ticks at 0 ms, 1000 ms, ... are kept (950 ms of slack for jitter), the nine between each are not.
    expect(kept.filter(Boolean)).toHaveLength(5);
    expect(times(history)).toEqual([0, 1_000, 2_000, 3_000, 4_000]);
  });

  it('keeps a tick that comes a little early, so timer jitter leaves no gaps', () => {
    const history = new StatusHistory({ statusIntervalMs: 1_000 });
    for (const ms of [0, 999, 2_003, 2_998]) expect(history.record(point(T0 + ms))).toBe(true);
    expect(history.record(point(T0 + 3_300))).toBe(false);
  });

  it('keeps a point after the clock stepped back', () => {
    const history = new StatusHistory({ statusIntervalMs: 1_000 });
    history.record(point(T0 + 10_000));
    expect(history.record(point(T0 + 5_000))).toBe(true);
    expect(history.record(point(T0 + 5_200))).toBe(false);
  });

  it('drops points older than the history span when ticks paused', () => {
    const history = new StatusHistory({ statusIntervalMs: 1_000, historySeconds: 10 });
    history.record(point(T0));
    history.record(point(T0 + 1_000));
    history.record(point(T0 + 10_500));
    expect(times(history)).toEqual([1_000, 10_500]);
  });

  it('answers only points after sinceMs', () => {
    const history = new StatusHistory({ statusIntervalMs: 1_000 });
    for (let tick = 0; tick < 5; tick += 1) history.record(point(T0 + tick * 1_000));
    expect(times(history, T0 + 2_000)).toEqual([3_000, 4_000]);
    expect(times(history, T0 + 4_000)).toEqual([]);
  });

  it('refuses options that are not whole positive numbers', () => {
    expect(() => new StatusHistory({ statusIntervalMs: 0 })).toThrow(RangeError);
    expect(() => new StatusHistory({ statusIntervalMs: 1_000, historySeconds: 1.5 })).toThrow(RangeError);
    expect(() => new StatusHistory({ statusIntervalMs: 1_000, maxPoints: 0 })).toThrow(RangeError);
  });

  it('takes a point from a snapshot, writing an infinite distance as null', () => {
    const entropy = { deltaBits: 0.5, minPairs: 20 };
    const context = { store: 'memory' as const, degraded: false, computedAt: T0 };
    const onlyNormal = snapshotFromWindow({ windowSeconds: 10, normal: 40, abnormal: 0, untrackedPairs: 0, sources: [] }, entropy, context);
    expect(pointFromSnapshot(onlyNormal, 0)).toEqual({
      computedAt: T0, status: 1, effectiveStatus: 0, hNormal: 0, hAbnormal: 0, distance: null, normalPairs: 40, abnormalPairs: 0,
    });
    // The entropy paper's window 8: Pn = 32, Pa = 68.
    const window8 = snapshotFromWindow({ windowSeconds: 10, normal: 32, abnormal: 68, untrackedPairs: 0, sources: [] }, entropy, context);
    const kept = pointFromSnapshot(window8, -1);
    expect(kept).toMatchObject({ status: -1, effectiveStatus: -1, normalPairs: 32, abnormalPairs: 68 });
    expect(kept.hNormal).toBeCloseTo(1.644, 3);
    expect(kept.hAbnormal).toBeCloseTo(0.556, 3);
    expect(kept.distance).toBeCloseTo(0.556 - 1.644, 2);
  });
});
