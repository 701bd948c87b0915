// `smtp-pushback status`: asks a running proxy's admin listener for /status and prints it for a person
// (or as the same JSON with --json). The formatter is pure so it is tested without a proxy; its text passes
// through terminalSafe, as the sources' names are the network's.
import type { StatusSnapshot } from '../state/status-monitor.js';
import { terminalSafe } from './terminal-safe.js';

const STATUS_WORDS: Record<number, string> = { 1: 'safe', 0: 'critical', [-1]: 'danger' };

export type StatusReport = StatusSnapshot & { sessionsActive?: number };

export async function fetchStatus(adminAddress: string, timeoutMs = 3_000): Promise<StatusReport> {
  const response = await fetch(`http://${adminAddress}/status`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`${adminAddress}/status answered ${response.status}`);
  return (await response.json()) as StatusReport;
}

function bits(value: number | null): string {
  if (value === null || !Number.isFinite(value)) return value === null || value > 0 ? '+inf' : '-inf';
  return value.toFixed(3);
}

export function formatStatus(report: StatusReport): string {
  const lines = [
    `status    ${report.status} (${STATUS_WORDS[report.status] ?? '?'})${report.reason === 'quiet' ? `, quiet: fewer than ${report.minPairs} pairs in the window` : ''}`,
    `window    ${report.windowSeconds} s: ${report.normalPairs} normal, ${report.abnormalPairs} abnormal pairs` +
      (report.untrackedPairs ? ` (${report.untrackedPairs} not attributed to a source)` : ''),
    `entropy   H(Pn) ${bits(report.hNormal)}  H(Pa) ${bits(report.hAbnormal)}  D ${bits(report.distance)} bits (delta ${report.deltaBits})`,
    `store     ${report.store}${report.degraded ? ', DEGRADED: shared store unreachable, this node’s own view' : ''}`,
  ];
  if (report.sessionsActive !== undefined) lines.push(`sessions  ${report.sessionsActive} active`);
  if (report.topSources.length > 0) {
    const names = report.topSources.map((source) => terminalSafe(source.source || '(untracked)'));
    const width = Math.max(6, ...names.map((name) => name.length));
    lines.push('', `${'source'.padEnd(width)}  abnormal    normal`);
    for (const [index, source] of report.topSources.entries()) {
      lines.push(`${names[index]!.padEnd(width)}  ${String(source.abnormal).padStart(8)}  ${String(source.normal).padStart(8)}`);
    }
  }
  return terminalSafe(`${lines.join('\n')}\n`);
}
