// Prometheus metrics (prom-client), on a registry of our own rather than the library's global one. Names
// follow Prometheus's conventions: smtp_pushback_ prefix, base units, _total on counters, _seconds on times.
// Counters that other stages already keep (Redis round trips, errors) are read at scrape time.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SessionRecord } from '../session/record.js';
import type { StatusSnapshot } from '../state/status-monitor.js';

export interface ScrapeSources {
  activeSessions(): number;
  tarpitActive(): number;
  /** Upstream (Postfix) connections held now, and those of them held for untrusted clients. */
  upstreamHeld?(): { held: number; untrusted: number };
  status(): StatusSnapshot;
  sharedStore(): { roundTrips: number; errors: number; outages: number };
  /** The quarantine spool's entries and bytes, undefined when it is not open. */
  quarantine(): { entries: number; bytes: number } | undefined;
}

const EXPENSIVE_DEFAULT_METRICS = [
  'nodejs_active_handles', 'nodejs_active_handles_total', 'nodejs_active_requests', 'nodejs_active_requests_total',
  'nodejs_active_resources', 'nodejs_active_resources_total', 'process_open_fds',
];

export class ProxyMetrics {
  readonly registry = new Registry();
  private readonly pairs: Counter<'kind'>;
  private readonly normalPairs: { inc(): void };
  private readonly abnormalPairs: { inc(): void };
  private readonly sessions: Counter<'end'>;
  private readonly evictions: Counter<'reason'>;
  private readonly transactions: Counter<'outcome'>;
  private readonly commands: Counter;
  private readonly verdicts: Counter<'action' | 'detector'>;
  private readonly decisions: Counter<'action' | 'enforced'>;
  private readonly kvErrors: Counter;
  private readonly quarantineEvents: Counter<'event'>;
  private readonly noticeEvents: Counter<'outcome'>;
  private readonly upstreamReply: Histogram<'step'>;
  private readonly upstreamReplyByStep = new Map<string, { observe(seconds: number): void }>();

  constructor(sources: ScrapeSources) {
    const registers = [this.registry];
    // Node's standard process metrics (prom-client's defaults) under their usual names, so stock Node
    // dashboards and alerts read them as they are: process_resident_memory_bytes (rss),
    // nodejs_heap_size_used_bytes (process.memoryUsage().heapUsed), nodejs_eventloop_lag_seconds (the
    // delay of one setImmediate at scrape) and nodejs_eventloop_lag_{min,max,mean,stddev,p50,p90,p99}_seconds
    // from a perf_hooks monitorEventLoopDelay histogram sampled every 10 ms (so an idle loop reads about
    // 0.010) and reset at each scrape: each value covers the time since the previous scrape. The
    // histogram's timer is libuv's, unref'd: it never holds the process open. Our own metrics are
    // smtp_pushback_*.
    collectDefaultMetrics({ register: this.registry });
    // Left out: these walk every socket (active handles, resources, requests) or read /proc/self/fd
    // synchronously at each scrape. With twenty thousand flood connections open that blocked the event
    // loop for tens of milliseconds a scrape, just when the live sessions needed it most. Sessions open
    // and Postfix connections held are in smtp_pushback_sessions_active and smtp_pushback_upstream_connections_held.
    for (const name of EXPENSIVE_DEFAULT_METRICS) this.registry.removeSingleMetric(name);
    this.pairs = new Counter({ name: 'smtp_pushback_pairs_total', help: 'Command/response pairs seen by this node', labelNames: ['kind'], registers });
    this.normalPairs = this.pairs.labels({ kind: 'normal' });
    this.abnormalPairs = this.pairs.labels({ kind: 'abnormal' });
    this.sessions = new Counter({ name: 'smtp_pushback_sessions_total', help: 'Client sessions ended, by how they ended', labelNames: ['end'], registers });
    this.evictions = new Counter({
      name: 'smtp_pushback_sessions_evicted_total',
      help: 'Sessions closed with 421 to make room for a newcomer, by why they were chosen (silent, idle-after-helo, suspect, idle, trusted-idle)',
      labelNames: ['reason'],
      registers,
    });
    this.transactions = new Counter({ name: 'smtp_pushback_transactions_total', help: 'Mail transactions by outcome (relayed, deferred, rejected, aborted, incomplete)', labelNames: ['outcome'], registers });
    this.commands = new Counter({ name: 'smtp_pushback_commands_total', help: 'SMTP command lines received from clients', registers });
    this.verdicts = new Counter({ name: 'smtp_pushback_verdicts_total', help: 'Verdicts found and stored for a source or prefix, by action and strongest detector', labelNames: ['action', 'detector'], registers });
    this.decisions = new Counter({ name: 'smtp_pushback_actions_total', help: 'Decisions at connect by action; enforced="false" in observe mode', labelNames: ['action', 'enforced'], registers });
    this.kvErrors = new Counter({ name: 'smtp_pushback_verdict_store_errors_total', help: 'Verdict store calls that failed or timed out (the screen then fails open)', registers });
    this.quarantineEvents = new Counter({
      name: 'smtp_pushback_quarantine_events_total',
      help: 'Quarantine events: accepted, refused_full, refused_failed, released, retried, rejected, expired',
      labelNames: ['event'],
      registers,
    });
    this.noticeEvents = new Counter({
      name: 'smtp_pushback_notices_total',
      help: 'Notices to source networks: sent (or written, dry run) and failed per notice; suppressed (rate limited) and no_contact per flagged source',
      labelNames: ['outcome'],
      registers,
    });
    new Gauge({ name: 'smtp_pushback_quarantine_entries', help: 'Messages held in the quarantine spool', registers, collect() { this.set(sources.quarantine()?.entries ?? 0); } });
    new Gauge({ name: 'smtp_pushback_quarantine_bytes', help: 'Bytes held in the quarantine spool', registers, collect() { this.set(sources.quarantine()?.bytes ?? 0); } });
    new Gauge({ name: 'smtp_pushback_tarpit_active', help: 'Sessions tarpitted now', registers, collect() { this.set(sources.tarpitActive()); } });
    this.upstreamReply = new Histogram({
      name: 'smtp_pushback_upstream_reply_seconds',
      help: 'Time from sending a command to Postfix to its reply, by step (connect covers greeting, EHLO and XCLIENT)',
      labelNames: ['step'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    new Gauge({
      name: 'smtp_pushback_upstream_connections_held',
      help: 'Postfix connections (smtpd processes) held now; trust="untrusted": for clients neither allow-listed nor proven',
      labelNames: ['trust'],
      registers,
      collect() {
        const held = sources.upstreamHeld?.() ?? { held: 0, untrusted: 0 };
        this.set({ trust: 'all' }, held.held);
        this.set({ trust: 'untrusted' }, held.untrusted);
      },
    });
    new Gauge({ name: 'smtp_pushback_sessions_active', help: 'Client sessions open now', registers, collect() { this.set(sources.activeSessions()); } });
    new Gauge({ name: 'smtp_pushback_status', help: 'Server status from the pair entropy: 1 safe, 0 critical, -1 danger', registers, collect() { this.set(sources.status().status); } });
    new Gauge({
      name: 'smtp_pushback_entropy', help: 'H(Pn) and H(Pa) of the current window, in bits (log2; Prometheus has no base unit for information)', labelNames: ['pair'], registers,
      collect() {
        const snapshot = sources.status();
        this.set({ pair: 'normal' }, snapshot.hNormal);
        this.set({ pair: 'abnormal' }, snapshot.hAbnormal);
      },
    });
    new Gauge({
      name: 'smtp_pushback_entropy_distance', help: 'D = H(Pa) - H(Pn) of the current window in bits, clamped to +-64 when one count is zero', registers,
      collect() { this.set(Math.max(-64, Math.min(64, sources.status().distance))); },
    });
    new Gauge({
      name: 'smtp_pushback_window_pairs', help: 'Pairs in the current window (all nodes when shared)', labelNames: ['kind'], registers,
      collect() {
        const snapshot = sources.status();
        this.set({ kind: 'normal' }, snapshot.normalPairs);
        this.set({ kind: 'abnormal' }, snapshot.abnormalPairs);
      },
    });
    new Gauge({ name: 'smtp_pushback_state_degraded', help: '1 while the shared store (Redis) is unreachable and this node uses its own view', registers, collect() { this.set(sources.status().degraded ? 1 : 0); } });
    new Counter({ name: 'smtp_pushback_redis_round_trips_total', help: 'Calls to the shared store (one round trip each)', registers, collect() { this.reset(); this.inc(sources.sharedStore().roundTrips); } });
    new Counter({ name: 'smtp_pushback_redis_errors_total', help: 'Shared store calls that failed or timed out', registers, collect() { this.reset(); this.inc(sources.sharedStore().errors); } });
    new Counter({ name: 'smtp_pushback_redis_outages_total', help: 'Periods during which the shared store was unreachable', registers, collect() { this.reset(); this.inc(sources.sharedStore().outages); } });
  }

  /** Called for every pair: the two labelled children are looked up once. */
  pair(kind: 'normal' | 'abnormal'): void {
    (kind === 'normal' ? this.normalPairs : this.abnormalPairs).inc();
  }

  verdict(action: string, detector: string): void {
    this.verdicts.inc({ action, detector });
  }

  decision(action: string, enforced: boolean): void {
    this.decisions.inc({ action, enforced: enforced ? 'true' : 'false' });
  }

  kvError(): void {
    this.kvErrors.inc();
  }

  /** Counters of the quarantine stage, in the shapes its parts take them. */
  readonly quarantineSink = {
    accepted: (): void => this.quarantineEvents.inc({ event: 'accepted' }),
    refused: (reason: 'full' | 'failed'): void => this.quarantineEvents.inc({ event: `refused_${reason}` }),
  };

  readonly quarantineRelease = {
    released: (): void => this.quarantineEvents.inc({ event: 'released' }),
    retried: (): void => this.quarantineEvents.inc({ event: 'retried' }),
    rejected: (): void => this.quarantineEvents.inc({ event: 'rejected' }),
    expired: (): void => this.quarantineEvents.inc({ event: 'expired' }),
  };

  /** Counters of the firewall export (src/enforce/firewall-export.ts). */
  readonly firewall = (() => {
    const registers = [this.registry];
    const prefixes = new Gauge({ name: 'smtp_pushback_firewall_prefixes', help: 'Prefixes in the exported firewall sets, by family', labelNames: ['family'], registers });
    const updates = new Counter({ name: 'smtp_pushback_firewall_updates_total', help: 'Changes of the exported firewall sets (file written, command started)', registers });
    const commands = new Counter({ name: 'smtp_pushback_firewall_commands_total', help: 'Runs of the firewall command, by result (ok, failed, timeout)', labelNames: ['result'], registers });
    const refreshErrors = new Counter({ name: 'smtp_pushback_firewall_refresh_errors_total', help: 'Reads of the shared verdicts for the firewall export that failed (the last set stays)', registers });
    return {
      updated(v4: number, v6: number): void {
        prefixes.set({ family: 'ipv4' }, v4);
        prefixes.set({ family: 'ipv6' }, v6);
        updates.inc();
      },
      command: (result: 'ok' | 'failed' | 'timeout'): void => commands.inc({ result }),
      refreshFailed: (): void => refreshErrors.inc(),
    };
  })();
  /** Counters of the notices to source networks. */
  readonly notices = {
    sent: (): void => this.noticeEvents.inc({ outcome: 'sent' }),
    suppressed: (): void => this.noticeEvents.inc({ outcome: 'suppressed' }),
    noContact: (): void => this.noticeEvents.inc({ outcome: 'no_contact' }),
    failed: (): void => this.noticeEvents.inc({ outcome: 'failed' }),
  };

  command(): void {
    this.commands.inc();
  }

  /** Called for every upstream reply: the labelled child is looked up once per step, not per call. */
  upstreamLatency(step: string, milliseconds: number): void {
    let child = this.upstreamReplyByStep.get(step);
    if (!child) {
      child = this.upstreamReply.labels({ step });
      this.upstreamReplyByStep.set(step, child);
    }
    child.observe(milliseconds / 1000);
  }

  evicted(reason: string): void {
    this.evictions.inc({ reason });
  }

  /** A connection refused at accept on a recent verdict: a session that ended refused, without a record. */
  refusedAtAccept(): void {
    this.sessions.inc({ end: 'refused' });
  }

  sessionEnded(record: SessionRecord): void {
    this.sessions.inc({ end: record.end });
    for (const transaction of record.transactions) this.transactions.inc({ outcome: transaction.outcome });
    for (const [outcome, count] of Object.entries(record.transactionsNotListed ?? {})) this.transactions.inc({ outcome }, count);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
