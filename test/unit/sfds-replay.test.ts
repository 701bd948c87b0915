// SFDS replayed over NetFlow records: the live aggregator on the records' own clock. A flood is found even
// when the input goes on long after it, flows slightly out of order still count in their own period, flows
// older than a set's window are counted as late, and the top-N table is the state at the last record.
import { describe, expect, it } from 'vitest';
import { PAPER_THRESHOLDS, type ThresholdSet } from '../../src/detect/sfds.js';
import type { NetflowRecord } from '../../src/offline/netflow-csv.js';
import { SfdsReplay } from '../../src/offline/sfds-replay.js';

const HOUR_MS = 3_600_000;
const T0 = Date.UTC(2003, 10, 2); // Nov 2nd 2003, the day of the paper's Fig. 2
const FLOODER = '163.25.154.253';
const MINUTE: ThresholdSet = { name: 'minute', periodSeconds: 60, minMeanPacketBytes: 60, minFlowsPerPeriod: 120, minDurationPeriods: 0 };

function record(source: string, endMs: number, bytesPerPacket = 101): NetflowRecord {
  return { source, destination: '192.0.2.25', destinationPort: 25, startMs: endMs - 2_000, endMs, packets: 10, bytes: bytesPerPacket * 10 };
}

/** `flows` records an hour for `hours` hours from hour `fromHour`, spread evenly. */
function hourly(source: string, fromHour: number, hours: number, flows: number, bytesPerPacket = 101): NetflowRecord[] {
  return Array.from({ length: hours * flows }, (_, index) => {
    const hour = fromHour + Math.floor(index / flows);
    return record(source, T0 + hour * HOUR_MS + Math.floor(((index % flows) * HOUR_MS) / flows), bytesPerPacket);
  });
}

function replayOf(records: readonly NetflowRecord[], sets: readonly ThresholdSet[] = [PAPER_THRESHOLDS]): SfdsReplay {
  const replay = new SfdsReplay({ sets, maxSources: 1_000 });
  for (const each of [...records].sort((a, b) => a.endMs - b.endMs)) replay.add(each);
  return replay;
}

describe('SfdsReplay', () => {
  it('finds a flood of six hours at its 181st flow of the sixth hour, though the input goes on for hours', () => {
    const flood = hourly(FLOODER, 0, 6, 181);
    const report = replayOf([...flood, ...hourly('192.0.2.7', 0, 12, 3)]).report(10);
    expect(report.flooding).toEqual([{
      source: FLOODER,
      set: 'paper-hourly',
      firstDetectedMs: flood.at(-1)!.endMs,
      lastDetectedMs: flood.at(-1)!.endMs,
      stats: { flows: 6 * 181, packets: 6 * 1_810, bytes: 6 * 181 * 1_010, meanPacketBytes: 101, durationPeriods: 6, flowsPerPeriod: 181, virtualFlows: 1, coveredPeriods: 6 },
    }]);
    // At the end (hour 11) the flood is long over: the top-N table shows the last hour, where it sent nothing.
    expect(report.top.map((row) => row.source)).toEqual(['192.0.2.7']);
    expect(report.lastFlowMs).toBe(T0 + 11 * HOUR_MS + Math.floor((2 * HOUR_MS) / 3));
  });

  it.each([
    ['180 flows an hour', hourly(FLOODER, 0, 6, 180)],
    ['exactly 100 bytes a packet', hourly(FLOODER, 0, 6, 181, 100)],
    ['five hours', hourly(FLOODER, 0, 5, 181)],
  ])('finds no flood one short of the paper\'s thresholds: %s', (_label, records) => {
    expect(replayOf(records).report(10).flooding).toEqual([]);
  });

  it('keeps the longest run of a source that floods on: the stats at its last flow', () => {
    const flood = hourly(FLOODER, 0, 8, 181);
    const [finding] = replayOf(flood).report(10).flooding;
    // The duration counts all 8 hours; the totals cover the 7 hours a source's ring holds (sfds.ts).
    expect(finding).toMatchObject({ firstDetectedMs: flood[5 * 181 + 180]!.endMs, lastDetectedMs: flood.at(-1)!.endMs, stats: { durationPeriods: 8, flows: 7 * 181, coveredPeriods: 7 } });
  });

  it('counts a flow that arrives after later ones in its own period, and one older than the window as late', () => {
    const replay = new SfdsReplay({ sets: [PAPER_THRESHOLDS, MINUTE], maxSources: 1_000 });
    replay.add(record('192.0.2.7', T0 + 2 * HOUR_MS));
    replay.add(record('192.0.2.7', T0 + 2 * HOUR_MS - 10_000)); // 10 s late, previous minute: counted under both sets
    replay.add(record('192.0.2.8', T0 + 2 * HOUR_MS - 5 * 60_000)); // 5 minutes late: too old for the minute set
    replay.add(record('192.0.2.9', T0 - 6 * HOUR_MS)); // 8 hours late: too old for the paper's 7 hours too
    const report = replay.report(10);
    expect(report.lateFlows).toEqual({ 'paper-hourly': 1, minute: 2 });
    expect(report.flows).toBe(4);
    expect(report.firstFlowMs).toBe(T0 - 6 * HOUR_MS - 2_000);
    expect(report.lastFlowMs).toBe(T0 + 2 * HOUR_MS);
    // The hourly table at hour 2: .7's flow of hour 2 (its late one ended in hour 1, a complete period no run
    // covers); .8's flow ended in hour 1 too, so neither it nor .9 has a row.
    expect(report.top.map((row) => [row.source, row.flows])).toEqual([['192.0.2.7', 1]]);
    expect(replay.report(10, 'minute').top).toEqual([expect.objectContaining({ source: '192.0.2.7', flows: 1 })]);
  });

  it('forgets the least recently seen sources beyond maxSources, and says how many', () => {
    const replay = new SfdsReplay({ sets: [PAPER_THRESHOLDS], maxSources: 2 });
    for (const [index, source] of ['192.0.2.1', '192.0.2.2', '192.0.2.3'].entries()) replay.add(record(source, T0 + index * 1_000));
    const report = replay.report(10);
    expect(report.evictedSources).toBe(1);
    expect(report.top.map((row) => row.source).sort()).toEqual(['192.0.2.2', '192.0.2.3']);
  });

  it('reports an empty input without a clock', () => {
    expect(new SfdsReplay({ sets: [PAPER_THRESHOLDS], maxSources: 10 }).report(5)).toMatchObject({ flows: 0, firstFlowMs: undefined, lastFlowMs: undefined, top: [], flooding: [] });
  });
});
