// Hands one quarantined message to Postfix as if its original client were sending it now: XCLIENT with that
// client's address, port, name and HELO, so Postfix applies the checks it would have applied live; then MAIL
// with the stored parameters Postfix advertises, one RCPT per stored recipient, DATA, QUIT. Never rejects: a
// failure of the path to Postfix (connect, timeout, dropped connection) comes back as "no reply" (a retry),
// Postfix's own replies come back as they are. The notice for mail Postfix refused is rejection-notice.ts's.
import type { Readable } from 'node:stream';
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
