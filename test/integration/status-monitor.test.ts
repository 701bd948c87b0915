// The status monitor against a real, private redis-server on a free port: it reads the cluster-wide window,
// goes degraded onto the local view when that Redis dies, logs the outage once, and returns to Redis by itself
// once a new redis-server answers on the same port.
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PairRecorder } from '../../src/state/pair-recorder.js';
import { createRedisClient, waitForRedisReady, type RedisClient } from '../../src/state/redis-connection.js';
import { RedisPairStore } from '../../src/state/redis-pair-store.js';
import { SharedStoreHealth } from '../../src/state/shared-store-health.js';
import { StatusMonitor, type StatusSnapshot } from '../../src/state/status-monitor.js';
import { freePort, startRedis, stopRedis, waitFor } from '../support/redis-server.js';

describe('StatusMonitor with a Redis that dies and comes back', () => {
  let port: number;
  let redis: ChildProcess | undefined;
  let client: RedisClient;
  let otherNodeClient: RedisClient;
  let recorder: PairRecorder;
  let monitor: StatusMonitor;
  let otherNode: RedisPairStore;
  const warnings: Array<{ obj: object; msg: string }> = [];
  const infos: Array<{ obj: object; msg: string }> = [];
  const tuning = { commandTimeoutMs: 200, connectTimeoutMs: 300, reconnectMaxDelayMs: 100 };

  beforeAll(async () => {
    port = await freePort();
    redis = await startRedis(port);
    client = createRedisClient(`redis://127.0.0.1:${port}`, tuning);
    otherNodeClient = createRedisClient(`redis://127.0.0.1:${port}`, tuning);
    expect(await waitForRedisReady(client, 5_000)).toBe(true);
    expect(await waitForRedisReady(otherNodeClient, 5_000)).toBe(true);
    const windowOptions = { windowSeconds: 60, bucketSeconds: 1, keyPrefix: 'it:' };
    const shared = new RedisPairStore(client, windowOptions);
    otherNode = new RedisPairStore(otherNodeClient, windowOptions);
    const health = new SharedStoreHealth({
      storeKind: 'redis',
      logger: { warn: (obj, msg) => warnings.push({ obj, msg }), info: (obj, msg) => infos.push({ obj, msg }) },
    });
    recorder = new PairRecorder({ shared, health, windowSeconds: 60, flushIntervalMs: 50, flushTimeoutMs: 300 });
    monitor = new StatusMonitor({
      shared,
      local: recorder.local,
      health,
      entropy: { minPairs: 0 },
      statusIntervalMs: 100,
      readTimeoutMs: 300,
      topSources: 5,
    });
  });

  afterAll(async () => {
    await monitor?.stop();
    await recorder?.stop();
    client?.disconnect();
    otherNodeClient?.disconnect();
    await stopRedis(redis);
  });

  it('serves the shared window, degrades to the local view, and recovers', async () => {
    recorder.start();
    await monitor.start();
    expect(monitor.current()).toMatchObject({ store: 'redis', degraded: false, status: 1, reason: 'quiet' });

    // Healthy: this node's pairs plus another node's, from Redis.
    recorder.record('198.51.100.1', 30, 0);
    await otherNode.add([{ source: '198.51.100.2', normal: 10, abnormal: 0 }], Date.now());
    await recorder.flush();
    await monitor.refresh();
    const healthy: StatusSnapshot = monitor.current();
    expect(healthy).toMatchObject({ store: 'redis', degraded: false, normalPairs: 40, abnormalPairs: 0, status: 1, reason: 'pairs' });
    expect(healthy.topSources.map((s) => s.source)).toEqual(['198.51.100.1', '198.51.100.2']);

    // Outage: Redis is killed; the monitor falls back to what this node saw itself.
    await stopRedis(redis);
    recorder.record('203.0.113.9', 0, 90);
    await waitFor(() => monitor.current().degraded && monitor.current().abnormalPairs === 90, 5_000, () => JSON.stringify(monitor.current()));
    const degraded = monitor.current();
    expect(degraded).toMatchObject({ store: 'memory', degraded: true, normalPairs: 30, abnormalPairs: 90, status: -1, reason: 'pairs' });
    expect(degraded.topSources[0]).toEqual({ source: '203.0.113.9', normal: 0, abnormal: 90 });
    const ticksAtOutage = monitor.counters().ticks;
    await waitFor(() => monitor.counters().ticks >= ticksAtOutage + 3, 5_000);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.obj).toMatchObject({ store: 'redis' });
    expect(infos).toHaveLength(0);
    expect(recorder.counters().pairsDroppedFromShared).toBe(90);
    expect(recorder.counters().flushFailures).toBeGreaterThanOrEqual(1);

    // Recovery: a fresh (empty) redis-server on the same port; the client reconnects by itself.
    redis = await startRedis(port);
    await waitFor(() => !monitor.current().degraded, 10_000, () => JSON.stringify(monitor.current()));
    expect(infos).toHaveLength(1);
    expect(infos[0]!.obj).toMatchObject({ store: 'redis' });
    expect(warnings).toHaveLength(1);

    // Back on the shared view: the new Redis only holds what was flushed since, while the local view holds all.
    recorder.record('198.51.100.1', 7, 0);
    await recorder.flush();
    await monitor.refresh();
    expect(monitor.current()).toMatchObject({ store: 'redis', degraded: false, normalPairs: 7, abnormalPairs: 0 });
    expect(recorder.local.windowNow(Date.now(), 0)).toMatchObject({ normal: 37, abnormal: 90 });
    expect(monitor.counters().degradedTicks).toBeGreaterThanOrEqual(1);
  });
});
