// Who may hold a Postfix smtpd process. Each upstream connection is one smtpd process of Postfix's
// default_process_limit (100). An attacker that sends EHLO, MAIL, RCPT and goes silent holds one per
// connection for as long as it likes, and Postfix no longer applies its own per-client limits
// (anvil) to clients handed over with XCLIENT. So the proxy counts what it holds: at most
// perAddress for one client address, and sources that are neither allow-listed nor proven together
// at most untrustedPercent of maxConnections, so known senders always find a process free.
// Pure bookkeeping; the listener decides what to do when a slot is refused (evict a silent
// transaction, or 451).

export interface UpstreamShareLimits {
  /** Upstream connections the proxy holds at once for untrusted and trusted clients alike (Postfix's process limit). */
  maxConnections: number;
  /** Upstream connections held for one client address at once (trusted clients exempt). */
  perAddress: number;
  /** Share of maxConnections that untrusted clients may hold together, in percent. */
  untrustedPercent: number;
  /** Held at or above this share of maxConnections, Postfix is near its process limit: stress. */
  stressPercent: number;
}

/** Why a slot was refused: this address holds its share, or the untrusted clients hold theirs. */
export type ShareRefusal = 'address' | 'untrusted';

export interface UpstreamSlot {
  readonly address: string;
  readonly trusted: boolean;
}

export class UpstreamShare {
  private held = 0;
  private untrusted = 0;
  private readonly byAddress = new Map<string, number>();

  constructor(private readonly limits: UpstreamShareLimits) {}

  /** What a new slot for this client would break, or undefined when it may have one. */
  refusal(address: string, trusted: boolean): ShareRefusal | undefined {
    if (trusted) return undefined;
    if ((this.byAddress.get(address) ?? 0) >= this.limits.perAddress) return 'address';
    if (this.untrusted >= this.untrustedCap) return 'untrusted';
    return undefined;
  }

  /** Takes a slot; the caller checked refusal() first (or is trusted). */
  acquire(address: string, trusted: boolean): UpstreamSlot {
    this.held += 1;
    if (!trusted) {
      this.untrusted += 1;
      this.byAddress.set(address, (this.byAddress.get(address) ?? 0) + 1);
    }
    return { address, trusted };
  }

  release(slot: UpstreamSlot): void {
    this.held -= 1;
    if (slot.trusted) return;
    this.untrusted -= 1;
    const left = (this.byAddress.get(slot.address) ?? 1) - 1;
    if (left <= 0) this.byAddress.delete(slot.address);
    else this.byAddress.set(slot.address, left);
  }

  /** Postfix near its process limit as the proxy sees it: sessions get the stress idle time-out. */
  get nearLimit(): boolean {
    return this.held * 100 >= this.limits.maxConnections * this.limits.stressPercent;
  }

  get untrustedCap(): number {
    return Math.max(1, Math.floor((this.limits.maxConnections * this.limits.untrustedPercent) / 100));
  }

  stats(): { held: number; untrusted: number; addresses: number; max: number; untrustedCap: number } {
    return { held: this.held, untrusted: this.untrusted, addresses: this.byAddress.size, max: this.limits.maxConnections, untrustedCap: this.untrustedCap };
  }
}
