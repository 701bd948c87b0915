// `smtp-pushback top`: the SFDS top-N report of a running proxy (the SFDS paper's Fig. 2): per source, its
// flows (sessions), packets, bytes, mean packet size, flooding duration and mean flow rate, from the
// admin listener's /sources. The formatter is pure; cells pass through terminalSafe before they are measured.
import type { SfdsRow } from '../detect/sfds.js';
import { terminalSafe } from './terminal-safe.js';

export async function fetchTopSources(adminAddress: string, count: number, set: string | undefined, timeoutMs = 3_000): Promise<SfdsRow[]> {
  const query = new URLSearchParams({ top: String(count) });
  if (set) query.set('set', set);
  const response = await fetch(`http://${adminAddress}/sources?${query}`, { signal: AbortSignal.timeout(timeoutMs) });
  const body = (await response.json()) as { sources?: SfdsRow[]; error?: string };
  if (!response.ok) throw new Error(body.error ?? `${adminAddress}/sources answered ${response.status}`);
  return body.sources ?? [];
}

export function formatTopSources(rows: readonly SfdsRow[]): string {
  if (rows.length === 0) return 'no sources in the current SFDS periods\n';
  const header = ['source', 'set', 'flows', 'packets', 'bytes', 'mean B/pkt', 'duration', 'flows/period'];
  const table = rows.map((row) => [
    row.source, row.set, String(row.flows), String(row.packets), String(row.bytes),
    row.meanPacketBytes.toFixed(1), String(row.durationPeriods), row.flowsPerPeriod.toFixed(1),
  ].map(terminalSafe));
  const widths = header.map((title, column) => Math.max(title.length, ...table.map((cells) => (cells[column] as string).length)));
  const line = (cells: string[]): string => cells.map((cell, column) => (column < 2 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ');
  return `${[line(header), ...table.map(line)].join('\n')}\n`;
}
