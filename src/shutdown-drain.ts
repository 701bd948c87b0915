// The shutdown drain (SIGTERM, SIGINT): the proxy stops taking new mail, lets open sessions finish
// up to server.shutdownDrainSeconds, closes what is left with 421, then stops everything. A second
// request during the drain cuts it short: every session is closed at once.
import type { Logger } from 'pino';

/** The SMTP listener as the drain sees it (src/smtp/listener.ts). */
export interface DrainingListener {
  readonly activeSessions: number;
  /** New connections and transactions get 421 from now on; resolves once the sessions open now have ended. */
  drain(): Promise<void>;
  /** 421 to every session left (after a pending final reply unless now); resolves once they have ended. */
  closeSessions(now: boolean): Promise<void>;
}

export interface ShutdownDependencies {
  listener: DrainingListener;
  /** Stops everything else once the sessions are gone: listeners, scheduler, stores. */
  stop(): Promise<void>;
  drainSeconds: number;
  logger: Logger;
}

type DrainEnd = 'idle' | 'deadline' | 'cut-short';

export class ShutdownDrain {
  private finished: Promise<void> | undefined;
  private cutShort: () => void = () => undefined;
  private readonly cut = new Promise<'cut-short'>((resolve) => {
    this.cutShort = () => resolve('cut-short');
  });

  constructor(private readonly deps: ShutdownDependencies) {}

  /** The first request starts the drain; a later one cuts it short. Both resolve once everything stopped. */
  request(reason: string): Promise<void> {
    if (this.finished) {
      this.deps.logger.warn({ reason, sessionsLeft: this.deps.listener.activeSessions }, 'second shutdown request: closing every session now');
      this.cutShort();
      return this.finished;
    }
    this.finished = this.run(reason);
    return this.finished;
  }

  private async run(reason: string): Promise<void> {
    const { listener, logger, drainSeconds } = this.deps;
    const startedAtMs = Date.now();
    const idle = listener.drain().then((): DrainEnd => 'idle');
    logger.info({ reason, sessions: listener.activeSessions, drainSeconds }, 'draining: new connections and transactions get 421, open sessions may finish');
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<DrainEnd>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), drainSeconds * 1000);
    });
    const end = await Promise.race([idle, deadline, this.cut]);
    clearTimeout(timer);
    // A second request has said so already, with its own sessionsLeft ("second shutdown request").
    if (end === 'deadline') logger.warn({ end, sessionsLeft: listener.activeSessions }, 'closing the sessions left with 421');

    // Waiting for a final reply from Postfix is bounded by upstream.dataDoneTimeoutMs; a second
    // request does not wait for it.
    let closed = listener.closeSessions(end === 'cut-short');
    if (end !== 'cut-short' && (await Promise.race([closed.then(() => 'closed' as const), this.cut])) === 'cut-short') {
      closed = listener.closeSessions(true);
    }
    await closed;
    await this.deps.stop();
    logger.info({ reason, end, durationMs: Date.now() - startedAtMs }, 'drained and stopped');
  }
}
