// What the demo prints: the live progress line while it runs and the table at its end. Pure functions of
// what demo/demo.ts measured (its senders' results, the sink's counts, the proxy's /status and /metrics).
import { formatCount } from '../src/cli/progress.js';
import type { SessionResult } from '../bench/flood-client.js';
import { metricByLabel, type AdminSample, type Metrics } from '../bench/flood-probe.js';
import { ms, percentile } from '../bench/flood-report.js';

const STATUS_WORDS: Record<number, string> = { 1: 'safe', 0: 'critical', [-1]: 'danger' };

export function statusText(status: number | undefined): string {
  return status === undefined ? 'status ?' : `status ${status} (${STATUS_WORDS[status] ?? '?'})`;
}

export interface LiveFigures {
  elapsedSeconds: number;
  demoSeconds: number;
  phase: string;
  legitDelivered: number;
  legitRefused: number;
  admin: AdminSample | undefined;
}

/** "12/50 s, flood on · legit 120 delivered, 0 refused · status -1 (danger) · verdicts 57 · sessions open 5,123" */
export function progressText(live: LiveFigures): string {
  const admin = live.admin;
  return [
    `demo ${Math.min(live.demoSeconds, Math.floor(live.elapsedSeconds))}/${live.demoSeconds} s, ${live.phase}`,
    `legit ${formatCount(live.legitDelivered)} delivered, ${formatCount(live.legitRefused)} refused`,
    statusText(admin?.status),
    `verdicts ${admin?.verdicts === undefined ? '?' : formatCount(admin.verdicts)}`,
    `sessions open ${admin?.sessionsActive === undefined ? '?' : formatCount(admin.sessionsActive)}`,
  ].join(' · ');
}

export interface DemoOutcome {
  demoSeconds: number;
  legit: readonly SessionResult[];
  /** Legitimate messages the sink received (what came out of the proxy). */
  legitDelivered: number;
  flood: readonly SessionResult[];
  floodDescription: string;
  /** The proxy's /metrics at the end. */
  metrics: Metrics | undefined;
  dangerAfterSeconds: number | undefined;
  dashboardUrl: string;
  /** Whether the dashboard is still up when the table is read (on a terminal, until Ctrl-C). */
  stayingUp: boolean;
}

export function legitShare(outcome: Pick<DemoOutcome, 'legit' | 'legitDelivered'>): number {
  return outcome.legit.length === 0 ? 0 : outcome.legitDelivered / outcome.legit.length;
}

export function formatTable(outcome: DemoOutcome): string {
  const ends = (outcome.metrics && metricByLabel(outcome.metrics, 'smtp_pushback_sessions_total', 'end')) ?? {};
  const end = (name: string): number => ends[name] ?? 0;
  const evicted = end('evicted');
  const refused = end('refused') + end('too-many-clients');
  const legitFailed = outcome.legit.filter((result) => result.outcome !== 'accepted').length;
  const held = outcome.flood.filter((result) => result.outcome === 'held').length;
  const rows: Array<[string, string, string]> = [
    ['legit mail delivered', `${formatCount(outcome.legitDelivered)} of ${formatCount(outcome.legit.length)}`,
      `${(legitShare(outcome) * 100).toFixed(1)} %, p99 ${ms(percentile(outcome.legit, 0.99))} from connect to queued`],
    ['legit mail refused or lost', formatCount(legitFailed), 'sessions that did not deliver within 15 s'],
    ['flood connections', formatCount(outcome.flood.length), outcome.floodDescription],
    ['flood sessions refused or evicted', formatCount(refused + evicted),
      `421: ${formatCount(end('refused'))} on a verdict, ${formatCount(end('too-many-clients'))} too many from one address or network, ${formatCount(evicted)} evicted`],
    ['flood sessions closed idle', formatCount(end('idle-timeout')), '421 after 10 s of silence, the idle time-out under attack'],
    ['flood connections still held at the end', formatCount(held), 'cut by the demo when the legitimate load ended'],
    ['time to status -1', outcome.dangerAfterSeconds === undefined ? 'not reached' : `${outcome.dangerAfterSeconds.toFixed(1)} s`, 'after the flood began'],
  ];
  const labelWidth = Math.max(...rows.map(([label]) => label.length));
  const valueWidth = Math.max(...rows.map(([, value]) => value.length));
  const lines = rows.map(([label, value, note]) => `  ${label.padEnd(labelWidth)}  ${value.padStart(valueWidth)}  ${note}`);
  const dashboard = outcome.stayingUp ? `${outcome.dashboardUrl}  (up until Ctrl-C)` : `${outcome.dashboardUrl}  (stopped with the demo; run it on a terminal to keep it up)`;
  return [`smtp-pushback demo, ${outcome.demoSeconds} s at the shipped policy:`, ...lines, `  ${'dashboard'.padEnd(labelWidth)}  ${dashboard}`, ''].join('\n');
}
