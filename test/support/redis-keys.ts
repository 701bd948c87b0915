// Test keys in the shared Redis: every run uses a prefix of its own and removes only its keys (never
// FLUSHALL: the Redis on 127.0.0.1:6379 belongs to everyone on the machine).
import { Redis } from 'ioredis';

export const TEST_REDIS_URL = process.env.PUSHBACK_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export async function scanKeys(client: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys.sort();
}

/** Deletes every key starting with prefix. */
export async function deleteKeys(prefix: string, url = TEST_REDIS_URL): Promise<void> {
  const admin = new Redis(url);
  try {
    const keys = await scanKeys(admin, `${prefix}*`);
    // In chunks: a flood test leaves hundreds of thousands, more arguments than one call can spread.
    for (let start = 0; start < keys.length; start += 10_000) await admin.unlink(...keys.slice(start, start + 10_000));
  } finally {
    await admin.quit();
  }
}
