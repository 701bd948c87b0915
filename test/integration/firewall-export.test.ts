// Firewall pushback through the real proxy: a verdict that refuses a source shows in GET /pushback (JSON
// and text), in the nftables script the proxy writes atomically (checked by nft where it is installed),
// and starts the operator's command; a verdict stored by one node reaches another node's export through
// Redis; observe mode exports nothing; a failing or hanging command never holds up sessions.
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { startTestProxy, type TestProxy } from '../support/proxy.js';
import { deleteKeys, TEST_REDIS_URL } from '../support/redis-keys.js';
import { waitForAsync } from '../support/redis-server.js';
import { completeSession } from '../support/sessions.js';
import { SmtpDialog } from '../support/smtp-dialog.js';

let upstream: FakeUpstream | undefined;
const proxies: TestProxy[] = [];
const redisPrefixes: string[] = [];

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((proxy) => proxy.stop()));
  await upstream?.close();
  upstream = undefined;
  for (const prefix of redisPrefixes.splice(0)) await deleteKeys(prefix);
});

const nftAvailable = spawnSync('nft', ['--version']).status === 0;

async function start(policy: string, env: NodeJS.ProcessEnv = {}): Promise<TestProxy> {
  upstream ??= await FakeUpstream.start();
  const proxy = await startTestProxy(upstream.address, policy, env);
  proxies.push(proxy);
  return proxy;
}

/** A client that speaks HTTP to the SMTP port: non-SMTP, 30 points, a reject verdict at session end. */
async function httpOnSmtpPort(port: number, localAddress: string): Promise<void> {
  const dialog = await SmtpDialog.connect(port, { localAddress });
  try {
    expect((await dialog.reply()).code).toBe(220);
    expect((await dialog.command('GET / HTTP/1.1')).code).toBe(421);
  } finally {
    dialog.destroy();
  }
}

async function admin(proxy: TestProxy, path: string): Promise<Response> {
  return fetch(`http://127.0.0.1:${proxy.proxy.adminAddress.port}${path}`);
}

interface PushbackBody {
  enforced: boolean;
  stale: boolean;
  entries: Array<{ prefix: string; action: string; detector: string; ttlSeconds: number | null; reasons: string[] }>;
}

async function pushback(proxy: TestProxy): Promise<PushbackBody> {
  return (await (await admin(proxy, '/pushback')).json()) as PushbackBody;
}

async function metric(proxy: TestProxy, pattern: RegExp): Promise<number> {
  const text = await (await admin(proxy, '/metrics')).text();
  return text.split('\n').filter((line) => pattern.test(line)).reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

describe('firewall export', () => {
  it('exports a reject verdict and the deny list: /pushback, the nftables file, and the command', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'pushback-firewall-'));
    const file = join(directory, 'pushback.nft');
    const log = join(directory, 'command.log');
    const proxy = await start([
      'pushback:',
      '  deny: ["203.0.113.0/24", "2001:db8:bad::/48"]',
      '  firewall:',
      `    nftablesFile: "${file}"`,
      `    command: ["/bin/sh", "-c", "cat \\"$0\\" >> ${log}; echo ---- >> ${log}", "{file}"]`,
    ].join('\n'));
    // At start: the deny list alone, as permanent elements.
    await waitForAsync(async () => existsSync(log), 5_000, 'the first command run');
    expect(readFileSync(file, 'utf8')).toContain('add element inet smtp_pushback blocked_v4 { 203.0.113.0/24 }');
    expect(readFileSync(file, 'utf8')).toContain('add element inet smtp_pushback blocked_v6 { 2001:db8:bad::/48 }');

    await httpOnSmtpPort(proxy.port, '127.44.0.9');
    // The verdict triggers a read at once; well inside the 5 s refresh interval.
    await waitForAsync(async () => (await pushback(proxy)).entries.some((entry) => entry.prefix === '127.44.0.9/32'), 3_000, 'the verdict in /pushback');
    const body = await pushback(proxy);
    expect(body.enforced).toBe(true);
    const entry = body.entries.find((row) => row.prefix === '127.44.0.9/32')!;
    expect(entry).toMatchObject({ action: 'reject', detector: 'non-smtp' });
    expect(entry.ttlSeconds).toBeGreaterThan(590);
    expect(entry.ttlSeconds).toBeLessThanOrEqual(600);
    expect(entry.reasons.join(' ')).toMatch(/non-SMTP/);
    expect(body.entries.find((row) => row.prefix === '203.0.113.0/24')).toMatchObject({ action: 'deny-list', ttlSeconds: null });

    const text = await (await admin(proxy, '/pushback?format=text')).text();
    expect(text.split('\n')).toEqual(['127.44.0.9/32', '203.0.113.0/24', '2001:db8:bad::/48', '']);
    await waitForAsync(async () => readFileSync(file, 'utf8').includes('127.44.0.9 timeout'), 3_000, 'the nftables file to hold the verdict');
    expect(readFileSync(file, 'utf8')).toMatch(/blocked_v4 \{ 127\.44\.0\.9 timeout (59\d|600)s, 203\.0\.113\.0\/24 \}/);
    // Atomic writes leave no temporary files behind.
    expect(readdirSync(directory).sort()).toEqual(['command.log', 'pushback.nft']);
    await waitForAsync(async () => readFileSync(log, 'utf8').includes('127.44.0.9'), 5_000, 'the command to run on the change');
    expect(await metric(proxy, /^smtp_pushback_firewall_commands_total\{result="ok"\}/)).toBeGreaterThanOrEqual(2);
    expect(await metric(proxy, /^smtp_pushback_firewall_prefixes\{family="ipv4"\}/)).toBe(2);
    if (nftAvailable) expect(spawnSync('nft', ['-c', '-f', file], { encoding: 'utf8' }).stderr).toBe('');
    expect((await admin(proxy, '/pushback?format=xml')).status).toBe(400);
    const first = (await (await admin(proxy, '/pushback?limit=1')).json()) as PushbackBody & { total: number };
    expect([first.total, first.entries.map((row) => row.prefix)]).toEqual([3, ['127.44.0.9/32']]);
    expect((await admin(proxy, '/pushback?limit=x')).status).toBe(400);
  });

  it('a verdict stored on one node reaches the other node’s export through Redis', async () => {
    const prefix = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
    redisPrefixes.push(prefix);
    const policy = `state: { keyPrefix: "${prefix}", flushIntervalMs: 50 }\npushback: { firewall: { refreshSeconds: 1 } }\n`;
    const env = { PUSHBACK_REDIS_URL: TEST_REDIS_URL };
    const nodeA = await start(policy, env);
    const nodeB = await start(policy, env);
    await httpOnSmtpPort(nodeA.port, '127.44.1.7');
    await waitForAsync(async () => (await (await admin(nodeB, '/pushback?format=text')).text()) === '127.44.1.7/32\n', 5_000, 'node B to export node A’s verdict');
    const entry = (await pushback(nodeB)).entries[0]!;
    expect(entry).toMatchObject({ prefix: '127.44.1.7/32', action: 'reject' });
    // Both nodes give the same remaining time: it is Redis's clock, not each node's.
    const fromA = (await pushback(nodeA)).entries[0]!;
    expect(Math.abs(fromA.ttlSeconds! - entry.ttlSeconds!)).toBeLessThanOrEqual(2);
  });

  it('five addresses speaking HTTP in one /24 block the five at the firewall, not the /24 (the proxy still refuses it)', async () => {
    const proxy = await start('pushback: { firewall: { refreshSeconds: 1 } }\n');
    for (let host = 1; host <= 5; host += 1) await httpOnSmtpPort(proxy.port, `127.45.0.${host}`);
    // The screen widens on its five suspects: a sixth address of the /24 is refused at connect ...
    await waitForAsync(async () => (await metric(proxy, /^smtp_pushback_verdicts_total\{.*detector="prefix"\}/)) === 1, 5_000, 'the screen’s /24 verdict');
    const sixth = await SmtpDialog.connect(proxy.port, { localAddress: '127.45.0.99' });
    expect((await sixth.reply()).code).toBe(554);
    sixth.destroy();
    // ... but the firewall drops only the five that offended.
    await waitForAsync(async () => {
      const body = (await pushback(proxy)) as PushbackBody & { widenedWithheld?: number };
      return body.widenedWithheld === 1 || body.entries.some((entry) => entry.prefix === '127.45.0.0/24');
    }, 5_000, 'the export to read the /24 verdict');
    expect(await (await admin(proxy, '/pushback?format=text')).text()).toBe([1, 2, 3, 4, 5].map((host) => `127.45.0.${host}/32\n`).join(''));
  });

  it('a /24 with 26 offending addresses is blocked whole, unless it holds a proven sender or an allow-listed address', async () => {
    const prefix = `pbtest:${process.pid}:${randomBytes(4).toString('hex')}:`;
    redisPrefixes.push(prefix);
    // The screen widens at the 26th suspect here (k = 26), so each /24 gets all 26 of its own verdicts first.
    const proxy = await start([
      `state: { keyPrefix: "${prefix}", flushIntervalMs: 50 }`,
      'pushback:',
      '  allow: ["127.46.3.200"]',
      '  prefix: { suspectsPerPrefix: 26 }',
      '  firewall: { refreshSeconds: 1 }',
    ].join('\n'), { PUSHBACK_REDIS_URL: TEST_REDIS_URL });
    // A proven sender in 127.46.2.0/24: three clean sessions (proven.sessions).
    for (let session = 0; session < 3; session += 1) expect(await completeSession(proxy.port, '127.46.2.200')).toBe(250);
    for (const network of ['127.46.1', '127.46.2', '127.46.3']) {
      for (let host = 1; host <= 26; host += 1) await httpOnSmtpPort(proxy.port, `${network}.${host}`);
    }
    await waitForAsync(async () => (await metric(proxy, /^smtp_pushback_verdicts_total\{.*detector="prefix"\}/)) === 3, 10_000, 'three /24 verdicts');
    const hosts = (network: string): string[] => Array.from({ length: 26 }, (_, index) => `${network}.${index + 1}/32`);
    const expected = ['127.46.1.0/24', ...hosts('127.46.2'), ...hosts('127.46.3')].sort();
    await waitForAsync(async () => {
      const text = await (await admin(proxy, '/pushback?format=text')).text();
      return JSON.stringify(text.split('\n').filter(Boolean).sort()) === JSON.stringify(expected);
    }, 10_000, 'the first /24 whole, the addresses of the other two');
    const body = (await pushback(proxy)) as PushbackBody & { widenedWithheld: number };
    expect(body.entries.find((entry) => entry.prefix === '127.46.1.0/24')).toMatchObject({ action: 'reject', detector: 'prefix' });
    // The proven sender's /24 is withheld here; the allow-listed one is left out when the set collapses.
    expect(body.widenedWithheld).toBe(1);
  });

  it('observe mode lists what would be blocked and exports nothing', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'pushback-firewall-'));
    const file = join(directory, 'pushback.nft');
    const proxy = await start(`mode: observe\npushback: { deny: ["203.0.113.0/24"], firewall: { nftablesFile: "${file}" } }\n`);
    await waitForAsync(async () => existsSync(file), 5_000, 'the nftables file');
    const body = await pushback(proxy);
    expect(body.enforced).toBe(false);
    expect(body.entries.map((entry) => entry.prefix)).toEqual(['203.0.113.0/24']);
    expect(await (await admin(proxy, '/pushback?format=text')).text()).toBe('');
    expect(readFileSync(file, 'utf8')).not.toContain('add element');
  });

  it('a hanging command is killed at its timeout and a failing one is counted; sessions go on meanwhile', async () => {
    const proxy = await start('pushback: { deny: ["203.0.113.0/24"], firewall: { command: ["/bin/sleep", "30"], commandTimeoutMs: 300 } }\n');
    // The command hangs from the start; mail still flows while it does.
    expect(await completeSession(proxy.port, '127.44.2.1')).toBe(250);
    await waitForAsync(async () => (await metric(proxy, /^smtp_pushback_firewall_commands_total\{result="timeout"\}/)) === 1, 5_000, 'the command to time out');

    // A command that leaves a child behind holding stderr still counts as done when it exits.
    const detaching = await start('pushback: { deny: ["203.0.113.0/24"], firewall: { command: ["/bin/sh", "-c", "sleep 30 & exit 0"], commandTimeoutMs: 60000 } }\n');
    await waitForAsync(async () => (await metric(detaching, /^smtp_pushback_firewall_commands_total\{result="ok"\}/)) === 1, 5_000, 'the detaching command to count as done');

    const failing = await start('pushback: { deny: ["203.0.113.0/24"], firewall: { command: ["/bin/false"] } }\n');
    await waitForAsync(async () => (await metric(failing, /^smtp_pushback_firewall_commands_total\{result="failed"\}/)) === 1, 5_000, 'the failure to be counted');
    const missing = await start('pushback: { deny: ["203.0.113.0/24"], firewall: { command: ["/nonexistent/nft"] } }\n');
    await waitForAsync(async () => (await metric(missing, /^smtp_pushback_firewall_commands_total\{result="failed"\}/)) === 1, 5_000, 'a missing program to be counted');
    expect(await completeSession(missing.port, '127.44.2.2')).toBe(250);
  });
});
