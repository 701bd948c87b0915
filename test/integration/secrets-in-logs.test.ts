// A Redis URL's secrets stay out of the log: the proxy started against a Sentinel nobody runs logs the
// scheme and hosts with the passwords masked, and a start that fails on the URL names no part of them.
import { PassThrough } from 'node:stream';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { startProxy } from '../../src/main.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { freePort } from '../support/redis-server.js';

async function startWith(redisUrl: string, upstreamAddress: string): Promise<{ log: () => string; start: ReturnType<typeof startProxy> }> {
  const result = parsePolicyText('', 'test-policy.yaml', {
    PUSHBACK_LISTEN: '127.0.0.1:0',
    PUSHBACK_ADMIN: '127.0.0.1:0',
    PUSHBACK_SPOOL_DIR: mkdtempSync(join(tmpdir(), 'pushback-spool-')),
    PUSHBACK_UPSTREAM: upstreamAddress,
    PUSHBACK_REDIS_URL: redisUrl,
  });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (chunk: Buffer) => void (text += chunk.toString('utf8')));
  // Debug too: ioredis's connection errors are logged there.
  return { log: () => text, start: startProxy(result.policy, createLogger('debug', stream)) };
}

describe('secrets in the log', () => {
  it('while Redis is down, the log names the Sentinels but neither password', async () => {
    const upstream = await FakeUpstream.start();
    const port = await freePort();
    const { log, start } = await startWith(`redis+sentinel://:M4STER@127.0.0.1:${port}/mymaster?sentinelPassword=S3CRET`, upstream.address);
    const proxy = await start;
    try {
      const warning = log().split('\n').filter(Boolean).map((line) => JSON.parse(line) as { msg: string; redis?: string })
        .find((line) => line.msg.startsWith('Redis not reachable at start'));
      expect(warning?.redis).toBe(`redis+sentinel://***@127.0.0.1:${port}/mymaster?sentinelPassword=***`);
    } finally {
      await proxy.stop();
      await upstream.close();
    }
    expect(log()).not.toMatch(/S3CRET|M4STER/);
  });

  it.each([
    ['an unknown parameter', 'redis+sentinel://:M4STER@127.0.0.1/mymaster?sentinelPassword=S3CRET&bogus=1'],
    ['an unencoded @ in the password', 'redis://:M4@STER@127.0.0.1:6379'],
  ])('a start that fails on %s names no part of the passwords', async (_what, url) => {
    const upstream = await FakeUpstream.start();
    try {
      const { start } = await startWith(url, upstream.address);
      const message = await start.then(() => 'started', (error: Error) => `${error.message}\n${error.stack ?? ''}`);
      expect(message).toMatch(/invalid Redis URL/);
      expect(message).not.toMatch(/S3CRET|M4|STER/);
    } finally {
      await upstream.close();
    }
  });
});
