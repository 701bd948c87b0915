// A flood of short sessions from fresh addresses against the screen's shared state, on the memory store and on the
// real Redis (127.0.0.1:6379 or PUSHBACK_TEST_REDIS_URL, under a prefix of this run's own): 50,000 sessions from
// fresh IPv4 addresses, then 50,000 from random interface ids of one IPv6 /64. A reject verdict stored before the
// flood must still hold at connect and in the firewall export, and the keys the store holds for the flood must stay
// bounded: one counter record per IPv4 address (never seven, never a zero), one for the whole /64. The screen is
// called directly (no SMTP), so the flood takes seconds.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import { FirewallExporter } from '../../src/enforce/firewall-export.js';
import { Screen } from '../../src/policy/screen.js';
import { noMisbehaviour, type SessionRecord } from '../../src/session/record.js';
import { DEFAULT_MAX_KV_ENTRIES, MemoryKv } from '../../src/state/memory-kv.js';
import { createRedisClient, waitForRedisReady } from '../../src/state/redis-connection.js';
import { RedisKv } from '../../src/state/redis-kv.js';
import type { SharedKv } from '../../src/state/shared-kv.js';
import { deleteKeys, scanKeys, TEST_REDIS_URL } from '../support/redis-keys.js';

const SESSIONS = 50_000;
/** Sessions learned from at once: the learning queue runs up to 512 (main.ts). */
const IN_FLIGHT = 500;
const T0 = 1_700_000_000_000;
const RUN_PREFIX = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
const REJECTED_V4 = '198.51.100.66';
const REJECTED_V6 = '2001:db8:feed::66';

const parsed = parsePolicyText('state: { commandTimeoutMs: 5000 }\n', 'flood.yaml', {});
if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
const policy = parsed.policy;

/** EHLO and QUIT, or (clean) one message relayed: nothing a detector scores. */
function shortSession(client: string, clean: boolean): SessionRecord {
  return {
    session: `s-${client}`, client, clientPort: 40_000, local: '127.0.0.1', localPort: 25, transactions: [],
    outcome: clean ? 'relayed' : 'no-transaction', end: 'quit', pairs: { normal: clean ? 6 : 2, abnormal: 0 },
    commands: clean ? 6 : 2, bytesIn: 40, bytesOut: 200, packets: 4, misbehaviour: noMisbehaviour(), screen: 'pass', durationMs: 5,
  };
}

/** HTTP on the SMTP port: non-SMTP, a reject verdict. */
function httpSession(client: string): SessionRecord {
  return { ...shortSession(client, false), outcome: 'dropped', end: 'dropped', pairs: { normal: 1, abnormal: 0 }, misbehaviour: { ...noMisbehaviour(), nonSmtp: 1 } };
}

function freshV4(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

function freshV6(): string {
  const ids = [...randomBytes(8)].map((byte) => byte.toString(16).padStart(2, '0'));
  return `2001:db8:bad:64:${ids[0]}${ids[1]}:${ids[2]}${ids[3]}:${ids[4]}${ids[5]}:${ids[6]}${ids[7]}`;
}

interface Harness {
  kind: 'memory' | 'redis';
  open(scenario: string): Promise<SharedKv>;
  /** Keys the store holds for the scenario. */
  keys(store: SharedKv, scenario: string): Promise<number>;
  cleanup(): Promise<void>;
}

function memoryHarness(): Harness {
  return {
    kind: 'memory',
    // The store main.ts builds: default bounds.
    open: async () => new MemoryKv(),
    keys: async (store) => (store as MemoryKv).storedEntries,
    cleanup: async () => undefined,
  };
}

function redisHarness(): Harness {
  const stores: SharedKv[] = [];
  return {
    kind: 'redis',
    async open(scenario) {
      const client = createRedisClient(TEST_REDIS_URL, { commandTimeoutMs: 5_000 });
      if (!(await waitForRedisReady(client, 5_000))) throw new Error(`no Redis at ${TEST_REDIS_URL}`);
      const store = new RedisKv(client, { keyPrefix: `${RUN_PREFIX}${scenario}:`, ownsClient: true });
      stores.push(store);
      return store;
    },
    async keys(_store, scenario) {
      const admin = new Redis(TEST_REDIS_URL);
      try {
        return (await scanKeys(admin, `${RUN_PREFIX}${scenario}:*`)).length;
      } finally {
        await admin.quit();
      }
    },
    async cleanup() {
      await Promise.all(stores.map((store) => store.close()));
      await deleteKeys(RUN_PREFIX);
    },
  };
}

async function flood(kv: SharedKv, addresses: (i: number) => string, rejected: string): Promise<{ atConnect: string; exported: string[]; kvErrors: number }> {
  let clockMs = T0;
  let kvErrors = 0;
  const screen = new Screen({
    policy: () => policy,
    kv,
    status: () => 1,
    prefixes: { suspectPrefix: () => undefined, addSuspect: () => undefined },
    sfds: () => undefined,
    logger: pino({ level: 'silent' }),
    metrics: { verdict: () => undefined, decision: () => undefined, kvError: () => void (kvErrors += 1) },
    quarantineAvailable: () => true,
    now: () => clockMs,
  });
  await screen.sessionEnded(httpSession(rejected));
  expect((await screen.atConnect({ address: rejected, port: 1 })).action).toBe('reject');
  for (let start = 0; start < SESSIONS; start += IN_FLIGHT) {
    const batch: Array<Promise<void>> = [];
    for (let i = start; i < Math.min(start + IN_FLIGHT, SESSIONS); i++) batch.push(screen.sessionEnded(shortSession(addresses(i), i % 2 === 0)));
    await Promise.all(batch);
    clockMs += IN_FLIGHT;
  }
  const exporter = new FirewallExporter({ kv, policy: () => policy, logger: pino({ level: 'silent' }), now: () => clockMs });
  await exporter.refresh();
  await exporter.stop();
  return { atConnect: (await screen.atConnect({ address: rejected, port: 1 })).label, exported: exporter.exportedNow().map((entry) => entry.prefix), kvErrors };
}

describe.each([memoryHarness(), redisHarness()])('a flood of short sessions from fresh addresses: $kind', (harness) => {
  afterAll(() => harness.cleanup());

  it(`keeps a verdict stored before ${SESSIONS} sessions from fresh IPv4 addresses, at one key per address`, async () => {
    const kv = await harness.open('v4');
    const result = await flood(kv, freshV4, REJECTED_V4);
    const keys = await harness.keys(kv, 'v4');
    console.log(`${harness.kind}: ${SESSIONS} sessions from fresh IPv4 addresses leave ${keys} keys (the old layout: ${7 * SESSIONS})`);
    expect(result).toEqual({ atConnect: 'reject:cached', exported: [`${REJECTED_V4}/32`], kvErrors: 0 });
    // One counter record per address, plus the rejected source's record and verdict (and, in Redis, the index).
    expect(keys).toBeLessThanOrEqual(SESSIONS + 3);
    if (kv instanceof MemoryKv) {
      expect(kv.storedEntriesOf('counters')).toBeLessThanOrEqual(DEFAULT_MAX_KV_ENTRIES.counters);
      expect(kv.evictedEntries).toBe(0);
    }
  });

  it(`keeps a verdict stored before ${SESSIONS} sessions from one IPv6 /64, at one record for the /64`, async () => {
    const kv = await harness.open('v6');
    const result = await flood(kv, freshV6, REJECTED_V6);
    const keys = await harness.keys(kv, 'v6');
    console.log(`${harness.kind}: ${SESSIONS} sessions from random interface ids of one IPv6 /64 leave ${keys} keys (the old layout: ${7 * SESSIONS})`);
    expect(result).toEqual({ atConnect: 'reject:cached', exported: [`${REJECTED_V6}/128`], kvErrors: 0 });
    // The /64's record and proven mark, its /48's proven-network mark (firewall widening), the rejected
    // source's record and verdict, the index.
    expect(keys).toBeLessThan(1_000);
    expect(keys).toBeLessThanOrEqual(6);
  });
});
