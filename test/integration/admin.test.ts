// The admin listener and the `status` command against a running proxy.
import { execFile } from 'node:child_process';
import http from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { abandonedSession, completeSession } from '../support/sessions.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '../../src/cli/main.ts');
let upstream: FakeUpstream;
let proxy: TestProxy;
let admin: string;

beforeAll(async () => {
  upstream = await FakeUpstream.start();
  // A second SFDS set of a day, not the default minute: on this shared machine the CLI may start in the next minute.
  proxy = await startTestProxy(upstream.address, [
    'entropy: { statusIntervalMs: 100, minPairs: 0 }',
    'pushback: { sfds: { sets: [',
    '  { name: paper-hourly, periodSeconds: 3600, minMeanPacketBytes: 100, minFlowsPerPeriod: 180, minDurationPeriods: 5 },',
    '  { name: daily, periodSeconds: 86400, minMeanPacketBytes: 60, minFlowsPerPeriod: 1000, minDurationPeriods: 0 } ] } }',
  ].join('\n'));
  admin = `127.0.0.1:${proxy.proxy.adminAddress.port}`;
});

afterAll(async () => {
  await proxy.stop();
  await upstream.close();
});

describe('admin HTTP', () => {
  it('answers /healthz, /readyz, 404 and 405', async () => {
    expect((await fetch(`http://${admin}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${admin}/readyz`)).status).toBe(200);
    expect((await fetch(`http://${admin}/nothing`)).status).toBe(404);
    expect((await fetch(`http://${admin}/status`, { method: 'POST' })).status).toBe(405);
  });

  it('answers IP literals and localhost, and 421 to any other Host (DNS rebinding)', async () => {
    const port = proxy.proxy.adminAddress.port;
    const statusFor = (host: string): Promise<number> => new Promise((resolve, reject) => {
      const request = http.get({ host: '127.0.0.1', port, path: '/status', headers: { host }, timeout: 5_000 }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('error', reject);
    });
    expect(await statusFor(`127.0.0.1:${port}`)).toBe(200);
    expect(await statusFor(`localhost:${port}`)).toBe(200);
    expect(await statusFor(`[::1]:${port}`)).toBe(200);
    expect(await statusFor(`evil.example:${port}`)).toBe(421);
    expect(await statusFor('admin.example.org')).toBe(421);
  });

  it('shows pairs in /status and /metrics, and the sources of abnormal pairs', async () => {
    expect(await completeSession(proxy.port)).toBe(250);
    await abandonedSession(proxy.port, '127.0.0.9');
    await new Promise((resolve) => setTimeout(resolve, 600)); // one flush and one status tick
    const status = (await (await fetch(`http://${admin}/status`)).json()) as Record<string, unknown>;
    expect(status).toMatchObject({ normalPairs: 6, abnormalPairs: 1, store: 'memory', degraded: false, windowSeconds: 10 });
    for (const field of ['status', 'hNormal', 'hAbnormal', 'distance', 'topSources']) expect(status).toHaveProperty(field);
    expect(status.topSources).toEqual([
      { source: '127.0.0.9', normal: 0, abnormal: 1 },
      { source: '127.0.0.1', normal: 6, abnormal: 0 },
    ]);
    const metrics = await (await fetch(`http://${admin}/metrics`)).text();
    expect(metrics).toMatch(/^smtp_pushback_pairs_total\{kind="normal"\} 6$/m);
    expect(metrics).toMatch(/^smtp_pushback_pairs_total\{kind="abnormal"\} 1$/m);
    expect(metrics).toMatch(/^smtp_pushback_transactions_total\{outcome="relayed"\} 1$/m);
    expect(metrics).toMatch(/^smtp_pushback_upstream_reply_seconds_count\{step="dot"\} 1$/m);
    expect(metrics).toMatch(/^smtp_pushback_status 1$/m);
    expect(metrics).toMatch(/^smtp_pushback_state_degraded 0$/m);
  });

  it('`smtp-pushback status` prints the same readably and as JSON', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', CLI, 'status', '--admin', admin], { timeout: 20_000 });
    expect(stdout).toMatch(/^status {4}1 \(safe\)/m);
    expect(stdout).toMatch(/^store {5}memory$/m);
    expect(stdout).toMatch(/^127\.0\.0\.9 +1 +0$/m);
    const json = await run(process.execPath, ['--import', 'tsx', CLI, 'status', '--admin', admin, '--json'], { timeout: 20_000 });
    expect(JSON.parse(json.stdout)).toMatchObject({ store: 'memory', abnormalPairs: 1, mode: 'enforce', effectiveStatus: 1 });
  });

  it('`smtp-pushback top` prints the SFDS sources like the paper’s Fig. 2', async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', CLI, 'top', '--admin', admin, '--n', '5'], { timeout: 20_000 });
    const [header, ...rows] = stdout.trim().split('\n');
    expect(header?.split(/\s{2,}/)).toEqual(['source', 'set', 'flows', 'packets', 'bytes', 'mean B/pkt', 'duration', 'flows/period']);
    expect(rows.map((row) => row.split(/\s+/).slice(0, 3))).toEqual([['127.0.0.1', 'paper-hourly', '1'], ['127.0.0.9', 'paper-hourly', '1']]);
    const json = await run(process.execPath, ['--import', 'tsx', CLI, 'top', '--admin', admin, '--json', '--set', 'daily'], { timeout: 20_000 });
    expect(JSON.parse(json.stdout)[0]).toMatchObject({ source: '127.0.0.1', set: 'daily', flows: 1 });
  });
});
