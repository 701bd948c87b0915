// The delivery status notice (RFC 3464) for quarantined mail that Postfix refused at release
// (quarantine.release.bounceRejected): built here, handed to Postfix like any other mail, and sent from
// the null sender <> so that it can never cause another notice. Its sender may be forged, so the notice
// carries as little of the client's as will identify the message: the header fields of the original
// (text/rfc822-headers, RFC 6522), whole fields only, at most MAX_QUOTED_HEADER_BYTES, 7-bit, never a
// line of the body. The proxy is the notice's author, so it speaks to Postfix as itself (no XCLIENT).
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { UpstreamConnection, type UpstreamOptions } from '../upstream/connection.js';
import { replyText, type SmtpReply } from '../upstream/reply.js';
import type { RecipientReply } from './release-plan.js';
import type { EntryMeta } from './spool-entry.js';

export interface NoticeOptions {
  /** The same Postfix that released mail goes to (upstreamOptionsFromPolicy); its xclient setting is not used. */
  upstream: UpstreamOptions;
  /** Our name in the report (Reporting-MTA) and in the notice's From and Message-ID. */
  reportingHostname: string;
  nowMs: number;
}

/**
 * Header bytes of the original quoted at most: a Received chain, Subject, Message-ID and Date fit (Postfix's
 * own headers-only bounces are the same idea); 16 KB of a client's own text to a forged sender does not.
 */
export const MAX_QUOTED_HEADER_BYTES = 8_192;
/** RFC 5322's line limit: a longer line cannot be quoted without breaking it, so quoting stops there. */
const MAX_LINE_BYTES = 998;
/** A header field's first line: a name of printable ASCII other than the colon, then the colon. */
const FIELD_START = /^[\x21-\x39\x3b-\x7e]+:/;
const CONTINUATION = /^[ \t]/;

/**
 * The header fields at the start of a message, as the notice quotes them: up to the first empty line, or
 * the first line that is neither a field nor a field's continuation (there the body starts, as Postfix
 * reads it, even without the empty line); whole fields while they fit in MAX_QUOTED_HEADER_BYTES; a
 * line cut off by the end of `bytes` is not quoted; bytes outside printable ASCII and tab become "?".
 * Pure; CRLF between lines, none at the end.
 */
export function quotedHeaders(bytes: Buffer): string {
  const text = bytes.toString('latin1');
  // Only lines that ended: the part after the last line break may be a line cut short by the read.
  const lines = text.slice(0, text.lastIndexOf('\n') + 1).split('\n').slice(0, -1).map((line) => line.replace(/\r$/, ''));
  const fields: string[][] = [];
  for (const line of lines) {
    if (line.length > MAX_LINE_BYTES) break;
    if (FIELD_START.test(line)) fields.push([line]);
    else if (CONTINUATION.test(line) && fields.length > 0 && line.trim() !== '') fields.at(-1)!.push(line);
    else break;
  }
  const quoted: string[] = [];
  let bytesUsed = 0;
  for (const field of fields) {
    const fieldBytes = field.reduce((sum, line) => sum + line.length + 2, 0);
    if (bytesUsed + fieldBytes > MAX_QUOTED_HEADER_BYTES) break;
    bytesUsed += fieldBytes;
    quoted.push(...field);
  }
  return quoted.map(sevenBit).join('\r\n');
}

/** Reads no more of the message than quotedHeaders can use, then destroys the stream. */
export async function readQuotedHeaders(message: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of message) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length > MAX_QUOTED_HEADER_BYTES + MAX_LINE_BYTES + 2) break;
      if (/\r?\n\r?\n/.test(Buffer.concat(chunks).toString('latin1'))) break;
    }
  } finally {
    message.destroy();
  }
  return quotedHeaders(Buffer.concat(chunks));
}

export interface NoticeContent {
  meta: EntryMeta;
  refused: readonly RecipientReply[];
  /** quotedHeaders of the original. */
  headers: string;
  reportingHostname: string;
  nowMs: number;
  /** The MIME boundary: random in use, so no quoted header can guess it and end a part early. */
  boundary: string;
}

/** The notice as it goes to Postfix: multipart/report with a text part, message/delivery-status and text/rfc822-headers. Pure. */
export function renderRejectionNotice(content: NoticeContent): string {
  const { meta, refused, headers, reportingHostname, boundary } = content;
  const dateOf = (ms: number): string => new Date(ms).toUTCString().replace('GMT', '+0000');
  const oneLine = (text: string): string => sevenBit(text.replace(/[\r\n]+/g, ' '));
  const recipients = refused.map((reply) => {
    const status = /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply.text ?? '')?.[1] ?? '5.0.0';
    return [
      `Final-Recipient: rfc822; ${oneLine(reply.recipient)}`, 'Action: failed', `Status: ${status}`,
      `Diagnostic-Code: smtp; ${reply.code} ${oneLine(reply.text ?? '')}`,
    ].join('\r\n');
  });
  return [
    `From: Mail Delivery System <MAILER-DAEMON@${reportingHostname}>`,
    `To: <${oneLine(meta.mailFrom.address)}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${dateOf(content.nowMs)}`,
    `Message-ID: <${meta.id}.notice@${reportingHostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is the mail system at host ${reportingHostname}.`,
    '',
    'Your message was held for review and then refused by the receiving mail server',
    'for the recipients below. The headers of your message are attached; its text is not.',
    '',
    ...refused.map((reply) => `<${oneLine(reply.recipient)}>: ${oneLine(`${reply.code} ${reply.text ?? ''}`)}`),
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${reportingHostname}`,
    `Arrival-Date: ${dateOf(meta.receivedAtMs)}`,
    '',
    recipients.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    '',
    headers,
    '',
    `--${boundary}--`,
    '',
  ].join('\r\n');
}

/**
 * Sends the sender the notice for the recipients Postfix refused, through Postfix: MAIL FROM:<>, one RCPT
 * to the original sender, DATA. Consumes `message` (only its header block is read). Nothing for a null
 * sender or no refusals. Rejects with Postfix's reply when it refuses the notice, or when it does not take
 * it within the upstream timeouts; the caller logs that (a notice is not retried).
 */
export async function sendRejectionNotice(
  meta: EntryMeta, refused: readonly RecipientReply[], message: Readable, options: NoticeOptions,
): Promise<void> {
  const sender = meta.mailFrom.address;
  if (sender === '' || refused.length === 0) {
    message.destroy();
    return;
  }
  // The sender becomes a command line: a line break or bracket in it would inject commands.
  if (/[\r\n<>]/.test(sender)) {
    message.destroy();
    throw new Error('the stored sender is not an address a notice can go to');
  }
  const notice = renderRejectionNotice({
    meta, refused, headers: await readQuotedHeaders(message), reportingHostname: options.reportingHostname,
    nowMs: options.nowMs, boundary: `=_notice_${randomBytes(12).toString('hex')}`,
  });
  const opened = await UpstreamConnection.open({ ...options.upstream, xclient: 'off' }, { address: '', port: 0 });
  const connection = opened.connection;
  try {
    expectPositive(opened.reply, 'session');
    const utf8 = /[^\x00-\x7f]/.test(sender);
    if (utf8 && !connection.capabilities.has('SMTPUTF8')) throw new Error('the sender needs SMTPUTF8, which Postfix does not offer');
    expectPositive(await connection.command(`MAIL FROM:<>${utf8 ? ' SMTPUTF8' : ''}`, 'mail'), 'MAIL FROM:<>');
    expectPositive(await connection.command(`RCPT TO:<${sender}>`, 'rcpt'), 'RCPT');
    expectPositive(await connection.data(Readable.from([Buffer.from(notice, 'latin1')]), () => undefined), 'the notice');
    connection.quit();
  } catch (error) {
    connection.destroy();
    throw error;
  }
}

function expectPositive(reply: SmtpReply, step: string): void {
  if (reply.code >= 400) throw new Error(`Postfix refused ${step}: ${reply.code} ${replyText(reply)}`);
}

function sevenBit(text: string): string {
  return text.replace(/[^\t\x20-\x7e]/g, '?');
}
