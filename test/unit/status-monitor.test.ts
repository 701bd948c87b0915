// StatusMonitor and SharedStoreHealth without Redis: which view a snapshot comes from, when the monitor is
// degraded, that it logs once per outage and recovery, and that it does not flap when only writes fail.
import { describe, expect, it } from 'vitest';
import { PairRecorder } from '../../src/state/pair-recorder.js';
import { SharedStoreHealth } from '../../src/state/shared-store-health.js';
import { paperLog2 } from '../../src/detect/entropy.js';
import { StatusMonitor, type StatusSnapshot } from '../../src/state/status-monitor.js';
import { FlakyPairStore, recordingLogger } from '../support/flaky-pair-store.js';

const NOW = 1_700_000_000_000;

function setup(readTimeoutMs = 100) {
  const shared = new FlakyPairStore();
  const log = recordingLogger();
  const health = new SharedStoreHealth({ logger: log.logger, storeKind: 'redis', now: () => NOW });
  const recorder = new PairRecorder({ shared, health, now: () => NOW });
  const seen: StatusSnapshot[] = [];
  const monitor = new StatusMonitor({
    shared,
    local: recorder.local,
    health,
    now: () => NOW,
    readTimeoutMs,
    topSources: 2,
    onSnapshot: (snapshot) => seen.push(snapshot),
  });
  return { shared, log, health, recorder, monitor, seen };
}

describe('StatusMonitor', () => {
  it('answers with a quiet snapshot before the first tick', () => {
    const { monitor } = setup();
    expect(monitor.current()).toMatchObject({ status: 1, reason: 'quiet', normalPairs: 0, computedAt: 0, windowSeconds: 10, degraded: false });
  });

  it('computes the status from the shared window', async () => {
    const { shared, monitor, seen } = setup();
    // Another node's pairs, present only in the shared store.
    await shared.inner.add([{ source: '198.51.100.7', normal: 32, abnormal: 68 }], NOW);
    await monitor.refresh();
    const snapshot = monitor.current();
    expect(snapshot).toMatchObject({
      status: -1,
      reason: 'pairs',
      normalPairs: 32,
      abnormalPairs: 68,
      untrackedPairs: 0,
      deltaBits: 0.5,
      minPairs: 20,
      windowSeconds: 10,
      store: 'redis',
      degraded: false,
      topSources: [{ source: '198.51.100.7', normal: 32, abnormal: 68 }],
      computedAt: NOW,
    });
    expect(snapshot.hNormal).toBeCloseTo(1.644, 3);
    expect(snapshot.hAbnormal).toBeCloseTo(0.556, 3);
    expect(snapshot.distance).toBeCloseTo(paperLog2(32 / 68), 12);
    expect(seen).toEqual([snapshot]);
    expect(monitor.counters()).toEqual({ ticks: 1, degradedTicks: 0 });
  });

  it('reports a quiet server as safe', async () => {
    const { shared, monitor } = setup();
    await shared.inner.add([{ source: 'x', normal: 1, abnormal: 10 }], NOW);
    await monitor.refresh();
    expect(monitor.current()).toMatchObject({ status: 1, reason: 'quiet', abnormalPairs: 10 });
  });

  it('falls back to the local view while reads fail, logs once, and recovers by itself', async () => {
    const { shared, recorder, monitor, log } = setup();
    await shared.inner.add([{ source: 'other-node', normal: 500, abnormal: 0 }], NOW);
    recorder.record('203.0.113.1', 2, 40);
    await recorder.flush();
    shared.windowMode = 'fail';
    for (let i = 0; i < 3; i += 1) await monitor.refresh();
    expect(monitor.current()).toMatchObject({ store: 'memory', degraded: true, normalPairs: 2, abnormalPairs: 40, status: -1 });
    expect(log.warnings).toHaveLength(1);
    expect(log.warnings[0]!.obj).toMatchObject({ operation: 'window' });
    expect(monitor.counters()).toEqual({ ticks: 3, degradedTicks: 3 });

    shared.windowMode = 'ok';
    await monitor.refresh();
    expect(monitor.current()).toMatchObject({ store: 'redis', degraded: false, normalPairs: 502, abnormalPairs: 40 });
    expect(log.infos).toHaveLength(1);
    await monitor.refresh();
    expect(log.infos).toHaveLength(1);
    expect(log.warnings).toHaveLength(1);
  });

  it('treats a read slower than readTimeoutMs as a failure', async () => {
    const { shared, monitor, health } = setup(20);
    shared.windowMode = 'hang';
    await monitor.refresh();
    expect(monitor.current()).toMatchObject({ degraded: true, store: 'memory' });
    expect(health.counters()).toMatchObject({ errors: 1, outages: 1 });
  });

  it('stays degraded without flapping while reads work but writes fail', async () => {
    const { shared, recorder, monitor, log } = setup();
    shared.addMode = 'fail';
    for (let tick = 0; tick < 4; tick += 1) {
      recorder.record('203.0.113.2', 1, 1);
      await recorder.flush();
      await monitor.refresh();
      expect(monitor.current()).toMatchObject({ degraded: true, store: 'memory' });
    }
    expect(log.warnings).toHaveLength(1);
    expect(log.infos).toHaveLength(0);
    // With no traffic there is nothing to write: the next good read ends the outage.
    await monitor.refresh();
    expect(monitor.current()).toMatchObject({ degraded: false, store: 'redis' });
    expect(log.infos).toHaveLength(1);
  });

  it('joins a tick in progress instead of starting a second one', async () => {
    const { shared, monitor } = setup(50);
    shared.windowMode = 'hang';
    const first = monitor.refresh();
    expect(monitor.refresh()).toBe(first);
    await first;
    expect(shared.windowCalls).toBe(1);
  });

  it('ticks on its timer after start and stops on stop', async () => {
    const shared = new FlakyPairStore();
    const health = new SharedStoreHealth({ logger: recordingLogger().logger, storeKind: 'redis' });
    const recorder = new PairRecorder({ shared, health });
    const monitor = new StatusMonitor({ shared, local: recorder.local, health, statusIntervalMs: 10 });
    await monitor.start();
    expect(monitor.current().computedAt).toBeGreaterThan(0);
    const deadline = Date.now() + 2_000;
    while (monitor.counters().ticks < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(monitor.counters().ticks).toBeGreaterThanOrEqual(3);
    await monitor.stop();
    const ticks = monitor.counters().ticks;
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(monitor.counters().ticks).toBe(ticks);
  });

  it('rejects settings it cannot run with', () => {
    const shared = new FlakyPairStore();
    const health = new SharedStoreHealth({ logger: recordingLogger().logger, storeKind: 'redis' });
    const local = new PairRecorder({ shared, health }).local;
    expect(() => new StatusMonitor({ shared, local, health, statusIntervalMs: 0 })).toThrow(RangeError);
    expect(() => new StatusMonitor({ shared, local, health, entropy: { deltaBits: -1 } })).toThrow(RangeError);
  });
});
