// XCLIENT (http://www.postfix.org/XCLIENT_README.html): tells Postfix who the real client is, so
// its own restrictions (and relay checks) apply to that client rather than to the proxy.

import type { ReverseDnsResult } from '../dns/fcrdns.js';

export interface ClientIdentity {
  address: string;
  port: number;
  /**
   * The forward-confirmed name (FCrDNS), or undefined: reverse DNS off, no name, or not confirmed.
   * Never a bare PTR name: Postfix takes NAME as verified (check_client_access, reject_unknown_client_hostname).
   */
  hostname?: string | undefined;
  /** The PTR name as published, not confirmed (XCLIENT REVERSE_NAME); undefined when none or reverse DNS is off. */
  reverseName?: string | undefined;
  /** The lookup failed for now (time-out, server failure): Postfix hears [TEMPUNAVAIL] and answers 4xx, not 5xx. */
  nameLookupFailedForNow?: boolean | undefined;
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
 * (its EHLO line "XCLIENT NAME ADDR PORT PROTO HELO REVERSE_NAME ...").
 */
export function xclientCommand(client: ClientIdentity, advertised: string): string {
  const offered = new Set(advertised.toUpperCase().split(/\s+/).filter(Boolean));
  const attributes: string[] = [];
  const add = (name: string, value: string | undefined): void => {
    if (value !== undefined && offered.has(name)) attributes.push(`${name}=${value}`);
  };
  add('ADDR', client.address.includes(':') ? `IPV6:${client.address}` : client.address);
  add('PORT', String(client.port));
  // [UNAVAILABLE] is XCLIENT's word for "no verified name", [TEMPUNAVAIL] for "not known for now";
  // Postfix then treats the client as "unknown" (reject_unknown_client_hostname: 5xx, or 450 for now).
  const unavailable = client.nameLookupFailedForNow ? '[TEMPUNAVAIL]' : '[UNAVAILABLE]';
  add('NAME', client.hostname ? xtext(client.hostname) : unavailable);
  // Always sent when offered, so Postfix keeps no reverse name of its own (or one derived from NAME).
  add('REVERSE_NAME', client.reverseName ? xtext(client.reverseName) : unavailable);
  add('HELO', client.helo ? xtext(client.helo) : undefined);
  add('PROTO', client.protocol);
  return `XCLIENT ${attributes.join(' ')}`;
}

/** What a reverse DNS result tells Postfix: the confirmed name only as the name, the PTR name as the reverse name. */
export function clientNameFields(result: ReverseDnsResult | undefined): Pick<ClientIdentity, 'hostname' | 'reverseName' | 'nameLookupFailedForNow'> {
  if (!result) return {};
  return {
    ...(result.confirmedName ? { hostname: result.confirmedName } : {}),
    ...(result.reverseName ? { reverseName: result.reverseName } : {}),
    ...(result.status === 'timeout' || result.status === 'error' ? { nameLookupFailedForNow: true } : {}),
  };
}
