// What the flood benchmark observes besides its own clients: the proxy's /status and /metrics
// (polled every 250 ms during a phase), the maildirs of the throwaway Postfix (what really reached
// it, and when), and Postfix's log (how smtpd coped: process limit, timeouts, lost connections;
// what postscreen decided, where it runs).
import { open, rm, stat } from 'node:fs/promises';
import type { PostfixInstance } from '../test/support/postfix.js';
import { sleep } from './servers.js';

const POLL_INTERVAL_MS = 250;
const ADMIN_TIMEOUT_MS = 1_000;

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text: the families declared (# TYPE) and every sample line. */
export interface Metrics {
  families: Set<string>;
  samples: MetricSample[];
}

export function parseMetrics(text: string): Metrics {
  const families = new Set<string>();
  const samples: MetricSample[] = [];
  for (const line of text.split('\n')) {
    const declared = /^# TYPE (\S+) /.exec(line);
    if (declared) families.add(declared[1] as string);
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (sample[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key as string] = value as string;
    samples.push({ name: sample[1] as string, labels, value: Number(sample[3]) });
  }
  return { families, samples };
}

/** Values of a metric by one label, or undefined when the proxy does not have that metric (yet). */
export function metricByLabel(
  metrics: Metrics, name: string, label: string, where: (labels: Record<string, string>) => boolean = () => true,
): Record<string, number> | undefined {
  if (!metrics.families.has(name)) return undefined;
  const values: Record<string, number> = {};
  for (const sample of metrics.samples) {
    if (sample.name !== name || !where(sample.labels)) continue;
    const key = sample.labels[label] ?? '';
    values[key] = (values[key] ?? 0) + sample.value;
  }
  return values;
}

/** Sum of every sample of a metric, or undefined when the proxy does not have it (yet). */
export function metricTotal(metrics: Metrics, name: string): number | undefined {
  const byLabel = metricByLabel(metrics, name, '');
  return byLabel && Object.values(byLabel).reduce((sum, value) => sum + value, 0);
}

/** Verdicts that push back (every action but "pass"); undefined while the metric does not exist. */
export function pushbackVerdicts(metrics: Metrics): number | undefined {
  const byAction = metricByLabel(metrics, 'smtp_pushback_verdicts_total', 'action');
  return byAction && Object.entries(byAction).reduce((sum, [action, value]) => (action === 'pass' ? sum : sum + value), 0);
}

export interface AdminSample {
  /** Milliseconds since the attack started (negative before it). */
  atMs: number;
  status?: number;
  normalPairs?: number;
  abnormalPairs?: number;
  verdicts?: number;
  tarpitActive?: number;
  sessionsActive?: number;
}

export interface AdminTimeline {
  samples: AdminSample[];
  /** Seconds from attack start to the first status -1, or undefined when it never came. */
  dangerAfterSeconds?: number;
  /** Seconds from attack start to the first pushback verdict; negative if one came before the attack. */
  verdictAfterSeconds?: number;
  verdictsBeforeAttack?: number;
  maxTarpitActive?: number;
  /** The epoch time of detection: first verdict, else first status -1. */
  detectedAtMs?: number;
  failedPolls: number;
  final?: Metrics;
}

/** Polls a proxy's /status and /metrics until stopped; the clock starts at markAttack(). */
export class AdminPoller {
  private readonly samples: AdminSample[] = [];
  /** Epoch time of the attack's start; phases without one measure from the phase's start. */
  private attackAtMs = Date.now();
  private failedPolls = 0;
  private running = true;
  private readonly loop: Promise<void>;

  constructor(private readonly adminPort: number) {
    this.loop = this.poll();
  }

  markAttack(): void {
    this.attackAtMs = Date.now();
  }

  /** The last successful poll (its atMs still epoch time), for a live progress line. */
  latest(): AdminSample | undefined {
    return this.samples.at(-1);
  }

  async stop(): Promise<AdminTimeline> {
    this.running = false;
    await this.loop;
    const final = await this.fetchMetrics().catch(() => undefined);
    const attackAtMs = this.attackAtMs;
    for (const sample of this.samples) sample.atMs -= attackAtMs;
    const first = (accept: (sample: AdminSample) => boolean, from: number): number | undefined =>
      this.samples.find((sample) => sample.atMs >= from && accept(sample))?.atMs;
    const danger = first((sample) => sample.status === -1, 0);
    const verdict = first((sample) => (sample.verdicts ?? 0) > 0, Number.NEGATIVE_INFINITY);
    const before = this.samples.filter((sample) => sample.atMs < 0 && sample.verdicts !== undefined).at(-1);
    const tarpit = this.samples.flatMap((sample) => (sample.tarpitActive === undefined ? [] : [sample.tarpitActive]));
    const timeline: AdminTimeline = { samples: this.samples, failedPolls: this.failedPolls };
    if (final) timeline.final = final;
    if (danger !== undefined) timeline.dangerAfterSeconds = danger / 1000;
    if (verdict !== undefined) timeline.verdictAfterSeconds = verdict / 1000;
    if (before?.verdicts !== undefined) timeline.verdictsBeforeAttack = before.verdicts;
    if (tarpit.length > 0) timeline.maxTarpitActive = Math.max(...tarpit);
    const detectedAfter = verdict ?? danger;
    if (detectedAfter !== undefined) timeline.detectedAtMs = attackAtMs + detectedAfter;
    return timeline;
  }

  private async poll(): Promise<void> {
    while (this.running) {
      const due = Date.now() + POLL_INTERVAL_MS;
      // Epoch time until stop(), which makes it relative to the attack's start.
      const sample: AdminSample = { atMs: Date.now() };
      try {
        const [status, metrics] = await Promise.all([this.fetchStatus(), this.fetchMetrics()]);
        Object.assign(sample, status);
        const verdicts = pushbackVerdicts(metrics);
        if (verdicts !== undefined) sample.verdicts = verdicts;
        const tarpitActive = metricTotal(metrics, 'smtp_pushback_tarpit_active');
        if (tarpitActive !== undefined) sample.tarpitActive = tarpitActive;
        const sessionsActive = metricTotal(metrics, 'smtp_pushback_sessions_active');
        if (sessionsActive !== undefined) sample.sessionsActive = sessionsActive;
        this.samples.push(sample);
      } catch {
        this.failedPolls += 1;
      }
      await sleep(Math.max(0, due - Date.now()));
    }
  }

  private async fetchStatus(): Promise<Pick<AdminSample, 'status' | 'normalPairs' | 'abnormalPairs'>> {
    const response = await fetch(`http://127.0.0.1:${this.adminPort}/status`, { signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS) });
    const body = (await response.json()) as Record<string, unknown>;
    const picked: Pick<AdminSample, 'status' | 'normalPairs' | 'abnormalPairs'> = {};
    for (const key of ['status', 'normalPairs', 'abnormalPairs'] as const) {
      if (typeof body[key] === 'number') picked[key] = body[key];
    }
    return picked;
  }

  private async fetchMetrics(): Promise<Metrics> {
    const response = await fetch(`http://127.0.0.1:${this.adminPort}/metrics`, { signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS) });
    return parseMetrics(await response.text());
  }
}

export interface DeliveredMessage {
  mtimeMs: number;
  messageId?: string;
}

/** Every message in the user's maildir with its delivery time and Message-ID; then the maildir is emptied. */
export async function takeMailbox(postfix: PostfixInstance, user: string): Promise<DeliveredMessage[]> {
  const delivered: DeliveredMessage[] = [];
  for (const path of await postfix.mailboxFiles(user)) {
    const message: DeliveredMessage = { mtimeMs: (await stat(path)).mtimeMs };
    const messageId = /^Message-ID:\s*<([^>]+)>/im.exec(await head(path))?.[1];
    if (messageId) message.messageId = messageId;
    delivered.push(message);
    await rm(path, { force: true });
  }
  return delivered;
}

async function head(path: string): Promise<string> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(4096);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString('latin1');
  } finally {
    await handle.close();
  }
}

/**
 * Waits until Postfix has delivered what its clients were told was queued: every user has at least
 * its expected count, or the counts stood still for `quietMs` (mail held by a quarantine never
 * arrives), bounded by `maxMs`.
 */
export async function waitForDelivery(postfix: PostfixInstance, expected: Record<string, number>, quietMs = 2_000, maxMs = 15_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = '';
  let stillSince = Date.now();
  while (Date.now() < deadline) {
    const counts = await Promise.all(Object.keys(expected).map(async (user) => (await postfix.mailboxFiles(user)).length));
    if (Object.values(expected).every((count, index) => (counts[index] as number) >= count)) return;
    const key = counts.join(',');
    if (key !== last) {
      last = key;
      stillSince = Date.now();
    } else if (Date.now() - stillSince >= quietMs) {
      return;
    }
    await sleep(250);
  }
}

export interface PostfixLogSummary {
  connects: number;
  timeoutAfter: Record<string, number>;
  lostAfter: Record<string, number>;
  tooManyConnections: number;
  rejects: number;
  delivered: number;
  /** Distinct warnings (numbers and addresses blanked), most frequent first. */
  warnings: Array<{ text: string; count: number }>;
  /** postscreen(8)'s verdicts by kind (PASS NEW, PASS OLD, PREGREET, ...); only when postscreen logged any. */
  postscreen?: Record<string, number>;
}

export function summarisePostfixLog(log: string): PostfixLogSummary {
  const count = (re: RegExp): number => log.match(re)?.length ?? 0;
  const byStage = (re: RegExp): Record<string, number> => {
    const stages: Record<string, number> = {};
    for (const match of log.matchAll(re)) stages[match[1] as string] = (stages[match[1] as string] ?? 0) + 1;
    return stages;
  };
  const summary: PostfixLogSummary = {
    // smtpd's lowercase "connect from"; postscreen's own is "CONNECT from".
    connects: count(/ connect from /g),
    timeoutAfter: byStage(/ timeout after (\S+) from /g),
    lostAfter: byStage(/ lost connection after (\S+) from /g),
    tooManyConnections: count(/too many connections from/gi),
    rejects: count(/NOQUEUE: reject/g),
    delivered: count(/status=sent/g),
    warnings: distinctWarnings(log),
  };
  const postscreen = postscreenVerdicts(log);
  if (postscreen) summary.postscreen = postscreen;
  return summary;
}

/**
 * What postscreen decided per connection: PASS NEW/OLD (handed to smtpd after or without tests),
 * ALLOWLISTED (mynetworks), PREGREET (spoke early), HANGUP, and its own 421 refusals ("too many
 * connections" per client, "all server ports busy" when smtpd's queue is full). Undefined without postscreen.
 */
function postscreenVerdicts(log: string): Record<string, number> | undefined {
  const verdicts: Record<string, number> = {};
  let seen = false;
  for (const [, text] of log.matchAll(/ postfix\/postscreen\[\d+\]: (.*)$/gm)) {
    seen = true;
    const refused = /^NOQUEUE: reject: CONNECT from \S+: (.*)$/.exec(text as string)?.[1];
    const kind = refused
      ? `421 ${refused.replace(/\[[\d.:a-f]+\]/gi, '[addr]')}`
      : /^(PASS NEW|PASS OLD|ALLOWLISTED|WHITELISTED|DENYLISTED|BLACKLISTED|PREGREET|HANGUP|DNSBL|COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE|COMMAND TIME LIMIT|COMMAND COUNT LIMIT|COMMAND LENGTH LIMIT)\b/.exec(text as string)?.[1];
    if (kind) verdicts[kind] = (verdicts[kind] ?? 0) + 1;
  }
  return seen ? verdicts : undefined;
}

function distinctWarnings(log: string): Array<{ text: string; count: number }> {
  const counts = new Map<string, number>();
  for (const [, text] of log.matchAll(/ (?:warning|fatal|panic): (.*)$/gm)) {
    const key = (text as string).replace(/\[[\d.:a-f]+\]/gi, '[addr]').replace(/\d+/g, 'N').slice(0, 160);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([text, count]) => ({ text, count }));
}

const PINO_LEVELS: Record<number, string> = { 40: 'warn', 50: 'error', 60: 'fatal' };

/**
 * The proxy's output at warn and above, as "count x level: msg (detector, action, error)" lines,
 * most frequent first. Its stdout is pino JSON (the kept tail may start mid-line: such a fragment
 * does not parse and is skipped); stderr lines are taken as they are.
 */
export function summariseProxyLog(stdout: string, stderr: string): string[] {
  const counts = new Map<string, number>();
  const add = (key: string): void => void counts.set(key, (counts.get(key) ?? 0) + 1);
  for (const line of stdout.split('\n')) {
    let record: { level?: number; msg?: string; detector?: string; action?: string; err?: { message?: string } };
    try {
      record = JSON.parse(line) as typeof record;
    } catch {
      continue;
    }
    if ((record.level ?? 0) < 40) continue;
    const detail = [record.detector, record.action, record.err?.message].filter(Boolean).join(', ');
    add(`${PINO_LEVELS[record.level ?? 0] ?? `level ${record.level}`}: ${record.msg}${detail ? ` (${detail})` : ''}`);
  }
  for (const line of stderr.split('\n')) if (line.trim()) add(line.trim().slice(0, 300));
  return [...counts].sort((a, b) => b[1] - a[1]).map(([key, count]) => `${count} x ${key}`);
}
