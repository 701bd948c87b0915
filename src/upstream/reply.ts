// SMTP replies from the upstream: the parser of the byte stream into replies, and the helpers that
// turn a reply into what our client is told. Postfix's text (with its enhanced status code) is
// passed through unchanged, because the client deserves Postfix's own reason.

export interface SmtpReply {
  code: number;
  /** Text of each reply line, without the "250-" / "250 " prefix. */
  lines: string[];
}

/** Longest reply line we accept (RFC 5321 says 512; Postfix stays well below). Longer is a broken peer. */
const MAX_REPLY_LINE_BYTES = 4096;
/** A multi-line reply longer than this is a broken or hostile peer (EHLO has a dozen lines). */
const MAX_REPLY_LINES = 100;

export class ReplyProtocolError extends Error {}

/**
 * Incremental reply parser. feed() takes raw socket bytes and returns every reply completed by them;
 * a partial line or a multi-line reply in progress is kept for the next call.
 */
export class ReplyParser {
  private partial = '';
  private pendingLines: string[] = [];
  private pendingCode = 0;

  feed(chunk: Buffer): SmtpReply[] {
    const single = this.singleLineReply(chunk);
    if (single) return [single];
    const replies: SmtpReply[] = [];
    let text = this.partial + chunk.toString('latin1');
    let newline = text.indexOf('\n');
    while (newline !== -1) {
      const line = text.slice(0, newline > 0 && text.charCodeAt(newline - 1) === 13 ? newline - 1 : newline);
      text = text.slice(newline + 1);
      const reply = this.acceptLine(line);
      if (reply) replies.push(reply);
      newline = text.indexOf('\n');
    }
    if (text.length > MAX_REPLY_LINE_BYTES) throw new ReplyProtocolError('reply line too long');
    this.partial = text;
    return replies;
  }

  /**
   * Fast path for the common case, a chunk holding exactly one one-line reply ("250 2.1.0 Ok\r\n"),
   * which is most of what Postfix sends during a transaction.
   */
  private singleLineReply(chunk: Buffer): SmtpReply | undefined {
    const length = chunk.length;
    if (this.partial !== '' || this.pendingLines.length > 0 || length < 5 || length > 512) return undefined;
    if (chunk[length - 1] !== 0x0a || chunk[length - 2] !== 0x0d || chunk[3] !== 0x20) return undefined;
    if (chunk.indexOf(0x0a) !== length - 1) return undefined;
    const hundreds = (chunk[0] as number) - 0x30;
    const tens = (chunk[1] as number) - 0x30;
    const units = (chunk[2] as number) - 0x30;
    if (hundreds < 2 || hundreds > 5 || tens < 0 || tens > 9 || units < 0 || units > 9) return undefined;
    return { code: hundreds * 100 + tens * 10 + units, lines: [chunk.toString('latin1', 4, length - 2)] };
  }

  private acceptLine(line: string): SmtpReply | undefined {
    const match = /^([2-5]\d\d)([ -]|$)(.*)$/.exec(line);
    if (!match) throw new ReplyProtocolError(`malformed reply line "${line.slice(0, 80)}"`);
    const code = Number(match[1]);
    if (this.pendingLines.length > 0 && code !== this.pendingCode) {
      throw new ReplyProtocolError(`reply code changed inside a multi-line reply (${this.pendingCode} then ${code})`);
    }
    this.pendingCode = code;
    this.pendingLines.push(match[3] ?? '');
    if (match[2] === '-') {
      if (this.pendingLines.length > MAX_REPLY_LINES) throw new ReplyProtocolError('multi-line reply too long');
      return undefined;
    }
    const reply = { code, lines: this.pendingLines };
    this.pendingLines = [];
    return reply;
  }
}

/** One line of text for our client: multi-line replies are joined, as smtp-server sends one line. */
export function replyText(reply: SmtpReply): string {
  return reply.lines.join(' ').trim();
}

export function isPositive(reply: SmtpReply): boolean {
  return reply.code >= 200 && reply.code < 400;
}

/** EHLO keywords and their parameters, keyword upper-cased ("SIZE" -> "10240000"). */
export function parseCapabilities(ehlo: SmtpReply): Map<string, string> {
  const capabilities = new Map<string, string>();
  for (const line of ehlo.lines.slice(1)) {
    const [keyword, ...rest] = line.trim().split(/\s+/);
    if (keyword) capabilities.set(keyword.toUpperCase(), rest.join(' '));
  }
  return capabilities;
}
