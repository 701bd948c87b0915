// The one Received header we prepend to a quarantined message (RFC 5321 4.4). When the message is released
// later, Postfix sees our proxy as its client; this header keeps the original client (HELO, reverse name,
// address) and the arrival time in the message itself. Pure: the time is passed in.

export interface ReceivedHeaderInput {
  helo: string;
  clientHostname?: string;
  clientAddress: string;
  /** Our host name (the "by" clause). */
  byHostname: string;
  /** ESMTP, ESMTPS, ESMTPA, ESMTPSA or SMTP. */
  protocol: string;
  id: string;
  recipients: readonly string[];
  receivedAtMs: number;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MAX_TOKEN_CHARS = 255;

/**
 * "Received: from HELO (NAME [ADDR])\r\n\tby HOST (smtp-pushback) with ESMTP id ID\r\n\tfor <rcpt>; DATE\r\n".
 * The for-clause names the recipient only when there is exactly one: with several it would tell each of them
 * who else got the message. Client-chosen text (HELO, addresses) is reduced to printable ASCII without
 * comment or literal delimiters, so it cannot break the header or start a new one.
 */
export function buildReceivedHeader(input: ReceivedHeaderInput): string {
  const helo = token(input.helo) || 'unknown';
  const name = token(input.clientHostname ?? '') || 'unknown';
  const literal = addressLiteral(input.clientAddress);
  const only = input.recipients.length === 1 ? (input.recipients[0] as string) : '';
  // An address we would have to alter (8-bit, odd characters) is left out rather than written wrong.
  const recipient = only !== '' && token(only) === only ? `\r\n\tfor <${only}>` : '';
  return (
    `Received: from ${helo} (${name} ${literal})\r\n` +
    `\tby ${token(input.byHostname) || 'localhost'} (smtp-pushback) with ${token(input.protocol) || 'ESMTP'} id ${token(input.id)}` +
    `${recipient}; ${formatRfc5322Date(input.receivedAtMs)}\r\n`
  );
}

/** "Fri, 31 Jan 2025 23:59:59 +0000": RFC 5322 date-time in UTC, whatever the host's zone. */
export function formatRfc5322Date(epochMs: number): string {
  const date = new Date(epochMs);
  const pad = (value: number): string => String(value).padStart(2, '0');
  return (
    `${DAYS[date.getUTCDay()]}, ${pad(date.getUTCDate())} ${MONTHS[date.getUTCMonth()]} ${date.getUTCFullYear()} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`
  );
}

/** "[192.0.2.1]", "[IPv6:2001:db8::1]" (RFC 5321 4.1.3); an IPv4-mapped IPv6 address is written as IPv4. */
function addressLiteral(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped ? (mapped[1] as string) : address;
  return plain.includes(':') ? `[IPv6:${token(plain)}]` : `[${token(plain)}]`;
}

function token(text: string): string {
  return text.replace(/[^\x21-\x7e]|[()[\]<>\\;]/g, '').slice(0, MAX_TOKEN_CHARS);
}
