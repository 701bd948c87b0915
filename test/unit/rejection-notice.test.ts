// What a rejection notice quotes of the original (header fields only, bounded, 7-bit) and how it is laid
// out (RFC 3464 multipart/report: text, message/delivery-status, text/rfc822-headers).
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MAX_QUOTED_HEADER_BYTES, quotedHeaders, readQuotedHeaders, renderRejectionNotice } from '../../src/quarantine/rejection-notice.js';
import type { EntryMeta } from '../../src/quarantine/spool-entry.js';

const quote = (text: string): string => quotedHeaders(Buffer.from(text, 'latin1'));

describe('quotedHeaders', () => {
  it('stops at the empty line, and keeps folded fields whole', () => {
    expect(quote('Received: from a\r\n\tby b; Wed\r\nSubject: hi\r\n\r\nbody\r\n')).toBe('Received: from a\r\n\tby b; Wed\r\nSubject: hi');
    expect(quote('Subject: bare LF\nTo: x@y\n\nbody\n')).toBe('Subject: bare LF\r\nTo: x@y');
  });

  it('stops at the first line that is not a field, where the body starts without an empty line', () => {
    expect(quote('Subject: hi\r\nBUY NOW at shop.example\r\nX-Later: no\r\n')).toBe('Subject: hi');
    expect(quote('no header at all\r\nSubject: hi\r\n')).toBe('');
    expect(quote(' continuation first\r\nSubject: hi\r\n')).toBe('');
    expect(quote('--boundary-looking line\r\n')).toBe('');
    expect(quote('Subject: hi\r\n   \r\nX-After-Blank: no\r\n')).toBe('Subject: hi');
  });

  it('quotes whole fields up to the bound, none past a line over 998 bytes or a line cut off', () => {
    const fields = Array.from({ length: 40 }, (_, index) => `X-Pad-${String(index).padStart(2, '0')}: ${'p'.repeat(290)}\r\n`).join('');
    const quoted = quote(`Subject: big\r\n${fields}\r\n`);
    expect(Buffer.byteLength(quoted)).toBeLessThanOrEqual(MAX_QUOTED_HEADER_BYTES);
    // Each padding field is 302 bytes with its CRLF, the Subject 14: 27 padding fields fit in 8,192.
    expect(quoted.split('\r\n')).toHaveLength(28);
    expect(quoted.endsWith(`X-Pad-26: ${'p'.repeat(290)}`)).toBe(true);
    expect(quote(`Subject: ok\r\nX-Long: ${'l'.repeat(1_000)}\r\nX-After: no\r\n`)).toBe('Subject: ok');
    expect(quote('Subject: ok\r\nX-Cut: half a li')).toBe('Subject: ok');
  });

  it('turns bytes outside printable ASCII into "?"', () => {
    expect(quotedHeaders(Buffer.from([...Buffer.from('Subject: caf'), 0xc3, 0xa9, 0x00, 0x0d, 0x0a]))).toBe('Subject: caf???');
  });

  it('reads no more of a long message than it can quote', async () => {
    let pulled = 0;
    const message = new Readable({
      read() {
        pulled += 1;
        this.push(Buffer.from(pulled === 1 ? 'Subject: endless\r\n' : `X-More: ${'m'.repeat(1_000)}\r\n`));
      },
    });
    expect(await readQuotedHeaders(message)).toBe('Subject: endless');
    expect(pulled).toBeLessThan(20);
    expect(message.destroyed).toBe(true);
  });
});

describe('renderRejectionNotice', () => {
  it('lays out the three parts of a multipart/report, quoting the fields given', () => {
    const meta = {
      id: 'abc', receivedAtMs: Date.UTC(2025, 0, 15, 21, 0), mailFrom: { address: 'sender@remote.test', params: {} }, recipients: ['victim@example.test'],
    } as unknown as EntryMeta;
    const text = renderRejectionNotice({
      meta, refused: [{ recipient: 'victim@example.test', code: 550, text: '5.1.1 <victim@example.test>: User unknown' }],
      headers: 'Subject: held', reportingHostname: 'proxy.test', nowMs: Date.UTC(2025, 0, 15, 22, 30), boundary: '=_b',
    });
    expect(text).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@proxy\.test>\r\nTo: <sender@remote\.test>\r\n/);
    expect(text).toContain('Content-Type: multipart/report; report-type=delivery-status; boundary="=_b"\r\n');
    expect(text.split('--=_b').map((part) => part.split('\r\n')[1])).toEqual([
      'To: <sender@remote.test>', 'Content-Type: text/plain; charset=us-ascii', 'Content-Type: message/delivery-status',
      'Content-Type: text/rfc822-headers', '',
    ]);
    expect(text).toContain('Final-Recipient: rfc822; victim@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <victim@example.test>: User unknown\r\n');
    expect(text).toContain('Content-Type: text/rfc822-headers\r\n\r\nSubject: held\r\n\r\n--=_b--\r\n');
    expect(text).not.toMatch(/[^\t\r\n\x20-\x7e]/);
  });
});
