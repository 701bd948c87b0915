// The firewall exporter over a memory store with injected time: it exports only on change, re-reads
// when an element expires (so a narrower prefix hidden under a wider one comes back), keeps the last
// set when the store fails, and retries a file it could not write. Policy problems name the key.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { formatProblem, parsePolicyText } from '../../src/config/load.js';
import type { Policy } from '../../src/config/schema.js';
import { FirewallExporter } from '../../src/enforce/firewall-export.js';
import { createLogger } from '../../src/log.js';
import { MemoryKv } from '../../src/state/memory-kv.js';
import type { SharedKv } from '../../src/state/shared-kv.js';

function policyWith(yaml: string): Policy {
  const result = parsePolicyText(yaml, 'p.yaml', {});
  if (!result.ok) throw new Error(result.problems.map(formatProblem).join('\n'));
  return result.policy;
}

function capturedLogger(): { logger: ReturnType<typeof createLogger>; lines: () => Array<{ msg: string }> } {
  const chunks: string[] = [];
  const stream = new Writable({ write(chunk, _encoding, done) { chunks.push(String(chunk)); done(); } });
  return { logger: createLogger('info', stream), lines: () => chunks.join('').split('\n').filter(Boolean).map((line) => JSON.parse(line) as { msg: string }) };
}

const reject = (scope: string): string => JSON.stringify({ action: 'reject', detector: 'non-smtp', reasons: ['r'], scope });

describe('FirewallExporter', () => {
  it('writes on change only, and brings back a narrower prefix when the wider one around it expires', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'pushback-fw-unit-'));
    // In a directory that does not exist yet: the exporter makes it.
    const file = join(directory, 'state', 'set.nft');
    let nowMs = 1_000_000;
    const kv = new MemoryKv();
    const updates: number[] = [];
    const exporter = new FirewallExporter({
      kv,
      // One offending address is evidence enough here: this test is about expiry, not widening.
      policy: () => policyWith(`pushback: { firewall: { nftablesFile: "${file}", refreshSeconds: 3600, widening: { minSources: 1, minSharePercentV4: 0 } } }`),
      logger: capturedLogger().logger,
      metrics: { updated: (v4) => updates.push(v4), command: () => undefined, refreshFailed: () => undefined },
      now: () => nowMs,
    });
    await kv.setListed('v:192.0.2.0/24', reject('192.0.2.0/24'), 10_000, nowMs);
    await kv.setListed('v:192.0.2.7', reject('192.0.2.7'), 60_000, nowMs);
    await exporter.start();
    expect(readFileSync(file, 'utf8')).toContain('{ 192.0.2.0/24 timeout 10s }');
    nowMs += 1_000;
    await exporter.refresh();
    expect(updates).toEqual([1]);
    nowMs += 9_500;
    await exporter.refresh();
    expect(readFileSync(file, 'utf8')).toContain('{ 192.0.2.7 timeout 50s }');
    expect(exporter.exportedNow().map((entry) => entry.prefix)).toEqual(['192.0.2.7/32']);
    expect(updates).toEqual([1, 1]);
    await exporter.stop();
    rmSync(directory, { recursive: true });
  });

  it('reads the store at most once a second, however many exported elements expire or verdicts arrive', async () => {
    const kv = new MemoryKv();
    let reads = 0;
    const counting: SharedKv = Object.assign(Object.create(kv) as SharedKv, {
      listed: (...args: Parameters<SharedKv['listed']>) => {
        reads += 1;
        return kv.listed(...args);
      },
    });
    const exporter = new FirewallExporter({ kv: counting, policy: () => policyWith('pushback: { firewall: { refreshSeconds: 3600 } }'), logger: capturedLogger().logger });
    // Twenty exported verdicts expiring 50 ms apart: each expiry asks for a read.
    for (let index = 0; index < 20; index += 1) await kv.setListed(`v:192.0.2.${index + 1}`, reject(`192.0.2.${index + 1}`), 100 + index * 50, Date.now());
    const startedMs = Date.now();
    await exporter.start();
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    // Then twenty verdicts stored at once.
    for (let index = 0; index < 20; index += 1) exporter.verdictStored('reject');
    await new Promise((resolve) => setTimeout(resolve, 300));
    await exporter.stop();
    const elapsedMs = Date.now() - startedMs;
    // The first read, then at most one per second gone by (a 250 ms floor would read about 6 times here).
    expect(reads).toBeGreaterThanOrEqual(2);
    expect(reads).toBeLessThanOrEqual(1 + Math.ceil(elapsedMs / 1_000));
  });

  it('keeps the last set, marked stale, while the store fails, and logs the outage once', async () => {
    const kv = new MemoryKv();
    let failing = false;
    const flaky: SharedKv = Object.assign(Object.create(kv) as SharedKv, {
      listed: (...args: Parameters<SharedKv['listed']>) => (failing ? Promise.reject(new Error('connection lost')) : kv.listed(...args)),
    });
    const log = capturedLogger();
    const exporter = new FirewallExporter({ kv: flaky, policy: () => policyWith('pushback: { firewall: { refreshSeconds: 3600 } }'), logger: log.logger });
    await kv.setListed('v:192.0.2.7', reject('192.0.2.7'), 60_000, Date.now());
    await exporter.start();
    failing = true;
    await exporter.refresh();
    await exporter.refresh();
    expect(exporter.snapshot().stale).toBe(true);
    expect(exporter.exportedNow().map((entry) => entry.prefix)).toEqual(['192.0.2.7/32']);
    failing = false;
    await exporter.refresh();
    expect(exporter.snapshot().stale).toBe(false);
    await exporter.stop();
    const messages = log.lines().map((line) => line.msg);
    expect(messages.filter((msg) => msg.includes('cannot read the shared verdicts'))).toHaveLength(1);
    expect(messages).toContain('firewall export: shared verdicts readable again');
  });

  it('while the store is down, still follows the policy: observe mode empties the export, the last verdicts stay otherwise', async () => {
    const kv = new MemoryKv();
    let failing = false;
    const flaky: SharedKv = Object.assign(Object.create(kv) as SharedKv, {
      listed: (...args: Parameters<SharedKv['listed']>) => (failing ? Promise.reject(new Error('connection lost')) : kv.listed(...args)),
    });
    let yaml = 'pushback: { firewall: { refreshSeconds: 3600 } }';
    const exporter = new FirewallExporter({ kv: flaky, policy: () => policyWith(yaml), logger: capturedLogger().logger });
    await kv.setListed('v:192.0.2.7', reject('192.0.2.7'), 60_000, Date.now());
    await exporter.start();
    failing = true;
    yaml = 'mode: observe\npushback: { firewall: { refreshSeconds: 3600 } }';
    await exporter.refresh();
    expect(exporter.exportedNow()).toEqual([]);
    expect(exporter.snapshot()).toMatchObject({ enforced: false, stale: true });
    yaml = 'pushback: { deny: [203.0.113.0/24], firewall: { refreshSeconds: 3600 } }';
    await exporter.refresh();
    expect(exporter.exportedNow().map((entry) => entry.prefix)).toEqual(['192.0.2.7/32', '203.0.113.0/24']);
    await exporter.stop();
  });

  it('widens to a /24 with the evidence, never over a proven sender, and not at all when the marks cannot be read', async () => {
    const kv = new MemoryKv();
    let marksFailing = false;
    const flaky: SharedKv = Object.assign(Object.create(kv) as SharedKv, {
      getMany: (...args: Parameters<SharedKv['getMany']>) => (marksFailing ? Promise.reject(new Error('connection lost')) : kv.getMany(...args)),
    });
    const log = capturedLogger();
    const exporter = new FirewallExporter({ kv: flaky, policy: () => policyWith('pushback: { firewall: { refreshSeconds: 3600 } }'), logger: log.logger });
    const nowMs = Date.now();
    for (const network of ['198.51.100', '198.51.101']) {
      await kv.setListed(`v:${network}.0/24`, reject(`${network}.0/24`), 60_000, nowMs);
      for (let host = 1; host <= 26; host += 1) await kv.setListed(`v:${network}.${host}`, reject(`${network}.${host}`), 60_000, nowMs);
    }
    // A proven sender in the second /24 (the screen marks its /24 and /16).
    await kv.set('pvn:198.51.101.0/24', String(nowMs + 60_000), 60_000, nowMs);
    await exporter.start();
    const exported = exporter.exportedNow().map((entry) => entry.prefix);
    expect(exported).toEqual(['198.51.100.0/24', ...Array.from({ length: 26 }, (_, index) => `198.51.101.${index + 1}/32`)]);
    expect(exporter.snapshot().widenedWithheld).toBe(1);
    marksFailing = true;
    await exporter.refresh();
    expect(exporter.exportedNow()).toHaveLength(52);
    expect(exporter.exportedNow().every((entry) => entry.lengthBits === 32)).toBe(true);
    expect(exporter.snapshot().widenedWithheld).toBe(2);
    expect(log.lines().some((line) => line.msg.includes('cannot read the proven-sender marks'))).toBe(true);
    await exporter.stop();
  });

  it('creates the file’s directory, and writes the file on a later refresh when it could not the first time', async () => {
    // A file where its directory should be: not even mkdir -p can help until it is gone.
    const directory = join(mkdtempSync(join(tmpdir(), 'pushback-fw-unit-')), 'in-the-way');
    writeFileSync(directory, '');
    const file = join(directory, 'set.nft');
    const log = capturedLogger();
    const exporter = new FirewallExporter({ kv: new MemoryKv(), policy: () => policyWith(`pushback: { deny: [192.0.2.0/24], firewall: { nftablesFile: "${file}", refreshSeconds: 3600 } }`), logger: log.logger });
    await exporter.start();
    expect(log.lines().some((line) => line.msg === 'firewall export: cannot write the nftables file')).toBe(true);
    rmSync(directory);
    await exporter.refresh();
    expect(readFileSync(file, 'utf8')).toContain('{ 192.0.2.0/24 }');
    await exporter.stop();
  });
});

describe('firewall policy', () => {
  it('refuses equal set names, bad names and a {file} command without a file, naming the key', () => {
    const result = parsePolicyText([
      'pushback:',
      '  firewall:',
      '    setV4: same',
      '    setV6: same',
      '    table: "bad name"',
      '    command: [nft, -f, "{file}"]',
    ].join('\n'), 'p.yaml', {});
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const lines = result.problems.map(formatProblem);
    expect(lines).toEqual(expect.arrayContaining([
      expect.stringMatching(/^p\.yaml:5:\d+: pushback\.firewall\.table: must be a letter/),
    ]));
    // Cross-field checks run once the fields themselves are valid.
    const second = parsePolicyText('pushback:\n  firewall:\n    setV4: same\n    setV6: same\n    command: [nft, -f, "{file}"]\n', 'p.yaml', {});
    expect(second.ok).toBe(false);
    if (second.ok) return;
    expect(second.problems.map(formatProblem)).toEqual(expect.arrayContaining([
      expect.stringMatching(/pushback\.firewall\.setV6: setV4 and setV6 must differ/),
      expect.stringMatching(/pushback\.firewall\.command: the command names \{file\} but no nftablesFile is set/),
    ]));
  });
});
