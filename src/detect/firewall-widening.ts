// How much evidence a prefix verdict needs before the firewall drops the whole prefix. The screen widens
// on k suspects (prefix.ts: five addresses speaking HTTP make their /24 suspect), which is right for
// deciding how to greet the next client, a decision the proxy can take back at the next connection. A
// firewall block is blunter: every host of the prefix loses port 25, and the proxy never sees them to
// learn otherwise. So the firewall widens only over a prefix where many distinct sources offended AND
// they cover a share of it, counted in the blocks of the next ladder step: the 256 addresses of a /24,
// the 256 /24s of a /16, the 65,536 /64s of an IPv6 /48. A source is what the counters count (an IPv4
// address, an IPv6 /64: prefix.ts's sourceOf), so a /64 verdict blocks one source and needs nothing more.
// Pure: numbers in, numbers out.
import { PREFIX_LADDER, type AddressFamily } from './prefix.js';

export interface FirewallWideningPolicy {
  /** Distinct offending sources a prefix must hold. */
  minSources: number;
  /** Share (percent) of an IPv4 prefix's blocks (addresses of a /24, /24s of a /16) holding an offending source. */
  minSharePercentV4: number;
  /** The same for IPv6 (the /64s of a /48). */
  minSharePercentV6: number;
}

/** The bits of one source: an IPv4 address, an IPv6 /64. */
export const SOURCE_BITS: Readonly<Record<AddressFamily, number>> = Object.freeze({ ipv4: 32, ipv6: 64 });

/** Wider than one source: blocking it at the firewall blocks sources that were never seen to offend. */
export function widerThanSource(family: AddressFamily, lengthBits: number): boolean {
  return lengthBits < SOURCE_BITS[family];
}

/**
 * The length of the blocks a prefix's share is counted in: the next ladder step narrower than the prefix,
 * never narrower than a source. /24 → 32, /16 → 24, /20 → 24 (an operator's own prefix), IPv6 /48 → 64.
 */
export function shareBlockBits(family: AddressFamily, lengthBits: number): number {
  const steps = PREFIX_LADDER[family].filter((length) => length > lengthBits && length <= SOURCE_BITS[family]);
  return steps.length === 0 ? SOURCE_BITS[family] : Math.min(...steps);
}

/** How many such blocks the prefix has: 256 for a /24 (addresses) or a /16 (/24s), 65,536 for a /48 (/64s). */
export function blocksIn(family: AddressFamily, lengthBits: number): number {
  return 2 ** (shareBlockBits(family, lengthBits) - lengthBits);
}

/** The blocks that must hold an offending source: the share of blocksIn, rounded up, at least one. */
export function requiredBlocks(family: AddressFamily, lengthBits: number, policy: Readonly<FirewallWideningPolicy>): number {
  const sharePercent = family === 'ipv4' ? policy.minSharePercentV4 : policy.minSharePercentV6;
  // 256 × 12.5 % is 32, not 32.000000001: round away float dust before rounding up.
  return Math.max(1, Math.ceil(Number(((blocksIn(family, lengthBits) * sharePercent) / 100).toFixed(6))));
}

/** What the firewall knows of a prefix: its distinct offending sources and the blocks they fall in. */
export interface WideningEvidence {
  sources: number;
  blocksCovered: number;
}

/** Whether the firewall may drop the whole prefix: a source (or narrower) always; wider ones on enough evidence. */
export function firewallMayWiden(family: AddressFamily, lengthBits: number, evidence: WideningEvidence, policy: Readonly<FirewallWideningPolicy>): boolean {
  if (!widerThanSource(family, lengthBits)) return true;
  return evidence.sources >= policy.minSources && evidence.blocksCovered >= requiredBlocks(family, lengthBits, policy);
}

/**
 * The prefixes whose proven-sender marks (screen.ts, `pvn:<prefix>`) a proven source sets: every ladder step
 * wider than a source, where the firewall may widen to.
 */
export function provenNetworkLengths(family: AddressFamily): number[] {
  return PREFIX_LADDER[family].filter((length) => widerThanSource(family, length));
}

/** The key of a network's mark "holds a proven sender", shared by the screen that writes it and the exporter that reads it. */
export function provenNetworkKey(prefix: string): string {
  return `pvn:${prefix}`;
}
