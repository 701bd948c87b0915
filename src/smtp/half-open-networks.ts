// Networks (IPv4 /24, IPv6 /64, the concurrency keys) whose transactions were recently cut half-open to
// make room: an attacker set. Its newcomers no longer make room by cutting other clients' transactions
// when the untrusted share of Postfix's processes is full; they take a free process or hear 451. Without
// this, a half-open flood cuts its own transactions in turn, and all it costs is Postfix forking and
// tearing down a session for each (hundreds a second) while newcomers from elsewhere wait behind it.
// Bounded: at most maxEntries networks, each for windowMs after its last cut.
import { ExpiringMap } from '../state/expiring-map.js';

export interface HalfOpenNetworkLimits {
  /** Cuts within the window that make a network an attacker set. */
  cuts: number;
  windowMs: number;
  maxEntries: number;
}

export const HALF_OPEN_NETWORK_LIMITS: HalfOpenNetworkLimits = { cuts: 3, windowMs: 60_000, maxEntries: 10_000 };

export class HalfOpenNetworks {
  private readonly recent: ExpiringMap<number>;

  constructor(private readonly limits: HalfOpenNetworkLimits = HALF_OPEN_NETWORK_LIMITS) {
    this.recent = new ExpiringMap<number>(limits.maxEntries);
  }

  /** A transaction of this network was cut half-open. */
  cut(network: string, nowMs: number): void {
    const entry = this.recent.live(network, nowMs);
    this.recent.put(network, (entry?.value ?? 0) + 1, nowMs + this.limits.windowMs, nowMs);
  }

  /** Whether the network's transactions were cut often enough lately to count as an attacker set. */
  isAttackerSet(network: string, nowMs: number): boolean {
    return (this.recent.live(network, nowMs)?.value ?? 0) >= this.limits.cuts;
  }
}
