// Cost of the firewall export (`npm run bench:firewall`): N reject verdicts (and 4N other keys, as the
// per-source counters a flood leaves) in the memory store and in Redis (127.0.0.1:6379, a key prefix of its
// own, deleted afterwards); times one refresh that finds nothing changed (read + collapse: what runs every
// refreshSeconds) and one that writes the nftables script, medians of BENCH_REPEATS, and checks the script
// with `nft -c -f` where nft is installed (timed too). Nothing here touches the kernel's rule set.
// Environment: BENCH_REPEATS (5), BENCH_REDIS_URL (redis://127.0.0.1:6379).
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pino from 'pino';
import { defaultPolicy } from '../src/config/load.js';
import type { Policy } from '../src/config/schema.js';
import { FirewallExporter } from '../src/enforce/firewall-export.js';
import { MemoryKv } from '../src/state/memory-kv.js';
import { RedisKv } from '../src/state/redis-kv.js';
import type { SharedKv } from '../src/state/shared-kv.js';
import { median } from './report.js';
import { machineInfo, positiveNumber } from './servers.js';

const repeats = Math.max(1, Math.round(positiveNumber('BENCH_REPEATS', 5)));
const redisUrl = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const SIZES = [1_000, 10_000, 50_000];
const progress = (text: string): void => void process.stderr.write(`${text}\n`);

function policyFor(file: string): Policy {
  const result = defaultPolicy({});
  if (!result.ok) throw new Error('default policy invalid');
  const firewall = { ...result.policy.pushback.firewall, nftablesFile: file, refreshSeconds: 3_600, maxEntries: 100_000 };
  return { ...result.policy, pushback: { ...result.policy.pushback, firewall } };
}

/** N verdicts spread over 10.0.0.0/8 (one per /24 at most, so none collapses), plus 4N counters. */
async function fill(kv: SharedKv, count: number, nowMs: number): Promise<void> {
  const batch: Array<Promise<unknown>> = [];
  for (let index = 0; index < count; index += 1) {
    const address = `10.${(index >> 16) & 255}.${(index >> 8) & 255}.${index & 255}`;
    const verdict = JSON.stringify({ action: 'reject', source: 'detectors', score: 30, reasons: ['non-SMTP'], detector: 'non-smtp', scope: address });
    batch.push(kv.setListed(`v:${address}`, verdict, 600_000, nowMs));
    batch.push(kv.incrementMany(['abnormal', 'normal', 'early', 'nonsmtp'].map((name) => ({ key: `c:${name}:${address}`, by: 1, ttlMs: 600_000 })), nowMs));
    if (batch.length >= 2_000) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
}

async function timed(action: () => Promise<void>): Promise<number> {
  const started = process.hrtime.bigint();
  await action();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

const nftAvailable = spawnSync('nft', ['--version']).status === 0;
const rows: string[] = [];
progress(`firewall export bench: ${JSON.stringify(machineInfo())}`);
for (const store of ['memory', 'redis'] as const) {
  for (const size of SIZES) {
    const keyPrefix = `pbbench:${process.pid}:${randomBytes(4).toString('hex')}:`;
    const client = store === 'redis' ? new Redis(redisUrl, { lazyConnect: false }) : undefined;
    const kv: SharedKv = client ? new RedisKv(client, { keyPrefix }) : new MemoryKv({ maxEntries: 10 * size });
    const directory = mkdtempSync(join(os.tmpdir(), 'pushback-bench-fw-'));
    const file = join(directory, 'pushback.nft');
    try {
      progress(`${store} ${size}: filling`);
      await fill(kv, size, Date.now());
      let nowMs = Date.now();
      const exporter = new FirewallExporter({ kv, policy: () => policyFor(file), logger: pino({ level: 'silent' }), now: () => nowMs });
      const unchanged: number[] = [];
      const written: number[] = [];
      const checks: number[] = [];
      await exporter.start();
      // The longest the event loop waited during the refreshes: what a session could be held up by.
      const loopDelay = monitorEventLoopDelay({ resolution: 1 });
      loopDelay.enable();
      for (let round = 0; round < repeats; round += 1) {
        unchanged.push(await timed(() => exporter.refresh()));
        // Three seconds later every timeout differs by more than the tolerance: a full rewrite.
        nowMs -= 3_000;
        written.push(await timed(() => exporter.refresh()));
      }
      loopDelay.disable();
      // After the refreshes: spawnSync blocks this process's own loop, which would count as the export's.
      for (let round = 0; nftAvailable && round < repeats; round += 1) {
        const started = process.hrtime.bigint();
        const check = spawnSync('nft', ['-c', '-f', file], { encoding: 'utf8' });
        checks.push(Number(process.hrtime.bigint() - started) / 1e6);
        if (check.status !== 0) throw new Error(`nft -c -f failed: ${check.stderr}`);
      }
      await exporter.stop();
      const exported = exporter.exportedNow().length;
      if (exported !== size) throw new Error(`exported ${exported} of ${size}`);
      rows.push(`| ${store} | ${size} | ${median(unchanged)!.toFixed(1)} | ${median(written)!.toFixed(1)} | ${(statSync(file).size / 1024).toFixed(0)} KB | ${(loopDelay.max / 1e6).toFixed(0)} | ${nftAvailable ? median(checks)!.toFixed(0) : 'n/a'} |`);
    } finally {
      rmSync(directory, { recursive: true, force: true });
      if (client) {
        let cursor = '0';
        do {
          const [next, keys] = await client.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1_000);
          cursor = next;
          if (keys.length > 0) await client.unlink(...keys);
        } while (cursor !== '0');
        client.disconnect();
      } else {
        await kv.close();
      }
    }
  }
}
process.stdout.write([
  `firewall export, median of ${repeats} (ms); verdicts plus 4x as many counter keys in the store`,
  '',
  '| store | verdicts | refresh, unchanged | refresh + script write | script | longest event-loop wait | nft -c -f |',
  '|---|---|---|---|---|---|---|',
  ...rows,
  '',
  'reproduce: npm run bench:firewall',
  '',
].join('\n'));
