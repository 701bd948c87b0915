// The notice sender's own rules, without a proxy: only verdicts with an SFDS finding are reported, nothing
// when notices are off, sources flagged within batchDelayMs share one notice (dry run into a directory),
// and a shutdown drops what is still waiting, with a log line, instead of sending it late.
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/config/load.js';
import type { SfdsRecord } from '../../src/detect/sfds.js';
import { NetworkNotices } from '../../src/enforce/network-notices.js';
import type { VerdictEvent } from '../../src/policy/screen.js';
import { MemoryKv } from '../../src/state/memory-kv.js';
import { waitFor } from '../support/redis-server.js';

const NOW_MS = Date.UTC(2025, 0, 6, 12, 0, 0);

function harness(notices: string) {
  const dir = join(mkdtempSync(join(tmpdir(), 'pushback-notices-')), 'outbox');
  const parsed = parsePolicyText(`notices:\n  from: pushback@mx.example.org\n  dryRunDir: ${dir}\n  contacts: [{ cidr: 192.0.2.0/24, organisation: School, email: abuse@school.example }]\n${notices}`, 'p.yaml', {});
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.problems));
  const counts = { sent: 0, suppressed: 0, noContact: 0, failed: 0 };
  const logs: Array<{ msg: string; [key: string]: unknown }> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as { msg: string }) });
  const notices_ = new NetworkNotices({
    policy: () => parsed.policy,
    kv: new MemoryKv(),
    floodingRecords: (source): SfdsRecord[] => [{
      source, set: 'paper-hourly', firstStartMs: NOW_MS - 60_000, lastEndMs: NOW_MS,
      stats: { flows: 200, packets: 2_400, bytes: 300_000, meanPacketBytes: 125, durationPeriods: 6, flowsPerPeriod: 200, virtualFlows: 1, coveredPeriods: 6 },
    }],
    logger,
    metrics: { sent: () => counts.sent++, suppressed: () => counts.suppressed++, noContact: () => counts.noContact++, failed: () => counts.failed++ },
  });
  const verdict = (address: string, detectors = ['sfds']): VerdictEvent => ({ address, action: 'quarantine', detectors, expiresAtMs: NOW_MS + 600_000, mode: 'enforce', nowMs: NOW_MS });
  return { notices: notices_, dir, counts, logs, verdict };
}

describe('NetworkNotices', () => {
  it('reports only verdicts with an SFDS finding, and nothing while notices are off', async () => {
    const on = harness('  enabled: true\n  batchDelayMs: 0\n');
    on.notices.flag(on.verdict('192.0.2.7', ['early-talker', 'prefix']));
    on.notices.flag(on.verdict('198.51.100.7', ['entropy']));
    const off = harness('  enabled: false\n  batchDelayMs: 0\n');
    off.notices.flag(off.verdict('192.0.2.7'));
    off.notices.flag(off.verdict('198.51.100.7'));
    await Promise.all([on.notices.stop(), off.notices.stop()]);
    expect([on.counts, off.counts]).toEqual([{ sent: 0, suppressed: 0, noContact: 0, failed: 0 }, { sent: 0, suppressed: 0, noContact: 0, failed: 0 }]);
  });

  it('batches the sources of one contact flagged within batchDelayMs into one notice', async () => {
    const h = harness('  enabled: true\n  batchDelayMs: 100\n');
    for (const address of ['192.0.2.7', '192.0.2.8', '192.0.2.7']) h.notices.flag(h.verdict(address));
    await waitFor(() => h.counts.sent === 1, 5_000, () => 'the notice');
    h.notices.flag(h.verdict('192.0.2.9'));
    expect(h.counts).toEqual({ sent: 1, suppressed: 1, noContact: 0, failed: 0 });
    const [file] = readdirSync(h.dir);
    const eml = readFileSync(join(h.dir, file!), 'utf8');
    const headers = eml.slice(0, eml.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ');
    expect(headers).toMatch(/\r\nSubject: SMTP flooding from 192\.0\.2\.7 and 1 more host \(SFDS set paper-hourly\),/);
    expect(eml.match(/^Source 192\.0\.2\.\d, SFDS set/gm)).toEqual(['Source 192.0.2.7, SFDS set', 'Source 192.0.2.8, SFDS set']);
    await h.notices.stop();
  });

  it('drops what is still waiting at shutdown, and says so', async () => {
    const h = harness('  enabled: true\n  batchDelayMs: 60000\n');
    h.notices.flag(h.verdict('192.0.2.7'));
    await h.notices.stop();
    h.notices.flag(h.verdict('192.0.2.8'));
    expect(h.logs.filter((line) => line.msg === 'notices to source networks not sent: shutting down')).toEqual([expect.objectContaining({ notices: 1, to: ['abuse@school.example'] })]);
    expect(h.counts.sent).toBe(0);
  });
});
