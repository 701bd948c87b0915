// Cluster-wide pair store in Redis. One round trip per add (a batch) and one per window, both Lua scripts from
// redis-scripts.ts, so the counts are consistent however many proxies write at once.
//
// Key layout (the {pairs} hash tag puts every key of every window in one Cluster slot, which the scripts need):
//   <prefix>{pairs}:t:<bucketSeconds>:<bucket>   hash   n, a, u: normal, abnormal, untracked pairs of the bucket
//   <prefix>{pairs}:s:<bucketSeconds>:<bucket>   zset   source -> abnormal * 2^26 + normal (see redis-scripts.ts)
//   <prefix>{pairs}:scratch                      zset   scratch for the window's union, deleted in the same script
// <bucket> is the bucket number (whole bucketSeconds periods since the Unix epoch); bucketSeconds is in the key so
// proxies configured with different buckets never mix counts. Every add sets an expiry of windowSeconds +
// expirySlackSeconds on the bucket's keys, so Redis drops old buckets itself and nothing needs a sweeper.
import { RANK_FACTOR, ADD_PAIRS_LUA, WINDOW_PAIRS_LUA } from './redis-scripts.js';
import type { RedisClient } from './redis-connection.js';
import {
  UNTRACKED_SOURCE,
  assertIncrements,
  assertTopSources,
  bucketNumber,
  resolvePairWindowOptions,
  windowBucketNumbers,
  type PairIncrement,
  type PairStore,
  type PairWindow,
  type PairWindowOptions,
  type SourcePairs,
} from './pair-store.js';

export interface RedisPairStoreOptions extends Partial<PairWindowOptions> {
  /** Prepended to every key; must not contain '{' or '}', which would move the hash tag. */
  keyPrefix?: string;
  /** Extra life of a bucket's keys beyond the window: covers clock skew between proxies. */
  expirySlackSeconds?: number;
  /** Close the client in close(). Off by default: the composition root usually shares one client. */
  ownsClient?: boolean;
}

export const DEFAULT_PAIR_KEY_PREFIX = 'pushback:';
export const DEFAULT_EXPIRY_SLACK_SECONDS = 5;

const ADD_COMMAND = 'pushbackPairsAdd';
const WINDOW_COMMAND = 'pushbackPairsWindow';

type ScriptCall = (...args: Array<string | number>) => Promise<unknown>;
type PairScripts = Record<typeof ADD_COMMAND | typeof WINDOW_COMMAND, ScriptCall>;

/** All key names in one place. */
export function pairKeys(keyPrefix: string, bucketSeconds: number) {
  const base = `${keyPrefix}{pairs}`;
  return {
    totals: (bucket: number) => `${base}:t:${bucketSeconds}:${bucket}`,
    sources: (bucket: number) => `${base}:s:${bucketSeconds}:${bucket}`,
    scratch: `${base}:scratch`,
  };
}

function toCount(value: unknown): number {
  const count = Number(value);
  if (!Number.isFinite(count)) throw new Error(`unexpected reply from the pair window script: ${String(value)}`);
  return count;
}

export class RedisPairStore implements PairStore {
  readonly kind = 'redis' as const;
  readonly windowSeconds: number;
  readonly bucketSeconds: number;
  readonly expirySeconds: number;
  private readonly options: PairWindowOptions;
  private readonly keys: ReturnType<typeof pairKeys>;
  private readonly scripts: PairScripts;
  private readonly ownsClient: boolean;

  constructor(
    private readonly client: RedisClient,
    options: RedisPairStoreOptions = {},
  ) {
    this.options = resolvePairWindowOptions(options);
    this.windowSeconds = this.options.windowSeconds;
    this.bucketSeconds = this.options.bucketSeconds;
    const keyPrefix = options.keyPrefix ?? DEFAULT_PAIR_KEY_PREFIX;
    if (/[{}]/.test(keyPrefix)) throw new RangeError(`keyPrefix must not contain braces: "${keyPrefix}"`);
    const slack = options.expirySlackSeconds ?? DEFAULT_EXPIRY_SLACK_SECONDS;
    if (!Number.isSafeInteger(slack) || slack < 0) throw new RangeError(`expirySlackSeconds must be a whole number >= 0`);
    this.expirySeconds = this.windowSeconds + slack;
    this.keys = pairKeys(keyPrefix, this.options.bucketSeconds);
    this.ownsClient = options.ownsClient ?? false;
    client.defineCommand(ADD_COMMAND, { lua: ADD_PAIRS_LUA, numberOfKeys: 2 });
    client.defineCommand(WINDOW_COMMAND, { lua: WINDOW_PAIRS_LUA });
    this.scripts = client as unknown as PairScripts;
  }

  async add(increments: readonly PairIncrement[], nowMs: number): Promise<void> {
    assertIncrements(increments);
    let normal = 0;
    let abnormal = 0;
    let untrackedPairs = 0;
    const perSource: Array<string | number> = [];
    for (const increment of increments) {
      const pairs = increment.normal + increment.abnormal;
      if (pairs === 0) continue;
      normal += increment.normal;
      abnormal += increment.abnormal;
      if (increment.source === UNTRACKED_SOURCE) {
        untrackedPairs += pairs;
      } else {
        // Exact decimal string: JS integers are exact to 2^53, Lua would round to 14 digits.
        perSource.push(increment.source, String(increment.abnormal * RANK_FACTOR + increment.normal), pairs);
      }
    }
    // An empty batch costs no round trip.
    if (normal + abnormal === 0) return;
    const bucket = bucketNumber(nowMs, this.options.bucketSeconds);
    await this.scripts[ADD_COMMAND](
      this.keys.totals(bucket),
      this.keys.sources(bucket),
      this.expirySeconds,
      this.options.maxSourcesPerBucket,
      normal,
      abnormal,
      untrackedPairs,
      ...perSource,
    );
  }

  async window(nowMs: number, topSources: number): Promise<PairWindow> {
    assertTopSources(topSources);
    const buckets = windowBucketNumbers(nowMs, this.options);
    const keys = [...buckets.map(this.keys.totals), ...buckets.map(this.keys.sources), this.keys.scratch];
    const reply = await this.scripts[WINDOW_COMMAND](keys.length, ...keys, buckets.length, topSources, RANK_FACTOR);
    if (!Array.isArray(reply) || reply.length < 3 || (reply.length - 3) % 3 !== 0) {
      throw new Error('unexpected reply shape from the pair window script');
    }
    const sources: SourcePairs[] = [];
    for (let i = 3; i < reply.length; i += 3) {
      sources.push({ source: String(reply[i]), normal: toCount(reply[i + 1]), abnormal: toCount(reply[i + 2]) });
    }
    return {
      windowSeconds: this.windowSeconds,
      normal: toCount(reply[0]),
      abnormal: toCount(reply[1]),
      untrackedPairs: toCount(reply[2]),
      sources,
    };
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return;
    // quit() waits for pending replies; against a dead server it fails, and then there is nothing left to wait for.
    await this.client.quit().catch(() => this.client.disconnect());
  }
}
