// Cluster-wide SharedKv in Redis. Each call is one round trip: MGET, SET PX, DEL, or one Lua script loaded once
// with defineCommand. Redis expires keys by its own clock (SET PX, PEXPIRE), so nowMs is ignored here and every
// proxy agrees on when a verdict ends, whatever its local clock says.
//
// Key layout: <keyPrefix>{kv}:<key>, string values. The {kv} hash tag puts every key in one Cluster slot, so the
// multi-key commands and scripts below are Cluster-safe. The caller's key is used verbatim after the tag (any
// characters, braces included: only the first {…} of a key is its hash tag).
import { Cluster } from 'ioredis';
import type { RedisClient } from './redis-connection.js';
import {
  assertIncrementBy,
  assertIncrements,
  assertScanLimit,
  assertTtlMs,
  compareEntryKeys,
  type KvEntry,
  type KvIncrement,
  type SharedKv,
} from './shared-kv.js';

export interface RedisKvOptions {
  /** Prepended to every key; must not contain '{' or '}', which would move the hash tag. */
  keyPrefix?: string;
  /** Close the client in close(). Off by default: the composition root usually shares one client. */
  ownsClient?: boolean;
}

export const DEFAULT_KV_KEY_PREFIX = 'pushback:';

/** SCAN COUNT hint for admin listings: large enough to finish in few round trips, small enough not to stall Redis. */
const SCAN_COUNT = 500;

/**
 * Increments a batch of counters.
 * KEYS[i] counter i; ARGV[3i-2] by, ARGV[3i-1] ttl ms, ARGV[3i] '1' to restart the TTL on this increment.
 * The TTL is set when the counter has none yet: PTTL -1 after INCRBY means INCRBY just created it. (Comparing the
 * result with `by` would misfire on an existing counter that stood at 0.) Returns the new values in KEYS order.
 */
export const INCREMENT_KV_LUA = `
local values = {}
for i = 1, #KEYS do
  local value = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  if ARGV[3 * i] == '1' or redis.call('PTTL', KEYS[i]) == -1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[3 * i - 1])
  end
  values[i] = value
end
return values
`;

/**
 * Reads values and remaining TTLs of a batch of keys found by SCAN (admin listings).
 * Returns { value1, pttl1, value2, pttl2, ... }; value is false (nil) when the key is gone or is not a string.
 */
export const READ_KV_ENTRIES_LUA = `
local reply = {}
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) ~= 'string' then value = false end
  reply[2 * i - 1] = value
  reply[2 * i] = redis.call('PTTL', KEYS[i])
end
return reply
`;

const INCREMENT_COMMAND = 'pushbackKvIncrement';
const READ_ENTRIES_COMMAND = 'pushbackKvReadEntries';

type ScriptCall = (...args: Array<string | number>) => Promise<unknown>;
type KvScripts = Record<typeof INCREMENT_COMMAND | typeof READ_ENTRIES_COMMAND, ScriptCall>;

/** All key names in one place. */
export function kvKeys(keyPrefix: string) {
  const base = `${keyPrefix}{kv}:`;
  return {
    base,
    key: (key: string) => `${base}${key}`,
    /** SCAN MATCH pattern for keys starting with keyPrefix: glob characters in either prefix match literally. */
    scanPattern: (startsWith: string) => `${escapeGlob(base)}${escapeGlob(startsWith)}*`,
  };
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

function toCounter(value: unknown): number {
  const count = typeof value === 'number' ? value : Number(value);
  if (!Number.isSafeInteger(count)) throw new Error(`unexpected reply from the increment script: ${String(value)}`);
  return count;
}

export class RedisKv implements SharedKv {
  readonly kind = 'redis' as const;
  private readonly keys: ReturnType<typeof kvKeys>;
  private readonly scripts: KvScripts;
  private readonly ownsClient: boolean;

  constructor(
    private readonly client: RedisClient,
    options: RedisKvOptions = {},
  ) {
    const keyPrefix = options.keyPrefix ?? DEFAULT_KV_KEY_PREFIX;
    if (/[{}]/.test(keyPrefix)) throw new RangeError(`keyPrefix must not contain braces: "${keyPrefix}"`);
    this.keys = kvKeys(keyPrefix);
    this.ownsClient = options.ownsClient ?? false;
    client.defineCommand(INCREMENT_COMMAND, { lua: INCREMENT_KV_LUA });
    client.defineCommand(READ_ENTRIES_COMMAND, { lua: READ_KV_ENTRIES_LUA });
    this.scripts = client as unknown as KvScripts;
  }

  async getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    if (keys.length === 0) return [];
    const values = await this.client.mget(keys.map(this.keys.key));
    return values.map((value) => value ?? undefined);
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    assertTtlMs(ttlMs);
    await this.client.set(this.keys.key(key), value, 'PX', ttlMs);
  }

  async increment(key: string, by: number, ttlMs: number, _nowMs: number, slide = false): Promise<number> {
    assertIncrementBy(by);
    assertTtlMs(ttlMs);
    const [value] = await this.incrementBatch([{ key, by, ttlMs, slide }]);
    return value!;
  }

  async incrementMany(items: readonly KvIncrement[]): Promise<number[]> {
    assertIncrements(items);
    // An empty batch costs no round trip.
    if (items.length === 0) return [];
    return this.incrementBatch(items);
  }

  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.client.del(keys.map(this.keys.key));
  }

  /**
   * SCAN over the store's keys, then one script per SCAN batch for values and TTLs. On a Cluster every master is
   * scanned (SCAN is per node); only the one owning the {kv} slot has matches. Admin only: cost grows with the
   * whole keyspace of the node, not with the matches.
   */
  async scan(keyPrefix: string, limit: number): Promise<KvEntry[]> {
    assertScanLimit(limit);
    if (limit === 0) return [];
    const found = new Map<string, KvEntry>();
    const pattern = this.keys.scanPattern(keyPrefix);
    const nodes = this.client instanceof Cluster ? this.client.nodes('master') : [this.client];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT);
        cursor = next;
        // SCAN may return a key more than once; keys already read are skipped.
        const fresh = batch.filter((fullKey) => !found.has(fullKey));
        if (fresh.length > 0) await this.readEntries(fresh, found);
        if (found.size >= limit) break;
      } while (cursor !== '0');
      if (found.size >= limit) break;
    }
    return [...found.values()].slice(0, limit).sort(compareEntryKeys);
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return;
    // quit() waits for pending replies; against a dead server it fails, and then there is nothing left to wait for.
    await this.client.quit().catch(() => this.client.disconnect());
  }

  private async incrementBatch(items: readonly KvIncrement[]): Promise<number[]> {
    const keys = items.map((item) => this.keys.key(item.key));
    const args = items.flatMap((item) => [String(item.by), item.ttlMs, item.slide ? '1' : '0']);
    const reply = await this.scripts[INCREMENT_COMMAND](keys.length, ...keys, ...args);
    if (!Array.isArray(reply) || reply.length !== items.length) {
      throw new Error('unexpected reply shape from the increment script');
    }
    return reply.map(toCounter);
  }

  /** Adds the live string entries among fullKeys to found, keyed by full key, with the store's prefix removed. */
  private async readEntries(fullKeys: readonly string[], found: Map<string, KvEntry>): Promise<void> {
    const reply = await this.scripts[READ_ENTRIES_COMMAND](fullKeys.length, ...fullKeys);
    if (!Array.isArray(reply) || reply.length !== 2 * fullKeys.length) {
      throw new Error('unexpected reply shape from the entry read script');
    }
    fullKeys.forEach((fullKey, i) => {
      const value: unknown = reply[2 * i];
      const pttl = Number(reply[2 * i + 1]);
      // -2: expired between SCAN and the read. -1: written without an expiry by something other than this store.
      if (typeof value !== 'string' || pttl === -2) return;
      found.set(fullKey, { key: fullKey.slice(this.keys.base.length), value, ttlMs: pttl === -1 ? Number.POSITIVE_INFINITY : pttl });
    });
  }
}
