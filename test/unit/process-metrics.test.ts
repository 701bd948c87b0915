// The process gauges of /metrics (prom-client's defaults, by their standard names): heap used and rss,
// and the event-loop delay histogram, whose values cover the time since the previous scrape.
import { describe, expect, it } from 'vitest';
import { ProxyMetrics, type ScrapeSources } from '../../src/admin/metrics.js';
import type { StatusSnapshot } from '../../src/state/status-monitor.js';

const QUIET: StatusSnapshot = {
  status: 1, reason: 'quiet', normalPairs: 0, abnormalPairs: 0, untrackedPairs: 0, hNormal: 0, hAbnormal: 0, distance: 0,
  deltaBits: 0, minPairs: 0, windowSeconds: 10, store: 'memory', degraded: false, topSources: [], computedAt: 0,
};

const sources: ScrapeSources = {
  activeSessions: () => 0,
  tarpitActive: () => 0,
  status: () => QUIET,
  sharedStore: () => ({ roundTrips: 0, errors: 0, outages: 0 }),
  quarantine: () => undefined,
};

async function scrape(metrics: ProxyMetrics): Promise<(name: string) => number> {
  const { body } = await metrics.render();
  return (name) => {
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(body);
    if (!match) throw new Error(`${name} missing from /metrics`);
    return Number(match[1]);
  };
}

function busyFor(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // Blocks the event loop on purpose.
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('process metrics', () => {
  it("keeps Node's standard names: process_* and nodejs_*, never under a prefix of ours", async () => {
    const { body } = await new ProxyMetrics(sources).render();
    expect(body).toMatch(/^process_resident_memory_bytes \d/m);
    expect(body).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    expect(body).not.toContain('process_process');
    const names = new Set([...body.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1]!));
    expect([...names].filter((name) => !/^(process_|nodejs_|smtp_pushback_)/.test(name))).toEqual([]);
  });

  it('reports heap used and rss in bytes', async () => {
    const value = await scrape(new ProxyMetrics(sources));
    const heapUsed = value('nodejs_heap_size_used_bytes');
    expect(heapUsed).toBeGreaterThan(1_000_000);
    expect(heapUsed).toBeLessThanOrEqual(value('nodejs_heap_size_total_bytes'));
    expect(value('process_resident_memory_bytes')).toBeGreaterThan(heapUsed);
  });

  it('reports the event-loop delay since the previous scrape, in seconds', async () => {
    const metrics = new ProxyMetrics(sources);
    await scrape(metrics);
    await sleep(50);
    busyFor(300);
    // The histogram's 10 ms timer fires late once, then records a few ordinary intervals.
    await sleep(40);
    const blocked = await scrape(metrics);
    expect(blocked('nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.25);
    expect(blocked('nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0.25);
    expect(blocked('nodejs_eventloop_lag_p50_seconds')).toBeLessThan(0.25);

    // Reset at that scrape: the next one sees only the quiet time since.
    await sleep(100);
    const quiet = await scrape(metrics);
    expect(quiet('nodejs_eventloop_lag_max_seconds')).toBeGreaterThan(0);
    expect(quiet('nodejs_eventloop_lag_max_seconds')).toBeLessThan(0.25);
    expect(quiet('nodejs_eventloop_lag_p99_seconds')).toBeLessThan(0.25);
  });

  it('leaves out the gauges that walk every socket or read /proc/self/fd at each scrape', async () => {
    const { body } = await new ProxyMetrics(sources).render();
    for (const name of ['nodejs_active_handles', 'nodejs_active_resources', 'nodejs_active_requests', 'process_open_fds']) {
      expect(body).not.toMatch(new RegExp(`^${name}`, 'm'));
    }
    expect(body).toMatch(/^process_max_fds /m);
  });
});
