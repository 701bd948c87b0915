// SFDS: formula 7 at the paper's boundaries (100/101 bytes, 180/181 flows per hour, 5/6 hours,
// strictly greater-than everywhere), the flooding duration, and the aggregator over injected time.
import { describe, expect, it } from 'vitest';
import {
  floodingDuration,
  isFlooding,
  observationFromRecord,
  PAPER_THRESHOLDS,
  SfdsAggregator,
  sessionPackets,
  type SessionObservation,
  type ThresholdSet,
} from '../../src/detect/sfds.js';

const HOUR_MS = 3_600_000;
const T0 = Date.UTC(2003, 10, 2, 0, 0, 0); // Nov 2nd 2003, the day of the paper's Fig. 2, on the hour
const PER_MINUTE: ThresholdSet = { name: 'per-minute', periodSeconds: 60, minMeanPacketBytes: 100, minFlowsPerPeriod: 30, minDurationPeriods: 3 };

function session(client: string, endMs: number, meanBytes = 101, local = '192.0.2.25', localPort = 25): SessionObservation {
  return { client, local, localPort, startMs: endMs - 500, endMs, packets: 10, bytes: meanBytes * 10 };
}

/** `flows` sessions in each of `hours` consecutive hours from `startMs`, spread inside each hour. */
function feedHours(sfds: SfdsAggregator, client: string, hours: number, flows: number, meanBytes = 101, startMs = T0): void {
  for (let hour = 0; hour < hours; hour += 1) {
    for (let flow = 0; flow < flows; flow += 1) {
      const endMs = startMs + hour * HOUR_MS + Math.floor((flow * HOUR_MS) / flows);
      sfds.observe(session(client, endMs, meanBytes), endMs);
    }
  }
}

describe('isFlooding (formula 7, the paper defaults)', () => {
  const over = { meanPacketBytes: 101, flowsPerPeriod: 181, durationPeriods: 6 };

  it('fires only when all three values are strictly over', () => {
    expect(isFlooding(over, PAPER_THRESHOLDS)).toBe(true);
  });

  it.each([
    ['100 bytes per packet', { ...over, meanPacketBytes: 100 }],
    ['180 flows per hour', { ...over, flowsPerPeriod: 180 }],
    ['5 hours', { ...over, durationPeriods: 5 }],
  ])('does not fire at exactly %s', (_label, stats) => {
    expect(isFlooding(stats, PAPER_THRESHOLDS)).toBe(false);
  });
});

describe('floodingDuration', () => {
  const set = PAPER_THRESHOLDS;

  it('counts consecutive complete periods over the rate ending with the most recent complete one', () => {
    expect(floodingDuration([181, 181, 181, 0], set)).toBe(3);
    expect(floodingDuration([181, 0, 181, 181, 0], set)).toBe(2);
    expect(floodingDuration([181, 181, 180, 0], set)).toBe(0);
  });

  it('adds the current period once its count so far is over the rate, and a slow one does not break the run', () => {
    expect(floodingDuration([181, 181, 181], set)).toBe(3);
    expect(floodingDuration([181, 181, 100], set)).toBe(2);
    expect(floodingDuration([0, 0, 181], set)).toBe(1);
  });

  it('adds earlier run periods only when the run reaches the first count given', () => {
    expect(floodingDuration([181, 181, 0], set, 4)).toBe(6);
    expect(floodingDuration([0, 181, 0], set, 4)).toBe(1);
    expect(floodingDuration([], set)).toBe(0);
  });
});

describe('packets and observations', () => {
  it('counts command lines, replies and 1460-byte DATA segments', () => {
    expect(sessionPackets({ commandLines: 6, replies: 7, dataBytes: 0 })).toBe(13);
    expect(sessionPackets({ commandLines: 6, replies: 7, dataBytes: 1460 })).toBe(14);
    expect(sessionPackets({ commandLines: 6, replies: 7, dataBytes: 1461 })).toBe(15);
  });

  it('turns a session record into an observation with bytes both ways', () => {
    const record = { client: '::ffff:198.51.100.7', local: '192.0.2.25', localPort: 25, durationMs: 1_200, packets: 14, bytesIn: 2_000, bytesOut: 400 };
    expect(observationFromRecord(record, T0)).toEqual({
      client: '::ffff:198.51.100.7', local: '192.0.2.25', localPort: 25, startMs: T0 - 1_200, endMs: T0, packets: 14, bytes: 2_400,
    });
  });
});

describe('SfdsAggregator with the paper hourly set', () => {
  const source = '163.25.154.253';

  it('detects 181 flows per hour of 101-byte packets for 6 hours', () => {
    const sfds = new SfdsAggregator();
    feedHours(sfds, source, 6, 181);
    const detections = sfds.evaluate(T0 + 6 * HOUR_MS);
    expect(detections).toHaveLength(1);
    expect(detections[0]).toMatchObject({
      source,
      set: 'paper-hourly',
      stats: { flows: 6 * 181, packets: 6 * 1810, bytes: 6 * 181 * 1_010, meanPacketBytes: 101, durationPeriods: 6, flowsPerPeriod: 181, virtualFlows: 1 },
    });
  });

  it.each([
    ['180 flows per hour', 6, 180, 101],
    ['5 hours', 5, 181, 101],
    ['100 bytes per packet', 6, 181, 100],
  ])('does not fire at exactly %s', (_label, hours, flows, meanBytes) => {
    const sfds = new SfdsAggregator();
    feedHours(sfds, source, hours, flows, meanBytes);
    expect(sfds.evaluate(T0 + hours * HOUR_MS)).toEqual([]);
    expect(sfds.floodingSets(source, T0 + hours * HOUR_MS)).toEqual([]);
  });

  it('counts the sixth hour as soon as it passes 180 flows', () => {
    const sfds = new SfdsAggregator();
    feedHours(sfds, source, 5, 181);
    const sixthHourMs = T0 + 5 * HOUR_MS;
    for (let flow = 0; flow < 180; flow += 1) sfds.observe(session(source, sixthHourMs + flow), sixthHourMs + flow);
    expect(sfds.floodingSets(source, sixthHourMs + 1_000)).toEqual([]);
    sfds.observe(session(source, sixthHourMs + 2_000), sixthHourMs + 2_000);
    expect(sfds.floodingSets(source, sixthHourMs + 3_000)).toMatchObject([{ set: 'paper-hourly', stats: { durationPeriods: 6 } }]);
  });

  it('keeps the duration exact for long floods and forgets the flood one quiet hour after it stops', () => {
    const sfds = new SfdsAggregator();
    feedHours(sfds, source, 10, 181);
    const [row] = sfds.top(1, T0 + 10 * HOUR_MS);
    // 10 hours of flooding; the totals cover the 6 complete hours the ring holds.
    expect(row).toMatchObject({ durationPeriods: 10, coveredPeriods: 6, flows: 6 * 181, flowsPerPeriod: 181 });
    expect(sfds.evaluate(T0 + 11 * HOUR_MS - 1)).toHaveLength(1);
    expect(sfds.evaluate(T0 + 11 * HOUR_MS)).toEqual([]);
  });

  it('aggregates mapped IPv6 with IPv4 and counts distinct virtual flows', () => {
    const sfds = new SfdsAggregator();
    sfds.observe(session(source, T0), T0);
    sfds.observe(session(`::ffff:${source}`, T0 + 1, 101, '192.0.2.26'), T0 + 1);
    sfds.observe(session(source, T0 + 2, 101, '192.0.2.26', 587), T0 + 2);
    sfds.observe(session(source, T0 + 3, 101, '192.0.2.26', 587), T0 + 3);
    expect(sfds.sourceCount).toBe(1);
    expect(sfds.top(5, T0 + 4)).toEqual([
      { source, set: 'paper-hourly', flows: 4, packets: 40, bytes: 4_040, meanPacketBytes: 101, durationPeriods: 0, flowsPerPeriod: 4, virtualFlows: 3, coveredPeriods: 1 },
    ]);
  });

  it('aggregates IPv6 sources per /64: a host cannot spread its flood over its own subnet', () => {
    const sfds = new SfdsAggregator({ maxSources: 10 });
    for (let index = 0; index < 200; index += 1) {
      sfds.observe(session(`2001:db8:5:6:${index.toString(16)}:1:2:3`, T0 + index), T0 + index);
    }
    sfds.observe(session('2001:db8:5:7::1', T0 + 300), T0 + 300);
    expect(sfds.sourceCount).toBe(2);
    expect(sfds.evicted).toBe(0);
    const rows = sfds.top(5, T0 + 400);
    expect(rows.map((row) => [row.source, row.flows])).toEqual([['2001:db8:5:6::/64', 200], ['2001:db8:5:7::/64', 1]]);
    expect(sfds.floodingSets('2001:db8:5:6::99', T0 + 400)).toEqual([]);
  });

  it('files a session in the period it ended, the current one if it ended later, and drops one older than the ring', () => {
    const sfds = new SfdsAggregator();
    const nowMs = T0 + 10 * HOUR_MS;
    sfds.observe(session('198.51.100.1', nowMs + HOUR_MS), nowMs);
    sfds.observe(session('198.51.100.1', nowMs - 7 * HOUR_MS), nowMs);
    sfds.observe(session('198.51.100.1', nowMs - 6 * HOUR_MS), nowMs);
    expect(sfds.top(1, nowMs)[0]).toMatchObject({ flows: 1, coveredPeriods: 1 });
  });
});

describe('SfdsAggregator with several threshold sets', () => {
  const sets = [PAPER_THRESHOLDS, PER_MINUTE];
  const minuteMs = 60_000;

  function feedMinutes(sfds: SfdsAggregator, client: string, minutes: number, flows: number): void {
    for (let minute = 0; minute < minutes; minute += 1) {
      for (let flow = 0; flow < flows; flow += 1) {
        const endMs = T0 + minute * minuteMs + flow * 1_000;
        sfds.observe(session(client, endMs), endMs);
      }
    }
  }

  it('fires the per-minute set after 4 minutes over 30 flows, and says which set fired', () => {
    const sfds = new SfdsAggregator({ sets });
    feedMinutes(sfds, '203.0.113.9', 4, 31);
    expect(sfds.evaluate(T0 + 4 * minuteMs)).toMatchObject([
      { source: '203.0.113.9', set: 'per-minute', stats: { durationPeriods: 4, flowsPerPeriod: 31 } },
    ]);
    expect(sfds.top(1, T0 + 4 * minuteMs, 'paper-hourly')[0]).toMatchObject({ flows: 124, durationPeriods: 0 });
  });

  it('does not fire the per-minute set at 3 minutes or at 30 flows', () => {
    const short = new SfdsAggregator({ sets });
    feedMinutes(short, '203.0.113.9', 3, 31);
    expect(short.evaluate(T0 + 3 * minuteMs)).toEqual([]);
    const slow = new SfdsAggregator({ sets });
    feedMinutes(slow, '203.0.113.9', 4, 30);
    expect(slow.evaluate(T0 + 4 * minuteMs)).toEqual([]);
  });

  it('rejects duplicate set names and unknown sets in top()', () => {
    expect(() => new SfdsAggregator({ sets: [PER_MINUTE, PER_MINUTE] })).toThrow(/duplicate/);
    expect(() => new SfdsAggregator({ sets }).top(1, T0, 'nope')).toThrow(/no SFDS threshold set/);
  });
});

describe('SfdsAggregator memory bounds', () => {
  it('drops the least recently seen source beyond maxSources', () => {
    const sfds = new SfdsAggregator({ maxSources: 2 });
    sfds.observe(session('198.51.100.1', T0), T0);
    sfds.observe(session('198.51.100.2', T0 + 1), T0 + 1);
    sfds.observe(session('198.51.100.1', T0 + 2), T0 + 2);
    sfds.observe(session('198.51.100.3', T0 + 3), T0 + 3);
    expect(sfds.evicted).toBe(1);
    expect(sfds.top(5, T0 + 4).map((row) => row.source)).toEqual(['198.51.100.1', '198.51.100.3']);
  });

  it('forgets sources whose rings hold nothing any more', () => {
    const sfds = new SfdsAggregator();
    sfds.observe(session('198.51.100.1', T0), T0);
    sfds.evaluate(T0 + 6 * HOUR_MS);
    expect(sfds.sourceCount).toBe(1);
    sfds.evaluate(T0 + 7 * HOUR_MS);
    expect(sfds.sourceCount).toBe(0);
  });

  it('caps distinct virtual flows per source', () => {
    const sfds = new SfdsAggregator({ maxVirtualFlowsPerSource: 2 });
    for (let port = 1; port <= 5; port += 1) sfds.observe(session('198.51.100.1', T0 + port, 101, '192.0.2.25', port), T0 + port);
    expect(sfds.top(1, T0 + 10)[0]?.virtualFlows).toBe(2);
  });

  it('refuses impossible observations', () => {
    const sfds = new SfdsAggregator();
    expect(() => sfds.observe({ ...session('198.51.100.1', T0), packets: -1 }, T0)).toThrow(RangeError);
    expect(() => sfds.observe({ ...session('198.51.100.1', T0), startMs: T0 + 1 }, T0)).toThrow(RangeError);
  });
});
