// NetFlow records from nfdump's CSV output (`nfdump -o csv`), one line at a time. Columns are found by the
// header's names, so 1.6, 1.7 and the newer long names (firstSeen, srcAddr, ...) all read; output printed
// without its header (`nfdump -q`) is taken in the 1.6/1.7 default order. The trailer nfdump prints after the
// records ("Summary" and its totals) ends them, until another header starts a next output. Only SMTP flows (TCP to one of the given destination ports)
// are parsed in full, so a router's other traffic costs a split and two fields. Pure: no I/O.
import net from 'node:net';

/** One unidirectional flow as the exporter saw it (the "in" counters: packets and bytes from source to destination). */
export interface NetflowRecord {
  source: string;
  destination: string;
  destinationPort: number;
  startMs: number;
  endMs: number;
  packets: number;
  bytes: number;
}

export type CsvLine =
  | { kind: 'header' }
  | { kind: 'flow'; record: NetflowRecord }
  /** A well-formed record that is not an SMTP flow (another protocol or port). */
  | { kind: 'other' }
  /** Blank lines, nfdump's "No matching flows", and everything from its "Summary" trailer on. */
  | { kind: 'ignored' }
  | { kind: 'malformed'; reason: string };

type Field = 'start' | 'end' | 'duration' | 'source' | 'destination' | 'destinationPort' | 'protocol' | 'packets' | 'bytes';

/** Header names per field, lower case: nfdump 1.6/1.7 short names, then the long names of later versions. */
const FIELD_NAMES: Readonly<Record<Field, readonly string[]>> = {
  start: ['ts', 'firstseen', 'first'],
  end: ['te', 'lastseen', 'last'],
  duration: ['td', 'duration'],
  source: ['sa', 'srcaddr'],
  destination: ['da', 'dstaddr'],
  destinationPort: ['dp', 'dstport'],
  protocol: ['pr', 'proto'],
  packets: ['ipkt', 'inpackets', 'packets', 'pkt'],
  bytes: ['ibyt', 'inbytes', 'bytes', 'byt'],
};

/** The columns nfdump 1.6 and 1.7 print with `-o csv`, in order; used when the input has no header line. */
export const NFDUMP_DEFAULT_COLUMNS: readonly string[] = ['ts', 'te', 'td', 'sa', 'da', 'sp', 'dp', 'pr', 'flg', 'fwd', 'stos', 'ipkt', 'ibyt'];

export interface CsvLayout {
  columns: Readonly<Partial<Record<Field, number>>>;
  /** Fields every record line must have: the header's count, or enough for the used columns without one. */
  fieldCount: number;
  exactCount: boolean;
}

const REQUIRED: readonly Field[] = ['source', 'destination', 'destinationPort', 'protocol', 'packets', 'bytes'];

/** The layout a header line names, or why it is not a usable header. */
export function layoutFromHeader(fields: readonly string[], exactCount = true): CsvLayout | string {
  const positions = new Map(fields.map((name, index) => [unquote(name).toLowerCase(), index] as const));
  const columns: Partial<Record<Field, number>> = {};
  for (const field of Object.keys(FIELD_NAMES) as Field[]) {
    const index = FIELD_NAMES[field].map((name) => positions.get(name)).find((position) => position !== undefined);
    if (index !== undefined) columns[field] = index;
  }
  const missing = REQUIRED.filter((field) => columns[field] === undefined);
  if (columns.start === undefined && columns.end === undefined) missing.push('start');
  if (missing.length > 0) return `no column for ${missing.map((field) => FIELD_NAMES[field][0]).join(', ')}`;
  return { columns, fieldCount: exactCount ? fields.length : Math.max(...Object.values(columns)) + 1, exactCount };
}

const DEFAULT_LAYOUT = layoutFromHeader(NFDUMP_DEFAULT_COLUMNS, false) as CsvLayout;
const TCP = 6;
const PROTOCOL_NUMBERS: Readonly<Record<string, number>> = { icmp: 1, tcp: TCP, udp: 17, gre: 47, esp: 50, ah: 51, icmp6: 58, sctp: 132 };

/**
 * Reads one input's lines in order. The first non-blank line is the header, or, when it already parses as
 * a record (headerless `nfdump -q` output), a record in NFDUMP_DEFAULT_COLUMNS order.
 */
export class NetflowCsvReader {
  private layout: CsvLayout | undefined;
  private ended = false;

  constructor(private readonly smtpPorts: ReadonlySet<number>) {}

  line(text: string): CsvLine {
    const trimmed = text.trim();
    if (trimmed === '' || trimmed === 'No matching flows') return { kind: 'ignored' };
    if (trimmed === 'Summary') {
      this.ended = true;
      return { kind: 'ignored' };
    }
    const fields = trimmed.split(',');
    if (this.ended) {
      // After the trailer only a new header counts: outputs of several nfdump runs concatenated into one pipe.
      const layout = layoutFromHeader(fields);
      if (typeof layout === 'string') return { kind: 'ignored' };
      this.layout = layout;
      this.ended = false;
      return { kind: 'header' };
    }
    if (this.layout === undefined) {
      const layout = layoutFromHeader(fields);
      if (typeof layout !== 'string') {
        this.layout = layout;
        return { kind: 'header' };
      }
      if (parseTime(unquote(fields[0] ?? '')) === undefined) return { kind: 'malformed', reason: `not an nfdump CSV header (${layout}), nor a record in its default column order` };
      this.layout = DEFAULT_LAYOUT;
    }
    return parseRecord(fields, this.layout, this.smtpPorts);
  }
}

export function parseRecord(fields: readonly string[], layout: CsvLayout, smtpPorts: ReadonlySet<number>): CsvLine {
  const count = layout.exactCount ? fields.length === layout.fieldCount : fields.length >= layout.fieldCount;
  if (!count) return { kind: 'malformed', reason: `${fields.length} fields, expected ${layout.exactCount ? '' : 'at least '}${layout.fieldCount}` };
  const { columns } = layout;
  const field = (name: Field): string => unquote(fields[columns[name]!]!);

  const protocol = parseProtocol(field('protocol'));
  if (protocol === undefined) return { kind: 'malformed', reason: `protocol "${field('protocol')}"` };
  if (protocol !== TCP) return { kind: 'other' };
  const destinationPort = parseCount(field('destinationPort'));
  if (destinationPort === undefined || destinationPort > 65_535) return { kind: 'malformed', reason: `destination port "${field('destinationPort')}"` };
  if (!smtpPorts.has(destinationPort)) return { kind: 'other' };

  const source = field('source');
  const destination = field('destination');
  for (const [name, address] of [['source', source], ['destination', destination]] as const) {
    if (net.isIP(address) === 0) return { kind: 'malformed', reason: `${name} address "${address}"` };
  }
  const packets = parseCount(field('packets'));
  if (packets === undefined) return { kind: 'malformed', reason: `packets "${field('packets')}"` };
  const bytes = parseCount(field('bytes'));
  if (bytes === undefined) return { kind: 'malformed', reason: `bytes "${field('bytes')}"` };
  const times = flowTimes(columns.start === undefined ? undefined : field('start'), columns.end === undefined ? undefined : field('end'), columns.duration === undefined ? undefined : field('duration'));
  if (typeof times === 'string') return { kind: 'malformed', reason: times };
  return { kind: 'flow', record: { source, destination, destinationPort, ...times, packets, bytes } };
}

/** Start and end in ms; a missing end is start + duration (seconds), a missing start is the end. */
function flowTimes(startText: string | undefined, endText: string | undefined, durationText: string | undefined): { startMs: number; endMs: number } | string {
  const startMs = startText === undefined ? undefined : parseTime(startText);
  if (startText !== undefined && startMs === undefined) return `start time "${startText}"`;
  let endMs = endText === undefined ? undefined : parseTime(endText);
  if (endText !== undefined && endMs === undefined) return `end time "${endText}"`;
  if (endMs === undefined && startMs !== undefined && durationText !== undefined) {
    const durationSeconds = Number(durationText);
    if (durationText === '' || !(durationSeconds >= 0)) return `duration "${durationText}"`;
    endMs = startMs + Math.round(durationSeconds * 1_000);
  }
  const start = startMs ?? endMs!;
  const end = endMs ?? start;
  if (end < start) return `end time ${new Date(end).toISOString()} is before start time ${new Date(start).toISOString()}`;
  return { startMs: start, endMs: end };
}

const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z?$/;
/** Epoch numbers at or above this are milliseconds (csv-fast), below it seconds: 1e11 s is the year 5138. */
const EPOCH_MS_FROM = 1e11;

/**
 * A timestamp as nfdump prints it, "2026-11-23 11:53:29" (optionally .mmm), read as UTC: nfdump prints local
 * time, so this command runs it with TZ=UTC, and CSV from elsewhere should be made the same way. Epoch
 * seconds (raw formats) and epoch milliseconds (csv-fast) are read too.
 */
export function parseTime(text: string): number | undefined {
  const match = DATE_TIME.exec(text);
  if (match) {
    const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number) as [number, number, number, number, number, number];
    const ms = Date.UTC(year, month - 1, day, hour, minute, second) + Math.floor(Number(`0.${match[7] ?? '0'}`) * 1_000);
    const check = new Date(ms);
    // Date.UTC rolls 2026-02-30 over into March; a date that does not exist is malformed instead.
    return check.getUTCMonth() === month - 1 && check.getUTCDate() === day && hour < 24 && minute < 60 && second < 60 ? ms : undefined;
  }
  if (!/^\d+(?:\.\d+)?$/.test(text)) return undefined;
  const number = Number(text);
  return number >= EPOCH_MS_FROM ? Math.floor(number) : Math.floor(number * 1_000);
}

/** A protocol as nfdump prints it: a name for the common ones ("TCP"), the number otherwise. */
function parseProtocol(text: string): number | undefined {
  if (/^\d{1,3}$/.test(text)) return Number(text) <= 255 ? Number(text) : undefined;
  if (!/^[A-Za-z][\w-]*$/.test(text)) return undefined;
  // Other names are real protocols too; none of them is TCP.
  return PROTOCOL_NUMBERS[text.toLowerCase()] ?? -1;
}

function parseCount(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const number = Number(text);
  return Number.isSafeInteger(number) ? number : undefined;
}

/** nfdump never quotes (it writes ';' for a comma inside a value), but a spreadsheet may have. */
function unquote(text: string): string {
  const trimmed = text.trim();
  return trimmed.length >= 2 && trimmed.startsWith('"') && trimmed.endsWith('"') ? trimmed.slice(1, -1).trim() : trimmed;
}
