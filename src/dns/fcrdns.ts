// Forward-confirmed reverse DNS (FCrDNS), as Postfix's smtpd does it: a client's name is one of the
// PTR names of its address whose A (or AAAA) records hold that address again. Whoever controls the
// reverse zone of an address can publish any PTR name (trusted.partner.example, or bytes that are
// no name at all); only the forward zone's owner can make that name point back. So only a confirmed
// name may reach Postfix as the client's name; the bare PTR name is at most REVERSE_NAME.
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { DnsLookupError, type DnsResolver } from './resolver.js';

/**
 * confirmed: a PTR name whose forward records hold the address. unconfirmed: PTR names, none of
 * which points back. none: no PTR name usable as a host name (none published, or only malformed
 * ones: a permanent outcome). timeout / error: a lookup failed for now and nothing confirmed.
 */
export type ReverseDnsStatus = 'confirmed' | 'unconfirmed' | 'none' | 'timeout' | 'error';

export interface ReverseDnsResult {
  status: ReverseDnsStatus;
  /** The forward-confirmed name: the only name to treat as the client's. */
  confirmedName?: string;
  /** The PTR name as published, not confirmed (the confirmed one when there is one): XCLIENT REVERSE_NAME. */
  reverseName?: string;
}

/** Reverse DNS of one client address, bounded in time; never rejects. */
export type ReverseDnsLookup = (address: string) => Promise<ReverseDnsResult>;

/** PTR names looked at, at most (Postfix looks at the first it gets; a zone may publish hundreds). */
export const MAX_PTR_NAMES = 5;
const MAX_NAME_LENGTH = 253;
/** Letters, digits, hyphens, and the underscore some ISPs publish; no hyphen at either end. */
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * The name in canonical form (lower case, no final dot) when it is usable as a host name, else
 * undefined: length at most 253, labels of 1 to 63 letters, digits, hyphens or underscores, and not
 * an address in disguise (an all-numeric last label, as Postfix refuses "numeric hostnames").
 */
export function canonicalHostname(name: string): string | undefined {
  if (name.length > MAX_NAME_LENGTH + 1) return undefined;
  const canonical = name.toLowerCase().replace(/\.$/, '');
  if (canonical.length === 0 || canonical.length > MAX_NAME_LENGTH) return undefined;
  const labels = canonical.split('.');
  if (!labels.every((label) => LABEL.test(label))) return undefined;
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '') || net.isIP(canonical) !== 0) return undefined;
  return canonical;
}

/**
 * The address as it is on the wire: an IPv4-mapped IPv6 address (a dual-stack listener's IPv4 peer)
 * as IPv4, IPv6 in its canonical form; undefined for anything that is no address.
 */
export function normalizeAddress(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (!ipaddr.isValid(address)) return undefined;
  return ipaddr.process(address);
}

/** The PTR query name of an address: 9.2.0.192.in-addr.arpa, or the 32 nibbles under ip6.arpa. */
export function arpaName(address: ipaddr.IPv4 | ipaddr.IPv6): string {
  if (address.kind() === 'ipv4') return `${[...address.toByteArray()].reverse().join('.')}.in-addr.arpa`;
  const nibbles = address.toByteArray().flatMap((byte) => [byte >> 4, byte & 0x0f]);
  return `${nibbles.reverse().map((nibble) => nibble.toString(16)).join('.')}.ip6.arpa`;
}

/**
 * FCrDNS of one address: the PTR names (the first MAX_PTR_NAMES, malformed ones dropped), then the
 * A records (IPv4) or AAAA records (IPv6) of each, in parallel. Takes at most two query time-outs
 * of the resolver. Never rejects: a failed lookup is a status.
 */
export async function forwardConfirmedReverse(resolver: DnsResolver, address: string): Promise<ReverseDnsResult> {
  const client = normalizeAddress(address);
  if (!client) return { status: 'none' };
  let published: string[];
  try {
    published = await resolver.resolvePtr(arpaName(client));
  } catch (error) {
    return { status: failureStatus(error) };
  }
  const names = [...new Set(published.slice(0, MAX_PTR_NAMES).map(canonicalHostname).filter((name): name is string => name !== undefined))];
  const [first] = names;
  if (first === undefined) return { status: 'none' };
  const wanted = `${client.kind()} ${client.toNormalizedString()}`;
  const holdsClient = (text: string): boolean => {
    const record = normalizeAddress(text);
    return record !== undefined && `${record.kind()} ${record.toNormalizedString()}` === wanted;
  };
  const checks = await Promise.allSettled(names.map(async (name) => {
    const forward = client.kind() === 'ipv4' ? await resolver.resolve4(name) : await resolver.resolve6(name);
    return forward.some(holdsClient);
  }));
  const confirmedAt = checks.findIndex((check) => check.status === 'fulfilled' && check.value);
  const confirmedName = names[confirmedAt];
  if (confirmedName !== undefined) return { status: 'confirmed', confirmedName, reverseName: confirmedName };
  const failures = checks.flatMap((check) => (check.status === 'rejected' ? [failureStatus(check.reason)] : []));
  const status = failures.includes('timeout') ? 'timeout' : failures.includes('error') ? 'error' : 'unconfirmed';
  return { status, reverseName: first };
}

/** A time-out is a time-out; an answer that does not parse counts as no answer; anything else is an error. */
function failureStatus(error: unknown): 'timeout' | 'error' | 'none' {
  if (!(error instanceof DnsLookupError)) return 'error';
  if (error.kind === 'timeout') return 'timeout';
  return error.kind === 'bad-answer' ? 'none' : 'error';
}
