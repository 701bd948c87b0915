// Redis URL forms -> ioredis options, without any server: standalone, TLS, Sentinel and Cluster, plus the
// fail-fast tuning every form must carry.
import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { DEFAULT_REDIS_TUNING, createRedisClient, parseRedisUrl, redactRedisUrl, waitForRedisReady } from '../../src/state/redis-connection.js';

const failFast = {
  commandTimeout: 250,
  connectTimeout: 1_000,
  maxRetriesPerRequest: 1,
  enableOfflineQueue: false,
  lazyConnect: false,
};

describe('parseRedisUrl', () => {
  it('reads a plain standalone URL with defaults', () => {
    const plan = parseRedisUrl('redis://127.0.0.1');
    expect(plan.mode).toBe('standalone');
    expect(plan.options).toMatchObject({ host: '127.0.0.1', port: 6379, db: 0, ...failFast });
    expect(plan.options).not.toHaveProperty('tls');
    expect(plan.options).not.toHaveProperty('password');
  });

  it('reads port, db and percent-encoded credentials', () => {
    const plan = parseRedisUrl('redis://pushback:p%40ss%3Aword@redis.example:6380/3');
    expect(plan.options).toMatchObject({ host: 'redis.example', port: 6380, db: 3, username: 'pushback', password: 'p@ss:word' });
  });

  it('takes a password without a user name', () => {
    const plan = parseRedisUrl('redis://:secret@localhost');
    expect(plan.options).toMatchObject({ password: 'secret' });
    expect(plan.options).not.toHaveProperty('username');
  });

  it('enables TLS for rediss:// with the host as server name', () => {
    const plan = parseRedisUrl('rediss://cache.example:6390');
    expect(plan.options).toMatchObject({ host: 'cache.example', port: 6390, tls: { servername: 'cache.example' } });
  });

  it('reads bracketed IPv6 hosts', () => {
    expect(parseRedisUrl('redis://[::1]:7000').options).toMatchObject({ host: '::1', port: 7000 });
  });

  it('applies tuning overrides', () => {
    const plan = parseRedisUrl('redis://h', { commandTimeoutMs: 100, connectTimeoutMs: 300, maxRetriesPerRequest: 0, lazyConnect: true, connectionName: 'pushback-1' });
    expect(plan.options).toMatchObject({ commandTimeout: 100, connectTimeout: 300, maxRetriesPerRequest: 0, lazyConnect: true, connectionName: 'pushback-1' });
  });

  it('keeps defaults for overrides given as undefined', () => {
    const plan = parseRedisUrl('redis://h', { commandTimeoutMs: undefined, lazyConnect: undefined });
    expect(plan.options).toMatchObject(failFast);
  });

  it('backs off reconnects up to reconnectMaxDelayMs', () => {
    const plan = parseRedisUrl('redis://h', { reconnectMaxDelayMs: 500 });
    if (plan.mode !== 'standalone') throw new Error('expected standalone');
    const retry = plan.options.retryStrategy!;
    expect([1, 2, 4, 50].map((times) => retry(times))).toEqual([100, 200, 400, 500]);
    expect(DEFAULT_REDIS_TUNING.reconnectMaxDelayMs).toBe(1_000);
  });

  it('reads Sentinel URLs: several sentinels, master name, db and sentinel credentials', () => {
    const plan = parseRedisUrl('redis+sentinel://:masterpw@s1.example,s2.example:26380,[fd00::5]/mymaster/2?sentinelPassword=s%20pw&sentinelUsername=watcher');
    expect(plan.mode).toBe('sentinel');
    expect(plan.options).toMatchObject({
      sentinels: [
        { host: 's1.example', port: 26379 },
        { host: 's2.example', port: 26380 },
        { host: 'fd00::5', port: 26379 },
      ],
      name: 'mymaster',
      db: 2,
      password: 'masterpw',
      sentinelPassword: 's pw',
      sentinelUsername: 'watcher',
      sentinelCommandTimeout: 250,
      ...failFast,
    });
    expect(plan.options).not.toHaveProperty('enableTLSForSentinelMode');
  });

  it('uses TLS to sentinels and master for rediss+sentinel://', () => {
    const plan = parseRedisUrl('rediss+sentinel://s1:26379/primary');
    expect(plan.options).toMatchObject({ name: 'primary', db: 0, tls: {}, enableTLSForSentinelMode: true });
  });

  it('reads Cluster URLs into seed nodes and per-node options', () => {
    const plan = parseRedisUrl('redis+cluster://user:pw@c1.example:7000,c2.example:7001,c3.example');
    if (plan.mode !== 'cluster') throw new Error('expected cluster');
    expect(plan.nodes).toEqual([
      { host: 'c1.example', port: 7000 },
      { host: 'c2.example', port: 7001 },
      { host: 'c3.example', port: 6379 },
    ]);
    expect(plan.options).toMatchObject({
      enableOfflineQueue: false,
      lazyConnect: false,
      redisOptions: { username: 'user', password: 'pw', commandTimeout: 250, connectTimeout: 1_000, maxRetriesPerRequest: 1 },
    });
    expect(plan.options.redisOptions).not.toHaveProperty('tls');
    expect(typeof plan.options.clusterRetryStrategy).toBe('function');
  });

  it('enables TLS on every node for rediss+cluster://', () => {
    const plan = parseRedisUrl('rediss+cluster://c1:7000');
    if (plan.mode !== 'cluster') throw new Error('expected cluster');
    expect(plan.options.redisOptions).toMatchObject({ tls: {} });
  });

  it('accepts an upper-case scheme and surrounding spaces', () => {
    expect(parseRedisUrl('  REDIS://h:1  ').options).toMatchObject({ host: 'h', port: 1 });
  });

  it.each([
    ['localhost:6379', /expected scheme/],
    ['http://h', /unsupported scheme "http"/],
    ['redis://', /no host/],
    ['redis://h:0', /bad port/],
    ['redis://h:70000', /bad port/],
    ['redis://h:port', /bad host/],
    ['redis://h1,h2', /several hosts/],
    ['redis://h/x', /bad database/],
    ['redis://h/1/2', /path must be \/db/],
    ['redis://h?db=1', /unknown parameter "db"/],
    ['redis+sentinel://s1', /master name/],
    ['redis+sentinel://s1/m/1/x', /path must be/],
    ['redis+sentinel://s1/m?sentinelPasword=x', /unknown parameter "sentinelPasword"/],
    ['redis+cluster://c1/0', /no databases/],
  ])('rejects %s', (url, message) => {
    expect(() => parseRedisUrl(url)).toThrow(message);
  });

  it('never echoes a password in its errors', () => {
    expect(() => parseRedisUrl('redis://user:hunter2@h/notadb')).toThrow(/redis:\/\/\*\*\*@h\/notadb/);
    try {
      parseRedisUrl('redis://user:hunter2@h/notadb');
    } catch (error) {
      expect((error as Error).message).not.toContain('hunter2');
    }
  });
});

describe('a Redis URL as it is printed', () => {
  it.each([
    ['redis://user:S3CRET@redis.example:6380/3', 'redis://***@redis.example:6380/3'],
    ['redis+sentinel://:S3CRET@s1:26379,s2/mymaster?sentinelUsername=watcher&sentinelPassword=S3CRET',
      'redis+sentinel://***@s1:26379,s2/mymaster?sentinelUsername=watcher&sentinelPassword=***'],
    // Misspelt or percent-encoded, a password parameter is still masked: only known names show their value.
    ['redis+sentinel://s1/m?sentinelPasword=S3CRET&sentinel%50assword=S3CRET', 'redis+sentinel://s1/m?sentinelPasword=***&sentinel%50assword=***'],
    // Unencoded '@', '/' and '?' in a password: the credentials end at the last '@' before the query.
    ['redis://user:S3@CRET@redis.example/0', 'redis://***@redis.example/0'],
    ['redis://user:S3/CRET@redis.example', 'redis://***@redis.example'],
    ['redis://user:S3?CRET@redis.example', 'redis://***@redis.example'],
    ['redis+sentinel://s1/m?sentinelPassword=S3@CRET', 'redis+sentinel://s1/m?sentinelPassword=***'],
    ['redis+sentinel://s1/m?S3CRET', 'redis+sentinel://s1/m?***'],
    ['REDIS://h', 'redis://h'],
    ['S3CRET', '(not shown: not scheme://host)'],
  ])('%s is printed as %s', (url, shown) => {
    expect(redactRedisUrl(url)).toBe(shown);
  });

  it.each([
    ['an unknown parameter', 'redis+sentinel://:S3CRET@s1/mymaster?sentinelPassword=S3CRET&bogus=1', /unknown parameter "bogus"/],
    ['an unencoded @ in a password', 'redis://user:S3@CRET@redis.example:6379', /an "@" after the credentials/],
    ['an unencoded @ in a sentinel password', 'redis+sentinel://:S3@CRET@s1/m', /an "@" after the credentials/],
    ['an unencoded / in a password', 'redis://user:S3/CRET@redis.example', /an "@" after the credentials/],
    ['an unencoded ? in a password', 'redis://user:S3?CRET@redis.example', /bad host/],
    ['a password in a parameter name', 'redis+sentinel://s1/m?S3%40CRET', /unknown parameter \(name not shown\)/],
  ])('a start error for %s names no part of the secret', (_what, url, reason) => {
    let message = '';
    try {
      parseRedisUrl(url);
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(reason);
    expect(message).not.toMatch(/S3|CRET/);
  });
});

describe('createRedisClient against a port nobody listens on', () => {
  it('reports not ready within the wait and fails commands at once instead of queueing them', async () => {
    const probe = createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const { port } = probe.address() as { port: number };
    probe.close();
    await once(probe, 'close');
    const errors: Error[] = [];
    const client = createRedisClient(`redis://127.0.0.1:${port}`, { reconnectMaxDelayMs: 50 }, (error) => errors.push(error));
    try {
      expect(await waitForRedisReady(client, 150)).toBe(false);
      const started = Date.now();
      await expect(client.ping()).rejects.toThrow(/enableOfflineQueue/);
      expect(Date.now() - started).toBeLessThan(100);
      expect(errors.length).toBeGreaterThan(0);
    } finally {
      client.disconnect();
    }
  });
});
