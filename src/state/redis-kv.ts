// Cluster-wide SharedKv in Redis. Each call is one round trip: MGET, or one Lua script loaded once with
// defineCommand; listed() is two (the index, then MGET). Redis expires keys by its own clock (SET PX, PEXPIRE), so
// nowMs is ignored here and every proxy agrees on when a verdict ends, whatever its local clock says.
//
// Key layout: <keyPrefix>{kv}:<key>, a string (set, setListed, increment) or a hash of integer fields (a counter
// record); <keyPrefix>{kv}#listed, the index of listed keys: a sorted set of the caller's keys scored by their
// expiry in ms on Redis's clock, trimmed of expired members on every write and read of it, and itself expiring with
// the longest-lived member. The {kv} hash tag puts every key in one Cluster slot, so the multi-key commands and
// scripts below are Cluster-safe. The caller's key is used verbatim after the tag (any characters, braces
// included: only the first {…} of a key is its hash tag); no caller key can be the index, which has no ':' there.
// An operator can list a permanent entry by hand: ZADD <keyPrefix>{kv}#listed +inf <key>.
import { Cluster } from 'ioredis';
import type { RedisClient } from './redis-connection.js';
import {
  assertIncrementBy,
  assertIncrements,
  assertRecordIncrements,
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

/** Keys per MGET when reading listed entries: tens of thousands of verdicts are read without one long command. */
const LISTED_READ_CHUNK = 5_000;

/** Redis's clock in whole ms, inside a script (TIME is allowed: Redis 7 replicates scripts by their effects). */
const NOW_MS_LUA = `
local time = redis.call('TIME')
local nowMs = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
`;

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
 * Adds to the fields of one counter record.
 * KEYS[1] the record (a hash); ARGV[1] ttl ms, then pairs: field, by (the caller leaves out fields added 0).
 * The TTL is set when the record has none yet (PTTL -1: HINCRBY just created it); with no pairs nothing is created.
 * Returns HGETALL: { field1, value1, ... }.
 */
export const INCREMENT_RECORD_KV_LUA = `
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
if #ARGV > 1 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
`;

/**
 * Sets a value, listed or not.
 * KEYS[1] the key, KEYS[2] the index; ARGV[1] value, ARGV[2] ttl ms, ARGV[3] the caller's key (the index member),
 * ARGV[4] '1' to list it ('0' takes it off the list). Listing trims the expired members and makes the index live
 * at least as long as the new one.
 */
export const SET_KV_LUA = `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] ~= '1' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
${NOW_MS_LUA}
local ttlMs = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', nowMs))
redis.call('ZADD', KEYS[2], string.format('%d', nowMs + ttlMs), ARGV[3])
if redis.call('PTTL', KEYS[2]) < ttlMs then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
`;

/**
 * The live listed keys.
 * KEYS[1] the index; ARGV[1] most members wanted. Trims the expired members, then returns
 * { nowMs, key1, expiresAtMs1, key2, ... } for those expiring last.
 */
export const LISTED_KV_LUA = `
${NOW_MS_LUA}
local now = string.format('%d', nowMs)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local reply = { now }
local members = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
for i = 1, #members do reply[#reply + 1] = members[i] end
return reply
`;

/**
 * Deletes keys and takes them off the list.
 * KEYS[1] the index, KEYS[2..] the keys; ARGV the caller's keys (the members), in the same order.
 */
export const DELETE_KV_LUA = `
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 1, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
return #ARGV
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
const INCREMENT_RECORD_COMMAND = 'pushbackKvIncrementRecord';
const SET_COMMAND = 'pushbackKvSet';
const LISTED_COMMAND = 'pushbackKvListed';
const DELETE_COMMAND = 'pushbackKvDelete';
const READ_ENTRIES_COMMAND = 'pushbackKvReadEntries';

const SCRIPTS = {
  [INCREMENT_COMMAND]: INCREMENT_KV_LUA,
  [INCREMENT_RECORD_COMMAND]: INCREMENT_RECORD_KV_LUA,
  [SET_COMMAND]: SET_KV_LUA,
  [LISTED_COMMAND]: LISTED_KV_LUA,
  [DELETE_COMMAND]: DELETE_KV_LUA,
  [READ_ENTRIES_COMMAND]: READ_KV_ENTRIES_LUA,
} as const;

type ScriptCall = (...args: Array<string | number>) => Promise<unknown>;
type KvScripts = Record<keyof typeof SCRIPTS, ScriptCall>;

/** All key names in one place. */
export function kvKeys(keyPrefix: string) {
  const base = `${keyPrefix}{kv}:`;
  return {
    base,
    key: (key: string) => `${base}${key}`,
    /** The index of listed keys: after the tag like every key, but without the ':' every caller's key has there. */
    listed: `${keyPrefix}{kv}#listed`,
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
    for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { lua });
    this.scripts = client as unknown as KvScripts;
  }

  async getMany(keys: readonly string[]): Promise<Array<string | undefined>> {
    if (keys.length === 0) return [];
    const values = await this.client.mget(keys.map(this.keys.key));
    return values.map((value) => value ?? undefined);
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    assertTtlMs(ttlMs);
    await this.scripts[SET_COMMAND](2, this.keys.key(key), this.keys.listed, value, ttlMs, key, '0');
  }

  async setListed(key: string, value: string, ttlMs: number): Promise<void> {
    assertTtlMs(ttlMs);
    await this.scripts[SET_COMMAND](2, this.keys.key(key), this.keys.listed, value, ttlMs, key, '1');
  }

  /**
   * One script for the index (trimmed, then the members expiring last, with Redis's clock), then their values by
   * MGET, LISTED_READ_CHUNK keys at a time. The remaining life is the index score less Redis's now; a member whose
   * key is gone (deleted by hand, or expiring between the two calls) is left out.
   */
  async listed(limit: number): Promise<KvEntry[]> {
    assertScanLimit(limit);
    if (limit === 0) return [];
    const reply = await this.scripts[LISTED_COMMAND](1, this.keys.listed, limit);
    if (!Array.isArray(reply) || reply.length % 2 !== 1) throw new Error('unexpected reply shape from the listing script');
    const nowMs = Number(reply[0]);
    const members: Array<{ key: string; ttlMs: number }> = [];
    for (let i = 1; i < reply.length; i += 2) {
      const score = String(reply[i + 1]);
      members.push({ key: String(reply[i]), ttlMs: score === 'inf' ? Number.POSITIVE_INFINITY : Number(score) - nowMs });
    }
    const chunks: Array<Promise<Array<string | null>>> = [];
    for (let start = 0; start < members.length; start += LISTED_READ_CHUNK) {
      chunks.push(this.client.mget(members.slice(start, start + LISTED_READ_CHUNK).map((member) => this.keys.key(member.key))));
    }
    const values = (await Promise.all(chunks)).flat();
    const found: KvEntry[] = [];
    members.forEach((member, i) => {
      const value = values[i];
      if (typeof value === 'string' && member.ttlMs > 0) found.push({ key: member.key, value, ttlMs: member.ttlMs });
    });
    return found.sort(compareEntryKeys);
  }

  async incrementRecord(key: string, increments: Readonly<Record<string, number>>, ttlMs: number): Promise<Record<string, number>> {
    assertRecordIncrements(increments);
    assertTtlMs(ttlMs);
    const pairs = Object.entries(increments).flatMap(([field, by]) => (by === 0 ? [] : [field, String(by)]));
    const reply = await this.scripts[INCREMENT_RECORD_COMMAND](1, this.keys.key(key), ttlMs, ...pairs);
    if (!Array.isArray(reply) || reply.length % 2 !== 0) throw new Error('unexpected reply shape from the record script');
    const record: Record<string, number> = {};
    for (let i = 0; i < reply.length; i += 2) record[String(reply[i])] = toCounter(reply[i + 1]);
    return record;
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
    await this.scripts[DELETE_COMMAND](1 + keys.length, this.keys.listed, ...keys.map(this.keys.key), ...keys);
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
