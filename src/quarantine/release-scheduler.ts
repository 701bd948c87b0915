// The release scheduler: hands quarantined mail to Postfix when the server has room for it (off-peak, entropy
// status safe, Postfix answering fast), oldest first, at most `concurrency` at once and `messagesPerSecond`,
// re-checking each source first. The decisions are release-plan.ts's; this file does the I/O (spool, source
// checks, delivery) and records each outcome durably. Time comes from deps.now, so tick() runs in tests
// without timers; the only timers are the unref'ed tick timer and the rate limiter's waits (deps.sleep).
import { setTimeout as delay } from 'node:timers/promises';
import type { Policy } from '../config/schema.js';
import type { UpstreamOptions } from '../upstream/connection.js';
import { isOffPeak } from './offpeak.js';
import { deliverEntry, upstreamOptionsFromPolicy, type DeliveryReport } from './release-delivery.js';
import { sendRejectionNotice } from './rejection-notice.js';
import {
  classifyReleaseReply, expired, pickBatch, planAfterAttempt, RateLimiter, releaseGate, type AttemptPlan, type ReleaseGate,
} from './release-plan.js';
import { EntryNotFoundError, type QuarantineSpool } from './spool.js';
import type { EntryMeta } from './spool-entry.js';

export interface ReleaseDependencies {
  spool: QuarantineSpool;
  policy: () => Policy;
  /** Effective server status (1 safe, 0, -1). */
  status: () => 1 | 0 | -1;
  /** Postfix's recent median reply time, null when unknown. */
  upstreamLatencyMs: () => number | null;
  /** A reason when the source is deny-listed or still under a verdict now; undefined when clean. */
  stillSuspect: (address: string) => Promise<string | undefined>;
  logger: { info(o: object, m: string): void; warn(o: object, m: string): void; error(o: object, m: string): void };
  metrics: { released(): void; retried(): void; rejected(): void; expired(): void };
  /** Wall clock in ms; also drives the rate limiter (a clock stepping back only delays releases). */
  now?: () => number;
  /** Waits for the rate limiter; resolves early when the signal aborts (stop). Tests advance their clock here. */
  sleep?: (milliseconds: number, signal: AbortSignal) => Promise<void>;
  /** Connection options per attempt; default upstreamOptionsFromPolicy(policy()). Pass one with observeReply for metrics. */
  upstreamOptions?: () => UpstreamOptions;
}

export type EntryOutcome =
  | 'released' | 'retry' | 'rejected' | 'expired' | 'held'
  | 'scheduled' | 'gate-closed' | 'not-found' | 'not-releasable' | 'in-flight' | 'check-failed' | 'stopped' | 'error';

export interface EntryResult {
  id: string;
  outcome: EntryOutcome;
  detail?: string;
}

export interface TickSummary {
  startedAtMs: number;
  finishedAtMs: number;
  gate: ReleaseGate;
  /** Held past maxAgeHours, expired before the batch. */
  expiredByAge: number;
  /** Outcomes of the batch, by kind. */
  outcomes: Partial<Record<EntryOutcome, number>>;
}

export interface ReleaseState {
  lastTick: TickSummary | undefined;
  /** Whether a tick starting now would release, and why (not). */
  gate: ReleaseGate;
  inFlight: number;
  nextTickAtMs: number | undefined;
}

/** A source check slower than this leaves the entry as it is until the next tick. */
const SOURCE_CHECK_TIMEOUT_MS = 5_000;
/** stop() waits this long for deliveries in flight, then drops their connections (they are retried later). */
const STOP_GRACE_MS = 10_000;

export class ReleaseScheduler {
  private readonly now: () => number;
  private readonly sleep: (milliseconds: number, signal: AbortSignal) => Promise<void>;
  private readonly running = new Map<string, Promise<EntryResult>>();
  /** Aborted by stop(): ends rate waits at once. */
  private readonly stopping = new AbortController();
  /** Aborted STOP_GRACE_MS after stop(): drops deliveries still in flight. */
  private readonly cancel = new AbortController();
  private limiter: RateLimiter | undefined;
  private currentTick: Promise<TickSummary> | undefined;
  private lastTick: TickSummary | undefined;
  private timer: NodeJS.Timeout | undefined;
  private nextTickAtMs: number | undefined;

  constructor(private readonly deps: ReleaseDependencies) {
    this.now = deps.now ?? Date.now;
    this.sleep = deps.sleep ?? ((milliseconds, signal) => delay(milliseconds, undefined, { signal }).catch(() => undefined));
  }

  /**
   * Puts entries a crash left 'releasing' back to 'held' (Postfix may have taken them: a possible duplicate beats
   * lost mail), then ticks every intervalSeconds. A failed reset is logged; that entry waits for the next start.
   */
  async start(): Promise<void> {
    for (const entry of this.deps.spool.list({ state: 'releasing' })) {
      if (this.running.has(entry.id)) continue;
      try {
        await this.deps.spool.update(entry.id, { state: 'held', lastError: 'release interrupted by a restart; may be delivered twice' });
        this.deps.logger.warn({ id: entry.id }, 'quarantine release interrupted by a restart: entry held again');
      } catch (error) {
        this.deps.logger.error({ id: entry.id, err: error }, 'could not put an interrupted release back on hold');
      }
    }
    this.schedule();
  }

  /** Stops ticking and waits for deliveries in flight: up to STOP_GRACE_MS, then drops them (recorded as retries). */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.stopping.abort();
    const grace = setTimeout(() => this.cancel.abort(), STOP_GRACE_MS);
    await Promise.allSettled([this.currentTick, ...this.running.values()]);
    clearTimeout(grace);
  }

  state(): ReleaseState {
    return { lastTick: this.lastTick, gate: this.gate(false), inFlight: this.running.size, nextTickAtMs: this.nextTickAtMs };
  }

  /** One pass: expire old entries, then, if the gate allows, release a batch of held entries due now. Ticks never overlap. */
  tick(): Promise<TickSummary> {
    this.currentTick ??= this.runTick().finally(() => {
      this.currentTick = undefined;
    });
    return this.currentTick;
  }

  /**
   * Operator release of held or rejected entries. force: now, ignoring the off-peak window, the server status,
   * Postfix's latency and the source check, but within rate and concurrency; resolves with each delivery's
   * outcome (a bulk force release takes about count / messagesPerSecond). Without force: made due now and held,
   * for the next tick that the gate allows (outcome 'scheduled'); the source is re-checked then.
   */
  async release(ids: readonly string[], options: { force: boolean }): Promise<EntryResult[]> {
    if (options.force) return this.runBatch(ids, true);
    const results: EntryResult[] = [];
    const release = this.deps.policy().quarantine.release;
    const gate = this.gate(false);
    for (const id of ids) {
      const entry = this.deps.spool.get(id);
      // The operator's states (held, rejected), not the gate: the tick checks that when it comes.
      const refusal = this.refusal(id, true);
      if (refusal || !entry) {
        results.push(refusal ?? { id, outcome: 'not-found' });
      } else if (expired(entry, this.now(), release.maxAgeHours * 3_600_000)) {
        // The next tick would expire it at once.
        results.push({ id, outcome: 'not-releasable', detail: 'older than quarantine.release.maxAgeHours: release it with force' });
      } else {
        try {
          await this.deps.spool.update(id, { state: 'held', nextAttemptAtMs: Math.min(entry.nextAttemptAtMs, this.now()) });
          results.push({ id, outcome: 'scheduled', detail: gate.allowed ? 'next tick' : `waiting: ${gate.reason}` });
        } catch (error) {
          results.push(this.spoolFailure(id, error));
        }
      }
    }
    return results;
  }

  private schedule(): void {
    if (this.stopping.signal.aborted) return;
    const intervalMs = this.deps.policy().quarantine.release.intervalSeconds * 1000;
    this.nextTickAtMs = this.now() + intervalMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.tick()
        .catch((error: unknown) => this.deps.logger.error({ err: error }, 'quarantine release tick failed'))
        .finally(() => this.schedule());
    }, intervalMs);
    this.timer.unref();
  }

  private async runTick(): Promise<TickSummary> {
    const startedAtMs = this.now();
    const release = this.deps.policy().quarantine.release;
    const maxAgeMs = release.maxAgeHours * 3_600_000;
    let expiredByAge = 0;
    for (const entry of this.deps.spool.list({ state: 'held' })) {
      if (this.running.has(entry.id) || !expired(entry, startedAtMs, maxAgeMs)) continue;
      try {
        await this.deps.spool.update(entry.id, { state: 'rejected', lastError: `expired: not released within ${release.maxAgeHours} h` });
      } catch (error) {
        this.spoolFailure(entry.id, error);
        continue;
      }
      this.deps.metrics.expired();
      this.deps.logger.warn({ id: entry.id, client: entry.client.address, recipients: entry.recipients }, 'quarantined message expired');
      expiredByAge += 1;
    }
    const gate = this.gate(false);
    const outcomes: TickSummary['outcomes'] = {};
    if (gate.allowed) {
      // One interval's worth at the allowed rate: a tick lasts about an interval, and the next starts fresh.
      const maxCount = Math.max(release.concurrency, Math.ceil(release.messagesPerSecond * release.intervalSeconds));
      const held = this.deps.spool.list({ state: 'held' }).filter((entry) => !this.running.has(entry.id));
      const batch = pickBatch(held, { nowMs: startedAtMs, maxCount });
      for (const result of await this.runBatch(batch.map((entry) => entry.id), false)) {
        outcomes[result.outcome] = (outcomes[result.outcome] ?? 0) + 1;
      }
    }
    this.lastTick = { startedAtMs, finishedAtMs: this.now(), gate, expiredByAge, outcomes };
    return this.lastTick;
  }

  private gate(force: boolean): ReleaseGate {
    const release = this.deps.policy().quarantine.release;
    const nowMs = this.now();
    return releaseGate({
      nowMs,
      offPeak: force || isOffPeak(nowMs, { timeZone: release.timeZone, windows: release.windows }),
      serverStatus: this.deps.status(),
      upstreamLatencyMs: this.deps.upstreamLatencyMs(),
      upstreamLatencyLimitMs: release.maxUpstreamLatencyMs,
      force,
    });
  }

  /** Starts each entry in order once a slot and a rate token are free; resolves when every one has an outcome. */
  private async runBatch(ids: readonly string[], force: boolean): Promise<EntryResult[]> {
    const results: Array<Promise<EntryResult>> = [];
    for (const id of ids) {
      const refusal = this.refusal(id, force) ?? (force ? undefined : await this.checkSource(this.deps.spool.get(id) as EntryMeta));
      // The entry, the gate or the scheduler may have changed during the waits.
      const late = refusal ?? ((await this.waitForSlotAndToken()) ? this.refusal(id, force) : { id, outcome: 'stopped' as const });
      if (late) {
        results.push(Promise.resolve(late));
        continue;
      }
      const upstream = this.deps.upstreamOptions?.() ?? upstreamOptionsFromPolicy(this.deps.policy());
      const attempt = this.attempt(id, upstream).finally(() => this.running.delete(id));
      this.running.set(id, attempt);
      results.push(attempt);
    }
    return Promise.all(results);
  }

  /** Why this entry may not start now; an operator's force also takes rejected entries and ignores the gate. */
  private refusal(id: string, force: boolean): EntryResult | undefined {
    if (this.stopping.signal.aborted) return { id, outcome: 'stopped' };
    const entry = this.deps.spool.get(id);
    if (!entry) return { id, outcome: 'not-found' };
    if (this.running.has(id)) return { id, outcome: 'in-flight' };
    if (entry.state !== 'held' && !(force && entry.state === 'rejected')) return { id, outcome: 'not-releasable', detail: `state ${entry.state}` };
    const gate = this.gate(force);
    return gate.allowed ? undefined : { id, outcome: 'gate-closed', detail: gate.reason };
  }

  /** True once a slot is free and a rate token taken (the caller starts synchronously); false when stopping. */
  private async waitForSlotAndToken(): Promise<boolean> {
    for (;;) {
      if (this.stopping.signal.aborted) return false;
      const release = this.deps.policy().quarantine.release;
      if (this.running.size >= release.concurrency) {
        await Promise.race(this.running.values());
        continue;
      }
      const nowMs = this.now();
      if (this.limiter?.ratePerSecond !== release.messagesPerSecond) {
        // Burst 1: releases go out evenly spaced, never as a clump at the start of a tick.
        this.limiter = new RateLimiter(release.messagesPerSecond, 1, nowMs);
      }
      if (this.limiter.tryTake(nowMs)) return true;
      await this.sleep(this.limiter.msUntilAvailable(nowMs), this.stopping.signal);
    }
  }

  /** Re-checks the source: hold (nextAttemptAt pushed by the backoff base) or expire per policy. */
  private async checkSource(entry: EntryMeta): Promise<EntryResult | undefined> {
    let reason: string | undefined;
    try {
      reason = await withTimeout(this.deps.stillSuspect(entry.client.address), SOURCE_CHECK_TIMEOUT_MS);
    } catch (error) {
      // Unknown is not clean: suspect mail is not released on a guess. The next tick asks again.
      this.deps.logger.warn({ id: entry.id, client: entry.client.address, err: error }, 'source check failed; entry left on hold');
      return { id: entry.id, outcome: 'check-failed', detail: (error as Error).message };
    }
    if (reason === undefined) return undefined;
    const release = this.deps.policy().quarantine.release;
    try {
      if (release.whenStillSuspect === 'expire') {
        await this.deps.spool.update(entry.id, { state: 'rejected', lastError: `expired: source still suspect (${reason})` });
        this.deps.metrics.expired();
        return { id: entry.id, outcome: 'expired', detail: reason };
      }
      const nextAttemptAtMs = this.now() + release.backoffBaseSeconds * 1000;
      await this.deps.spool.update(entry.id, { nextAttemptAtMs, lastError: `held: source still suspect (${reason})` });
      return { id: entry.id, outcome: 'held', detail: reason };
    } catch (error) {
      return this.spoolFailure(entry.id, error);
    }
  }

  /** Marks the entry 'releasing' (durably, before Postfix sees it), delivers, and records what Postfix said. */
  private async attempt(id: string, upstream: UpstreamOptions): Promise<EntryResult> {
    const { spool, logger } = this.deps;
    const policy = this.deps.policy();
    let meta: EntryMeta;
    let report: DeliveryReport;
    try {
      meta = await spool.update(id, { state: 'releasing' });
    } catch (error) {
      return this.spoolFailure(id, error);
    }
    try {
      report = await deliverEntry(meta, await spool.readMessage(meta.id), upstream, this.cancel.signal);
    } catch (error) {
      report = { replies: meta.recipients.map((recipient) => ({ recipient, code: null, text: `message unreadable: ${(error as Error).message}` })), xclientSent: false };
    }
    const release = policy.quarantine.release;
    const plan = planAfterAttempt(meta, report.replies, {
      nowMs: this.now(),
      backoff: { baseMs: release.backoffBaseSeconds * 1000, maxMs: release.backoffMaxSeconds * 1000 },
      maxAgeMs: release.maxAgeHours * 3_600_000,
    });
    const refused = report.replies.filter((reply) => classifyReleaseReply(reply.code) === 'rejected');
    if (release.bounceRejected && refused.length > 0 && meta.mailFrom.address !== '') {
      // Before the entry may be removed: the notice quotes its headers. A failed notice is logged, not retried.
      try {
        await sendRejectionNotice(meta, refused, await spool.readMessage(meta.id), {
          upstream, reportingHostname: policy.server.hostname, nowMs: this.now(),
        });
      } catch (error) {
        logger.error({ id: meta.id, sender: meta.mailFrom.address, err: error }, 'could not send the rejection notice');
      }
    }
    const outcome = outcomeOf(plan, report);
    const log = { id: meta.id, client: meta.client.address, attempts: meta.attempts + 1, xclientSent: report.xclientSent, queueId: report.queueId, replies: report.replies };
    try {
      if (outcome === 'released') {
        // If the removal fails, marking the entry released still prevents a second delivery.
        await spool.remove(meta.id).catch((error: unknown) => {
          logger.error({ id: meta.id, err: error }, 'could not remove a released entry; marking it released');
          return spool.update(meta.id, plan.patch);
        });
      } else {
        await spool.update(meta.id, plan.patch);
      }
    } catch (error) {
      // Left 'releasing': put back on hold at the next start (a possible duplicate beats lost mail).
      return this.spoolFailure(meta.id, error);
    }
    this.deps.metrics[METRIC_OF[outcome]]();
    if (outcome === 'released') logger.info(log, 'quarantined message released');
    else logger.warn({ ...log, nextAttemptAtMs: plan.patch.nextAttemptAtMs }, `quarantined message ${outcome === 'retry' ? 'deferred' : outcome}`);
    return { id: meta.id, outcome, ...(plan.patch.lastError ? { detail: plan.patch.lastError } : {}) };
  }

  private spoolFailure(id: string, error: unknown): EntryResult {
    if (error instanceof EntryNotFoundError) return { id, outcome: 'not-found' };
    this.deps.logger.error({ id, err: error }, 'quarantine spool update failed; entry left as it was');
    return { id, outcome: 'error', detail: (error as Error).message };
  }
}

const METRIC_OF = { released: 'released', retry: 'retried', rejected: 'rejected', expired: 'expired' } as const;

function outcomeOf(plan: AttemptPlan, report: DeliveryReport): 'released' | 'retry' | 'rejected' | 'expired' {
  if (plan.kind === 'retry') return 'retry';
  if (plan.state === 'released') return 'released';
  // planAfterAttempt turns a retry past maxAge into 'rejected': that is an expiry, not Postfix's refusal.
  return report.replies.some((reply) => classifyReleaseReply(reply.code) === 'retry') ? 'expired' : 'rejected';
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
