// One contract for every PairStore, run against the memory store and the Redis store (127.0.0.1:6379 or
// PUSHBACK_TEST_REDIS_URL). Time is injected as nowMs, never slept. Redis keys live under a per-run prefix and
// only those keys are deleted afterwards.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryPairStore } from '../../src/state/memory-pair-store.js';
import { UNTRACKED_SOURCE, type PairStore, type PairWindowOptions } from '../../src/state/pair-store.js';
import { createRedisClient, waitForRedisReady } from '../../src/state/redis-connection.js';
import { RedisPairStore } from '../../src/state/redis-pair-store.js';
import { deleteKeys, scanKeys } from '../support/redis-keys.js';

const REDIS_URL = process.env.PUSHBACK_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const RUN_PREFIX = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
const EXPIRY_SLACK_SECONDS = 5;
/** A bucket boundary, so offsets below read as seconds into the window. */
const T0 = 1_700_000_000_000;

interface Harness {
  kind: 'memory' | 'redis';
  /** Stores opened with the same namespace share their counts (two writers); other namespaces are separate. */
  open(namespace: string, options?: Partial<PairWindowOptions>): Promise<PairStore>;
  cleanup(): Promise<void>;
}

function memoryHarness(): Harness {
  const stores = new Map<string, MemoryPairStore>();
  return {
    kind: 'memory',
    async open(namespace, options) {
      const existing = stores.get(namespace);
      if (existing) return existing;
      const store = new MemoryPairStore(options);
      stores.set(namespace, store);
      return store;
    },
    async cleanup() {
      await Promise.all([...stores.values()].map((store) => store.close()));
    },
  };
}

function redisHarness(): Harness {
  const stores: PairStore[] = [];
  return {
    kind: 'redis',
    async open(namespace, options) {
      const client = createRedisClient(REDIS_URL, { commandTimeoutMs: 2_000 });
      if (!(await waitForRedisReady(client, 5_000))) throw new Error(`no Redis at ${REDIS_URL}`);
      const store = new RedisPairStore(client, {
        ...options,
        keyPrefix: `${RUN_PREFIX}${namespace}:`,
        expirySlackSeconds: EXPIRY_SLACK_SECONDS,
        ownsClient: true,
      });
      stores.push(store);
      return store;
    },
    async cleanup() {
      await Promise.all(stores.map((store) => store.close()));
      await deleteKeys(RUN_PREFIX, REDIS_URL);
    },
  };
}


const at = (seconds: number): number => T0 + seconds * 1000;

describe.each([memoryHarness(), redisHarness()])('PairStore contract: $kind', (harness) => {
  afterAll(() => harness.cleanup());

  it('starts empty', async () => {
    const store = await harness.open('empty');
    expect(store.kind).toBe(harness.kind);
    expect(await store.window(at(0), 10)).toEqual({ windowSeconds: 10, normal: 0, abnormal: 0, untrackedPairs: 0, sources: [] });
  });

  it('adds up counts across batches, buckets and sources', async () => {
    const store = await harness.open('counts');
    await store.add([{ source: '192.0.2.1', normal: 3, abnormal: 1 }, { source: '192.0.2.2', normal: 2, abnormal: 0 }], at(1));
    await store.add([{ source: '192.0.2.1', normal: 4, abnormal: 2 }], at(1.5));
    await store.add([{ source: '192.0.2.1', normal: 1, abnormal: 0 }, { source: '192.0.2.3', normal: 0, abnormal: 0 }], at(4));
    await store.add([{ source: UNTRACKED_SOURCE, normal: 5, abnormal: 6 }], at(4));
    await store.add([], at(4));
    expect(await store.window(at(5), 10)).toEqual({
      windowSeconds: 10,
      normal: 15,
      abnormal: 9,
      untrackedPairs: 11,
      sources: [
        { source: '192.0.2.1', normal: 8, abnormal: 3 },
        { source: '192.0.2.2', normal: 2, abnormal: 0 },
      ],
    });
  });

  it('keeps large per-source counts exact', async () => {
    const store = await harness.open('large');
    const big = { source: 'big', normal: 2 ** 26 - 1, abnormal: 100_000_000 };
    await store.add([big, { source: 'small', normal: 1, abnormal: 99_999_999 }], at(1));
    const window = await store.window(at(1), 2);
    expect(window.sources).toEqual([big, { source: 'small', normal: 1, abnormal: 99_999_999 }]);
    expect(window).toMatchObject({ normal: 2 ** 26, abnormal: 199_999_999 });
  });

  it('slides: buckets older than the window stop counting', async () => {
    const store = await harness.open('slide');
    await store.add([{ source: 'a', normal: 1, abnormal: 0 }], at(0));
    await store.add([{ source: 'b', normal: 10, abnormal: 0 }], at(5));
    await store.add([{ source: 'c', normal: 100, abnormal: 0 }], at(9.999));
    const normalAt = async (seconds: number) => (await store.window(at(seconds), 0)).normal;
    expect(await normalAt(9.999)).toBe(111);
    expect(await normalAt(10)).toBe(110);
    expect((await store.window(at(10), 5)).sources.map((s) => s.source)).toEqual(['c', 'b']);
    expect(await normalAt(14.999)).toBe(110);
    expect(await normalAt(15)).toBe(100);
    // c sits in bucket 9, so the last window holding it is the one ending in bucket 18.
    expect(await normalAt(18.999)).toBe(100);
    expect(await normalAt(19)).toBe(0);
  });

  it('slides in steps of bucketSeconds', async () => {
    const store = await harness.open('coarse', { windowSeconds: 6, bucketSeconds: 2 });
    await store.add([{ source: 'a', normal: 1, abnormal: 1 }], at(1.999));
    await store.add([{ source: 'a', normal: 2, abnormal: 0 }], at(2));
    expect((await store.window(at(5.999), 1)).normal).toBe(3);
    expect(await store.window(at(6), 1)).toMatchObject({ windowSeconds: 6, normal: 2, abnormal: 0 });
    expect((await store.window(at(8), 1)).normal).toBe(0);
  });

  it('ignores pairs added for a bucket that is already out of the window', async () => {
    const store = await harness.open('late');
    await store.add([{ source: 'new', normal: 1, abnormal: 0 }], at(20));
    await store.add([{ source: 'old', normal: 50, abnormal: 50 }], at(10));
    expect(await store.window(at(20), 5)).toMatchObject({ normal: 1, abnormal: 0, sources: [{ source: 'new' }] });
    await store.add([{ source: 'recent', normal: 0, abnormal: 2 }], at(15));
    expect((await store.window(at(20), 5)).abnormal).toBe(2);
  });

  it('ranks sources by abnormal desc, then normal desc, then source asc, over the whole window', async () => {
    const store = await harness.open('rank');
    await store.add(
      [
        { source: '10.0.0.9', normal: 9, abnormal: 5 },
        { source: '10.0.0.2', normal: 1, abnormal: 5 },
        { source: '10.0.0.3', normal: 9, abnormal: 5 },
        { source: '10.0.0.4', normal: 50, abnormal: 0 },
        { source: '10.0.0.5', normal: 0, abnormal: 4 },
      ],
      at(1),
    );
    // Split over two buckets, 10.0.0.5 overtakes everyone only by its sum.
    await store.add([{ source: '10.0.0.5', normal: 0, abnormal: 3 }], at(2));
    const window = await store.window(at(3), 10);
    expect(window.sources).toEqual([
      { source: '10.0.0.5', normal: 0, abnormal: 7 },
      { source: '10.0.0.3', normal: 9, abnormal: 5 },
      { source: '10.0.0.9', normal: 9, abnormal: 5 },
      { source: '10.0.0.2', normal: 1, abnormal: 5 },
      { source: '10.0.0.4', normal: 50, abnormal: 0 },
    ]);
    expect((await store.window(at(3), 2)).sources.map((s) => s.source)).toEqual(['10.0.0.5', '10.0.0.3']);
    expect((await store.window(at(3), 0)).sources).toEqual([]);
    expect((await store.window(at(3), 0)).abnormal).toBe(22);
  });

  it('sums two writers on the same namespace, including concurrent batches', async () => {
    const writerA = await harness.open('writers');
    const writerB = await harness.open('writers');
    const batches = Array.from({ length: 20 }, (_, i) => ({ writer: i % 2 === 0 ? writerA : writerB, i }));
    await Promise.all(
      batches.map(({ writer, i }) =>
        writer.add([{ source: 'shared', normal: 1, abnormal: 1 }, { source: `own-${i % 2}`, normal: 2, abnormal: 0 }], at(3 + (i % 3))),
      ),
    );
    const seenByA = await writerA.window(at(6), 10);
    expect(seenByA).toMatchObject({ normal: 60, abnormal: 20, untrackedPairs: 0 });
    expect(seenByA.sources).toEqual([
      { source: 'shared', normal: 20, abnormal: 20 },
      { source: 'own-0', normal: 20, abnormal: 0 },
      { source: 'own-1', normal: 20, abnormal: 0 },
    ]);
    expect(await writerB.window(at(6), 10)).toEqual(seenByA);
  });

  it('caps the sources tracked per bucket and counts the rest as untracked', async () => {
    const store = await harness.open('cap', { maxSourcesPerBucket: 3 });
    const flood = ['s1', 's2', 's3', 's4', 's5'].map((source) => ({ source, normal: 1, abnormal: 1 }));
    await store.add(flood, at(1));
    // Sources already tracked keep counting after the cap is reached.
    await store.add([{ source: 's2', normal: 0, abnormal: 5 }, { source: 's6', normal: 3, abnormal: 0 }], at(1));
    const window = await store.window(at(1), 10);
    expect(window).toMatchObject({ normal: 8, abnormal: 10, untrackedPairs: 7 });
    expect(window.sources).toEqual([
      { source: 's2', normal: 1, abnormal: 6 },
      { source: 's1', normal: 1, abnormal: 1 },
      { source: 's3', normal: 1, abnormal: 1 },
    ]);
    await store.add([{ source: 's6', normal: 1, abnormal: 0 }], at(2));
    expect((await store.window(at(2), 10)).sources.map((s) => s.source)).toContain('s6');
  });

  it('keeps namespaces apart', async () => {
    const left = await harness.open('left');
    const right = await harness.open('right');
    await left.add([{ source: 'x', normal: 7, abnormal: 0 }], at(1));
    await right.add([{ source: 'y', normal: 0, abnormal: 3 }], at(1));
    expect(await left.window(at(1), 5)).toMatchObject({ normal: 7, abnormal: 0, sources: [{ source: 'x' }] });
    expect(await right.window(at(1), 5)).toMatchObject({ normal: 0, abnormal: 3, sources: [{ source: 'y' }] });
  });

  it('rejects counts that are not whole numbers >= 0 and a negative topSources', async () => {
    const store = await harness.open('invalid');
    await expect(store.add([{ source: 'x', normal: -1, abnormal: 0 }], at(1))).rejects.toThrow(RangeError);
    await expect(store.add([{ source: 'x', normal: 0.5, abnormal: 0 }], at(1))).rejects.toThrow(RangeError);
    await expect(store.add([{ source: 'x', normal: 1, abnormal: Number.NaN }], at(1))).rejects.toThrow(RangeError);
    await expect(store.window(at(1), -1)).rejects.toThrow(RangeError);
    expect((await store.window(at(1), 5)).normal).toBe(0);
  });

  it.runIf(harness.kind === 'redis')('sets an expiry on every key and stays inside its prefix', async () => {
    const admin = new Redis(REDIS_URL);
    try {
      const decoy = `${RUN_PREFIX}decoy`;
      await admin.set(decoy, 'untouched');
      const neighbour = await harness.open('neighbour');
      await neighbour.add([{ source: 'n', normal: 4, abnormal: 4 }], Date.now());
      const neighbourKeys = await scanKeys(admin, `${RUN_PREFIX}neighbour:*`);
      const neighbourDump = await Promise.all(neighbourKeys.map((key) => admin.dump(key)));

      const store = await harness.open('expiry');
      const nowMs = Date.now();
      await store.add([{ source: 'a', normal: 1, abnormal: 2 }], nowMs);
      await store.add([{ source: UNTRACKED_SOURCE, normal: 1, abnormal: 0 }], nowMs - 3_000);
      await store.window(nowMs, 5);

      const keys = await scanKeys(admin, `${RUN_PREFIX}expiry:*`);
      expect(keys).toHaveLength(3);
      for (const key of keys) {
        expect(key).toMatch(/^pbtest:.*:expiry:\{pairs\}:[ts]:1:\d+$/);
        const ttlSeconds = await admin.ttl(key);
        expect(ttlSeconds).toBeGreaterThan(0);
        expect(ttlSeconds).toBeLessThanOrEqual(10 + EXPIRY_SLACK_SECONDS);
      }
      // The window's scratch key is gone, the decoy and the neighbour's keys are byte for byte unchanged.
      expect(keys.some((key) => key.endsWith(':scratch'))).toBe(false);
      expect(await admin.get(decoy)).toBe('untouched');
      expect(await admin.ttl(decoy)).toBe(-1);
      expect(await scanKeys(admin, `${RUN_PREFIX}neighbour:*`)).toEqual(neighbourKeys);
      expect(await Promise.all(neighbourKeys.map((key) => admin.dump(key)))).toEqual(neighbourDump);
      expect(new Set((await scanKeys(admin, `${RUN_PREFIX}*`)).map((key) => key.slice(RUN_PREFIX.length).split(':')[0]))).not.toContain('');
    } finally {
      await admin.quit();
    }
  });
});
