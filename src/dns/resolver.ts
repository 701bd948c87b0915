// The proxy's one DNS resolver: every lookup (reverse DNS of clients now, DNSBLs later) goes through
// it, so the servers asked and the time a query may take are set once, by the policy (`dns`).
// Contract: a name that does not exist or has no record of the type resolves to []; a query that
// takes longer than timeoutMs, or fails, rejects with a DnsLookupError saying which. No query waits
// longer than timeoutMs, whatever the servers do.
import { Resolver } from 'node:dns/promises';
import { formatHostPort, type HostPort } from '../util/host-port.js';

export interface DnsResolver {
  /** PTR names of an in-addr.arpa or ip6.arpa name, as the server sent them (hostile: validate them). */
  resolvePtr(arpaName: string): Promise<string[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  /** Each TXT record as its character strings. */
  resolveTxt(name: string): Promise<string[][]>;
}

/**
 * timeout: no answer within timeoutMs (a temporary failure). failure: the server refused or
 * failed (SERVFAIL, REFUSED, unreachable: temporary too). bad-answer: an answer that does not
 * parse (the zone's owner may send anything: treated as no answer, a permanent outcome).
 * busy: too many queries in flight already (a flood of connections is not a flood of queries).
 */
export type DnsFailureKind = 'timeout' | 'failure' | 'bad-answer' | 'busy';

export class DnsLookupError extends Error {
  constructor(readonly kind: DnsFailureKind, readonly query: string, readonly code?: string) {
    super(`DNS ${query}: ${kind}${code ? ` (${code})` : ''}`);
    this.name = 'DnsLookupError';
  }
}

export interface DnsResolverOptions {
  /** Servers to ask, in order; empty: the system's (/etc/resolv.conf). */
  servers: readonly HostPort[];
  /** Longest a query may take, retry included. */
  timeoutMs: number;
  /** Queries in flight at once; beyond it a query fails at once as busy. */
  maxInFlight?: number;
}

/** Answers that mean "no such record", not a failure. */
const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA']);
const BAD_ANSWER = new Set(['EBADRESP', 'EBADNAME', 'EBADSTR']);
/** c-ares tries each query twice; its second wait doubles the first, so three first waits fill timeoutMs. */
const TRIES = 2;
const DEFAULT_MAX_IN_FLIGHT = 1_000;

export class NodeDnsResolver implements DnsResolver {
  private readonly resolver: Resolver;
  private readonly maxInFlight: number;
  private inFlight = 0;

  constructor(private readonly options: DnsResolverOptions) {
    this.resolver = new Resolver({ timeout: Math.max(1, Math.floor(options.timeoutMs / 3)), tries: TRIES });
    if (options.servers.length > 0) this.resolver.setServers(options.servers.map(formatHostPort));
    this.maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  }

  resolvePtr(arpaName: string): Promise<string[]> {
    return this.query(`PTR ${arpaName}`, () => this.resolver.resolvePtr(arpaName));
  }

  resolve4(name: string): Promise<string[]> {
    return this.query(`A ${name}`, () => this.resolver.resolve4(name));
  }

  resolve6(name: string): Promise<string[]> {
    return this.query(`AAAA ${name}`, () => this.resolver.resolve6(name));
  }

  resolveTxt(name: string): Promise<string[][]> {
    return this.query(`TXT ${name}`, () => this.resolver.resolveTxt(name));
  }

  /** One query, bounded: c-ares's own time-out should end it first, the timer makes sure. */
  private query<T>(description: string, run: () => Promise<T[]>): Promise<T[]> {
    if (this.inFlight >= this.maxInFlight) return Promise.reject(new DnsLookupError('busy', description));
    this.inFlight++;
    return new Promise<T[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new DnsLookupError('timeout', description)), this.options.timeoutMs);
      run().then(resolve, (error: NodeJS.ErrnoException) => {
        const code = error.code ?? 'unknown';
        if (NOT_FOUND.has(code)) resolve([]);
        else reject(new DnsLookupError(code === 'ETIMEOUT' ? 'timeout' : BAD_ANSWER.has(code) ? 'bad-answer' : 'failure', description, code));
      }).finally(() => {
        clearTimeout(timer);
        this.inFlight--;
      });
    });
  }
}
