// What a real proxy process (the CLI's `serve`) gives the tools that read it: /metrics that Prometheus's
// own linter (promtool, Debian's prometheus package) passes, and a stdout that stays JSON on a pipe,
// readable lines only when asked for (or on a terminal).
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startProxyProcess, type ProxyProcess } from '../support/proxy-process.js';
import { abandonedSession, completeSession } from '../support/sessions.js';

const CLI = join(import.meta.dirname, '../../src/cli/main.ts');
let upstream: FakeUpstream;
let proxy: ProxyProcess;

beforeAll(async () => {
  upstream = await FakeUpstream.start();
  proxy = await startProxyProcess('log: { level: info }\nentropy: { statusIntervalMs: 100 }\n', { PUSHBACK_UPSTREAM: upstream.address });
  // Some traffic, so that labelled counters and the histograms have samples to lint.
  await completeSession(proxy.smtpPort);
  await abandonedSession(proxy.smtpPort);
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  await upstream?.close();
});

async function scrape(): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`, { signal: AbortSignal.timeout(5_000) });
  expect(response.status).toBe(200);
  return response.text();
}

describe('/metrics of a running proxy', () => {
  it('passes promtool check metrics with no problem reported', async () => {
    const body = await scrape();
    expect(body).toMatch(/^smtp_pushback_transactions_total\{outcome="relayed"\} 1$/m);
    expect(body).toMatch(/^smtp_pushback_upstream_reply_seconds_count\{step="dot"\} 1$/m);
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8', timeout: 30_000 });
    expect(lint.error, 'promtool (Debian package prometheus; .ci/install-deps.sh installs it)').toBeUndefined();
    expect({ status: lint.status, output: `${lint.stdout}${lint.stderr}` }).toEqual({ status: 0, output: '' });
  });

  it("has Node's standard metrics by their own names and ours under smtp_pushback_", async () => {
    const body = await scrape();
    expect(body).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(body).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    const names = [...body.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((match) => ({ name: match[1]!, type: match[2]! }));
    expect(names.length).toBeGreaterThan(30);
    expect(names.filter(({ name }) => name.includes('process_process'))).toEqual([]);
    expect(names.filter(({ name }) => !/^(process_|nodejs_|smtp_pushback_)/.test(name))).toEqual([]);
    expect(names.filter(({ name, type }) => name.startsWith('smtp_pushback_') && type === 'counter' && !name.endsWith('_total'))).toEqual([]);
  });
});

describe('the log on stdout', () => {
  it('is one JSON object a line when stdout is not a terminal', () => {
    const lines = proxy.logLines.filter((line) => line !== '');
    expect(lines.length).toBeGreaterThan(2);
    for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
    expect(lines.map((line) => (JSON.parse(line) as { msg: string }).msg)).toContain('smtp-pushback listening');
  });

  it('is readable lines with --log-format pretty, even on a pipe', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pushback-pretty-'));
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve', '--log-format', 'pretty'], {
      env: { ...process.env, PUSHBACK_LISTEN: '127.0.0.1:0', PUSHBACK_ADMIN: '127.0.0.1:0', PUSHBACK_SPOOL_DIR: join(dir, 'spool'), PUSHBACK_UPSTREAM: upstream.address },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    const exited = once(child, 'exit');
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listening line within 20 s: ${lines.join('\n')}`)), 20_000);
        createInterface({ input: child.stdout }).on('line', (line) => {
          lines.push(line);
          if (line.includes('smtp-pushback listening')) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    const listening = lines.find((line) => line.includes('smtp-pushback listening'))!;
    expect(listening).toMatch(/^\d\d:\d\d:\d\d\.\d{3}Z INFO  smtp-pushback listening listen=127\.0\.0\.1:\d+ admin=127\.0\.0\.1:\d+ /);
    for (const line of lines) expect(line.startsWith('{'), line).toBe(false);
  }, 30_000);
});
