// Numbers and text of the relay benchmark: medians, ratios, the issue's targets, and the table.
// Pure functions of the samples, so the driver only measures and this module only describes.

export const TARGETS = ['sink', 'bare', 'proxy'] as const;
export type TargetName = (typeof TARGETS)[number];

export interface Load {
  /** smtp-source's own flags for the load, as printed in the table ("-s 100", "-s 20 -d"). */
  label: string;
  sessions: number;
  reuseConnections: boolean;
  sizeBytes: number;
  messages: number;
}

export interface Sample {
  /** null when the run failed (non-zero exit or timeout): a failed run has no rate. */
  msgPerSec: number | null;
  elapsedMs: number;
  error?: string;
}

export interface Row {
  load: Load;
  samples: Record<TargetName, Sample[]>;
  medianMsgPerSec: Record<TargetName, number | null>;
  proxyToBare: number | null;
  proxyToSink: number | null;
}

/** The issue's acceptance targets: proxy throughput as a share of the bare smtp-server's. */
export interface Target {
  loadLabel: string;
  minProxyToBare: number;
}

export interface TargetResult extends Target {
  /** Each size of the load, with its ratio; the target passes only if every size does. */
  ratios: Array<{ sizeBytes: number; proxyToBare: number | null }>;
  pass: boolean;
}

export const ISSUE_TARGETS: readonly Target[] = [
  { loadLabel: '-s 100', minProxyToBare: 0.8 },
  { loadLabel: '-s 20 -d', minProxyToBare: 0.5 },
];

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

function ratio(numerator: number | null, denominator: number | null): number | null {
  return numerator === null || denominator === null || denominator === 0 ? null : numerator / denominator;
}

export function summariseRow(load: Load, samples: Record<TargetName, Sample[]>): Row {
  const rates = (target: TargetName): number[] =>
    samples[target].flatMap((sample) => (sample.msgPerSec === null ? [] : [sample.msgPerSec]));
  const medianMsgPerSec = { sink: median(rates('sink')), bare: median(rates('bare')), proxy: median(rates('proxy')) };
  return {
    load,
    samples,
    medianMsgPerSec,
    proxyToBare: ratio(medianMsgPerSec.proxy, medianMsgPerSec.bare),
    proxyToSink: ratio(medianMsgPerSec.proxy, medianMsgPerSec.sink),
  };
}

export function evaluateTargets(rows: readonly Row[], targets: readonly Target[] = ISSUE_TARGETS): TargetResult[] {
  return targets.map((target) => {
    const ratios = rows
      .filter((row) => row.load.label === target.loadLabel)
      .map((row) => ({ sizeBytes: row.load.sizeBytes, proxyToBare: row.proxyToBare }));
    const pass = ratios.length > 0 && ratios.every((entry) => entry.proxyToBare !== null && entry.proxyToBare >= target.minProxyToBare);
    return { ...target, ratios, pass };
  });
}

export function formatSize(bytes: number): string {
  return bytes % 1024 === 0 ? `${bytes / 1024} KB` : `${bytes} B`;
}

const rate = (value: number | null): string => (value === null ? 'n/a' : Math.round(value).toLocaleString('en-US'));
const share = (value: number | null): string => (value === null ? 'n/a' : value.toFixed(2));

export function formatTable(rows: readonly Row[]): string {
  const header = ['load', 'size', 'msgs', 'sink msg/s', 'bare msg/s', 'proxy msg/s', 'proxy/bare', 'proxy/sink'];
  const body = rows.map((row) => [
    row.load.label,
    formatSize(row.load.sizeBytes),
    String(row.load.messages),
    rate(row.medianMsgPerSec.sink),
    rate(row.medianMsgPerSec.bare),
    rate(row.medianMsgPerSec.proxy),
    share(row.proxyToBare),
    share(row.proxyToSink),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...body.map((cells) => (cells[column] as string).length)));
  // Text columns flush left, numbers flush right, as a reader scans them.
  const line = (cells: string[]): string =>
    cells.map((cell, column) => (column < 2 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number))).join('  ');
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...body.map(line)].join('\n');
}

export function formatTargets(results: readonly TargetResult[]): string {
  return results
    .map((result) => {
      const detail = result.ratios.map((entry) => `${formatSize(entry.sizeBytes)} ${share(entry.proxyToBare)}`).join(', ');
      return `${result.pass ? 'PASS' : 'FAIL'}  proxy >= ${result.minProxyToBare} x bare with ${result.loadLabel} (${detail})`;
    })
    .join('\n');
}

/** Every sample of a row in one line per target, so the spread behind each median is visible. */
export function formatSamples(rows: readonly Row[]): string {
  const lines: string[] = [];
  for (const row of rows) {
    for (const target of TARGETS) {
      const values = row.samples[target].map((sample) => (sample.msgPerSec === null ? 'failed' : rate(sample.msgPerSec)));
      lines.push(`${row.load.label.padEnd(8)} ${formatSize(row.load.sizeBytes).padEnd(6)} ${target.padEnd(5)} ${values.join(' ')}`);
    }
  }
  return lines.join('\n');
}
