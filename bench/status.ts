// Cost of the shared status (`npm run bench:status`): in one run, smtp-source drives two proxies in
// front of the same smtp-sink, one with the in-memory store and one with the Redis store
// (127.0.0.1:6379, a key prefix of its own, deleted afterwards), interleaved round by round.
// Prints relay throughput of each, the Redis/memory ratio, and Redis round trips per SMTP command
// (from the proxy's own /metrics counters). Loopback only; bounded in messages and time.
// Environment: BENCH_REPEATS (3), BENCH_MESSAGES_SCALE (1), BENCH_TIMEOUT_SECONDS (60),
// BENCH_REDIS_URL (redis://127.0.0.1:6379).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freeLoopbackPort, killAllChildrenNow, runSmtpSource, stopAllChildren } from './children.js';
import { formatSize, median, type Load, type Sample } from './report.js';
import { BENCH_POLICY_LINES, buildDist, machineInfo, OBSERVE_MODE, measure, positiveNumber, sleep, sourceArgs, startProxyChild, startSink } from './servers.js';

const repeats = Math.max(1, Math.round(positiveNumber('BENCH_REPEATS', 3)));
const scale = positiveNumber('BENCH_MESSAGES_SCALE', 1);
const timeoutMs = positiveNumber('BENCH_TIMEOUT_SECONDS', 60) * 1000;
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const keyPrefix = `pbbench:${process.pid}:${randomBytes(4).toString('hex')}:`;
const progress = (text: string): void => void process.stderr.write(`${text}\n`);

const LOADS: Load[] = [
  { label: '-s 100', sessions: 100, reuseConnections: false, sizeBytes: 1024, messages: Math.round(2000 * scale) },
  { label: '-s 20 -d', sessions: 20, reuseConnections: true, sizeBytes: 1024, messages: Math.round(5000 * scale) },
];
const STORES = ['memory', 'redis'] as const;
type Store = (typeof STORES)[number];

const workDir = mkdtempSync(join(os.tmpdir(), 'bench-status-'));
const policyFile = join(workDir, 'policy.yaml');
writeFileSync(policyFile, `${[...BENCH_POLICY_LINES, OBSERVE_MODE, `state: { keyPrefix: "${keyPrefix}" }`].join('\n')}\n`);

process.on('exit', () => {
  killAllChildrenNow();
  rmSync(workDir, { recursive: true, force: true });
});

interface Counters {
  roundTrips: number;
  commands: number;
}

async function readCounters(adminPort: number): Promise<Counters> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { roundTrips: value('smtp_pushback_redis_round_trips_total'), commands: value('smtp_pushback_commands_total') };
}

async function deleteBenchKeys(): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  let deleted = 0;
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 500);
      if (keys.length > 0) deleted += await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return deleted;
}

async function main(): Promise<void> {
  buildDist(progress);
  const sink = await startSink(false);
  const proxies: Record<Store, { port: number; adminPort: number }> = {} as never;
  for (const store of STORES) {
    const adminPort = await freeLoopbackPort();
    const proxy = await startProxyChild({
      upstreamPort: sink.port, policyFile, spoolDir: join(workDir, `spool-${store}`), adminPort, name: `proxy (${store})`,
      ...(store === 'redis' ? { redisUrl } : {}),
    });
    proxies[store] = { port: proxy.port, adminPort };
  }
  for (const current of LOADS) {
    for (const store of STORES) await runSmtpSource(sourceArgs(current, 300, proxies[store].port), timeoutMs);
  }

  const samples = LOADS.map(() => ({ memory: [] as Sample[], redis: [] as Sample[], tripsPerCommand: [] as number[] }));
  for (let round = 0; round < repeats; round += 1) {
    for (const [index, current] of LOADS.entries()) {
      const order = round % 2 === 0 ? STORES : [...STORES].reverse();
      for (const store of order) {
        const before = await readCounters(proxies[store].adminPort);
        const sample = await measure(proxies[store].port, current, timeoutMs);
        // Let the last flush of this run land before reading the counters.
        await sleep(400);
        const after = await readCounters(proxies[store].adminPort);
        samples[index]?.[store].push(sample);
        if (store === 'redis') samples[index]?.tripsPerCommand.push((after.roundTrips - before.roundTrips) / (after.commands - before.commands));
        progress(`round ${round + 1}/${repeats}  ${current.label.padEnd(8)} ${store.padEnd(6)} `
          + (sample.msgPerSec === null ? `FAILED ${sample.error}` : `${Math.round(sample.msgPerSec)} msg/s`));
        await sleep(250);
      }
    }
  }
  const status = (await (await fetch(`http://127.0.0.1:${proxies.redis.adminPort}/status`)).json()) as { store: string; degraded: boolean };
  await stopAllChildren();
  const deleted = await deleteBenchKeys();

  const rate = (values: Sample[]): number | null => median(values.map((sample) => sample.msgPerSec).filter((value): value is number => value !== null));
  const lines = ['load      size   memory msg/s  redis msg/s  redis/memory  Redis round trips per SMTP command', '-'.repeat(94)];
  for (const [index, current] of LOADS.entries()) {
    const row = samples[index]!;
    const memory = rate(row.memory);
    const redis = rate(row.redis);
    const trips = median(row.tripsPerCommand);
    lines.push(`${current.label.padEnd(8)}  ${formatSize(current.sizeBytes).padEnd(5)}  ${String(Math.round(memory ?? 0)).padStart(12)}  ${String(Math.round(redis ?? 0)).padStart(11)}  `
      + `${memory && redis ? (redis / memory).toFixed(2).padStart(12) : '         n/a'}  ${trips === null ? 'n/a' : trips.toFixed(5)}`);
  }
  const machine = machineInfo();
  process.stdout.write(`\nsmtp-source on loopback into smtp-sink through the proxy, median of ${repeats} rounds\n\n${lines.join('\n')}\n\n`);
  process.stdout.write(`Redis proxy at the end: store ${status.store}, degraded ${status.degraded}; ${deleted} bench keys deleted (prefix ${keyPrefix})\n`);
  process.stdout.write(`machine: ${machine.nproc} CPUs (${machine.cpuModel}), node ${machine.node}, Redis at ${redisUrl}\n`);
  process.stdout.write(`reproduce: BENCH_REPEATS=${repeats} BENCH_MESSAGES_SCALE=${scale} npm run bench:status\n`);
}

try {
  await main();
} catch (error) {
  process.stderr.write(`bench:status crashed: ${(error as Error).stack ?? String(error)}\n`);
  process.exitCode = 1;
} finally {
  await stopAllChildren();
}
