// Composition root: builds every stage from the policy and wires them together (accept → screen →
// relay → account). Nothing else creates long-lived objects; tests and benchmarks start the proxy
// through startProxy() too.
import net, { type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { json, AdminServer } from './admin/http-server.js';
import { ProxyMetrics } from './admin/metrics.js';
import { DEFAULT_MAX_CLIENTS, sizeCapacity } from './capacity.js';
import { PolicyHolder } from './config/reload.js';
import type { Policy } from './config/schema.js';
import type { ServerStatus } from './detect/entropy.js';
import { PrefixAggregator } from './detect/prefix.js';
import { RateLimitedLog } from './log-rate.js';
import { LearningQueue } from './policy/learning-queue.js';
import { observationFromRecord, SfdsAggregator } from './detect/sfds.js';
import { UpstreamPressure } from './detect/upstream-pressure.js';
import { forwardConfirmedReverse, type ReverseDnsLookup } from './dns/fcrdns.js';
import { NodeDnsResolver } from './dns/resolver.js';
import { FirewallExporter } from './enforce/firewall-export.js';
import { NetworkNotices } from './enforce/network-notices.js';
import { TarpitSlots } from './enforce/tarpit-slots.js';
import { pushbackRoute } from './admin/pushback-route.js';
import { quarantineRoutes } from './admin/quarantine-routes.js';
import { dashboardRoutes } from './admin/dashboard-routes.js';
import { SpoolSink } from './quarantine/quarantine-sink.js';
import { upstreamOptionsFromPolicy } from './quarantine/release-delivery.js';
import { ReleaseScheduler } from './quarantine/release-scheduler.js';
import { QuarantineSpool } from './quarantine/spool.js';
import { isPermissionFailure, spoolDirCandidates } from './quarantine/spool-layout.js';
import { Screen } from './policy/screen.js';
import { ShutdownDrain } from './shutdown-drain.js';
import type { SessionRecord } from './session/record.js';
import { SmtpListener } from './smtp/listener.js';
import { MemoryKv } from './state/memory-kv.js';
import { MemoryPairStore } from './state/memory-pair-store.js';
import { PairRecorder } from './state/pair-recorder.js';
import type { PairStore, PairWindowOptions } from './state/pair-store.js';
import { createRedisClient, redactRedisUrl, waitForRedisReady } from './state/redis-connection.js';
import { RedisKv } from './state/redis-kv.js';
import { RedisPairStore } from './state/redis-pair-store.js';
import type { SharedKv } from './state/shared-kv.js';
import { SharedStoreHealth } from './state/shared-store-health.js';
import { StatusMonitor, type StatusSnapshot } from './state/status-monitor.js';
import { pointFromSnapshot, StatusHistory } from './state/status-history.js';

export interface RunningProxy {
  smtpAddress: AddressInfo;
  adminAddress: AddressInfo;
  listener: SmtpListener;
  policy: PolicyHolder;
  /**
   * The shutdown drain (SIGTERM, SIGINT): the first call drains and stops, a second one cuts the
   * drain short. Resolves once everything stopped.
   */
  shutdown(reason: string): Promise<void>;
  /** The entropy status snapshot. */
  status(): StatusSnapshot;
  /** What the screen acts on: the entropy status, at most 0 while Postfix is under pressure. */
  effectiveStatus(): ServerStatus;
  metrics: ProxyMetrics;
  health: SharedStoreHealth;
  stop(): Promise<void>;
}

export interface ProxyHooks {
  /** Extra observer of finished sessions (tests, benchmarks). */
  onSessionEnd?: (record: SessionRecord) => void;
  /** The policy file, for reload on SIGHUP and on change; without it the policy is fixed. */
  policySource?: string;
}

const PRESSURE_STEPS = new Set(['mail', 'rcpt', 'data', 'dot']);

/** How long start-up waits for Redis before starting degraded (on this node's own view). */
const REDIS_STARTUP_WAIT_MS = 2_000;

/**
 * Ended sessions waiting to be learned from; beyond, they are counted, not queued. As many as the
 * default maxClients: the whole of a full proxy may end at once, and a record (~1-2 KB) costs less
 * than the live session it replaces. It grows only while learning lags (a slow Redis).
 */
const LEARNING_QUEUE_MAX = 20_000;

export async function startProxy(initialPolicy: Policy, logger: Logger, hooks: ProxyHooks = {}): Promise<RunningProxy> {
  const holder = new PolicyHolder(initialPolicy, hooks.policySource ?? '(fixed)', logger);
  const policy = initialPolicy;
  // Before anything opens a descriptor: a maxClients the limit cannot hold is refused here, by name.
  const capacity = sizeCapacity(policy.server.maxClients, { admin: policy.admin.maxConnections, upstream: policy.upstream.maxConnections + policy.quarantine.release.concurrency });
  if (capacity.refusal) throw new Error(capacity.refusal);
  // Every DNS lookup of the proxy goes through this one resolver (servers and time-out: policy.dns, fixed until restart).
  const dns = new NodeDnsResolver(policy.dns);
  const reverseDns: ReverseDnsLookup | undefined = policy.server.reverseDns ? (address) => forwardConfirmedReverse(dns, address) : undefined;
  const { shared, kv, health, closeShared } = await openSharedState(policy, logger);
  const recorder = new PairRecorder({
    shared,
    health,
    ...pairWindowOptions(policy),
    flushIntervalMs: policy.state.flushIntervalMs,
    flushTimeoutMs: policy.state.commandTimeoutMs,
    maxPendingSources: policy.entropy.maxSourcesPerBucket,
  });
  const pressure = new UpstreamPressure(policy.pushback.upstreamPressure);
  const detectors = buildDetectors(policy);
  holder.onChange((next) => {
    pressure.reconfigure(next.pushback.upstreamPressure);
    if (JSON.stringify(next.pushback.sfds) !== JSON.stringify(detectors.sfdsFrom) || JSON.stringify(next.pushback.prefix) !== JSON.stringify(detectors.prefixFrom)) {
      Object.assign(detectors, buildDetectors(next));
      logger.info('SFDS and prefix detectors rebuilt for the new policy (their history starts again)');
    }
  });

  const spool = await openSpool(policy, logger);

  let listener: SmtpListener | undefined;
  const effectiveStatus = (): ServerStatus => {
    const status = monitor.current().status;
    return pressure.reading(Date.now()).pressured ? (Math.min(status, 0) as ServerStatus) : status;
  };
  // The dashboard's plot: the last hour of snapshots.
  const history = new StatusHistory({ statusIntervalMs: policy.entropy.statusIntervalMs });
  const monitor = new StatusMonitor({
    shared,
    local: recorder.local,
    health,
    entropy: { deltaBits: policy.entropy.deltaBits, minPairs: policy.entropy.minPairs },
    statusIntervalMs: policy.entropy.statusIntervalMs,
    readTimeoutMs: policy.state.commandTimeoutMs,
    topSources: policy.entropy.topSources,
    onSnapshot: (snapshot) => {
      history.record(pointFromSnapshot(snapshot, effectiveStatus()));
      // A reply unanswered this long is an abnormal pair now, not only when the client finally goes:
      // an idle flood shows in the status within seconds, not after the idle timeout.
      listener?.expireUnansweredPairs(Date.now(), policy.entropy.pairTimeoutSeconds * 1000);
      // Under stress idle clients get a short timeout, as Postfix's smtpd_timeout = ${stress?10}s.
      // Postfix near its process limit (upstream.maxConnections as the proxy holds them) is stress too:
      // half-open transactions that hold its processes are cut at the short time-out.
      // Not in observe mode (listener.applyStress).
      listener?.applyStress(effectiveStatus() <= 0 || listener.upstreamNearLimit);
    },
  });
  const tarpits = new TarpitSlots(() => holder.current().pushback.tarpit.maxConcurrent);
  const metrics = new ProxyMetrics({
    activeSessions: () => listener?.activeSessions ?? 0,
    tarpitActive: () => tarpits.active,
    upstreamHeld: () => listener?.upstreamShareStats() ?? { held: 0, untrusted: 0 },
    status: () => monitor.current(),
    sharedStore: () => health.counters(),
    quarantine: () => spool?.stats(),
  });
  // Ended sessions are learned from in slices between I/O turns (learning-queue.ts): a flood's
  // thousands of connections ending in the same second must not stall the live sessions' replies.
  const learning = new LearningQueue<SessionRecord>({
    learn(record) {
      const nowMs = Date.now();
      detectors.sfds.observe(observationFromRecord(record, nowMs), nowMs);
      return screen.sessionEnded(record);
    },
    maxQueued: LEARNING_QUEUE_MAX,
    maxPerSlice: 64,
    sliceMs: 4,
    maxInFlight: 512,
    onDropped: (record) => learningDrops.count('dropped', record.client),
    onError: (error, record) => logger.error({ err: error, session: record.session }, 'screen failed to learn from a session'),
  });
  const learningDrops = new RateLimitedLog(logger, { perSecond: 0, summary: 'ended sessions not learned from in the last second: the learning queue was full' });
  const firewall = new FirewallExporter({ kv, policy: () => holder.current(), logger, metrics: metrics.firewall });
  const notices = new NetworkNotices({
    policy: () => holder.current(),
    kv,
    floodingRecords: (source, nowMs) => detectors.sfds.floodingRecords(source, nowMs),
    logger,
    metrics: metrics.notices,
  });
  const screen = new Screen({
    policy: () => holder.current(),
    kv,
    status: effectiveStatus,
    prefixes: { suspectPrefix: (address, nowMs) => detectors.prefixes.suspectPrefix(address, nowMs), addSuspect: (address, expiresAtMs) => detectors.prefixes.addSuspect(address, expiresAtMs) },
    sfds: (source, nowMs) => {
      const [finding] = detectors.sfds.floodingSets(source, nowMs);
      return finding && { set: finding.set, flowsPerPeriod: finding.stats.flowsPerPeriod, meanPacketBytes: finding.stats.meanPacketBytes, durationPeriods: finding.stats.durationPeriods };
    },
    logger,
    metrics: {
      verdict(action, detector) {
        metrics.verdict(action, detector);
        firewall.verdictStored(action);
      },
      decision: (action, enforced) => metrics.decision(action, enforced),
      kvError: () => metrics.kvError(),
    },
    quarantineAvailable: () => spool !== undefined,
    onVerdict: (event) => notices.flag(event),
  });
  listener = new SmtpListener({
    policy,
    current: () => holder.current(),
    logger,
    maxClients: capacity.maxClients,
    screen,
    tarpits,
    ...(spool ? { quarantine: new SpoolSink(spool, logger, metrics.quarantineSink) } : {}),
    ...(reverseDns ? { reverseDns } : {}),
    observer: {
      pair(source, kind) {
        recorder.record(source, kind === 'normal' ? 1 : 0, kind === 'abnormal' ? 1 : 0);
        metrics.pair(kind);
      },
      command: () => metrics.command(),
      evicted: (reason) => metrics.evicted(reason),
      refusedAtAccept: () => metrics.refusedAtAccept(),
      upstreamReply(step, milliseconds, code, source) {
        metrics.upstreamLatency(step, milliseconds);
        // The queue trigger reads the transaction's replies (and any time-out): a 220 or 250 to
        // EHLO says nothing about how Postfix's queue is coping.
        if (PRESSURE_STEPS.has(step) || code === undefined) pressure.record(milliseconds, code, Date.now(), source);
      },
      sessionEnded(record) {
        metrics.sessionEnded(record);
        hooks.onSessionEnd?.(record);
        // A client that reset before its address was known leaves nothing to learn from.
        if (net.isIP(record.client) === 0) return;
        learning.push(record);
      },
    },
    admission: () => policy.state.whenUnavailable === 'closed' && health.degraded
      ? { code: 421, text: `4.3.2 ${policy.server.hostname} Service temporarily unavailable, try again later` }
      : undefined,
  });

  const releaseUpstream = upstreamOptionsFromPolicy(policy);
  const scheduler = spool && new ReleaseScheduler({
    spool,
    policy: () => holder.current(),
    status: effectiveStatus,
    upstreamLatencyMs: () => pressure.reading(Date.now()).medianLatencyMs,
    stillSuspect: (address) => screen.stillSuspect(address),
    logger,
    metrics: metrics.quarantineRelease,
    // The same Postfix as live relaying, which (like all of upstream) changes only at restart.
    upstreamOptions: () => releaseUpstream,
  });

  let listening = false;
  const admin = new AdminServer({
    status: () => {
      const reading = pressure.reading(Date.now());
      return {
        ...monitor.current(),
        effectiveStatus: effectiveStatus(),
        upstreamPressure: reading,
        mode: holder.current().mode,
        policy: holder.state,
        sessionsActive: listener?.activeSessions ?? 0,
        tarpitActive: tarpits.active,
        // This node's suspect prefixes (widest first): where pushback has widened, and narrowed again.
        suspectPrefixes: detectors.prefixes.prefixes(Date.now()).slice(0, 50),
        quarantine: spool && scheduler ? { ...spool.stats(), release: scheduler.state() } : null,
      };
    },
    metrics: () => metrics.render(),
    allowedHosts: () => holder.current().admin.allowedHosts,
    maxConnections: policy.admin.maxConnections,
    // Not ready while draining, so a load balancer stops sending clients at once.
    ready: () => listening && !listener.draining,
    routes: [
      pushbackRoute(firewall),
      ...dashboardRoutes(history),
      // Changes need the bearer token; read from the current policy, so a reload can rotate it.
      ...(spool && scheduler ? quarantineRoutes({ spool, release: (ids, options) => scheduler.release(ids, options) }, () => holder.current().quarantine.adminToken) : []),
      (request, url) => {
        if (request.method !== 'GET' || url.pathname !== '/sources') return undefined;
        const top = Math.min(1_000, Math.max(1, Number(url.searchParams.get('top') ?? 20) || 20));
        const set = url.searchParams.get('set') ?? undefined;
        try {
          return json(200, { sources: detectors.sfds.top(top, Date.now(), set) });
        } catch (error) {
          return json(400, { error: (error as Error).message });
        }
      },
    ],
  });
  const stop = async (): Promise<void> => {
    listening = false;
    holder.stop();
    await Promise.all([listener?.close(), admin.close()]);
    // The last sessions' counters and verdicts reach the store before it closes (each write has its time-out).
    await learning.idle();
    learningDrops.flush();
    monitor.stop();
    await firewall.stop();
    await scheduler?.stop();
    await notices.stop();
    await recorder.stop();
    await spool?.close();
    await closeShared();
  };
  let smtpAddress: AddressInfo;
  let adminAddress: AddressInfo;
  try {
    recorder.start();
    await monitor.start();
    await firewall.start();
    await scheduler?.start();
    smtpAddress = await listener.listen();
    adminAddress = await admin.listen(policy.admin.listen);
  } catch (error) {
    // A port taken, a store that fails its first read: what did start stops again (ports, timers, the
    // spool lock), so the caller can retry or exit cleanly.
    await stop().catch((stopError: Error) => logger.error({ err: stopError }, 'stopping after a failed start failed too'));
    throw error;
  }
  listening = true;
  if (hooks.policySource) holder.watch();
  logger.info(
    {
      listen: `${smtpAddress.address}:${smtpAddress.port}`,
      admin: `${adminAddress.address}:${adminAddress.port}`,
      upstream: `${policy.upstream.address.host}:${policy.upstream.address.port}`,
      store: shared.kind,
      mode: policy.mode,
      maxClients: capacity.maxClients,
      ...(capacity.limit ? { openFilesLimit: capacity.limit.soft } : {}),
      // The default was more than the descriptor limit holds: say so where the operator looks first.
      ...(capacity.lowered ? { maxClientsLoweredBy: `open files limit ${capacity.limit?.soft ?? '?'} (raise LimitNOFILE / ulimit -n for ${DEFAULT_MAX_CLIENTS})` } : {}),
    },
    'smtp-pushback listening',
  );
  const drain = new ShutdownDrain({ listener, stop, drainSeconds: policy.server.shutdownDrainSeconds, logger });
  return {
    smtpAddress,
    adminAddress,
    listener,
    policy: holder,
    shutdown: (reason) => drain.request(reason),
    status: () => monitor.current(),
    effectiveStatus,
    metrics,
    health,
    stop,
  };
}

/**
 * The quarantine spool, cleaned of what a crash left half-written. A spool that cannot be opened
 * (no such directory, no permission, held by another process) does not stop the proxy: quarantine
 * verdicts then defer at RCPT, and the log says why.
 */
async function openSpool(policy: Policy, logger: Logger): Promise<QuarantineSpool | undefined> {
  const limits = { maxBytes: policy.quarantine.maxBytes, maxMessages: policy.quarantine.maxMessages };
  const candidates = spoolDirCandidates(policy.quarantine.spoolDir, process.env, process.getuid?.());
  const refused: string[] = [];
  for (const [index, spoolDir] of candidates.entries()) {
    try {
      const spool = await QuarantineSpool.open(spoolDir, limits, { hostname: policy.server.hostname });
      const fallback = refused.length > 0 ? { notWritable: refused } : {};
      logger.info({ spoolDir, ...fallback, ...spool.stats(), cleanedAtStart: spool.openReport }, refused.length > 0 ? 'quarantine spool open (a spool of this user\'s own: set quarantine.spoolDir for production)' : 'quarantine spool open');
      return spool;
    } catch (error) {
      if (isPermissionFailure(error) && index < candidates.length - 1) {
        refused.push(spoolDir);
        continue;
      }
      logger.error({ err: error, spoolDir, ...(refused.length > 0 ? { notWritable: refused } : {}) }, 'quarantine spool unavailable: quarantine verdicts defer (450) instead');
      return undefined;
    }
  }
  return undefined;
}

interface Detectors {
  sfds: SfdsAggregator;
  prefixes: PrefixAggregator;
  sfdsFrom: Policy['pushback']['sfds'];
  prefixFrom: Policy['pushback']['prefix'];
}

function buildDetectors(policy: Policy): Detectors {
  const { sfds, prefix } = policy.pushback;
  return {
    sfds: new SfdsAggregator({ sets: sfds.sets, maxSources: sfds.maxSources }),
    prefixes: new PrefixAggregator({ minMembers: prefix.suspectsPerPrefix, maxWidenV4: prefix.widestV4, maxWidenV6: prefix.widestV6 }),
    sfdsFrom: sfds,
    prefixFrom: prefix,
  };
}

function pairWindowOptions(policy: Policy): PairWindowOptions {
  return {
    windowSeconds: policy.entropy.windowSeconds,
    bucketSeconds: policy.entropy.bucketSeconds,
    maxSourcesPerBucket: policy.entropy.maxSourcesPerBucket,
  };
}

interface SharedState {
  shared: PairStore;
  kv: SharedKv;
  health: SharedStoreHealth;
  closeShared(): Promise<void>;
}

async function openSharedState(policy: Policy, logger: Logger): Promise<SharedState> {
  const windowOptions = pairWindowOptions(policy);
  const url = policy.state.redisUrl;
  if (!url) {
    const shared = new MemoryPairStore(windowOptions);
    const kv = new MemoryKv();
    return {
      shared,
      kv,
      health: new SharedStoreHealth({ logger, storeKind: 'memory' }),
      closeShared: async () => {
        await Promise.all([shared.close(), kv.close()]);
      },
    };
  }
  const client = createRedisClient(url, {
    commandTimeoutMs: policy.state.commandTimeoutMs,
    connectTimeoutMs: policy.state.connectTimeoutMs,
  }, (error) => logger.debug({ err: error }, 'redis connection error'));
  if (!(await waitForRedisReady(client, REDIS_STARTUP_WAIT_MS))) {
    logger.warn({ redis: redactRedisUrl(url) }, 'Redis not reachable at start: using this node’s own view until it is');
  }
  const shared = new RedisPairStore(client, { ...windowOptions, keyPrefix: policy.state.keyPrefix });
  const kv = new RedisKv(client, { keyPrefix: policy.state.keyPrefix });
  return {
    shared,
    kv,
    health: new SharedStoreHealth({ logger, storeKind: 'redis' }),
    closeShared: async () => {
      await Promise.all([shared.close(), kv.close()]);
      client.disconnect();
    },
  };
}
