// Prefix widening: when enough suspects share a prefix, the prefix itself becomes suspect, so a botnet that
// sends one connection per address is still caught. Widening is stepwise along a fixed ladder per family
// (IPv4 /32 → /24 → /16, IPv6 /128 → /64 → /48) and narrows by itself as suspects expire.
// Pure state over injected time: no clock, no timers, no I/O.
import ipaddr from 'ipaddr.js';

export type IpAddress = ipaddr.IPv4 | ipaddr.IPv6;
export type AddressFamily = 'ipv4' | 'ipv6';

/** The ladder per family, narrowest first. Only these steps exist; a policy may cut it short. */
export const PREFIX_LADDER: Readonly<Record<AddressFamily, readonly number[]>> = Object.freeze({
  ipv4: Object.freeze([32, 24, 16]),
  ipv6: Object.freeze([128, 64, 48]),
});

/**
 * Parses an address strictly: IPv4 only in four-part decimal (no "10.1" or octal "010.0.0.1", which
 * ipaddr.js would accept and read differently from what an operator meant), IPv6 in any standard form.
 * IPv4-mapped IPv6 (::ffff:a.b.c.d, what a dual-stack socket reports) becomes IPv4, and a zone id is dropped,
 * so one host has one key whichever way it reached us. Throws RangeError on anything else.
 */
export function parseAddress(text: string): IpAddress {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (!ipaddr.IPv6.isValid(text)) throw new RangeError(`not an IP address: "${text}"`);
  const address = ipaddr.IPv6.parse(text);
  if (address.isIPv4MappedAddress()) return address.toIPv4Address();
  return address.zoneId === undefined ? address : new ipaddr.IPv6(address.parts);
}

export function familyOf(address: IpAddress): AddressFamily {
  return address.kind();
}

export function addressBits(family: AddressFamily): number {
  return family === 'ipv4' ? 32 : 128;
}

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const CANONICAL_IPV4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);

/** The canonical text of an address (RFC 5952 for IPv6, mapped IPv6 as IPv4). */
export function canonicalAddress(text: string): string {
  // Most clients are dotted-quad IPv4 already in canonical form: no parse for them (a flood asks often).
  if (CANONICAL_IPV4.test(text)) return text;
  return parseAddress(text).toString();
}

/** The network address of `address` with only its first `length` bits kept. */
export function networkAddress(address: IpAddress, length: number): IpAddress {
  const bits = addressBits(familyOf(address));
  if (!Number.isInteger(length) || length < 0 || length > bits) {
    throw new RangeError(`prefix length ${length} is outside 0..${bits} for ${address.toString()}`);
  }
  const bytes = address.toByteArray().map((byte, index) => {
    const keptBits = Math.min(8, Math.max(0, length - index * 8));
    return byte & ((0xff << (8 - keptBits)) & 0xff);
  });
  return ipaddr.fromByteArray(bytes);
}

/** "network/length" for the prefix of `length` bits holding `address`, e.g. prefixOf('192.0.2.77', 24) = '192.0.2.0/24'. */
export function prefixOf(address: string, length: number): string {
  return `${networkAddress(parseAddress(address), length).toString()}/${length}`;
}

/**
 * The source an address is counted under: the IPv4 address itself (canonical), or the IPv6 /64 holding it (one
 * end site's subnet: a host that owns a /64 would otherwise be 2^64 sources, each with keys of its own).
 */
export function sourceOf(address: string): string {
  // Parsed once: on the path of every ended session, and an IPv6 parse costs tens of microseconds.
  const parsed = parseAddress(address);
  return familyOf(parsed) === 'ipv6' ? `${networkAddress(parsed, 64).toString()}/64` : parsed.toString();
}

/** The ladder steps a policy allows for a family: every step no shorter than `shortestLength`. */
export function prefixLadder(family: AddressFamily, shortestLength: number): number[] {
  return PREFIX_LADDER[family].filter((length) => length >= shortestLength);
}

export interface PrefixPolicy {
  /** k: distinct active members that make a prefix suspect (addresses for the first step, suspect prefixes above). */
  minMembers: number;
  /** Shortest IPv4 prefix widening may reach (ladder steps no shorter are used): 16, 24, or 32 to never widen. */
  maxWidenV4: number;
  /** Shortest IPv6 prefix widening may reach (ladder steps no shorter are used): 48, 64, or 128 to never widen. */
  maxWidenV6: number;
  /** Suspect addresses held at once; a new one beyond this evicts the one closest to expiry. */
  maxSuspects: number;
}

export const DEFAULT_PREFIX_POLICY: Readonly<PrefixPolicy> = Object.freeze({
  minMembers: 5,
  maxWidenV4: 16,
  maxWidenV6: 48,
  maxSuspects: 100_000,
});

export interface SuspectPrefix {
  /** "network/length"; a suspect address on its own is reported as a /32 or /128. */
  prefix: string;
  family: AddressFamily;
  lengthBits: number;
  /** Active members: 1 for an address, suspect addresses for the first step, suspect prefixes above it. */
  members: number;
}

interface ExpiryEntry {
  expiresAtMs: number;
  address: string;
}

/** Binary min-heap on expiry. Entries go stale when an address is re-added with a later expiry; callers skip those. */
class ExpiryHeap {
  private entries: ExpiryEntry[] = [];

  get size(): number {
    return this.entries.length;
  }

  peek(): ExpiryEntry | undefined {
    return this.entries[0];
  }

  push(entry: ExpiryEntry): void {
    const entries = this.entries;
    entries.push(entry);
    for (let index = entries.length - 1; index > 0; ) {
      const parent = (index - 1) >> 1;
      if (entries[parent]!.expiresAtMs <= entries[index]!.expiresAtMs) break;
      [entries[parent], entries[index]] = [entries[index]!, entries[parent]!];
      index = parent;
    }
  }

  pop(): ExpiryEntry | undefined {
    const entries = this.entries;
    const top = entries[0];
    const last = entries.pop();
    if (top === undefined || last === undefined || entries.length === 0) return top;
    entries[0] = last;
    for (let index = 0; ; ) {
      const left = index * 2 + 1;
      const right = left + 1;
      let smallest = index;
      if (left < entries.length && entries[left]!.expiresAtMs < entries[smallest]!.expiresAtMs) smallest = left;
      if (right < entries.length && entries[right]!.expiresAtMs < entries[smallest]!.expiresAtMs) smallest = right;
      if (smallest === index) break;
      [entries[smallest], entries[index]] = [entries[index]!, entries[smallest]!];
      index = smallest;
    }
    return top;
  }

  rebuild(entries: Iterable<ExpiryEntry>): void {
    this.entries = [];
    for (const entry of entries) this.push(entry);
  }
}

/**
 * Suspect addresses with expiry, and the prefixes they make suspect. Widening is stepwise: a first-step prefix
 * (/24, /64) is suspect when it holds ≥ k active suspect ADDRESSES; the next step (/16, /48) when it holds ≥ k
 * suspect first-step PREFIXES. So a /16 needs k suspect /24s (at least k² addresses spread over k /24s), and a
 * burst inside a single /24 never condemns its /16. Narrowing is the same rule in reverse: when an address
 * expires, its prefix drops out once under k members, and that may drop the prefix above. Counts are kept
 * incrementally, so every call costs O(ladder length) plus the expiries it processes.
 */
export class PrefixAggregator {
  private readonly policy: Readonly<PrefixPolicy>;
  private readonly expiryByAddress = new Map<string, number>();
  /** Prefix ("network/length", steps above the address) → its active members of the step below. */
  private readonly membersByPrefix = new Map<string, Set<string>>();
  private readonly expiries = new ExpiryHeap();
  private evictedCount = 0;

  constructor(policy: Partial<PrefixPolicy> = {}) {
    this.policy = Object.freeze({ ...DEFAULT_PREFIX_POLICY, ...policy });
    const { minMembers, maxWidenV4, maxWidenV6, maxSuspects } = this.policy;
    // k = 1 is allowed (any single suspect condemns its whole ladder at once) but is rarely what anyone wants.
    if (!Number.isInteger(minMembers) || minMembers < 1) throw new RangeError(`minMembers must be a positive integer, got ${minMembers}`);
    if (!Number.isInteger(maxWidenV4) || maxWidenV4 < 0 || maxWidenV4 > 32) throw new RangeError(`maxWidenV4 must be an integer 0..32, got ${maxWidenV4}`);
    if (!Number.isInteger(maxWidenV6) || maxWidenV6 < 0 || maxWidenV6 > 128) throw new RangeError(`maxWidenV6 must be an integer 0..128, got ${maxWidenV6}`);
    if (!Number.isInteger(maxSuspects) || maxSuspects < 1) throw new RangeError(`maxSuspects must be a positive integer, got ${maxSuspects}`);
  }

  /** Suspect addresses currently held (expired ones leave at the next call with a time). */
  get suspectCount(): number {
    return this.expiryByAddress.size;
  }

  /** Suspects dropped early because maxSuspects was reached. */
  get evicted(): number {
    return this.evictedCount;
  }

  /** Marks an address suspect until expiresAtMs; a later expiry extends it, an earlier one is ignored. */
  addSuspect(address: string, expiresAtMs: number): void {
    const chain = this.chainOf(parseAddress(address));
    const key = chain[0]!;
    const known = this.expiryByAddress.get(key);
    if (known !== undefined && known >= expiresAtMs) return;
    if (known === undefined && this.expiryByAddress.size >= this.policy.maxSuspects) this.evictSoonest();
    this.expiryByAddress.set(key, expiresAtMs);
    this.expiries.push({ expiresAtMs, address: key });
    if (known === undefined) this.join(chain, 0);
    if (this.expiries.size > 2 * this.expiryByAddress.size + 64) {
      this.expiries.rebuild([...this.expiryByAddress].map(([held, heldExpiresAtMs]) => ({ address: held, expiresAtMs: heldExpiresAtMs })));
    }
  }

  /** The widest suspect prefix holding the address (the address itself as /32 or /128 if only it is suspect). */
  suspectPrefix(address: string, nowMs: number): SuspectPrefix | undefined {
    this.expire(nowMs);
    const parsed = parseAddress(address);
    const chain = this.chainOf(parsed);
    for (let step = chain.length - 1; step >= 1; step -= 1) {
      const members = this.membersByPrefix.get(chain[step]!)?.size ?? 0;
      if (members >= this.policy.minMembers) return describe(chain[step]!, members);
    }
    return this.expiryByAddress.has(chain[0]!) ? describe(chain[0]!, 1) : undefined;
  }

  /** Every suspect prefix (addresses on their own excluded), widest first. */
  prefixes(nowMs: number): SuspectPrefix[] {
    this.expire(nowMs);
    const suspect: SuspectPrefix[] = [];
    for (const [prefix, members] of this.membersByPrefix) {
      if (members.size >= this.policy.minMembers) suspect.push(describe(prefix, members.size));
    }
    return suspect.sort(
      (a, b) => a.family.localeCompare(b.family) || a.lengthBits - b.lengthBits || a.prefix.localeCompare(b.prefix),
    );
  }

  /** The address's key at each ladder step the policy allows, address first. */
  private chainOf(address: IpAddress): string[] {
    const family = familyOf(address);
    const shortest = family === 'ipv4' ? this.policy.maxWidenV4 : this.policy.maxWidenV6;
    return prefixLadder(family, shortest).map((length) => `${networkAddress(address, length).toString()}/${length}`);
  }

  /** chain[step] became active: count it in the prefix above, which turns active itself on reaching k. */
  private join(chain: readonly string[], step: number): void {
    const parent = chain[step + 1];
    if (parent === undefined) return;
    let members = this.membersByPrefix.get(parent);
    if (members === undefined) this.membersByPrefix.set(parent, (members = new Set()));
    const before = members.size;
    members.add(chain[step]!);
    if (members.size > before && members.size === this.policy.minMembers) this.join(chain, step + 1);
  }

  /** chain[step] stopped being active: the prefix above narrows away on falling under k. */
  private leave(chain: readonly string[], step: number): void {
    const parent = chain[step + 1];
    const members = parent === undefined ? undefined : this.membersByPrefix.get(parent);
    if (parent === undefined || members === undefined || !members.delete(chain[step]!)) return;
    if (members.size === 0) this.membersByPrefix.delete(parent);
    if (members.size === this.policy.minMembers - 1) this.leave(chain, step + 1);
  }

  private remove(address: string): void {
    this.expiryByAddress.delete(address);
    this.leave(this.chainOf(parseAddress(address.slice(0, address.lastIndexOf('/')))), 0);
  }

  /** A suspect is active while nowMs < expiresAtMs. */
  private expire(nowMs: number): void {
    for (let entry = this.expiries.peek(); entry !== undefined && entry.expiresAtMs <= nowMs; entry = this.expiries.peek()) {
      this.expiries.pop();
      if (this.expiryByAddress.get(entry.address) === entry.expiresAtMs) this.remove(entry.address);
    }
  }

  private evictSoonest(): void {
    for (let entry = this.expiries.pop(); entry !== undefined; entry = this.expiries.pop()) {
      if (this.expiryByAddress.get(entry.address) !== entry.expiresAtMs) continue;
      this.remove(entry.address);
      this.evictedCount += 1;
      return;
    }
  }
}

function describe(prefix: string, members: number): SuspectPrefix {
  const slash = prefix.lastIndexOf('/');
  const lengthBits = Number(prefix.slice(slash + 1));
  const family: AddressFamily = prefix.includes(':') ? 'ipv6' : 'ipv4';
  return { prefix, family, lengthBits, members };
}
