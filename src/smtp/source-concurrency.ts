// Concurrent sessions per client address and per network (IPv4 /24, IPv6 /64), as Postfix's anvil
// does with smtpd_client_connection_count_limit, which Postfix no longer applies to clients that
// reach it through an XCLIENT proxy: the proxy is the only place the limit can hold. A key exists
// only while a session of it is open, so ten thousand addresses cost ten thousand small entries for
// as long as their sessions last, and nothing after.
import { networkAddress, parseAddress } from '../detect/prefix.js';

export interface ConcurrencyLimits {
  perAddress: number;
  perPrefixV4: number;
  perPrefixV6: number;
}

/** Which limit a newcomer would exceed, for the reply and the log. */
export type ConcurrencyExcess = { scope: 'address' | 'prefix'; key: string; limit: number };

/** The address key and network key of a client address; undefined when it is not an address (tests, UNKNOWN). */
export function concurrencyKeys(address: string): { address: string; prefix: string } | undefined {
  let parsed;
  try {
    parsed = parseAddress(address);
  } catch {
    return undefined;
  }
  const length = parsed.kind() === 'ipv4' ? 24 : 64;
  return { address: parsed.toString(), prefix: `${networkAddress(parsed, length).toString()}/${length}` };
}

export class SourceConcurrency {
  private readonly counts = new Map<string, number>();

  constructor(private limits: ConcurrencyLimits) {}

  setLimits(limits: ConcurrencyLimits): void {
    this.limits = limits;
  }

  /**
   * Counts a session in, in order of arrival: the keys to give back to leave(), or the limit it
   * would exceed, in which case it is not counted (it is about to be refused, and a burst of refused
   * sessions must not hold the count up for the ones after it).
   */
  enter(address: string): { keys: string[]; excess?: ConcurrencyExcess } {
    const keys = concurrencyKeys(address);
    if (!keys) return { keys: [] };
    const prefixLimit = keys.prefix.includes(':') ? this.limits.perPrefixV6 : this.limits.perPrefixV4;
    if ((this.counts.get(keys.address) ?? 0) >= this.limits.perAddress) return { keys: [], excess: { scope: 'address', key: keys.address, limit: this.limits.perAddress } };
    if ((this.counts.get(keys.prefix) ?? 0) >= prefixLimit) return { keys: [], excess: { scope: 'prefix', key: keys.prefix, limit: prefixLimit } };
    for (const key of [keys.address, keys.prefix]) this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    return { keys: [keys.address, keys.prefix] };
  }

  leave(keys: readonly string[]): void {
    for (const key of keys) {
      const left = (this.counts.get(key) ?? 1) - 1;
      if (left <= 0) this.counts.delete(key);
      else this.counts.set(key, left);
    }
  }

  /** Keys held now (addresses and networks with an open session), for tests and metrics. */
  get size(): number {
    return this.counts.size;
  }
}
