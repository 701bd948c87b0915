// nfdump 1.7.1's `-o csv` output for generated flows, byte for byte the layout it prints (48 columns,
// times "YYYY-MM-DD hh:mm:ss", protocol names, padded latency columns, the Summary trailer), so tests of
// `smtp-pushback sfds` read what a real nfdump would give them.

export const NFDUMP_171_HEADER =
  'ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,' +
  'mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr';

export interface GeneratedFlow {
  startMs: number;
  endMs: number;
  source: string;
  destination: string;
  sourcePort?: number;
  destinationPort: number;
  protocol?: string;
  packets: number;
  bytes: number;
}

/** "2003-11-02 05:59:59", as nfdump prints a time with TZ=UTC (whole seconds, truncated). */
export function nfdumpTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
}

export function nfdumpCsvLine(flow: GeneratedFlow): string {
  const durationSeconds = ((flow.endMs - flow.startMs) / 1_000).toFixed(3);
  const mpls = Array.from({ length: 10 }, () => '0-0-0').join(',');
  const mac = '00:00:00:00:00:00';
  return [
    nfdumpTime(flow.startMs), nfdumpTime(flow.endMs), durationSeconds, flow.source, flow.destination,
    flow.sourcePort ?? 40_000, flow.destinationPort, flow.protocol ?? 'TCP', '...AP.SF', 0, 0, flow.packets, flow.bytes,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '0.0.0.0', '0.0.0.0', 0, 0, mac, mac, mac, mac, mpls,
    '    0.000', '    0.000', '    0.000', '127.0.0.1', '0/0', 1, '2003-11-02 23:59:59.000',
  ].join(',');
}

/** The trailer nfdump prints after the records. */
export function nfdumpSummary(flows: readonly GeneratedFlow[]): string[] {
  const bytes = flows.reduce((total, flow) => total + flow.bytes, 0);
  const packets = flows.reduce((total, flow) => total + flow.packets, 0);
  return ['Summary', 'flows,bytes,packets,avg_bps,avg_pps,avg_bpp', `${flows.length},${bytes},${packets},0,0,${packets ? Math.round(bytes / packets) : 0}`];
}

/** Header, records (in the order given) and trailer, newline-terminated. */
export function nfdumpCsv(flows: readonly GeneratedFlow[]): string {
  return `${[NFDUMP_171_HEADER, ...flows.map(nfdumpCsvLine), ...nfdumpSummary(flows)].join('\n')}\n`;
}
