// PairRecorder: batching on the hot path, the local view it always keeps, caps, and what happens to a batch
// when the shared store fails or hangs (dropped from the shared view, counted, logged once).
import { describe, expect, it } from 'vitest';
import { MemoryPairStore } from '../../src/state/memory-pair-store.js';
import { PairRecorder } from '../../src/state/pair-recorder.js';
import { UNTRACKED_SOURCE } from '../../src/state/pair-store.js';
import { SharedStoreHealth, TimeoutError, withTimeout } from '../../src/state/shared-store-health.js';
import { FlakyPairStore, recordingLogger } from '../support/flaky-pair-store.js';

const NOW = 1_700_000_000_000;

function setup(options: { maxPendingSources?: number; flushTimeoutMs?: number } = {}) {
  const shared = new FlakyPairStore();
  const log = recordingLogger();
  const health = new SharedStoreHealth({ logger: log.logger, storeKind: 'redis', now: () => NOW });
  const recorder = new PairRecorder({ shared, health, now: () => NOW, flushIntervalMs: 10, ...options });
  return { shared, log, health, recorder };
}

describe('PairRecorder', () => {
  it('merges records per source into one batch per flush, and keeps them locally too', async () => {
    const { shared, recorder, health } = setup();
    recorder.record('192.0.2.1', 1, 0);
    recorder.record('192.0.2.1', 1, 2);
    recorder.record('192.0.2.2', 0, 1);
    await recorder.flush();
    expect(shared.batches).toEqual([
      [
        { source: '192.0.2.1', normal: 2, abnormal: 2 },
        { source: '192.0.2.2', normal: 0, abnormal: 1 },
      ],
    ]);
    expect(recorder.local.windowNow(NOW, 5)).toMatchObject({ normal: 2, abnormal: 3, sources: [{ source: '192.0.2.1' }, { source: '192.0.2.2' }] });
    expect((await shared.window(NOW, 0)).abnormal).toBe(3);
    expect(recorder.counters()).toEqual({ pairsRecorded: 5, flushes: 1, flushFailures: 0, pairsDroppedFromShared: 0 });
    expect(health.counters()).toEqual({ roundTrips: 1, errors: 0, outages: 0 });
    // Nothing pending: no round trip.
    await recorder.flush();
    expect(shared.batches).toHaveLength(1);
    expect(health.counters().roundTrips).toBe(1);
  });

  it('mirrors the shared store\'s window in its local view', () => {
    const shared = new FlakyPairStore(new MemoryPairStore({ windowSeconds: 6, bucketSeconds: 2 }));
    const health = new SharedStoreHealth({ logger: recordingLogger().logger, storeKind: 'redis' });
    const { local } = new PairRecorder({ shared, health });
    expect([local.windowSeconds, local.bucketSeconds]).toEqual([6, 2]);
  });

  it('counts sources beyond maxPendingSources as untracked pairs', async () => {
    const { shared, recorder } = setup({ maxPendingSources: 2 });
    recorder.record('a', 1, 0);
    recorder.record('b', 1, 0);
    recorder.record('c', 1, 1);
    recorder.record('a', 1, 0);
    recorder.record(UNTRACKED_SOURCE, 0, 4);
    await recorder.flush();
    expect(shared.batches[0]).toEqual([
      { source: 'a', normal: 2, abnormal: 0 },
      { source: 'b', normal: 1, abnormal: 0 },
      { source: UNTRACKED_SOURCE, normal: 1, abnormal: 5 },
    ]);
    expect(recorder.local.windowNow(NOW, 5)).toMatchObject({ normal: 4, abnormal: 5, untrackedPairs: 6 });
  });

  it('rejects counts that are not whole numbers >= 0', () => {
    const { recorder } = setup();
    expect(() => recorder.record('a', -1, 0)).toThrow(RangeError);
    expect(() => recorder.record('a', 0, 1.5)).toThrow(RangeError);
    expect(recorder.counters().pairsRecorded).toBe(0);
  });

  it('drops a failed batch from the shared view only, and logs the outage once', async () => {
    const { shared, recorder, health, log } = setup();
    shared.addMode = 'fail';
    for (let i = 0; i < 3; i += 1) {
      recorder.record('203.0.113.5', 1, 9);
      await expect(recorder.flush()).resolves.toBeUndefined();
    }
    expect(recorder.counters()).toMatchObject({ flushes: 3, flushFailures: 3, pairsDroppedFromShared: 30 });
    expect(recorder.local.windowNow(NOW, 0)).toMatchObject({ normal: 3, abnormal: 27 });
    expect((await shared.inner.window(NOW, 0)).abnormal).toBe(0);
    expect(health.degraded).toBe(true);
    expect(health.counters()).toEqual({ roundTrips: 3, errors: 3, outages: 1 });
    expect(log.warnings).toHaveLength(1);
    expect(log.warnings[0]!.obj).toMatchObject({ store: 'redis', operation: 'flush', err: 'simulated add failure' });
    // The next batch is not burdened with the dropped ones.
    shared.addMode = 'ok';
    recorder.record('203.0.113.5', 1, 0);
    await recorder.flush();
    expect((await shared.inner.window(NOW, 0)).normal).toBe(1);
  });

  it('gives up on a hanging store after flushTimeoutMs and keeps one flush in flight', async () => {
    const { shared, recorder } = setup({ flushTimeoutMs: 30 });
    shared.addMode = 'hang';
    recorder.record('a', 1, 0);
    const first = recorder.flush();
    recorder.record('b', 1, 0);
    expect(recorder.flush()).toBe(first);
    await first;
    expect(recorder.counters()).toMatchObject({ flushes: 1, flushFailures: 1, pairsDroppedFromShared: 1 });
    shared.addMode = 'ok';
    await recorder.flush();
    expect(shared.batches.at(-1)).toEqual([{ source: 'b', normal: 1, abnormal: 0 }]);
  });

  it('flushes on its timer and once more on stop', async () => {
    const { shared, recorder } = setup();
    recorder.start();
    recorder.record('a', 1, 0);
    const deadline = Date.now() + 2_000;
    while (shared.batches.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(shared.batches).toHaveLength(1);
    recorder.record('b', 2, 0);
    await recorder.stop();
    expect(shared.batches.at(-1)).toEqual([{ source: 'b', normal: 2, abnormal: 0 }]);
    const batches = shared.batches.length;
    recorder.record('c', 1, 0);
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(shared.batches).toHaveLength(batches);
  });
});

describe('withTimeout', () => {
  it('passes values and errors through and times out with TimeoutError', async () => {
    await expect(withTimeout(Promise.resolve(7), 50, 'x')).resolves.toBe(7);
    await expect(withTimeout(Promise.reject(new Error('boom')), 50, 'x')).rejects.toThrow('boom');
    await expect(withTimeout(new Promise(() => undefined), 10, 'slow call')).rejects.toThrow(TimeoutError);
    await expect(withTimeout(new Promise(() => undefined), 10, 'slow call')).rejects.toThrow('slow call timed out after 10 ms');
  });
});
