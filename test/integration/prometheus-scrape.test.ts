// A real Prometheus (Debian's prometheus) scraping a running proxy's /metrics every second, with
// deploy/prometheus/alerts.yml loaded: the target is up, the rules load healthy, metrics read back
// through Prometheus's HTTP API hold what the proxy saw, and every query of the Grafana dashboard runs. Every wait is bounded; the process is stopped and
// its storage removed afterwards.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { completeSession } from '../support/sessions.js';

const ALERTS = join(import.meta.dirname, '../../deploy/prometheus/alerts.yml');
const DASHBOARD = join(import.meta.dirname, '../../deploy/grafana/smtp-pushback.json');
/**
 * Dashboard queries over counters and gauges this proxy never touches (no verdict, no quarantine event, the
 * firewall export off): Prometheus has no series for them, so they run and return nothing.
 */
const NO_SERIES_HERE = new Set(['Verdicts by action A', 'Quarantine B']);
const JOB = 'smtp-pushback';
const WAIT_MS = 30_000;

function findPrometheus(): string | undefined {
  const dirs = ['/usr/bin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':').filter(Boolean)];
  return dirs.map((dir) => join(dir, 'prometheus')).find((candidate) => existsSync(candidate));
}

const prometheusBinary = findPrometheus();
// .ci/install-deps.sh installs prometheus, so in CI its absence is a failure, not a skip.
const runTest = prometheusBinary !== undefined || process.env.CI === 'true';
if (!runTest) console.warn('skipping the Prometheus scrape test: prometheus is not installed (Debian package prometheus; run .ci/install-deps.sh)');

interface QueryResult {
  metric: Record<string, string>;
  value: [number, string];
}

async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (${String(lastError)})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe.skipIf(!runTest)('a real Prometheus scraping the proxy', () => {
  let upstream: FakeUpstream;
  let proxy: TestProxy;
  let prometheus: ChildProcess | undefined;
  let prometheusOutput = '';
  let api = '';
  const dir = mkdtempSync(join(tmpdir(), 'pushback-prometheus-'));

  async function query(expr: string): Promise<QueryResult[]> {
    const response = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`, { signal: AbortSignal.timeout(5_000) });
    const body = (await response.json()) as { status: string; data: { resultType: string; result: QueryResult[] }; error?: string };
    if (body.status !== 'success') throw new Error(`query ${expr}: ${body.error}`);
    return body.data.result;
  }

  /** Starts Prometheus on a free loopback port; a port taken between our check and its bind() is picked again. */
  async function startPrometheus(target: string): Promise<void> {
    if (prometheusBinary === undefined) throw new Error('prometheus is not installed (Debian package prometheus; .ci/install-deps.sh installs it)');
    writeFileSync(join(dir, 'prometheus.yml'), [
      'global:',
      '  scrape_interval: 1s',
      '  scrape_timeout: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(ALERTS)}`,
      'scrape_configs:',
      `  - job_name: ${JOB}`,
      '    metrics_path: /metrics',
      '    static_configs:',
      `      - targets: [${JSON.stringify(target)}]`,
      '',
    ].join('\n'));
    for (let attempt = 1; ; attempt++) {
      const port = await freeLoopbackPort();
      prometheusOutput = '';
      const child = spawn(prometheusBinary, [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, `data-${attempt}`)}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      prometheus = child;
      child.stdout?.on('data', (chunk: Buffer) => { prometheusOutput += chunk.toString(); });
      child.stderr?.on('data', (chunk: Buffer) => { prometheusOutput += chunk.toString(); });
      api = `http://127.0.0.1:${port}`;
      const exited = once(child, 'exit').then(() => 'exited' as const);
      const ready = waitFor('Prometheus ready', async () => {
        if (child.exitCode !== null) return 'exited' as const;
        const response = await fetch(`${api}/-/ready`, { signal: AbortSignal.timeout(2_000) });
        return response.status === 200 ? ('ready' as const) : undefined;
      });
      const outcome = await Promise.race([ready, exited]);
      if (outcome === 'ready') return;
      if (attempt >= 3 || !/address already in use/i.test(prometheusOutput)) {
        throw new Error(`prometheus exited with ${child.exitCode}:\n${prometheusOutput.slice(-3_000)}`);
      }
    }
  }

  beforeAll(async () => {
    upstream = await FakeUpstream.start();
    proxy = await startTestProxy(upstream.address, 'entropy: { statusIntervalMs: 100 }\n');
    await completeSession(proxy.port);
    await startPrometheus(`127.0.0.1:${proxy.proxy.adminAddress.port}`);
  }, 60_000);

  afterAll(async () => {
    const child = prometheus;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    await proxy?.stop();
    await upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  it('scrapes the admin listener: the target is up', async () => {
    const up = await waitFor('up == 1', async () => {
      const result = await query(`up{job="${JOB}"}`);
      return result.find((sample) => sample.value[1] === '1');
    });
    expect(up.metric.instance).toBe(`127.0.0.1:${proxy.proxy.adminAddress.port}`);
  });

  it('reads the proxy\'s own metrics back through the HTTP API', async () => {
    const status = await waitFor('smtp_pushback_status', async () => (await query(`smtp_pushback_status{job="${JOB}"}`))[0]);
    expect(status.value[1]).toBe(String(proxy.proxy.status().status));

    const relayed = await waitFor('the relayed transaction', async () => {
      const result = await query(`smtp_pushback_transactions_total{job="${JOB}",outcome="relayed"}`);
      return result.find((sample) => Number(sample.value[1]) >= 1);
    });
    expect(Number(relayed.value[1])).toBe(1);

    // A session after Prometheus started shows in a later scrape.
    await completeSession(proxy.port);
    await waitFor('the second session', async () => {
      const result = await query(`sum(smtp_pushback_sessions_total{job="${JOB}"})`);
      return result.find((sample) => Number(sample.value[1]) >= 2);
    });
    const histogram = await query(`smtp_pushback_upstream_reply_seconds_count{job="${JOB}",step="dot"}`);
    expect(Number(histogram[0]?.value[1])).toBeGreaterThanOrEqual(1);
  });

  it('loads alerts.yml: every rule healthy, none firing on a quiet proxy', async () => {
    const rules = await waitFor('evaluated rules', async () => {
      const response = await fetch(`${api}/api/v1/rules`, { signal: AbortSignal.timeout(5_000) });
      const body = (await response.json()) as { data: { groups: { rules: { name: string; health: string; state: string; lastError?: string }[] }[] } };
      const all = body.data.groups.flatMap((group) => group.rules);
      return all.length > 0 && all.every((rule) => rule.health === 'ok') ? all : undefined;
    });
    expect(rules.map((rule) => rule.name).sort()).toEqual([
      'SmtpPushbackQuarantineBacklogGrowing',
      'SmtpPushbackReleaseFailing',
      'SmtpPushbackSharedStoreDegraded',
      'SmtpPushbackStatusDanger',
      'SmtpPushbackUpstreamLatencyHigh',
    ]);
    expect(rules.filter((rule) => rule.state !== 'inactive').map((rule) => rule.name)).toEqual([]);
  });

  it('runs every query of the Grafana dashboard, each with data', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { title: string; targets: { refId: string; expr: string }[] }[] };
    // The values Grafana puts in for the dashboard's variables: all nodes, and a rate interval of four scrapes.
    const asGrafanaSends = (expr: string): string => expr.replaceAll('$instance', '.*').replaceAll('$__rate_interval', '4s');
    const targets = dashboard.panels.flatMap((found) => found.targets.map((target) => ({ where: `${found.title} ${target.refId}`, expr: asGrafanaSends(target.expr) })));
    // Every query parses and runs (query() throws on Prometheus's error)...
    for (const { expr } of targets) await query(expr);
    // ...and has data, but those over series this quiet proxy never made.
    const empty = async (): Promise<string[]> => {
      const missing: string[] = [];
      for (const { where, expr } of targets) if ((await query(expr)).length === 0) missing.push(where);
      return missing;
    };
    let missing: string[] = [];
    await waitFor('dashboard queries with data', async () => {
      missing = await empty();
      return missing.every((where) => NO_SERIES_HERE.has(where)) ? missing : undefined;
    }, 15_000).catch(() => undefined);
    expect(missing.filter((where) => !NO_SERIES_HERE.has(where))).toEqual([]);
  });
});
