// One contract for every SharedKv, run against the memory store and the Redis store (127.0.0.1:6379 or
// PUSHBACK_TEST_REDIS_URL). The memory store runs on a virtual clock; Redis expires by its own clock, so its
// expiry tests wait for real, with short TTLs and margins of 150 ms each way. Redis keys live under a per-run
// prefix and only those keys are deleted afterwards.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { MemoryKv } from '../../src/state/memory-kv.js';
import { createRedisClient, waitForRedisReady, type RedisClient } from '../../src/state/redis-connection.js';
import { RedisKv } from '../../src/state/redis-kv.js';
import type { SharedKv } from '../../src/state/shared-kv.js';
import { deleteKeys, scanKeys } from '../support/redis-keys.js';

const REDIS_URL = process.env.PUSHBACK_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const RUN_PREFIX = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
const T0 = 1_700_000_000_000;

interface Harness {
  kind: 'memory' | 'redis';
  /** Stores opened with the same namespace share their data (two writers); other namespaces are separate. */
  open(namespace: string): Promise<SharedKv>;
  /** The nowMs to pass: a virtual clock for memory, the wall clock for Redis (which ignores it). */
  now(): number;
  /** Lets time pass: moves the virtual clock, or sleeps while Redis's clock moves. */
  elapse(ms: number): Promise<void>;
  /** Commands the store sent to its server while work ran: 0 for memory, which has no server. */
  roundTrips(store: SharedKv, work: () => Promise<unknown>): Promise<number>;
  cleanup(): Promise<void>;
}

function memoryHarness(): Harness {
  const stores = new Map<string, MemoryKv>();
  let clockMs = T0;
  return {
    kind: 'memory',
    async open(namespace) {
      const store = stores.get(namespace) ?? new MemoryKv();
      stores.set(namespace, store);
      return store;
    },
    now: () => clockMs,
    async elapse(ms) {
      clockMs += ms;
    },
    async roundTrips(_store, work) {
      await work();
      return 0;
    },
    async cleanup() {
      await Promise.all([...stores.values()].map((store) => store.close()));
    },
  };
}

function redisHarness(): Harness {
  const clients = new Map<SharedKv, RedisClient>();
  return {
    kind: 'redis',
    async open(namespace) {
      const client = createRedisClient(REDIS_URL, { commandTimeoutMs: 2_000 });
      if (!(await waitForRedisReady(client, 5_000))) throw new Error(`no Redis at ${REDIS_URL}`);
      const store = new RedisKv(client, { keyPrefix: `${RUN_PREFIX}${namespace}:`, ownsClient: true });
      clients.set(store, client);
      return store;
    },
    now: () => Date.now(),
    elapse: (ms) => sleep(ms),
    async roundTrips(store, work) {
      const spy = vi.spyOn(clients.get(store)!, 'sendCommand');
      try {
        await work();
        return spy.mock.calls.length;
      } finally {
        spy.mockRestore();
      }
    },
    async cleanup() {
      await Promise.all([...clients.keys()].map((store) => store.close()));
      await deleteKeys(RUN_PREFIX, REDIS_URL);
    },
  };
}


describe.each([memoryHarness(), redisHarness()])('SharedKv contract: $kind', (harness) => {
  afterAll(() => harness.cleanup());

  it('reads absent keys as undefined and answers empty batches', async () => {
    const store = await harness.open('empty');
    expect(store.kind).toBe(harness.kind);
    expect(await store.getMany(['a', 'b'], harness.now())).toEqual([undefined, undefined]);
    expect(await store.getMany([], harness.now())).toEqual([]);
    expect(await store.incrementMany([], harness.now())).toEqual([]);
    await store.delete([]);
    expect(await store.scan('', 10, harness.now())).toEqual([]);
  });

  it('round-trips set and getMany, in key order, and overwrites value and TTL', async () => {
    const store = await harness.open('roundtrip');
    await store.set('v:1', 'block', 60_000, harness.now());
    await store.set('v:2', '', 60_000, harness.now());
    expect(await store.getMany(['v:2', 'missing', 'v:1'], harness.now())).toEqual(['', undefined, 'block']);
    await store.set('v:1', 'allow', 600_000, harness.now());
    expect(await store.getMany(['v:1'], harness.now())).toEqual(['allow']);
    const [entry] = await store.scan('v:1', 10, harness.now());
    expect(entry!.ttlMs).toBeGreaterThan(60_000);
  });

  it('expires values and counters', async () => {
    const store = await harness.open('expiry');
    await store.set('verdict', 'tarpit', 150, harness.now());
    await store.set('long', 'kept', 60_000, harness.now());
    expect(await store.increment('count', 5, 150, harness.now())).toBe(5);
    expect(await store.getMany(['verdict', 'count'], harness.now())).toEqual(['tarpit', '5']);
    await harness.elapse(300);
    expect(await store.getMany(['verdict', 'count', 'long'], harness.now())).toEqual([undefined, undefined, 'kept']);
    expect((await store.scan('', 10, harness.now())).map((entry) => entry.key)).toEqual(['long']);
    // An expired counter starts over, with a new window.
    expect(await store.increment('count', 2, 60_000, harness.now())).toBe(2);
  });

  it('keeps a fixed window unless slide is asked for', async () => {
    const store = await harness.open('window');
    expect(await store.increment('fixed', 1, 60_000, harness.now())).toBe(1);
    expect(await store.increment('sliding', 1, 60_000, harness.now(), true)).toBe(1);
    await harness.elapse(50);
    expect(await store.increment('fixed', 1, 600_000, harness.now())).toBe(2);
    expect(await store.increment('sliding', 1, 600_000, harness.now(), true)).toBe(2);
    const ttlMs = Object.fromEntries((await store.scan('', 10, harness.now())).map((entry) => [entry.key, entry.ttlMs]));
    expect(ttlMs.fixed).toBeLessThanOrEqual(60_000 - 50);
    expect(ttlMs.fixed).toBeGreaterThan(50_000);
    expect(ttlMs.sliding).toBeGreaterThan(60_000);
  });

  it('ends a fixed window on time while a sliding one lives on', async () => {
    const store = await harness.open('window-expiry');
    await store.incrementMany(
      [
        { key: 'fixed', by: 1, ttlMs: 300 },
        { key: 'sliding', by: 1, ttlMs: 300, slide: true },
      ],
      harness.now(),
    );
    await harness.elapse(200);
    expect(
      await store.incrementMany(
        [
          { key: 'fixed', by: 1, ttlMs: 300 },
          { key: 'sliding', by: 1, ttlMs: 300, slide: true },
        ],
        harness.now(),
      ),
    ).toEqual([2, 2]);
    await harness.elapse(150);
    expect(await store.getMany(['fixed', 'sliding'], harness.now())).toEqual([undefined, '2']);
  });

  it('counts with negative steps and keeps the TTL of an integer written by set', async () => {
    const store = await harness.open('counting');
    expect(await store.increment('n', 10, 60_000, harness.now())).toBe(10);
    expect(await store.increment('n', -15, 60_000, harness.now())).toBe(-5);
    await store.set('seven', '7', 60_000, harness.now());
    expect(await store.increment('seven', 1, 600_000, harness.now())).toBe(8);
    const [seven] = await store.scan('seven', 1, harness.now());
    expect(seven).toMatchObject({ key: 'seven', value: '8' });
    expect(seven!.ttlMs).toBeLessThanOrEqual(60_000);
  });

  it('rejects incrementing a value that is not an integer, leaving it unchanged', async () => {
    const store = await harness.open('not-integer');
    await store.set('word', 'block', 60_000, harness.now());
    await expect(store.increment('word', 1, 60_000, harness.now())).rejects.toThrow(/integer/);
    await expect(store.incrementMany([{ key: 'word', by: 1, ttlMs: 60_000 }], harness.now())).rejects.toThrow(/integer/);
    expect(await store.getMany(['word'], harness.now())).toEqual(['block']);
  });

  it('increments a batch in one round trip and returns the values in order', async () => {
    const store = await harness.open('batch');
    await store.increment('b', 100, 60_000, harness.now());
    let values: number[] = [];
    const trips = await harness.roundTrips(store, async () => {
      values = await store.incrementMany(
        [
          { key: 'a', by: 1, ttlMs: 60_000 },
          { key: 'b', by: 2, ttlMs: 60_000 },
          { key: 'c', by: 3, ttlMs: 60_000 },
          { key: 'a', by: 4, ttlMs: 60_000 },
        ],
        harness.now(),
      );
    });
    expect(values).toEqual([1, 102, 3, 5]);
    expect(trips).toBe(harness.kind === 'redis' ? 1 : 0);
    expect(await store.getMany(['a', 'b', 'c'], harness.now())).toEqual(['5', '102', '3']);
  });

  it('reads many keys in one round trip', async () => {
    const store = await harness.open('mget');
    await store.set('x', '1', 60_000, harness.now());
    let values: Array<string | undefined> = [];
    const keys = Array.from({ length: 50 }, (_, i) => (i === 7 ? 'x' : `absent-${i}`));
    const trips = await harness.roundTrips(store, async () => {
      values = await store.getMany(keys, harness.now());
    });
    expect(trips).toBe(harness.kind === 'redis' ? 1 : 0);
    expect(values.filter((value) => value !== undefined)).toEqual(['1']);
    expect(values[7]).toBe('1');
  });

  it('deletes the keys given and nothing else', async () => {
    const store = await harness.open('delete');
    await store.set('a', '1', 60_000, harness.now());
    await store.set('b', '2', 60_000, harness.now());
    await store.increment('c', 3, 60_000, harness.now());
    await store.delete(['a', 'c', 'never-there']);
    expect(await store.getMany(['a', 'b', 'c'], harness.now())).toEqual([undefined, '2', undefined]);
    expect(await store.increment('c', 1, 60_000, harness.now())).toBe(1);
  });

  it('scans live entries by key prefix, up to a limit, with remaining TTLs', async () => {
    const store = await harness.open('scan');
    for (let i = 0; i < 12; i++) await store.set(`verdict:10.0.0.${i}`, `v${i}`, 60_000, harness.now());
    await store.increment('proven:alice', 3, 120_000, harness.now());
    await store.set('verdict*literal', 'star', 60_000, harness.now());
    await store.set('verdict?', 'question', 60_000, harness.now());
    await store.set('verdict[x]', 'bracket', 60_000, harness.now());

    const verdicts = await store.scan('verdict:', 100, harness.now());
    expect(verdicts.map((entry) => entry.key)).toEqual(Array.from({ length: 12 }, (_, i) => `verdict:10.0.0.${i}`).sort());
    for (const entry of verdicts) {
      expect(entry.value).toBe(`v${entry.key.split('.').pop()}`);
      expect(entry.ttlMs).toBeGreaterThan(50_000);
      expect(entry.ttlMs).toBeLessThanOrEqual(60_000);
    }
    expect(await store.scan('proven:', 10, harness.now())).toEqual([
      { key: 'proven:alice', value: '3', ttlMs: expect.any(Number) as number },
    ]);

    const limited = await store.scan('verdict:', 5, harness.now());
    expect(limited).toHaveLength(5);
    expect(limited.map((entry) => entry.key)).toEqual([...limited.map((entry) => entry.key)].sort());
    for (const entry of limited) expect(verdicts).toContainEqual({ ...entry, ttlMs: expect.any(Number) as number });
    expect(await store.scan('verdict:', 0, harness.now())).toEqual([]);

    // Glob characters in the prefix match only themselves.
    expect((await store.scan('verdict*', 100, harness.now())).map((entry) => entry.value)).toEqual(['star']);
    expect((await store.scan('verdict?', 100, harness.now())).map((entry) => entry.value)).toEqual(['question']);
    expect((await store.scan('verdict[', 100, harness.now())).map((entry) => entry.value)).toEqual(['bracket']);
    expect(await store.scan('nothing', 100, harness.now())).toEqual([]);
    expect(await store.scan('', 100, harness.now())).toHaveLength(16);
  });

  it('shares writes between two stores on the same prefix, including concurrent increments', async () => {
    const writerA = await harness.open('writers');
    const writerB = await harness.open('writers');
    await writerA.set('verdict', 'quarantine', 60_000, harness.now());
    expect(await writerB.getMany(['verdict'], harness.now())).toEqual(['quarantine']);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? writerA : writerB).incrementMany(
          [
            { key: 'shared', by: 1, ttlMs: 60_000 },
            { key: `own-${i % 2}`, by: 2, ttlMs: 60_000 },
          ],
          harness.now(),
        ),
      ),
    );
    expect(await writerA.getMany(['shared', 'own-0', 'own-1'], harness.now())).toEqual(['20', '20', '20']);
    await writerB.delete(['verdict']);
    expect(await writerA.getMany(['verdict'], harness.now())).toEqual([undefined]);
    expect((await writerB.scan('', 10, harness.now())).map((entry) => entry.key)).toEqual(['own-0', 'own-1', 'shared']);
  });

  it('keeps prefixes apart', async () => {
    const left = await harness.open('left');
    const right = await harness.open('right');
    await left.set('k', 'left', 60_000, harness.now());
    await right.increment('k', 1, 60_000, harness.now());
    expect(await left.getMany(['k'], harness.now())).toEqual(['left']);
    expect(await right.getMany(['k'], harness.now())).toEqual(['1']);
  });

  it('stores unicode values and keys with colons, braces and glob characters verbatim', async () => {
    const store = await harness.open('unicode');
    const keys = ['verdict:2001:db8::1', 'rcpt:jürgen@exämple.test', 'helo:{mx}:*?[a]\\', 'emoji:📬'];
    const value = 'blocké 🚫: “tarpit” 30s\n2nd line';
    for (const key of keys) await store.set(key, value, 60_000, harness.now());
    expect(await store.getMany(keys, harness.now())).toEqual(keys.map(() => value));
    expect(await store.increment('count:2001:db8::1', 1, 60_000, harness.now())).toBe(1);
    expect((await store.scan('verdict:2001:', 10, harness.now())).map((entry) => entry.key)).toEqual(['verdict:2001:db8::1']);
    expect((await store.scan('helo:{mx}:*', 10, harness.now())).map((entry) => entry.key)).toEqual(['helo:{mx}:*?[a]\\']);
    expect((await store.scan('emoji:', 10, harness.now()))[0]).toMatchObject({ key: 'emoji:📬', value });
  });

  it('rejects TTLs, steps and limits that are not whole numbers in range', async () => {
    const store = await harness.open('invalid');
    const nowMs = harness.now();
    await expect(store.set('k', 'v', 0, nowMs)).rejects.toThrow(RangeError);
    await expect(store.set('k', 'v', 1.5, nowMs)).rejects.toThrow(RangeError);
    await expect(store.increment('k', 0.5, 1_000, nowMs)).rejects.toThrow(RangeError);
    await expect(store.increment('k', 1, -1, nowMs)).rejects.toThrow(RangeError);
    await expect(store.incrementMany([{ key: 'k', by: 1, ttlMs: 1_000 }, { key: 'j', by: Number.NaN, ttlMs: 1_000 }], nowMs)).rejects.toThrow(
      RangeError,
    );
    await expect(store.scan('', -1, nowMs)).rejects.toThrow(RangeError);
    // A rejected batch is checked before anything is sent, so none of it is applied.
    expect(await store.getMany(['k', 'j'], nowMs)).toEqual([undefined, undefined]);
  });

  it('adds to a counter record in one round trip, writing no zero fields, in a fixed window', async () => {
    const store = await harness.open('record');
    let first: Record<string, number> = {};
    const trips = await harness.roundTrips(store, async () => {
      first = await store.incrementRecord('c:192.0.2.1', { normal: 2, abnormal: 0, early: 1, clean: 0 }, 300, harness.now());
    });
    expect(trips).toBe(harness.kind === 'redis' ? 1 : 0);
    // Zero increments are not written: the record holds only what happened.
    expect(first).toEqual({ normal: 2, early: 1 });
    expect(await store.incrementRecord('c:192.0.2.1', { normal: 3, abnormal: 1, early: 0 }, 600_000, harness.now())).toEqual({ normal: 5, early: 1, abnormal: 1 });
    expect(await store.incrementRecord('c:192.0.2.1', { normal: -5 }, 600_000, harness.now())).toEqual({ normal: 0, early: 1, abnormal: 1 });
    // All zeros: the record is read, and an absent one is not created.
    expect(await store.incrementRecord('c:192.0.2.1', { normal: 0 }, 600_000, harness.now())).toEqual({ normal: 0, early: 1, abnormal: 1 });
    expect(await store.incrementRecord('c:192.0.2.2', { normal: 0, abnormal: 0 }, 600_000, harness.now())).toEqual({});
    expect(await store.incrementRecord('c:192.0.2.2', {}, 600_000, harness.now())).toEqual({});
    // A record is no string: getMany and scan leave it out.
    expect(await store.getMany(['c:192.0.2.1', 'c:192.0.2.2'], harness.now())).toEqual([undefined, undefined]);
    expect(await store.scan('c:', 10, harness.now())).toEqual([]);
    // The window is the first one's (300 ms), whatever later calls ask for.
    await harness.elapse(450);
    expect(await store.incrementRecord('c:192.0.2.1', { normal: 1 }, 60_000, harness.now())).toEqual({ normal: 1 });
  });

  it('keeps records, counters and values from being mistaken for one another', async () => {
    const store = await harness.open('record-types');
    await store.set('plain', 'block', 60_000, harness.now());
    await store.setListed('listed', 'block', 60_000, harness.now());
    await store.increment('counter', 1, 60_000, harness.now());
    await store.incrementRecord('record', { n: 1 }, 60_000, harness.now());
    for (const key of ['plain', 'listed', 'counter']) await expect(store.incrementRecord(key, { n: 1 }, 60_000, harness.now()), key).rejects.toThrow();
    await expect(store.incrementRecord('plain', {}, 60_000, harness.now())).rejects.toThrow();
    await expect(store.increment('record', 1, 60_000, harness.now())).rejects.toThrow();
    await expect(store.incrementRecord('record', { n: 0.5 }, 60_000, harness.now())).rejects.toThrow(RangeError);
    await expect(store.incrementRecord('record', { n: 1 }, 0, harness.now())).rejects.toThrow(RangeError);
    expect(await store.incrementRecord('record', {}, 60_000, harness.now())).toEqual({ n: 1 });
    expect(await store.getMany(['plain', 'listed', 'counter'], harness.now())).toEqual(['block', 'block', '1']);
  });

  it('lists what setListed wrote, with remaining TTLs, until it expires, is deleted or set plainly', async () => {
    const store = await harness.open('listed');
    expect(await store.listed(10, harness.now())).toEqual([]);
    await store.setListed('v:192.0.2.1', 'reject', 60_000, harness.now());
    await store.setListed('v:192.0.2.0/24', 'tarpit', 150, harness.now());
    await store.setListed('v:2001:db8::/64', 'defer', 60_000, harness.now());
    await store.set('pv:192.0.2.9', 'proven', 60_000, harness.now());
    await store.increment('counter', 1, 60_000, harness.now());
    await store.incrementRecord('c:192.0.2.1', { normal: 1 }, 60_000, harness.now());
    const listed = await store.listed(10, harness.now());
    expect(listed.map((entry) => [entry.key, entry.value])).toEqual([
      ['v:192.0.2.0/24', 'tarpit'],
      ['v:192.0.2.1', 'reject'],
      ['v:2001:db8::/64', 'defer'],
    ]);
    const ttlMs = Object.fromEntries(listed.map((entry) => [entry.key, entry.ttlMs]));
    expect(ttlMs['v:192.0.2.1']).toBeGreaterThan(50_000);
    expect(ttlMs['v:192.0.2.1']).toBeLessThanOrEqual(60_000);
    expect(ttlMs['v:192.0.2.0/24']).toBeLessThanOrEqual(150);
    // A listed value reads like any other.
    expect(await store.getMany(['v:192.0.2.1'], harness.now())).toEqual(['reject']);
    // setListed again replaces value and TTL; the entry is listed once.
    await store.setListed('v:192.0.2.1', 'defer', 600_000, harness.now());
    await harness.elapse(300);
    const later = await store.listed(10, harness.now());
    expect(later.map((entry) => [entry.key, entry.value])).toEqual([['v:192.0.2.1', 'defer'], ['v:2001:db8::/64', 'defer']]);
    expect(later[0]!.ttlMs).toBeGreaterThan(500_000);
    // Over the limit: those expiring last.
    expect((await store.listed(1, harness.now())).map((entry) => entry.key)).toEqual(['v:192.0.2.1']);
    expect(await store.listed(0, harness.now())).toEqual([]);
    await expect(store.listed(-1, harness.now())).rejects.toThrow(RangeError);
    // Deleted, or written by set(): off the list.
    await store.delete(['v:192.0.2.1']);
    await store.set('v:2001:db8::/64', 'plain now', 60_000, harness.now());
    expect(await store.listed(10, harness.now())).toEqual([]);
    expect(await store.getMany(['v:2001:db8::/64'], harness.now())).toEqual(['plain now']);
    // Listed entries still show in admin listings.
    await store.setListed('v:198.51.100.1', 'reject', 60_000, harness.now());
    expect((await store.scan('v:', 10, harness.now())).map((entry) => entry.key)).toEqual(['v:198.51.100.1', 'v:2001:db8::/64']);
  });

  it('lists in at most two round trips however many other keys the store holds', async () => {
    const store = await harness.open('listed-cost');
    for (let i = 0; i < 5; i++) await store.setListed(`v:192.0.2.${i}`, 'reject', 60_000, harness.now());
    await Promise.all(Array.from({ length: 2_000 }, (_, i) => store.incrementRecord(`c:10.0.${i >> 8}.${i & 255}`, { normal: 1 }, 60_000, harness.now())));
    let listed: Array<{ key: string }> = [];
    const trips = await harness.roundTrips(store, async () => {
      listed = await store.listed(100, harness.now());
    });
    expect(listed).toHaveLength(5);
    expect(trips).toBe(harness.kind === 'redis' ? 2 : 0);
  });

  it.runIf(harness.kind === 'redis')('lays keys out as <prefix>{kv}:<key> with an expiry, inside its prefix', async () => {
    const admin = new Redis(REDIS_URL);
    try {
      const decoy = `${RUN_PREFIX}layout:decoy`;
      await admin.set(decoy, 'untouched');
      const store = await harness.open('layout');
      await store.set('verdict:192.0.2.1', 'block', 60_000, harness.now());
      await store.incrementMany([{ key: 'count:192.0.2.1', by: 2, ttlMs: 30_000 }], harness.now());
      await store.incrementRecord('c:192.0.2.1', { normal: 2, abnormal: 0 }, 30_000, harness.now());
      await store.setListed('v:192.0.2.1', 'reject', 90_000, harness.now());
      await store.delete(['decoy']);
      expect(await scanKeys(admin, `${RUN_PREFIX}layout:*`)).toEqual([
        `${RUN_PREFIX}layout:decoy`,
        `${RUN_PREFIX}layout:{kv}#listed`,
        `${RUN_PREFIX}layout:{kv}:c:192.0.2.1`,
        `${RUN_PREFIX}layout:{kv}:count:192.0.2.1`,
        `${RUN_PREFIX}layout:{kv}:v:192.0.2.1`,
        `${RUN_PREFIX}layout:{kv}:verdict:192.0.2.1`,
      ]);
      // A counter record is one hash holding only the fields that are not 0.
      expect(await admin.hgetall(`${RUN_PREFIX}layout:{kv}:c:192.0.2.1`)).toEqual({ normal: '2' });
      expect(await admin.pttl(`${RUN_PREFIX}layout:{kv}:c:192.0.2.1`)).toBeGreaterThan(25_000);
      // The index: the caller's key scored by its expiry on Redis's clock; it expires with its last member.
      const [redisSeconds] = await admin.time();
      const [member, score] = await admin.zrange(`${RUN_PREFIX}layout:{kv}#listed`, '0', '-1', 'WITHSCORES');
      expect(member).toBe('v:192.0.2.1');
      expect(Number(score) - Number(redisSeconds) * 1000).toBeGreaterThan(85_000);
      expect(Number(score) - Number(redisSeconds) * 1000).toBeLessThanOrEqual(91_000);
      expect(await admin.pttl(`${RUN_PREFIX}layout:{kv}#listed`)).toBeGreaterThan(85_000);
      // An operator's permanent listing by hand.
      await admin.zadd(`${RUN_PREFIX}layout:{kv}#listed`, '+inf', 'v:203.0.113.0/24');
      await admin.set(`${RUN_PREFIX}layout:{kv}:v:203.0.113.0/24`, 'manual');
      expect(await store.listed(10, harness.now())).toContainEqual({ key: 'v:203.0.113.0/24', value: 'manual', ttlMs: Number.POSITIVE_INFINITY });
      const countTtlMs = await admin.pttl(`${RUN_PREFIX}layout:{kv}:count:192.0.2.1`);
      expect(countTtlMs).toBeGreaterThan(25_000);
      expect(countTtlMs).toBeLessThanOrEqual(30_000);
      expect(await admin.pttl(`${RUN_PREFIX}layout:{kv}:verdict:192.0.2.1`)).toBeGreaterThan(55_000);
      expect(await admin.get(decoy)).toBe('untouched');
      expect(await admin.pttl(decoy)).toBe(-1);
      // A key written without expiry by someone else still shows in admin listings, as never expiring.
      await admin.set(`${RUN_PREFIX}layout:{kv}:manual`, 'x');
      expect(await store.scan('manual', 10, harness.now())).toEqual([{ key: 'manual', value: 'x', ttlMs: Number.POSITIVE_INFINITY }]);
      // ... and its first increment through the store gives it the expiry it lacked.
      await admin.set(`${RUN_PREFIX}layout:{kv}:bare-counter`, '4');
      expect(await store.increment('bare-counter', 1, 10_000, harness.now())).toBe(5);
      expect(await admin.pttl(`${RUN_PREFIX}layout:{kv}:bare-counter`)).toBeGreaterThan(0);
    } finally {
      await admin.quit();
    }
  });

  it.runIf(harness.kind === 'memory')('bounds each class apart: no number of counters evicts a value or a listed entry', async () => {
    const store = new MemoryKv({ maxEntries: { counters: 100, values: 2, listed: 2 } });
    const nowMs = T0;
    // Verdicts and proven marks that expire long before the counters.
    await store.setListed('v:192.0.2.66', 'reject', 600_000, nowMs);
    await store.set('pv:192.0.2.7', 'proven', 60_000, nowMs);
    for (let i = 0; i < 10_000; i++) {
      await store.incrementRecord(`c:10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, { normal: 2 }, 3_600_000, nowMs);
      await store.increment(`n:${i}`, 1, 3_600_000, nowMs);
    }
    expect(store.storedEntriesOf('counters')).toBe(100);
    expect(store.evictedEntriesOf('counters')).toBe(19_900);
    expect([store.evictedEntriesOf('values'), store.evictedEntriesOf('listed')]).toEqual([0, 0]);
    expect(await store.getMany(['v:192.0.2.66', 'pv:192.0.2.7'], nowMs)).toEqual(['reject', 'proven']);
    expect((await store.listed(10, nowMs)).map((entry) => entry.key)).toEqual(['v:192.0.2.66']);
    // Listed entries compete only with listed ones: the one expiring soonest goes.
    await store.setListed('v:192.0.2.67', 'reject', 300_000, nowMs);
    await store.setListed('v:192.0.2.68', 'reject', 900_000, nowMs);
    expect((await store.listed(10, nowMs)).map((entry) => entry.key)).toEqual(['v:192.0.2.66', 'v:192.0.2.68']);
    expect(store.storedEntries).toBe(100 + 1 + 2);
    expect(store.maxEntriesOf('listed')).toBe(2);
    await store.close();
  });

  it.runIf(harness.kind === 'memory')('stays within maxEntries per class by evicting the entries expiring soonest', async () => {
    const store = new MemoryKv({ maxEntries: 3 });
    const nowMs = T0;
    await store.increment('counter:long', 1, 3_600_000, nowMs);
    await store.increment('counter:a', 1, 1_000, nowMs);
    await store.incrementRecord('counter:record', { n: 1 }, 600_000, nowMs);
    // Full: a new counter evicts the counter expiring soonest, never the long one.
    await store.increment('counter:b', 1, 2_000, nowMs);
    expect(store.storedEntriesOf('counters')).toBe(3);
    expect(store.evictedEntries).toBe(1);
    expect(await store.getMany(['counter:long', 'counter:a', 'counter:b'], nowMs)).toEqual(['1', undefined, '1']);
    // Values fill a class of their own: no counter makes room for them.
    await store.set('verdict', 'block', 3_600_000, nowMs);
    await store.set('proven', 'yes', 600_000, nowMs);
    await store.set('short', 'x', 1_000, nowMs);
    expect([store.storedEntries, store.evictedEntries]).toEqual([6, 1]);
    // Overwriting or incrementing a present key needs no room.
    await store.set('proven', 'still', 600_000, nowMs);
    await store.increment('counter:b', 1, 2_000, nowMs);
    await store.incrementRecord('counter:record', { n: 1 }, 600_000, nowMs);
    expect(store.evictedEntries).toBe(1);
    // Expired entries go first and are not counted as evictions.
    await store.set('late', 'x', 60_000, nowMs + 5_000);
    expect(store.evictedEntries).toBe(1);
    expect(await store.getMany(['verdict', 'proven', 'counter:b', 'late', 'short'], nowMs + 5_000)).toEqual(['block', 'still', undefined, 'x', undefined]);
    // A flood of new counters never grows the store past the bounds and leaves every value in place.
    for (let i = 0; i < 10_000; i++) await store.increment(`flood:${i}`, 1, 10_000 + (i % 7), nowMs + 5_000);
    expect(store.storedEntriesOf('counters')).toBe(3);
    expect(store.storedEntries).toBe(6);
    expect(await store.getMany(['verdict', 'proven', 'late'], nowMs + 5_000)).toEqual(['block', 'still', 'x']);
    await store.close();
  });

  it.runIf(harness.kind === 'memory')('rejects a maxEntries below 1', () => {
    expect(() => new MemoryKv({ maxEntries: 0 })).toThrow(RangeError);
    expect(() => new MemoryKv({ maxEntries: { listed: 0.5 } })).toThrow(RangeError);
  });
});
