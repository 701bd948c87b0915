// SFDS flooding records for notices: floodingSets' detections plus the time range their numbers cover
// (first session start to last session end), over injected time; nothing for a source not flooding.
import { describe, expect, it } from 'vitest';
import { SfdsAggregator, type SessionObservation, type ThresholdSet } from '../../src/detect/sfds.js';

const MINUTE_MS = 60_000;
const T0 = Date.UTC(2025, 0, 6, 12, 0, 0);
const FAST: ThresholdSet = { name: 'fast', periodSeconds: 60, minMeanPacketBytes: 60, minFlowsPerPeriod: 5, minDurationPeriods: 0 };
const SLOW: ThresholdSet = { name: 'slow', periodSeconds: 3_600, minMeanPacketBytes: 60, minFlowsPerPeriod: 1_000, minDurationPeriods: 0 };

function session(client: string, startMs: number): SessionObservation {
  return { client, local: '192.0.2.25', localPort: 25, startMs, endMs: startMs + 800, packets: 12, bytes: 1_200 };
}

describe('SfdsAggregator.floodingRecords', () => {
  it('gives each flooding set with its numbers and the time range they cover', () => {
    const sfds = new SfdsAggregator({ sets: [FAST, SLOW] });
    // Two sessions in the minute before (not flooding, outside the run), then 6 in this minute.
    for (const offsetMs of [-50_000, -40_000]) sfds.observe(session('198.51.100.7', T0 + offsetMs), T0 + offsetMs + 800);
    for (let index = 0; index < 6; index += 1) sfds.observe(session('198.51.100.7', T0 + 1_000 + index * 5_000), T0 + 1_800 + index * 5_000);
    const nowMs = T0 + 30_000;
    const records = sfds.floodingRecords('::ffff:198.51.100.7', nowMs);
    expect(records).toEqual([{
      source: '198.51.100.7',
      set: 'fast',
      stats: { flows: 6, packets: 72, bytes: 7_200, meanPacketBytes: 100, durationPeriods: 1, flowsPerPeriod: 6, virtualFlows: 1, coveredPeriods: 1 },
      firstStartMs: T0 + 1_000,
      lastEndMs: T0 + 26_800,
    }]);
    // The same detections as floodingSets, only with the time range added.
    expect(sfds.floodingSets('198.51.100.7', nowMs)).toEqual(records.map(({ source, set, stats }) => ({ source, set, stats })));
  });

  it('covers the whole run of a flood over several periods (as far as the ring holds them)', () => {
    const sfds = new SfdsAggregator({ sets: [{ ...FAST, minDurationPeriods: 2 }] });
    for (let minute = 0; minute < 3; minute += 1) {
      for (let index = 0; index < 6; index += 1) {
        const startMs = T0 + minute * MINUTE_MS + index * 9_000;
        sfds.observe(session('2001:db8::7', startMs), startMs + 800);
      }
    }
    const [record] = sfds.floodingRecords('2001:db8::7', T0 + 2 * MINUTE_MS + 50_000);
    expect(record).toMatchObject({ set: 'fast', stats: { flows: 18, durationPeriods: 3, coveredPeriods: 3 }, firstStartMs: T0, lastEndMs: T0 + 2 * MINUTE_MS + 45_800 });
  });

  it('has no records for a source under every threshold, or never seen', () => {
    const sfds = new SfdsAggregator({ sets: [FAST] });
    sfds.observe(session('198.51.100.8', T0), T0 + 800);
    expect(sfds.floodingRecords('198.51.100.8', T0 + 1_000)).toEqual([]);
    expect(sfds.floodingRecords('198.51.100.9', T0 + 1_000)).toEqual([]);
  });
});
