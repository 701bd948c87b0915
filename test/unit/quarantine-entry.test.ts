// Pure parts of the quarantine spool: entry ids, the metadata record, the list filter and our Received header.
import { describe, expect, it } from 'vitest';
import { buildReceivedHeader, formatRfc5322Date } from '../../src/quarantine/received-header.js';
import {
  applyPatch, compileEntryFilter, formatEntryId, isEntryId, parseEntryMeta, serializeEntryMeta, type EntryMeta,
} from '../../src/quarantine/spool-entry.js';

const META: EntryMeta = {
  version: 1,
  id: '20250131T235959123Z-0a1b2c3d4e',
  receivedAtMs: Date.UTC(2025, 0, 31, 23, 59, 59, 123),
  client: { address: '2001:db8::1', port: 4242, helo: 'h.example' },
  mailFrom: { address: 's@example.test', params: { SMTPUTF8: true } },
  recipients: ['r@example.test'],
  sizeBytes: 10,
  verdict: { reasons: ['x'], score: 2 },
  attempts: 0,
  nextAttemptAtMs: 0,
  state: 'held',
};

describe('entry ids', () => {
  // The sender hears the id in "250 2.0.0 Ok: queued as <id>"; Postfix's short queue ids look so.
  const postfixShortQueueId = /^[0-9A-F]{10,12}$/;

  it('have the shape of a Postfix queue id: the microsecond in 5 hex digits, then 6 random ones', () => {
    const id = formatEntryId(Date.UTC(2025, 0, 31, 23, 59, 59, 123), '0a1b2c3d4e');
    expect(id).toMatch(postfixShortQueueId);
    expect(id).toMatch(/^[0-9A-F]{11}$/);
    // 123 ms, plus 0x2C3D4E % 1000 = 278 µs: 123278 µs = 0x1E18E.
    expect(id).toBe('1E18E2C3D4E');
    for (const ms of [0, 999, Date.UTC(2026, 11, 4, 0, 0, 0, 999)]) expect(formatEntryId(ms, 'ffffff')).toMatch(postfixShortQueueId);
    for (const real of ['4DD5120C2D5', 'A848F20C043']) expect(isEntryId(real)).toBe(true);
    expect(() => formatEntryId(0, 'XYZ')).toThrow(RangeError);
    expect(() => formatEntryId(0, 'abc')).toThrow(RangeError);
  });

  it('of the earlier time-stamped shape are still accepted, so an existing spool loads', () => {
    expect(isEntryId('20250131T235959123Z-0a1b2c3d4e')).toBe(true);
    expect(parseEntryMeta(serializeEntryMeta({ ...META, id: '20250131T235959123Z-0a1b2c3d4e' }).toString()).id).toBe('20250131T235959123Z-0a1b2c3d4e');
  });

  it('reject anything that could leave the spool directory', () => {
    for (const bad of ['../x', '20250131T235959123Z-0a1b2c3d4e/..', '20250131T235959123Z-0A1B2C3D4E', '1E31E2C3D4E/..', '1e31e2c3d4e', '1E31E2C3D4', '']) {
      expect(isEntryId(bad), bad).toBe(false);
    }
  });
});

describe('metadata record', () => {
  it('round-trips through its file form and comes back frozen', () => {
    const parsed = parseEntryMeta(serializeEntryMeta(META).toString());
    expect(parsed).toEqual(META);
    expect(Object.isFrozen(parsed) && Object.isFrozen(parsed.client) && Object.isFrozen(parsed.verdict.reasons)).toBe(true);
  });

  it('refuses torn or foreign records', () => {
    expect(() => parseEntryMeta('{"version":1,')).toThrow();
    expect(() => parseEntryMeta(JSON.stringify({ ...META, state: 'lost' }))).toThrow();
    expect(() => parseEntryMeta(JSON.stringify({ ...META, id: '../../etc/passwd' }))).toThrow();
  });

  it('patches: undefined lastError clears it; invalid values are refused', () => {
    const failed = applyPatch(META, { attempts: 1, lastError: '451 later' });
    expect(failed).toMatchObject({ attempts: 1, lastError: '451 later' });
    expect('lastError' in applyPatch(failed, { lastError: undefined })).toBe(false);
    expect(() => applyPatch(META, { attempts: -1 })).toThrow();
  });
});

describe('list filter', () => {
  const v4 = { ...META, client: { ...META.client, address: '192.0.2.77' } };
  const mapped = { ...META, client: { ...META.client, address: '::ffff:192.0.2.78' } };

  it('matches prefixes of either family, and IPv4-mapped clients as IPv4', () => {
    const in24 = compileEntryFilter({ sourceCidr: '192.0.2.0/24' });
    expect([in24(v4), in24(mapped), in24(META)]).toEqual([true, true, false]);
    const in32 = compileEntryFilter({ sourceCidr: '2001:db8::/32' });
    expect([in32(v4), in32(META)]).toEqual([false, true]);
    expect(compileEntryFilter({ sourceCidr: '2001:db8::1' })(META)).toBe(true);
  });

  it('filters by time and state, and refuses a bad prefix up front', () => {
    expect(compileEntryFilter({ sinceMs: META.receivedAtMs })(META)).toBe(true);
    expect(compileEntryFilter({ sinceMs: META.receivedAtMs + 1 })(META)).toBe(false);
    expect(compileEntryFilter({ state: 'rejected' })(META)).toBe(false);
    expect(() => compileEntryFilter({ sourceCidr: '192.0.2.0/99' })).toThrow(RangeError);
  });
});

describe('Received header', () => {
  const base = {
    helo: 'mail.sender.test', clientHostname: 'mx.sender.test', clientAddress: '192.0.2.5', byHostname: 'proxy.test',
    protocol: 'ESMTP', id: '20250131T235959123Z-0a1b2c3d4e', recipients: ['victim@example.test'], receivedAtMs: META.receivedAtMs,
  };

  it('records the original client, our id and the one recipient', () => {
    expect(buildReceivedHeader(base)).toBe(
      'Received: from mail.sender.test (mx.sender.test [192.0.2.5])\r\n' +
        '\tby proxy.test (smtp-pushback) with ESMTP id 20250131T235959123Z-0a1b2c3d4e\r\n' +
        '\tfor <victim@example.test>; Fri, 31 Jan 2025 23:59:59 +0000\r\n',
    );
  });

  it('writes unknown names, IPv6 and mapped IPv4 literals, and no for-clause for several or odd recipients', () => {
    const header = buildReceivedHeader({ ...base, clientHostname: undefined, clientAddress: '::ffff:192.0.2.9', recipients: ['a@x', 'b@x'] });
    expect(header).toMatch(/^Received: from mail\.sender\.test \(unknown \[192\.0\.2\.9\]\)\r\n\tby proxy\.test \(smtp-pushback\) with ESMTP id \S+; Fri/);
    expect(buildReceivedHeader({ ...base, clientAddress: '2001:db8::5' })).toContain('[IPv6:2001:db8::5]');
    expect(buildReceivedHeader({ ...base, recipients: ['jörg@example.test'] })).not.toContain('for <');
  });

  it('keeps client-chosen text from breaking out of the header', () => {
    const header = buildReceivedHeader({ ...base, helo: 'evil)\r\nX-Injected: yes (', clientHostname: '' });
    expect(header.split('\r\n')).toHaveLength(4);
    expect(header).toMatch(/^Received: from evilX-Injected:yes \(unknown \[192\.0\.2\.5\]\)\r\n/);
  });

  it('formats RFC 5322 dates in UTC', () => {
    expect(formatRfc5322Date(Date.UTC(2024, 1, 29, 7, 5, 3))).toBe('Thu, 29 Feb 2024 07:05:03 +0000');
  });
});
