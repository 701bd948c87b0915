// Composition root: builds every stage from one policy snapshot and wires them together.
// Nothing else creates long-lived objects; tests and benchmarks start the proxy through startProxy().
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AdminServer } from './admin/http-server.js';
import { ProxyMetrics } from './admin/metrics.js';
import type { Policy } from './config/schema.js';
import type { SessionRecord } from './session/record.js';
import { SmtpListener } from './smtp/listener.js';
import { MemoryPairStore } from './state/memory-pair-store.js';
import { PairRecorder } from './state/pair-recorder.js';
import type { PairStore, PairWindowOptions } from './state/pair-store.js';
import { createRedisClient, waitForRedisReady } from './state/redis-connection.js';
import { RedisPairStore } from './state/redis-pair-store.js';
import { SharedStoreHealth } from './state/shared-store-health.js';
import { StatusMonitor, type StatusSnapshot } from './state/status-monitor.js';

export interface RunningProxy {
  smtpAddress: AddressInfo;
  adminAddress: AddressInfo;
  listener: SmtpListener;
  status(): StatusSnapshot;
  metrics: ProxyMetrics;
  health: SharedStoreHealth;
  stop(): Promise<void>;
}

export interface ProxyHooks {
  /** Extra observer of finished sessions (tests, benchmarks). */
  onSessionEnd?: (record: SessionRecord) => void;
}

/** How long start-up waits for Redis before starting degraded (on this node's own view). */
const REDIS_STARTUP_WAIT_MS = 2_000;

export async function startProxy(policy: Policy, logger: Logger, hooks: ProxyHooks = {}): Promise<RunningProxy> {
  const { shared, health, closeShared } = await openSharedState(policy, logger);
  const recorder = new PairRecorder({
    shared,
    health,
    ...pairWindowOptions(policy),
    flushIntervalMs: policy.state.flushIntervalMs,
    flushTimeoutMs: policy.state.commandTimeoutMs,
    maxPendingSources: policy.entropy.maxSourcesPerBucket,
  });
  const monitor = new StatusMonitor({
    shared,
    local: recorder.local,
    health,
    entropy: { deltaBits: policy.entropy.deltaBits, minPairs: policy.entropy.minPairs },
    statusIntervalMs: policy.entropy.statusIntervalMs,
    readTimeoutMs: policy.state.commandTimeoutMs,
    topSources: policy.entropy.topSources,
  });

  let listener: SmtpListener | undefined;
  const metrics = new ProxyMetrics({
    activeSessions: () => listener?.activeSessions ?? 0,
    status: () => monitor.current(),
    sharedStore: () => health.counters(),
  });
  listener = new SmtpListener({
    policy,
    logger,
    observer: {
      pair(source, kind) {
        recorder.record(source, kind === 'normal' ? 1 : 0, kind === 'abnormal' ? 1 : 0);
        metrics.pair(kind);
      },
      command: () => metrics.command(),
      upstreamReply: (step, milliseconds) => metrics.upstreamLatency(step, milliseconds),
      sessionEnded(record) {
        metrics.sessionEnded(record);
        hooks.onSessionEnd?.(record);
      },
    },
    admission: () => policy.state.whenUnavailable === 'closed' && health.degraded
      ? { code: 421, text: `4.3.2 ${policy.server.hostname} Service temporarily unavailable, try again later` }
      : undefined,
  });

  recorder.start();
  await monitor.start();
  let listening = false;
  const admin = new AdminServer({
    status: () => ({ ...monitor.current(), sessionsActive: listener?.activeSessions ?? 0 }),
    metrics: () => metrics.render(),
    ready: () => listening,
  });
  const smtpAddress = await listener.listen();
  const adminAddress = await admin.listen(policy.admin.listen);
  listening = true;
  logger.info(
    {
      listen: `${smtpAddress.address}:${smtpAddress.port}`,
      admin: `${adminAddress.address}:${adminAddress.port}`,
      upstream: `${policy.upstream.address.host}:${policy.upstream.address.port}`,
      store: shared.kind,
    },
    'smtp-pushback listening',
  );
  return {
    smtpAddress,
    adminAddress,
    listener,
    status: () => monitor.current(),
    metrics,
    health,
    async stop() {
      listening = false;
      await Promise.all([listener?.close(), admin.close()]);
      monitor.stop();
      await recorder.stop();
      await closeShared();
    },
  };
}

function pairWindowOptions(policy: Policy): PairWindowOptions {
  return {
    windowSeconds: policy.entropy.windowSeconds,
    bucketSeconds: policy.entropy.bucketSeconds,
    maxSourcesPerBucket: policy.entropy.maxSourcesPerBucket,
  };
}

async function openSharedState(policy: Policy, logger: Logger): Promise<{ shared: PairStore; health: SharedStoreHealth; closeShared(): Promise<void> }> {
  const windowOptions = pairWindowOptions(policy);
  const url = policy.state.redisUrl;
  if (!url) {
    const shared = new MemoryPairStore(windowOptions);
    return { shared, health: new SharedStoreHealth({ logger, storeKind: 'memory' }), closeShared: () => shared.close() };
  }
  const client = createRedisClient(url, {
    commandTimeoutMs: policy.state.commandTimeoutMs,
    connectTimeoutMs: policy.state.connectTimeoutMs,
  }, (error) => logger.debug({ err: error }, 'redis connection error'));
  if (!(await waitForRedisReady(client, REDIS_STARTUP_WAIT_MS))) {
    logger.warn({ redis: redactUrl(url) }, 'Redis not reachable at start: using this node’s own view until it is');
  }
  const shared = new RedisPairStore(client, { ...windowOptions, keyPrefix: policy.state.keyPrefix, ownsClient: true });
  return { shared, health: new SharedStoreHealth({ logger, storeKind: 'redis' }), closeShared: () => shared.close() };
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
