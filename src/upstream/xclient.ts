// XCLIENT (http://www.postfix.org/XCLIENT_README.html): tells Postfix who the real client is, so
// its own restrictions (and relay checks) apply to that client rather than to the proxy.

export interface ClientIdentity {
  address: string;
  port: number;
  /** Verified reverse name, or undefined when unknown (reverse DNS off or failed). */
  hostname?: string | undefined;
  helo?: string | undefined;
  /** "ESMTP" after EHLO, "SMTP" after HELO. */
  protocol?: 'SMTP' | 'ESMTP' | undefined;
}

/** xtext (RFC 3461 4): "+", "=" and bytes outside 33..126 become "+XX". */
export function xtext(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    out += byte < 33 || byte > 126 || byte === 0x2b || byte === 0x3d
      ? `+${byte.toString(16).toUpperCase().padStart(2, '0')}`
      : String.fromCharCode(byte);
  }
  return out;
}

/**
 * The XCLIENT command for a client, with only the attributes Postfix advertised
 * (its EHLO line "XCLIENT NAME ADDR PORT PROTO HELO ...").
 */
export function xclientCommand(client: ClientIdentity, advertised: string): string {
  const offered = new Set(advertised.toUpperCase().split(/\s+/).filter(Boolean));
  const attributes: string[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value !== undefined && offered.has(name)) attributes.push(`${name}=${value}`);
  };
  add('ADDR', client.address.includes(':') ? `IPV6:${client.address}` : client.address);
  add('PORT', String(client.port));
  // [UNAVAILABLE] is XCLIENT's word for "no verified name"; Postfix then treats the client as "unknown".
  add('NAME', client.hostname ? xtext(client.hostname) : '[UNAVAILABLE]');
  add('HELO', client.helo ? xtext(client.helo) : undefined);
  add('PROTO', client.protocol);
  return `XCLIENT ${attributes.join(' ')}`;
}
