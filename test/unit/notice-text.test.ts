// The notice to a source network's contact: the subject names the source and the set, the body holds every
// field of the flooding record (time range, source, flows, packets, bytes, mean packet size, duration, rate,
// what the proxy did) with the record's numbers, and the CSV attachment holds the same records.
import { describe, expect, it } from 'vitest';
import { composeNotice, describeAction, type FloodingRecord } from '../../src/enforce/notice-text.js';

const HOUR_MS = 3_600_000;
const T0 = Date.UTC(2003, 10, 2, 8, 0, 0); // the paper's Fig. 2 day

/** The paper's example host flooding for six hours under the paper's hourly set (100 bytes, 180 flows, 5 hours). */
const PAPER_RECORD: FloodingRecord = {
  source: '163.25.154.253',
  set: 'paper-hourly',
  periodSeconds: 3_600,
  minMeanPacketBytes: 100,
  minFlowsPerPeriod: 180,
  minDurationPeriods: 5,
  firstStartMs: T0 + 12_000,
  lastEndMs: T0 + 6 * HOUR_MS - 1_500,
  flows: 1_250,
  packets: 15_000,
  bytes: 2_100_000,
  meanPacketBytes: 140,
  durationPeriods: 6,
  flowsPerPeriod: 1_250 / 6,
  action: 'quarantined its mail (accepted, held for off-peak delivery after review) until 2003-11-02T14:10:00Z (then judged afresh)',
};

const SCHOOL = { network: '163.25.154.0/24', contact: { cidr: '163.25.154.0/24', organisation: 'Example High School', email: 'abuse@school.example', name: 'Jane Doe' } };

describe('composeNotice', () => {
  const notice = composeNotice({ reporter: 'mx.example.org', networks: [SCHOOL], records: [PAPER_RECORD], omittedSources: 0, periodHours: 24 });

  it('names the source, the set and the reporter in the subject', () => {
    expect(notice.subject).toBe('SMTP flooding from 163.25.154.253 (SFDS set paper-hourly), seen by mx.example.org');
  });

  it('holds every field of the record with its numbers', () => {
    const text = notice.text;
    expect(text).toMatch(/^Hello Jane Doe,\n/);
    expect(text).toContain('Example High School (163.25.154.0/24)');
    expect(text).toContain('Source 163.25.154.253, SFDS set "paper-hourly"\n'
      + '  Thresholds:        over 100 bytes a packet, 180 flows a period of 3600 s,\n'
      + '                     for over 5 period(s)\n');
    expect(text).toContain('  Time range:        2003-11-02T08:00:12Z to 2003-11-02T13:59:58Z\n');
    expect(text).toContain('  Flows (sessions):  1250\n');
    expect(text).toContain('  Packets:           15000\n');
    expect(text).toContain('  Bytes:             2100000\n');
    expect(text).toContain('  Mean packet size:  140.0 bytes\n');
    expect(text).toContain('  Duration:          6 periods of 3600 s\n');
    expect(text).toContain('  Rate:              208.3 flows per period (208.3 per hour)\n');
    expect(text).toContain('  What we did:       quarantined its mail (accepted, held for off-peak\n'
      + '                     delivery after review) until 2003-11-02T14:10:00Z (then\n'
      + '                     judged afresh)\n');
    expect(text).toContain('at most one such notice every 24 hours');
    expect(text.split('\n').filter((line) => line.length > 76)).toEqual([]);
  });

  it('attaches the records as CSV', () => {
    const rows = notice.csv.trimEnd().split('\r\n');
    expect(rows[0]).toBe('source,set,first_start_utc,last_end_utc,flows,packets,bytes,mean_packet_bytes,duration_periods,period_seconds,flows_per_period,action');
    expect(rows[1]).toBe('163.25.154.253,paper-hourly,2003-11-02T08:00:12Z,2003-11-02T13:59:58Z,1250,15000,2100000,140.0,6,3600,208.3,'
      + '"quarantined its mail (accepted, held for off-peak delivery after review) until 2003-11-02T14:10:00Z (then judged afresh)"');
    expect(rows).toHaveLength(2);
  });

  it('lists every source of the network in one notice and counts those left out', () => {
    const minute: FloodingRecord = { ...PAPER_RECORD, source: '163.25.154.9', set: 'minute', periodSeconds: 60, minFlowsPerPeriod: 120, minMeanPacketBytes: 60, minDurationPeriods: 0, flows: 130, durationPeriods: 1, flowsPerPeriod: 130 };
    const batch = composeNotice({ reporter: 'mx.example.org', networks: [{ ...SCHOOL, contact: { ...SCHOOL.contact, name: undefined } }], records: [PAPER_RECORD, minute], omittedSources: 2, periodHours: 12 });
    expect(batch.subject).toBe('SMTP flooding from 163.25.154.253 and 3 more hosts (SFDS set paper-hourly, minute), seen by mx.example.org');
    expect(batch.text).toMatch(/^Hello,\n/);
    expect(batch.text).toContain('  Rate:              130.0 flows per period (7800.0 per hour)\n');
    expect(batch.text).toContain('  Duration:          1 period of 60 s\n');
    expect(batch.text).toContain('2 more flooding source(s) in your network are not listed here.');
    expect(batch.csv.trimEnd().split('\r\n')).toHaveLength(3);
  });
});

describe('describeAction', () => {
  const expiresAtMs = Date.UTC(2025, 0, 6, 13, 0, 0);
  it.each([
    ['quarantine', 'connect', /^quarantined its mail .* until 2025-01-06T13:00:00Z/],
    ['reject', 'connect', /^rejected its connections \(554\) until 2025-01-06T13:00:00Z/],
    ['defer', 'connect', /^deferred its connections \(421/],
    ['defer', 'rcpt', /^deferred its recipients \(450/],
    ['tarpit', 'connect', /^slowed its sessions down/],
  ] as const)('%s (defer at %s)', (action, deferAt, expected) => {
    expect(describeAction({ action, mode: 'enforce', expiresAtMs, deferAt })).toMatch(expected);
  });

  it('says observe mode enforced nothing', () => {
    expect(describeAction({ action: 'reject', mode: 'observe', expiresAtMs, deferAt: 'connect' })).toBe('nothing: observe mode, nothing enforced (the policy says reject)');
  });
});
