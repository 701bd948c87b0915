// Reading nfdump CSV: the 1.7.1 layout as printed on this machine, headerless (-q) output, the long names of
// later nfdump versions, its trailer, what counts as an SMTP flow, and why a line is malformed.
import { describe, expect, it } from 'vitest';
import { NetflowCsvReader, parseTime, type CsvLine } from '../../src/offline/netflow-csv.js';
import { NFDUMP_171_HEADER, nfdumpCsvLine, nfdumpSummary } from '../support/nfdump-csv.js';

const SMTP = new Set([25]);

/** Two lines nfdump 1.7.1 printed here for one loopback SMTP session (softflowd, NetFlow v9): server->client, client->server. */
const REAL_171_LINES = [
  '2026-11-23 11:53:29,2026-11-23 11:53:29,0.103,127.0.0.1,127.9.8.7,25,34739,TCP,...AP.SF,0,0,5,284,0,0,0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,    0.000,    0.000,    0.000,127.0.0.1,0/0,1,2026-11-23 11:54:42.521',
  '2026-11-23 11:53:29,2026-11-23 11:53:30,0.103,127.9.8.7,127.0.0.1,34739,25,TCP,...AP.SF,0,0,7,888,0,0,0,0,0,0,0,0,0,1,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,    0.000,    0.000,    0.000,127.0.0.1,0/0,1,2026-11-23 11:54:42.521',
];

function readAll(lines: readonly string[], ports = SMTP): CsvLine[] {
  const reader = new NetflowCsvReader(ports);
  return lines.map((line) => reader.line(line));
}

const flow = { startMs: Date.UTC(2003, 10, 2, 5, 0, 0), endMs: Date.UTC(2003, 10, 2, 5, 0, 2), source: '163.25.154.253', destination: '192.0.2.25', destinationPort: 25, packets: 10, bytes: 1_010 };

describe('NetflowCsvReader on nfdump 1.7.1 output', () => {
  it('finds the columns by the header and keeps the client->server record of an SMTP session', () => {
    const results = readAll([NFDUMP_171_HEADER, ...REAL_171_LINES]);
    expect(results[0]).toEqual({ kind: 'header' });
    expect(results[1]).toEqual({ kind: 'other' }); // destination port 34739: the server's answer
    expect(results[2]).toEqual({
      kind: 'flow',
      record: {
        source: '127.9.8.7', destination: '127.0.0.1', destinationPort: 25,
        startMs: Date.UTC(2026, 10, 23, 11, 53, 29), endMs: Date.UTC(2026, 10, 23, 11, 53, 30), packets: 7, bytes: 888,
      },
    });
  });

  it('ignores blank lines, "No matching flows" and the Summary trailer with its totals', () => {
    const results = readAll([NFDUMP_171_HEADER, '', nfdumpCsvLine(flow), 'No matching flows', ...nfdumpSummary([flow])]);
    expect(results.map((result) => result.kind)).toEqual(['header', 'ignored', 'flow', 'ignored', 'ignored', 'ignored', 'ignored']);
  });

  it('reads outputs of several nfdump runs concatenated: a header after the trailer starts the next', () => {
    const second = { ...flow, source: '198.51.100.7' };
    const results = readAll([NFDUMP_171_HEADER, nfdumpCsvLine(flow), ...nfdumpSummary([flow]), NFDUMP_171_HEADER, nfdumpCsvLine(second), ...nfdumpSummary([second])]);
    expect(results.map((result) => result.kind)).toEqual(['header', 'flow', 'ignored', 'ignored', 'ignored', 'header', 'flow', 'ignored', 'ignored', 'ignored']);
    expect(results[6]).toMatchObject({ record: { source: '198.51.100.7' } });
  });

  it('reads headerless output (nfdump -q) in the default column order', () => {
    const results = readAll([nfdumpCsvLine(flow), nfdumpCsvLine({ ...flow, source: '198.51.100.7' })]);
    expect(results).toMatchObject([{ kind: 'flow', record: { source: '163.25.154.253', packets: 10, bytes: 1_010 } }, { kind: 'flow', record: { source: '198.51.100.7' } }]);
  });

  it('keeps only TCP to the given ports; other protocols are not parsed further (ICMP prints type.code as dp)', () => {
    const results = readAll([
      NFDUMP_171_HEADER,
      nfdumpCsvLine({ ...flow, protocol: 'UDP' }),
      nfdumpCsvLine({ ...flow, protocol: 'ICMP', destinationPort: '3.1' as unknown as number }),
      nfdumpCsvLine({ ...flow, protocol: '6' }),
      nfdumpCsvLine({ ...flow, destinationPort: 587 }),
    ]);
    expect(results.map((result) => result.kind)).toEqual(['header', 'other', 'other', 'flow', 'other']);
    expect(readAll([NFDUMP_171_HEADER, nfdumpCsvLine({ ...flow, destinationPort: 587 })], new Set([25, 587]))[1]!.kind).toBe('flow');
  });
});

describe('other layouts', () => {
  it('reads the long names of later nfdump versions (csv-fast: epoch milliseconds, protocol numbers)', () => {
    const results = readAll([
      'cnt,af,firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,srcAS,dstAS,input,output,flags,srcTos,packets,bytes',
      `1,2,${flow.startMs},${flow.endMs},6,2001:db8::7,40000,2001:db8::25,25,0,0,0,0,...AP.SF,0,12,4800`,
    ]);
    expect(results[1]).toEqual({ kind: 'flow', record: { source: '2001:db8::7', destination: '2001:db8::25', destinationPort: 25, startMs: flow.startMs, endMs: flow.endMs, packets: 12, bytes: 4_800 } });
  });

  it('takes the end as start + duration when there is no end column', () => {
    const results = readAll(['ts,td,sa,da,dp,pr,ipkt,ibyt', '2003-11-02 05:00:00.250,1.5,192.0.2.7,192.0.2.25,25,TCP,3,300']);
    expect(results[1]).toMatchObject({ kind: 'flow', record: { startMs: Date.UTC(2003, 10, 2, 5, 0, 0, 250), endMs: Date.UTC(2003, 10, 2, 5, 0, 1, 750) } });
  });
});

describe('malformed lines', () => {
  const line = nfdumpCsvLine(flow);
  const withField = (index: number, value: string): string => line.split(',').map((field, position) => (position === index ? value : field)).join(',');

  it.each([
    ['a truncated line', line.split(',').slice(0, 20).join(','), '20 fields, expected 48'],
    ['a source that is no address', withField(3, '163.25.154'), 'source address "163.25.154"'],
    ['a destination that is no address', withField(4, 'mx.example'), 'destination address "mx.example"'],
    ['a port out of range', withField(6, '70000'), 'destination port "70000"'],
    ['a packet count that is no number', withField(11, '1.2 M'), 'packets "1.2 M"'],
    ['a negative byte count', withField(12, '-5'), 'bytes "-5"'],
    ['a date that does not exist', withField(1, '2003-02-30 00:00:00'), 'end time "2003-02-30 00:00:00"'],
    ['an end before the start', withField(1, '2003-11-02 04:59:59'), 'end time 2003-11-02T04:59:59.000Z is before start time 2003-11-02T05:00:00.000Z'],
    ['a protocol that is no name or number', withField(7, 'T C P'), 'protocol "T C P"'],
  ])('%s', (_label, text, reason) => {
    expect(readAll([NFDUMP_171_HEADER, text])[1]).toEqual({ kind: 'malformed', reason });
  });

  it('a first line that is neither a header nor a record says so, and the next header still counts', () => {
    const results = readAll(['date,client,bytes', NFDUMP_171_HEADER, line]);
    expect(results[0]).toEqual({ kind: 'malformed', reason: 'not an nfdump CSV header (no column for sa, da, dp, pr, ipkt, ts), nor a record in its default column order' });
    expect(results.slice(1).map((result) => result.kind)).toEqual(['header', 'flow']);
  });
});

describe('parseTime', () => {
  it('reads nfdump times as UTC, with or without milliseconds, and epoch seconds or milliseconds', () => {
    expect(parseTime('2003-11-02 05:59:59')).toBe(Date.UTC(2003, 10, 2, 5, 59, 59));
    expect(parseTime('2026-11-23 11:54:42.521')).toBe(Date.UTC(2026, 10, 23, 11, 54, 42, 521));
    expect(parseTime('2026-11-23T11:54:42Z')).toBe(Date.UTC(2026, 10, 23, 11, 54, 42));
    expect(parseTime('1067749199')).toBe(Date.UTC(2003, 10, 2, 4, 59, 59));
    expect(parseTime('1067749199.5')).toBe(Date.UTC(2003, 10, 2, 4, 59, 59, 500));
    expect(parseTime('1067749199500')).toBe(Date.UTC(2003, 10, 2, 4, 59, 59, 500));
  });

  it.each(['2003-11-02', '2003-11-02 24:00:00', '2003-13-01 00:00:00', 'yesterday', '', '-1'])('refuses %j', (text) => {
    expect(parseTime(text)).toBeUndefined();
  });
});
