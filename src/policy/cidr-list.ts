// Allow and deny lists: CIDR ranges and bare addresses, IPv4 and IPv6, looked up per connection.
// IPv4-mapped IPv6 is IPv4 on both sides (in the list and in lookups), so "::ffff:192.0.2.1" from a
// dual-stack socket matches an entry "192.0.2.0/24". Parsing reports every bad entry with its position,
// so the policy loader can point at file:line instead of failing on the first one.
import { addressBits, familyOf, networkAddress, parseAddress, type AddressFamily, type IpAddress } from '../detect/prefix.js';

export interface CidrIssue {
  /** Position in the list given to parseCidrList (0-based). */
  index: number;
  entry: string;
  message: string;
}

export class CidrListError extends Error {
  constructor(readonly issues: readonly CidrIssue[]) {
    super(issues.map((issue) => `entry ${issue.index}: "${issue.entry}": ${issue.message}`).join('; '));
    this.name = 'CidrListError';
  }
}

export interface CidrRange {
  family: AddressFamily;
  network: IpAddress;
  lengthBits: number;
  /** Canonical "network/length", what a match reports. */
  text: string;
}

/**
 * One entry: "192.0.2.0/24", "2001:db8::/32", or a bare address (a /32 or /128). IPv4 must be four-part
 * decimal. Host bits set below the prefix ("192.0.2.1/24") are an error, as in Postfix's cidr tables: the
 * entry is ambiguous (a typo for /32, or meant as the network?), and guessing in an allow list is unsafe.
 * A mapped IPv6 range inside ::ffff:0:0/96 becomes the IPv4 range it covers; throws RangeError on a bad entry.
 */
export function parseCidr(entry: string): CidrRange {
  const slash = entry.indexOf('/');
  const addressText = slash === -1 ? entry : entry.slice(0, slash);
  if (addressText.includes('%')) throw new RangeError('zone ids are not allowed');
  const address = parseAddress(addressText);
  const family = familyOf(address);
  const bits = addressBits(family);
  const writtenAsMapped = family === 'ipv4' && addressText.includes(':');
  let lengthBits = bits;
  if (slash !== -1) {
    const lengthText = entry.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(lengthText)) throw new RangeError(`bad prefix length "${lengthText}"`);
    lengthBits = Number(lengthText) - (writtenAsMapped ? 96 : 0);
    if (writtenAsMapped && lengthBits < 0) throw new RangeError('an IPv4-mapped range must be /96 or longer');
    if (lengthBits > bits) throw new RangeError(`prefix length is longer than ${writtenAsMapped ? 128 : bits} bits`);
  }
  const network = networkAddress(address, lengthBits);
  if (network.toString() !== address.toString()) {
    throw new RangeError(`host bits are set below the prefix length (did you mean ${network.toString()}/${lengthBits}?)`);
  }
  return { family, network, lengthBits, text: `${network.toString()}/${lengthBits}` };
}

/**
 * A parsed list. Lookups group ranges by family and prefix length, so a match costs one masked key per
 * distinct length in the list (at most 33 or 129), not one test per entry: deny lists can be long.
 */
export class CidrList {
  /** family → prefix length → canonical network text → entry text. */
  private readonly byLength: Record<AddressFamily, Map<number, Map<string, string>>> = { ipv4: new Map(), ipv6: new Map() };
  readonly ranges: readonly CidrRange[];

  constructor(ranges: readonly CidrRange[]) {
    this.ranges = Object.freeze([...ranges]);
    for (const range of ranges) {
      let networks = this.byLength[range.family].get(range.lengthBits);
      if (networks === undefined) this.byLength[range.family].set(range.lengthBits, (networks = new Map()));
      networks.set(range.network.toString(), range.text);
    }
    // Longest prefix first, so match() reports the most specific entry.
    for (const family of ['ipv4', 'ipv6'] as const) {
      this.byLength[family] = new Map([...this.byLength[family]].sort(([a], [b]) => b - a));
    }
  }

  get size(): number {
    return this.ranges.length;
  }

  /** The most specific entry holding the address ("network/length"), or undefined. Unparsable addresses match nothing. */
  match(address: string): string | undefined {
    let parsed: IpAddress;
    try {
      parsed = parseAddress(address);
    } catch {
      return undefined;
    }
    for (const [lengthBits, networks] of this.byLength[familyOf(parsed)]) {
      const entry = networks.get(networkAddress(parsed, lengthBits).toString());
      if (entry !== undefined) return entry;
    }
    return undefined;
  }

  matches(address: string): boolean {
    return this.match(address) !== undefined;
  }
}

/** Parses every entry (each trimmed) and throws one CidrListError listing all the bad ones. */
export function parseCidrList(entries: readonly string[]): CidrList {
  const ranges: CidrRange[] = [];
  const issues: CidrIssue[] = [];
  entries.forEach((raw, index) => {
    const entry = raw.trim();
    try {
      ranges.push(parseCidr(entry));
    } catch (error) {
      issues.push({ index, entry, message: error instanceof Error ? error.message : String(error) });
    }
  });
  if (issues.length > 0) throw new CidrListError(issues);
  return new CidrList(ranges);
}
