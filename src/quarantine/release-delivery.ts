// Hands one quarantined message to Postfix as if its original client were sending it now: XCLIENT with that
// client's address, port, name and HELO, so Postfix applies the checks it would have applied live; then MAIL
// with the stored parameters Postfix advertises, one RCPT per stored recipient, DATA, QUIT. Never rejects: a
// failure of the path to Postfix (connect, timeout, dropped connection) comes back as "no reply" (a retry),
// Postfix's own replies come back as they are. Also the delivery status notice for mail Postfix refused.
import type { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import type { Policy } from '../config/schema.js';
import { UpstreamConnection, type UpstreamOptions } from '../upstream/connection.js';
import { replyText, type SmtpReply } from '../upstream/reply.js';
import type { RecipientReply } from './release-plan.js';
import type { EntryMeta } from './spool-entry.js';

export interface DeliveryReport {
  /** One per stored recipient, in the shape planAfterAttempt takes. */
  replies: RecipientReply[];
  xclientSent: boolean;
  /** Postfix's queue id from "250 2.0.0 Ok: queued as X", to find the message in its log. */
  queueId?: string;
}

/** MAIL FROM parameters worth passing on, and the EHLO keyword Postfix must show for each. SIZE is ours. */
const MAIL_PARAMETERS: ReadonlyArray<{ name: string; capability: string }> = [
  { name: 'BODY', capability: '8BITMIME' },
  { name: 'SMTPUTF8', capability: 'SMTPUTF8' },
  { name: 'RET', capability: 'DSN' },
  { name: 'ENVID', capability: 'DSN' },
];

/** The connection options for releases, from the same policy keys the relay uses. */
export function upstreamOptionsFromPolicy(policy: Policy, observeReply?: UpstreamOptions['observeReply']): UpstreamOptions {
  const upstream = policy.upstream;
  return {
    host: upstream.address.host,
    port: upstream.address.port,
    heloName: upstream.heloName ?? policy.server.hostname,
    xclient: upstream.xclient,
    connectTimeoutMs: upstream.connectTimeoutMs,
    replyTimeoutMs: upstream.replyTimeoutMs,
    dataStallTimeoutMs: upstream.dataStallTimeoutMs,
    dataDoneTimeoutMs: upstream.dataDoneTimeoutMs,
    ...(observeReply ? { observeReply } : {}),
  };
}

/**
 * Delivers `message` (the stored bytes, unstuffed) for `meta`. Takes ownership of the stream and destroys it.
 * Aborting `signal` drops the connection without the final dot, so Postfix discards the partial message.
 */
export async function deliverEntry(
  meta: EntryMeta, message: Readable, options: UpstreamOptions, signal?: AbortSignal,
): Promise<DeliveryReport> {
  const everyone = (code: number | null, text: string): RecipientReply[] =>
    meta.recipients.map((recipient) => ({ recipient, code, text }));
  // The envelope becomes command lines: a line break in a stored address would inject commands.
  if ([meta.mailFrom.address, ...meta.recipients].some((address) => /[\r\n<>]/.test(address))) {
    message.destroy();
    return { replies: everyone(553, '5.1.7 unusable address in the stored envelope'), xclientSent: false };
  }
  let connection: UpstreamConnection | undefined;
  let xclientSent = false;
  const rcptReplies = new Map<string, SmtpReply>();
  const onAbort = (): void => connection?.destroy();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const opened = await UpstreamConnection.open(options, {
      address: meta.client.address, port: meta.client.port, hostname: meta.client.hostname, helo: meta.client.helo || undefined,
    });
    connection = opened.connection;
    xclientSent = opened.xclientSent;
    if (signal?.aborted) connection.destroy();
    if (opened.reply.code >= 400) {
      // About the session, not this message (a 421 rate limit, a refused XCLIENT): try again later.
      return { replies: everyone(null, `session refused: ${opened.reply.code} ${replyText(opened.reply)}`), xclientSent };
    }
    const mail = await connection.command(`MAIL FROM:<${meta.mailFrom.address}>${mailParameters(meta, connection.capabilities)}`, 'mail');
    if (mail.code >= 300) {
      connection.quit();
      return { replies: everyone(mail.code, replyText(mail)), xclientSent };
    }
    for (const recipient of meta.recipients) {
      rcptReplies.set(recipient, await connection.command(`RCPT TO:<${recipient}>${recipientParameters(meta, recipient, connection.capabilities)}`, 'rcpt'));
    }
    const accepted = meta.recipients.filter((recipient) => (rcptReplies.get(recipient)?.code ?? 500) < 300);
    if (accepted.length === 0) {
      connection.quit();
      return { replies: fromRcpt(meta.recipients, rcptReplies), xclientSent };
    }
    const final = await connection.data(message, () => (signal?.aborted ? 'release stopped' : undefined));
    connection.quit();
    const queueId = final.code < 300 ? /queued as ([0-9A-Za-z]+)/.exec(replyText(final))?.[1] : undefined;
    const replies = meta.recipients.map((recipient): RecipientReply => (accepted.includes(recipient)
      ? { recipient, code: final.code, text: replyText(final) }
      : fromRcpt([recipient], rcptReplies)[0] as RecipientReply));
    return { replies, xclientSent, ...(queueId ? { queueId } : {}) };
  } catch (error) {
    connection?.destroy();
    // Refusals Postfix gave at RCPT stand; everyone else learns nothing final from a broken session.
    const text = `no reply: ${(error as Error).message}`;
    const replies = meta.recipients.map((recipient): RecipientReply => {
      const rcpt = rcptReplies.get(recipient);
      return rcpt && rcpt.code >= 300 ? { recipient, code: rcpt.code, text: replyText(rcpt) } : { recipient, code: null, text };
    });
    return { replies, xclientSent };
  } finally {
    signal?.removeEventListener('abort', onAbort);
    message.destroy();
  }
}

function fromRcpt(recipients: readonly string[], rcptReplies: Map<string, SmtpReply>): RecipientReply[] {
  return recipients.map((recipient) => {
    const reply = rcptReplies.get(recipient);
    return reply ? { recipient, code: reply.code, text: replyText(reply) } : { recipient, code: null, text: 'not tried' };
  });
}

/** SIZE is the stored size (exact, our Received header included); the rest as the client gave them. */
function mailParameters(meta: EntryMeta, capabilities: Map<string, string>): string {
  const params = new Map(Object.entries(meta.mailFrom.params).map(([name, value]) => [name.toUpperCase(), value]));
  let out = capabilities.has('SIZE') ? ` SIZE=${meta.sizeBytes}` : '';
  for (const { name, capability } of MAIL_PARAMETERS) {
    const value = params.get(name);
    if (value === undefined || !capabilities.has(capability)) continue;
    if (value === true) out += ` ${name}`;
    else if (/^[\x21-\x7e]+$/.test(value)) out += ` ${name}=${value}`;
  }
  return out;
}

/** A recipient's DSN parameters as the client sent them, when Postfix offers DSN and they are plain ASCII words. */
function recipientParameters(meta: EntryMeta, recipient: string, capabilities: Map<string, string>): string {
  const params = meta.recipientParams?.[recipient];
  if (!params || !capabilities.has('DSN')) return '';
  return /^( [A-Z]+=[\x21-\x7e]+)+$/.test(params) ? params : '';
}

export interface NoticeOptions {
  upstream: UpstreamOptions;
  /** Our name in the report (Reporting-MTA) and in the notice's From and Message-ID. */
  reportingHostname: string;
  nowMs: number;
}

/** Headers of the original message quoted in a notice; more is cut (the notice must stay small). */
const MAX_QUOTED_HEADER_BYTES = 16_384;

/**
 * Sends the sender an RFC 3464 delivery status notice (multipart/report) for the recipients Postfix refused
 * with 5xx, through Postfix, from the null sender <> so that a notice can never cause another. Quotes only
 * the original headers (text/rfc822-headers): suspect content is not sent back out. Consumes `message`.
 * Never for a null sender. Rejects when Postfix does not take the notice within the upstream timeouts.
 */
export async function sendRejectionNotice(
  meta: EntryMeta, refused: readonly RecipientReply[], message: Readable, options: NoticeOptions,
): Promise<void> {
  if (meta.mailFrom.address === '' || refused.length === 0) {
    message.destroy();
    return;
  }
  const headers = await readHeaderBlock(message);
  const boundary = `=_release_${meta.id}`;
  const date = new Date(options.nowMs).toUTCString().replace('GMT', '+0000');
  const oneLine = (text: string): string => text.replace(/[\r\n]+/g, ' ');
  const recipients = refused.map((reply) => {
    const status = /^([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply.text ?? '')?.[1] ?? '5.0.0';
    return [
      `Final-Recipient: rfc822; ${reply.recipient}`, 'Action: failed', `Status: ${status}`,
      `Diagnostic-Code: smtp; ${reply.code} ${oneLine(reply.text ?? '')}`,
    ].join('\r\n');
  });
  const raw = [
    `From: Mail Delivery System <MAILER-DAEMON@${options.reportingHostname}>`,
    `To: <${meta.mailFrom.address}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${date}`,
    `Message-ID: <${meta.id}.notice@${options.reportingHostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is the mail system at host ${options.reportingHostname}.`,
    '',
    'Your message was held for review and then refused by the receiving mail server',
    'for the recipients below. The headers of your message are attached.',
    '',
    ...refused.map((reply) => `<${reply.recipient}>: ${oneLine(`${reply.code} ${reply.text ?? ''}`)}`),
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${options.reportingHostname}`,
    `Arrival-Date: ${new Date(meta.receivedAtMs).toUTCString().replace('GMT', '+0000')}`,
    '',
    recipients.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    '',
    headers.toString('latin1').replace(/\r?\n/g, '\r\n').trimEnd(),
    '',
    `--${boundary}--`,
    '',
  ].join('\r\n');
  const { upstream } = options;
  const transport = nodemailer.createTransport({
    host: upstream.host, port: upstream.port, secure: false, ignoreTLS: true, name: upstream.heloName,
    connectionTimeout: upstream.connectTimeoutMs, greetingTimeout: upstream.replyTimeoutMs, socketTimeout: upstream.replyTimeoutMs,
  });
  try {
    await transport.sendMail({ envelope: { from: '', to: [meta.mailFrom.address] }, raw: Buffer.from(raw, 'latin1') });
  } finally {
    transport.close();
  }
}

/** The header block (up to the first empty line), at most MAX_QUOTED_HEADER_BYTES; destroys the stream. */
async function readHeaderBlock(message: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of message) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.search(/\r?\n\r?\n/);
      if (end !== -1) return Buffer.from(text.slice(0, end), 'latin1');
      if (length >= MAX_QUOTED_HEADER_BYTES) break;
    }
  } finally {
    message.destroy();
  }
  return Buffer.concat(chunks).subarray(0, MAX_QUOTED_HEADER_BYTES);
}
