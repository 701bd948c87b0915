// Numbers and text of the flood benchmark: per phase tallies, latency percentiles, the issue's
// targets as PASS/FAIL (judged on the proxy, with Postfix alone and Postfix with postscreen beside
// it for reference), and the tables. Pure functions of what the driver measured.
import { OUTCOMES, type Outcome, type SessionResult } from './flood-client.js';
import type { PostfixLogSummary } from './flood-probe.js';

export const TARGET_LABELS = { postfix: 'A: Postfix alone', postscreen: 'B: Postfix + postscreen', proxy: 'C: proxy -> Postfix' } as const;
export type TargetName = keyof typeof TARGET_LABELS;
/** Every phase runs against each, in this order: the report's columns A, B, C. */
export const TARGETS = Object.keys(TARGET_LABELS) as TargetName[];
/** The anchors the proxy is compared with; the targets are judged on the proxy alone. */
const ANCHORS = TARGETS.filter((target) => target !== 'proxy');

/** Messages already inside Postfix when detection came still land after it; this much later they should not. */
export const DETECTION_GRACE_MS = 1_000;

export type Tally = Record<Outcome, number>;

export interface Traffic {
  sessions: number;
  outcomes: Tally;
  /** Messages of this traffic found in Postfix's maildir. */
  delivered: number;
}

/** One of the slowest legitimate sessions of a phase: when it began (seconds into the phase) and its longest step. */
export interface SlowSession {
  beganAtSeconds: number;
  latencyMs: number;
  step: string;
  stepMs: number;
}

/** The `count` slowest accepted sessions, with the step each waited longest in. */
export function slowestSessions(results: readonly { outcome: string; startedAtMs: number; latencyMs?: number; stepMs?: Record<string, number> }[], phaseStartedAtMs: number, count = 3): SlowSession[] {
  return results
    .filter((result) => result.latencyMs !== undefined && result.stepMs)
    .sort((a, b) => (b.latencyMs as number) - (a.latencyMs as number))
    .slice(0, count)
    .map((result) => {
      const [step, stepMs] = Object.entries(result.stepMs as Record<string, number>).sort((a, b) => b[1] - a[1])[0] as [string, number];
      return { beganAtSeconds: (result.startedAtMs - phaseStartedAtMs) / 1000, latencyMs: result.latencyMs as number, step, stepMs };
    });
}

export interface PhaseResult {
  scenario: string;
  title: string;
  target: TargetName;
  elapsedSeconds: number;
  /** p99 of the benchmark's own event-loop delay while it sent: a floor under every latency it measured. */
  benchLoopLagP99Ms: number;
  legit: Traffic & {
    p50Ms: number | null; p99Ms: number | null; slowest?: SlowSession[];
    /** p99 of the proven senders' sessions and of the never-seen senders' sessions apart. */
    provenP99Ms?: number | null; freshP99Ms?: number | null;
  };
  flash?: Traffic;
  attack?: Traffic & { afterDetection?: { sessions: number; reached: number }; peakHeld?: number };
  proxy?: {
    /** smtp_pushback_actions_total by action over the phase; undefined while the metric does not exist. */
    actions?: Record<string, number>;
    /** Decisions counted with enforced="false" (observe mode). */
    notEnforced?: Record<string, number>;
    /** smtp_pushback_verdicts_total by detector. */
    verdictsByDetector?: Record<string, number>;
    /** smtp_pushback_quarantine_entries when the phase ended. */
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
  /** The same quantity for the anchors (A: Postfix alone, B: Postfix + postscreen), informational. */
  reference?: string;
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
  const measured = TARGETS.map((target) => [target, measureTarget(phases.filter((phase) => phase.target === target))] as const);
  const of = (target: TargetName): TargetMeasures => (measured.find(([name]) => name === target) as (typeof measured)[number])[1];
  const proxy = of('proxy');
  // "A Postfix alone: ...; B Postfix + postscreen: ..." for the anchors that ran.
  const reference = (describe: (measures: TargetMeasures) => string): string | undefined => {
    const parts = ANCHORS.filter((target) => phases.some((phase) => phase.target === target))
      .map((target) => `${TARGET_LABELS[target]}: ${describe(of(target))}`);
    return parts.length > 0 ? parts.join('; ') : undefined;
  };
  const withReference = (result: TargetResult, describe: (measures: TargetMeasures) => string): TargetResult => {
    const text = reference(describe);
    return text === undefined ? result : { ...result, reference: text };
  };
  return [
    withReference({
      name: 'legitimate delivery >= 99.9 % with the proxy (steady senders, all phases)',
      pass: proxy.sent > 0 ? proxy.delivered / proxy.sent >= 0.999 : null,
      detail: describeDelivery(proxy, true),
    }, (measures) => describeDelivery(measures, false)),
    withReference({
      name: 'legitimate p99 under attack <= 2 x no-attack p99 (with the proxy)',
      pass: proxy.baseline && proxy.attacked.length > 0 ? proxy.limitMs !== null && proxy.slow.length === 0 : null,
      detail: describeLatency(proxy),
    }, (measures) => `${describeLatency(measures)}${measures.attacked.length > 0 ? ` (${measures.slow.length === 0 ? 'within' : 'over'})` : ''}`),
    withReference({
      name: 'no flash-crowd sender punished (with the proxy)',
      pass: proxy.flash ? proxy.punished === 0 : null,
      detail: describeFlash(proxy),
    }, describeFlash),
    withReference({
      name: 'after detection <= 5 % of the spam burst reaches Postfix (with the proxy)',
      pass: proxy.burst ? proxy.share !== undefined && proxy.share <= 0.05 : null,
      detail: !proxy.burst ? 'not run' : proxy.burst.afterDetection === undefined
        ? 'never detected (no verdict and no status -1)'
        : `${proxy.burst.afterDetection.reached} delivered of ${proxy.burst.afterDetection.sessions} sessions started from ${DETECTION_GRACE_MS / 1000} s after detection${proxy.share === undefined ? '' : ` = ${(proxy.share * 100).toFixed(1)} %`}`,
    }, (measures) => (measures.burst ? `no detection; ${measures.burst.delivered} messages delivered of ${measures.burst.sessions} burst sessions` : 'not run')),
  ];
}

/** What the targets look at, for one target's phases. */
interface TargetMeasures {
  phases: readonly PhaseResult[];
  baseline: PhaseResult | undefined;
  attacked: readonly PhaseResult[];
  sent: number;
  delivered: number;
  limitMs: number | null;
  slow: readonly PhaseResult[];
  flash: Traffic | undefined;
  punished: number | undefined;
  burst: PhaseResult['attack'];
  share: number | undefined;
}

function measureTarget(phases: readonly PhaseResult[]): TargetMeasures {
  const baseline = phases.find((phase) => phase.scenario === 'baseline');
  const attacked = phases.filter((phase) => phase.scenario !== 'baseline');
  const limitMs = baseline?.legit.p99Ms == null ? null : 2 * baseline.legit.p99Ms;
  const flash = phases.find((phase) => phase.scenario === 'flash')?.flash;
  const burst = phases.find((phase) => phase.scenario === 'burst')?.attack;
  const after = burst?.afterDetection;
  return {
    phases,
    baseline,
    attacked,
    sent: sum(phases.map((phase) => phase.legit.sessions)),
    delivered: sum(phases.map((phase) => phase.legit.delivered)),
    limitMs,
    slow: attacked.filter((phase) => limitMs === null || phase.legit.p99Ms === null || phase.legit.p99Ms > limitMs),
    flash,
    punished: flash ? flash.sessions - flash.outcomes.accepted : undefined,
    burst,
    share: after && after.sessions > 0 ? after.reached / after.sessions : undefined,
  };
}

function describeDelivery(measures: TargetMeasures, perScenario: boolean): string {
  const total = `${measures.delivered}/${measures.sent} = ${ratio(measures.delivered, measures.sent)}`;
  const scenarios = measures.phases.map((phase) => `${phase.scenario} ${ratio(phase.legit.delivered, phase.legit.sessions)}`).join(', ');
  return perScenario || measures.phases.length > 1 ? `${total}; ${scenarios}` : total;
}

function describeLatency(measures: TargetMeasures): string {
  return `limit ${ms(measures.limitMs)}; ${measures.attacked.map((phase) => `${phase.scenario} ${ms(phase.legit.p99Ms)}`).join(', ') || 'no attack run'}`;
}

function describeFlash(measures: TargetMeasures): string {
  return measures.flash ? `${measures.punished} of ${measures.flash.sessions} not accepted (${outcomeList(measures.flash.outcomes, ['accepted']) || 'none'})` : 'not run';
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
  const columns = TARGETS.map((target) => phases.find((phase) => phase.target === target));
  const rows: Array<[string, ...string[]]> = [];
  const row = (label: string, cell: (phase: PhaseResult) => string | undefined): void => {
    const cells = columns.map((phase) => (phase ? cell(phase) : undefined));
    if (cells.some((value) => value !== undefined)) rows.push([label, ...cells.map((value) => value ?? '-')]);
  };
  row('legit delivered / sent', (phase) => `${phase.legit.delivered}/${phase.legit.sessions} (${ratio(phase.legit.delivered, phase.legit.sessions)})`);
  row('legit latency p50 / p99', (phase) => `${ms(phase.legit.p50Ms)} / ${ms(phase.legit.p99Ms)}`);
  row('  p99 proven / never seen', (phase) => (phase.legit.freshP99Ms === undefined ? undefined : `${ms(phase.legit.provenP99Ms ?? null)} / ${ms(phase.legit.freshP99Ms)}`));
  // Where the slowest sessions waited: the step of each that took longest, and when in the phase it began.
  if (scenario !== 'baseline') row('  slowest: began at, waited in', (phase) => phase.legit.slowest?.map((slow) => `${slow.beganAtSeconds.toFixed(1)} s ${slow.step} ${ms(slow.stepMs)}`).join(', ') || undefined);
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
  row('postscreen verdicts', (phase) => phase.postfixLog.postscreen && (counts(phase.postfixLog.postscreen) || 'none'));
  row('Postfix connects / delivered', (phase) => `${phase.postfixLog.connects} / ${phase.postfixLog.delivered}`);
  row('Postfix timeouts after', (phase) => counts(phase.postfixLog.timeoutAfter) || undefined);
  row('Postfix lost connection after', (phase) => counts(phase.postfixLog.lostAfter) || undefined);
  row('Postfix too many connections', (phase) => (phase.postfixLog.tooManyConnections > 0 ? String(phase.postfixLog.tooManyConnections) : undefined));
  row('Postfix warnings', (phase) => phase.postfixLog.warnings.map((warning) => `${warning.count} x ${warning.text}`).join('; ') || undefined);
  row('bench event-loop lag p99', (phase) => ms(phase.benchLoopLagP99Ms));
  row('phase wall time', (phase) => `${phase.elapsedSeconds.toFixed(1)} s`);
  const header: [string, ...string[]] = ['', ...columns.map((phase, index) => (phase ? TARGET_LABELS[phase.target] : TARGET_LABELS[TARGETS[index] as TargetName]))];
  return `${scenario}: ${title}\n${table([header, ...rows])}`;
}

export function formatTargets(results: readonly TargetResult[]): string {
  return results.map((result) => `${result.pass === null ? 'SKIP' : result.pass ? 'PASS' : 'FAIL'}  ${result.name}\n      ${TARGET_LABELS.proxy}: ${result.detail}`
    + (result.reference ? `\n      for reference, ${result.reference}` : '')).join('\n');
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
