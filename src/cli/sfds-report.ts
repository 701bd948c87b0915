// What `smtp-pushback sfds` prints: the inputs read, the top-N table at the end of the input (the live
// `top` command's table, the SFDS paper's Fig. 2), and the sources found flooding anywhere in it, as text or as
// one JSON object. Pure formatting.
import { windowPeriods, type ThresholdSet } from '../detect/sfds.js';
import type { InputKind } from '../offline/netflow-input.js';
import type { ReplayReport } from '../offline/sfds-replay.js';
import { formatTopSources } from './top-command.js';

export interface InputSummary {
  file: string;
  kind: InputKind | undefined;
  lines: number;
  /** SMTP flows: TCP to one of the ports. */
  flows: number;
  /** Well-formed records of other protocols or ports. */
  otherRecords: number;
  malformedLines: number;
  /** Why the input could not be read to its end (what was read before still counts). */
  error?: string;
}

export interface SfdsReportContext {
  inputs: readonly InputSummary[];
  smtpPorts: readonly number[];
  sets: readonly ThresholdSet[];
  maxSources: number;
  replay: ReplayReport;
}

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString().replace('.000Z', 'Z'));

export function sfdsReportJson(context: SfdsReportContext): object {
  const { replay } = context;
  return {
    inputs: context.inputs,
    smtpPorts: context.smtpPorts,
    sets: context.sets,
    flows: replay.flows,
    firstFlowAt: iso(replay.firstFlowMs),
    lastFlowAt: iso(replay.lastFlowMs),
    lateFlows: replay.lateFlows,
    evictedSources: replay.evictedSources,
    top: { set: replay.topSet, at: iso(replay.lastFlowMs), sources: replay.top },
    flooding: replay.flooding.map(({ source, set, firstDetectedMs, lastDetectedMs, stats }) => ({
      source,
      set,
      firstDetectedAt: iso(firstDetectedMs),
      lastDetectedAt: iso(lastDetectedMs),
      ...stats,
    })),
  };
}

export function formatSfdsReport(context: SfdsReportContext): string {
  const { inputs, replay, sets } = context;
  const sum = (key: 'lines' | 'flows' | 'otherRecords' | 'malformedLines'): number => inputs.reduce((total, input) => total + input[key], 0);
  const ports = context.smtpPorts.join(', ');
  const out: string[] = [
    `read ${inputs.length} input${inputs.length === 1 ? '' : 's'}: ${sum('lines')} lines, ${sum('flows')} SMTP flows (TCP to port ${ports}), ` +
      `${sum('otherRecords')} other records, ${sum('malformedLines')} malformed lines skipped` +
      `${inputs.some((input) => input.error) ? `, ${inputs.filter((input) => input.error).length} unreadable` : ''}`,
  ];
  if (replay.lastFlowMs === undefined) return `${out[0]}\nno SMTP flows\n`;
  out.push(`flows from ${iso(replay.firstFlowMs)} to ${iso(replay.lastFlowMs)}`, '');
  const topSet = sets.find((set) => set.name === replay.topSet)!;
  out.push(`top ${replay.top.length} sources at ${iso(replay.lastFlowMs)} under ${topSet.name} (${topSet.periodSeconds} s periods; per source its flooding run, or the last period):`);
  out.push(formatTopSources(replay.top).trimEnd(), '');
  out.push(`thresholds (formula 7, all strictly over): ${sets.map(describeSet).join('; ')}`);
  if (replay.flooding.length === 0) {
    out.push(`no flooding sources under ${sets.map((set) => set.name).join(' or ')}`);
  } else {
    out.push(`flooding sources (${replay.flooding.length}):`, formatFlooding(context));
  }
  for (const [set, count] of Object.entries(replay.lateFlows)) {
    if (count === 0) continue;
    const kept = windowPeriods(sets.find((candidate) => candidate.name === set)!);
    out.push(`note: ${count} flows ended too long before the latest one to count under ${set} (it keeps the last ${kept} periods)`);
  }
  if (replay.evictedSources > 0) {
    out.push(`note: ${replay.evictedSources} sources were forgotten, the least recently seen, to track at most ${context.maxSources} at once (--max-sources)`);
  }
  return `${out.join('\n')}\n`;
}

function describeSet(set: ThresholdSet): string {
  return `${set.name}: > ${set.minMeanPacketBytes} B/packet, > ${set.minFlowsPerPeriod} flows per ${set.periodSeconds} s, > ${set.minDurationPeriods} periods`;
}

function formatFlooding(context: SfdsReportContext): string {
  const header = ['source', 'set', 'mean B/pkt', 'flows/period', 'duration', 'flows', 'packets', 'bytes', 'first detected', 'last detected'];
  const rows = context.replay.flooding.map(({ source, set, stats, firstDetectedMs, lastDetectedMs }) => [
    source, set, stats.meanPacketBytes.toFixed(1), stats.flowsPerPeriod.toFixed(1), String(stats.durationPeriods),
    String(stats.flows), String(stats.packets), String(stats.bytes), iso(firstDetectedMs)!, iso(lastDetectedMs)!,
  ]);
  return alignTable(header, rows, new Set([0, 1, 8, 9]));
}

function alignTable(header: readonly string[], rows: readonly string[][], leftColumns: ReadonlySet<number>): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((cells) => cells[column]!.length)));
  const line = (cells: readonly string[]): string =>
    cells.map((cell, column) => (leftColumns.has(column) ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
