// The notice to a source network's contact (the SFDS paper's §3.2: "the aggregated flooding records" sent to the
// responsible administrator): a subject naming the source and the threshold set, a plain-text body with
// one record per flooding source and set, and the same records as CSV. Pure: records in, text out.
import type { SfdsStats, ThresholdSet } from '../detect/sfds.js';
import type { Action } from '../policy/actions.js';
import type { ContactMatch } from './notice-contacts.js';

/** One source flooding under one SFDS threshold set (its thresholds and numbers), with what the proxy did about it. */
export interface FloodingRecord
  extends Omit<ThresholdSet, 'name'>,
    Pick<SfdsStats, 'flows' | 'packets' | 'bytes' | 'meanPacketBytes' | 'durationPeriods' | 'flowsPerPeriod'> {
  source: string;
  set: string;
  firstStartMs: number;
  lastEndMs: number;
  /** What the proxy did, in words (describeAction). */
  action: string;
}

export interface NoticeInput {
  /** The proxy's host name: who reports. */
  reporter: string;
  /** The networks (and their contacts) the sources are in; all share one contact address. */
  networks: readonly ContactMatch[];
  records: readonly FloodingRecord[];
  /** Sources flagged in the same networks but left out of this notice (over the per-notice limit). */
  omittedSources: number;
  periodHours: number;
}

export interface NoticeContent {
  subject: string;
  text: string;
  /** The records as CSV (RFC 4180, CRLF), for the attachment. */
  csv: string;
}

export const CSV_FILENAME = 'flooding-records.csv';

/** What the proxy did to the source, as the contact should read it. */
export function describeAction(verdict: { action: Action; mode: 'enforce' | 'observe'; expiresAtMs: number; deferAt: 'connect' | 'rcpt' }): string {
  const until = `until ${isoUtc(verdict.expiresAtMs)} (then judged afresh)`;
  if (verdict.mode === 'observe') return `nothing: observe mode, nothing enforced (the policy says ${verdict.action})`;
  switch (verdict.action) {
    case 'pass':
      return 'nothing';
    case 'tarpit':
      return `slowed its sessions down (tarpit: every reply delayed) ${until}`;
    case 'defer':
      return verdict.deferAt === 'connect'
        ? `deferred its connections (421, try again later) ${until}`
        : `deferred its recipients (450, try again later) ${until}`;
    case 'reject':
      return `rejected its connections (554) ${until}`;
    case 'quarantine':
      return `quarantined its mail (accepted, held back for delivery off-peak) ${until}`;
  }
}

export function composeNotice(input: NoticeInput): NoticeContent {
  const sources = [...new Set(input.records.map((record) => record.source))];
  const sets = [...new Set(input.records.map((record) => record.set))];
  const others = sources.length - 1 + input.omittedSources;
  const subject = `SMTP flooding from ${sources[0] ?? 'your network'}${others > 0 ? ` and ${others} more host${others > 1 ? 's' : ''}` : ''}`
    + ` (SFDS set ${sets.join(', ')}), seen by ${input.reporter}`;
  const names = [...new Set(input.networks.map((match) => match.contact.name).filter((name) => name !== undefined))];
  const networks = input.networks.map((match) => `${match.contact.organisation} (${match.network})`).join(', ');
  const lines = [
    `Hello${names.length > 0 ? ` ${names.join(', ')}` : ''},`,
    '',
    wrap(`${input.reporter}, a mail server protected by smtp-pushback, saw SMTP flooding from your network ${networks}: `
      + `${sources.length > 1 ? 'the sources below' : 'the source below'} sent mail sessions at a rate, a size and for a time all over `
      + 'the thresholds of a flooding-detection set (SFDS). A host sending like this is often compromised (a spam bot or a '
      + 'mass-mailing worm): please check it.'),
    '',
    ...input.records.flatMap((record) => [...recordLines(record), '']),
    ...(input.omittedSources > 0 ? [`${input.omittedSources} more flooding source(s) in your network are not listed here.`, ''] : []),
    wrap(`The same records are attached as ${CSV_FILENAME}. Times are UTC. A flow is one SMTP session (one TCP connection); `
      + 'packets are SMTP command lines, replies and 1460-byte segments of message data; bytes are SMTP-layer bytes both ways; '
      + 'the duration counts consecutive periods over the rate.'),
    '',
    wrap(`This address gets at most one such notice every ${formatNumber(input.periodHours)} hours; flooding seen meanwhile is logged on our side, not mailed.`),
    '',
    '-- ',
    `smtp-pushback on ${input.reporter}`,
    '',
  ];
  return { subject, text: lines.join('\n'), csv: recordsCsv(input.records) };
}

function recordLines(record: FloodingRecord): string[] {
  const perHour = record.flowsPerPeriod * (3_600 / record.periodSeconds);
  const rows: Array<[string, string]> = [
    ['Thresholds', `over ${formatNumber(record.minMeanPacketBytes)} bytes a packet, ${formatNumber(record.minFlowsPerPeriod)} flows `
      + `a period of ${record.periodSeconds} s, for over ${record.minDurationPeriods} period(s)`],
    ['Time range', `${isoUtc(record.firstStartMs)} to ${isoUtc(record.lastEndMs)}`],
    ['Flows (sessions)', String(record.flows)],
    ['Packets', String(record.packets)],
    ['Bytes', String(record.bytes)],
    ['Mean packet size', `${record.meanPacketBytes.toFixed(1)} bytes`],
    ['Duration', `${record.durationPeriods} period${record.durationPeriods === 1 ? '' : 's'} of ${record.periodSeconds} s`],
    ['Rate', `${record.flowsPerPeriod.toFixed(1)} flows per period (${perHour.toFixed(1)} per hour)`],
    ['What we did', record.action],
  ];
  const indent = ' '.repeat(ROW_INDENT);
  return [
    `Source ${record.source}, SFDS set "${record.set}"`,
    ...rows.map(([name, value]) => `  ${`${name}:`.padEnd(ROW_INDENT - 2)}${wrap(value, LINE_WIDTH - ROW_INDENT).replace(/\n/g, `\n${indent}`)}`),
  ];
}

/** Where record values start: after "  Mean packet size: ". */
const ROW_INDENT = 21;

const CSV_COLUMNS = [
  'source', 'set', 'first_start_utc', 'last_end_utc', 'flows', 'packets', 'bytes', 'mean_packet_bytes',
  'duration_periods', 'period_seconds', 'flows_per_period', 'action',
] as const;

function recordsCsv(records: readonly FloodingRecord[]): string {
  const rows = records.map((record) => [
    record.source, record.set, isoUtc(record.firstStartMs), isoUtc(record.lastEndMs), String(record.flows), String(record.packets),
    String(record.bytes), record.meanPacketBytes.toFixed(1), String(record.durationPeriods), String(record.periodSeconds),
    record.flowsPerPeriod.toFixed(1), record.action,
  ]);
  return [[...CSV_COLUMNS], ...rows].map((row) => row.map(csvField).join(',')).join('\r\n') + '\r\n';
}

function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

function isoUtc(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function formatNumber(value: number): string {
  return Number.isInteger(value) ? String(value) : String(Number(value.toFixed(2)));
}

/** Plain text at 76 columns: read as sent by any client, and sent as 7bit rather than quoted-printable. */
const LINE_WIDTH = 76;

function wrap(paragraph: string, width = LINE_WIDTH): string {
  const lines: string[] = [];
  let line = '';
  for (const word of paragraph.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines.join('\n');
}
