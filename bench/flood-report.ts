// Numbers and text of the flood benchmark: per phase tallies, latency percentiles, the issue's
// targets as PASS/FAIL, and the tables. Pure functions of what the driver measured.
import { OUTCOMES, type Outcome, type SessionResult } from './flood-client.js';
import type { PostfixLogSummary } from './flood-probe.js';

export const TARGET_LABELS = { postfix: 'A: Postfix alone', proxy: 'B: proxy -> Postfix' } as const;
export type TargetName = keyof typeof TARGET_LABELS;

/** Messages already inside Postfix when detection came still land after it; this much later they should not. */
export const DETECTION_GRACE_MS = 1_000;

export type Tally = Record<Outcome, number>;

export interface Traffic {
  sessions: number;
  outcomes: Tally;
  /** Messages of this traffic found in Postfix's maildir. */
  delivered: number;
}

export interface PhaseResult {
  scenario: string;
  title: string;
  target: TargetName;
  elapsedSeconds: number;
  /** p99 of the benchmark's own event-loop delay while it sent: a floor under every latency it measured. */
  benchLoopLagP99Ms: number;
  legit: Traffic & { p50Ms: number | null; p99Ms: number | null };
  flash?: Traffic;
  attack?: Traffic & { afterDetection?: { sessions: number; reached: number }; peakHeld?: number };
  proxy?: {
    /** pushback_actions_total by action over the phase; undefined while the metric does not exist. */
    actions?: Record<string, number>;
    /** Decisions counted with enforced="false" (observe mode). */
    notEnforced?: Record<string, number>;
    /** pushback_verdicts_total by detector. */
    verdictsByDetector?: Record<string, number>;
    /** pushback_quarantine_entries when the phase ended. */
    quarantinedAtEnd?: number;
    sessionsByEnd?: Record<string, number>;
    dangerAfterSeconds?: number;
    verdictAfterSeconds?: number;
    verdictsBeforeAttack?: number;
    maxTarpitActive?: number;
    failedPolls: number;
    /** summariseProxyLog() of the proxy's output during the phase. */
    log: string[];
    crashed?: string;
  };
  postfixLog: PostfixLogSummary;
}

export interface TargetResult {
  name: string;
  /** null: the phases it needs were not run (BENCH_FLOOD_SCENARIOS). */
  pass: boolean | null;
  detail: string;
}

export function tally(results: readonly SessionResult[]): Tally {
  const counts = Object.fromEntries(OUTCOMES.map((outcome) => [outcome, 0])) as Tally;
  for (const result of results) counts[result.outcome] += 1;
  return counts;
}

/** Nearest-rank percentile; a session that never delivered counts as infinitely slow. */
export function percentile(results: readonly SessionResult[], fraction: number): number | null {
  if (results.length === 0) return null;
  const sorted = results.map((result) => result.latencyMs ?? Number.POSITIVE_INFINITY).sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)] as number;
}

/** Spam sessions started, and spam messages delivered, from DETECTION_GRACE_MS after detection on. */
export function afterDetection(results: readonly SessionResult[], deliveredAtMs: readonly number[], detectedAtMs: number): { sessions: number; reached: number } {
  const from = detectedAtMs + DETECTION_GRACE_MS;
  return {
    sessions: results.filter((result) => result.startedAtMs >= from).length,
    reached: deliveredAtMs.filter((mtimeMs) => mtimeMs >= from).length,
  };
}

export function evaluateTargets(phases: readonly PhaseResult[]): TargetResult[] {
  const proxied = phases.filter((phase) => phase.target === 'proxy');
  const baseline = proxied.find((phase) => phase.scenario === 'baseline');
  const attacked = proxied.filter((phase) => phase.scenario !== 'baseline');
  const sent = sum(proxied.map((phase) => phase.legit.sessions));
  const delivered = sum(proxied.map((phase) => phase.legit.delivered));
  const perScenario = proxied.map((phase) => `${phase.scenario} ${ratio(phase.legit.delivered, phase.legit.sessions)}`).join(', ');
  const limitMs = baseline?.legit.p99Ms == null ? null : 2 * baseline.legit.p99Ms;
  const slow = attacked.filter((phase) => limitMs === null || phase.legit.p99Ms === null || phase.legit.p99Ms > limitMs);
  const flash = proxied.find((phase) => phase.scenario === 'flash')?.flash;
  const punished = flash ? flash.sessions - flash.outcomes.accepted : undefined;
  const burst = proxied.find((phase) => phase.scenario === 'burst')?.attack;
  const after = burst?.afterDetection;
  const share = after && after.sessions > 0 ? after.reached / after.sessions : undefined;
  return [
    {
      name: 'legitimate delivery >= 99.9 % with the proxy (steady senders, all phases)',
      pass: sent > 0 ? delivered / sent >= 0.999 : null,
      detail: `${delivered}/${sent} = ${ratio(delivered, sent)}; ${perScenario}`,
    },
    {
      name: 'legitimate p99 under attack <= 2 x no-attack p99 (with the proxy)',
      pass: baseline && attacked.length > 0 ? limitMs !== null && slow.length === 0 : null,
      detail: `limit ${ms(limitMs)}; ${attacked.map((phase) => `${phase.scenario} ${ms(phase.legit.p99Ms)}`).join(', ')}`,
    },
    {
      name: 'no flash-crowd sender punished (with the proxy)',
      pass: flash ? punished === 0 : null,
      detail: flash ? `${punished} of ${flash.sessions} not accepted (${outcomeList(flash.outcomes, ['accepted']) || 'none'})` : 'not run',
    },
    {
      name: 'after detection <= 5 % of the spam burst reaches Postfix (with the proxy)',
      pass: burst ? share !== undefined && share <= 0.05 : null,
      detail: !burst ? 'not run' : after === undefined
        ? 'never detected (no verdict and no status -1)'
        : `${after.reached} delivered of ${after.sessions} sessions started from ${DETECTION_GRACE_MS / 1000} s after detection${share === undefined ? '' : ` = ${(share * 100).toFixed(1)} %`}`,
    },
  ];
}

const OUTCOME_LABELS: Record<Outcome, string> = {
  accepted: 'accepted (250 after the dot)',
  noGreeting: 'greeting never came',
  reply421: '421',
  rcpt4xx: '4xx at RCPT',
  other4xx: 'other 4xx',
  reject5xx: '5xx',
  held: 'held idle until we dropped it',
  lost: 'closed or silent without a reply',
  cut: 'unfinished at window end (cut)',
};

function outcomeList(outcomes: Tally, skip: Outcome[] = []): string {
  return OUTCOMES.filter((outcome) => outcomes[outcome] > 0 && !skip.includes(outcome)).map((outcome) => `${OUTCOME_LABELS[outcome]} ${outcomes[outcome]}`).join(', ');
}

/** One table per scenario: a row per quantity, a column per target. */
export function formatScenario(scenario: string, title: string, phases: readonly PhaseResult[], noAttackP99: Partial<Record<TargetName, number | null>>): string {
  const columns = (['postfix', 'proxy'] as const).map((target) => phases.find((phase) => phase.target === target));
  const rows: Array<[string, ...string[]]> = [];
  const row = (label: string, cell: (phase: PhaseResult) => string | undefined): void => {
    const cells = columns.map((phase) => (phase ? cell(phase) : undefined));
    if (cells.some((value) => value !== undefined)) rows.push([label, ...cells.map((value) => value ?? '-')]);
  };
  row('legit delivered / sent', (phase) => `${phase.legit.delivered}/${phase.legit.sessions} (${ratio(phase.legit.delivered, phase.legit.sessions)})`);
  row('legit latency p50 / p99', (phase) => `${ms(phase.legit.p50Ms)} / ${ms(phase.legit.p99Ms)}`);
  if (scenario !== 'baseline') row('  no-attack p99', (phase) => ms(noAttackP99[phase.target] ?? null));
  row('legit not accepted', (phase) => outcomeList(phase.legit.outcomes, ['accepted']) || undefined);
  row('flash sessions delivered', (phase) => phase.flash && `${phase.flash.delivered}/${phase.flash.sessions}`);
  row('flash punished', (phase) => phase.flash && (outcomeList(phase.flash.outcomes, ['accepted']) || 'none'));
  row('attack connections', (phase) => phase.attack && String(phase.attack.sessions));
  for (const outcome of OUTCOMES) {
    row(`  ${OUTCOME_LABELS[outcome]}`, (phase) => (phase.attack && phase.attack.outcomes[outcome] > 0 ? String(phase.attack.outcomes[outcome]) : undefined));
  }
  row('  greeted and held at once (peak)', (phase) => phase.attack?.peakHeld !== undefined ? String(phase.attack.peakHeld) : undefined);
  row('attack msgs reached Postfix', (phase) => phase.attack && String(phase.attack.delivered));
  row('  after detection', (phase) => phase.attack?.afterDetection && `${phase.attack.afterDetection.reached} of ${phase.attack.afterDetection.sessions} sessions`);
  row('proxy actions enforced', (phase) => phase.proxy && (phase.proxy.actions ? counts(phase.proxy.actions) || 'none' : 'n/a'));
  row('  decided, not enforced', (phase) => phase.proxy?.notEnforced && counts(phase.proxy.notEnforced));
  row('proxy verdicts by detector', (phase) => phase.proxy && (phase.proxy.verdictsByDetector ? counts(phase.proxy.verdictsByDetector) || 'none' : 'n/a'));
  row('quarantined at phase end', (phase) => phase.proxy && (phase.proxy.quarantinedAtEnd === undefined ? 'n/a' : String(phase.proxy.quarantinedAtEnd)));
  row('proxy sessions by end', (phase) => phase.proxy?.sessionsByEnd && counts(phase.proxy.sessionsByEnd));
  row('status -1 after attack start', (phase) => phase.proxy && seconds(phase.proxy.dangerAfterSeconds, 'never'));
  row('first verdict after start', (phase) => phase.proxy && (phase.proxy.verdictsBeforeAttack === undefined && phase.proxy.verdictAfterSeconds === undefined ? 'n/a' : seconds(phase.proxy.verdictAfterSeconds, 'none')));
  row('  verdicts before the attack', (phase) => (phase.proxy?.verdictsBeforeAttack ? String(phase.proxy.verdictsBeforeAttack) : undefined));
  row('max tarpitted at once', (phase) => phase.proxy && (phase.proxy.maxTarpitActive === undefined ? 'n/a' : String(phase.proxy.maxTarpitActive)));
  row('Postfix connects / delivered', (phase) => `${phase.postfixLog.connects} / ${phase.postfixLog.delivered}`);
  row('Postfix timeouts after', (phase) => counts(phase.postfixLog.timeoutAfter) || undefined);
  row('Postfix lost connection after', (phase) => counts(phase.postfixLog.lostAfter) || undefined);
  row('Postfix too many connections', (phase) => (phase.postfixLog.tooManyConnections > 0 ? String(phase.postfixLog.tooManyConnections) : undefined));
  row('Postfix warnings', (phase) => phase.postfixLog.warnings.map((warning) => `${warning.count} x ${warning.text}`).join('; ') || undefined);
  row('bench event-loop lag p99', (phase) => ms(phase.benchLoopLagP99Ms));
  row('phase wall time', (phase) => `${phase.elapsedSeconds.toFixed(1)} s`);
  const header: [string, ...string[]] = ['', ...columns.map((phase, index) => (phase ? TARGET_LABELS[phase.target] : ['A', 'B'][index] as string))];
  return `${scenario}: ${title}\n${table([header, ...rows])}`;
}

export function formatTargets(results: readonly TargetResult[]): string {
  return results.map((result) => `${result.pass === null ? 'SKIP' : result.pass ? 'PASS' : 'FAIL'}  ${result.name}\n      ${result.detail}`).join('\n');
}

function table(rows: ReadonlyArray<readonly string[]>): string {
  const widths = (rows[0] as readonly string[]).map((_, column) => Math.max(...rows.map((cells) => (cells[column] ?? '').length)));
  return rows.map((cells) => `  ${cells.map((cell, column) => cell.padEnd(widths[column] as number)).join('  ').trimEnd()}`).join('\n');
}

function counts(values: Record<string, number>): string {
  return Object.entries(values).filter(([, value]) => value > 0).map(([key, value]) => `${key} ${Math.round(value)}`).join(', ');
}

function ratio(numerator: number, denominator: number): string {
  return denominator === 0 ? 'n/a' : `${((numerator / denominator) * 100).toFixed(1)} %`;
}

export function ms(value: number | null): string {
  if (value === null) return 'n/a';
  // Over 1 % of the sessions never delivered: the percentile lies among them.
  if (!Number.isFinite(value)) return 'undelivered';
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

function seconds(value: number | undefined, absent: string): string {
  return value === undefined ? absent : `${value.toFixed(2)} s`;
}

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}
