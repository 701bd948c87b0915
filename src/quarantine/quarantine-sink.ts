// The quarantine as the listener sees it: one durable store() per message, its failures sorted into
// what the client is told (full: 452, client gone: nothing, anything else: 451). The spool does the
// durability; this only adapts it and counts.
import type { Logger } from 'pino';
import { MessageTooBigError, type QuarantineEntry, type QuarantineResult, type QuarantineSink } from '../smtp/stage-contracts.js';
import { MessageStreamClosedError } from './message-source.js';
import { SpoolFullError, type QuarantineSpool } from './spool.js';

export interface SinkMetrics {
  accepted(): void;
  refused(reason: 'full' | 'failed'): void;
}

export class SpoolSink implements QuarantineSink {
  private fullLogged = false;

  constructor(private readonly spool: QuarantineSpool, private readonly logger: Logger, private readonly metrics: SinkMetrics) {}

  canAccept(sizeBytes: number): boolean {
    const fits = this.spool.canAccept(sizeBytes);
    if (!fits) {
      this.noteFull('declared size or message count');
      this.metrics.refused('full');
    }
    return fits;
  }

  async store(entry: QuarantineEntry, message: NodeJS.ReadableStream, refuseChunk?: () => Error | undefined): Promise<QuarantineResult> {
    try {
      const meta = await this.spool.write(entry, message as AsyncIterable<Buffer>, refuseChunk ? { refuseChunk } : {});
      this.fullLogged = false;
      this.metrics.accepted();
      return { stored: true, id: meta.id };
    } catch (error) {
      if (error instanceof MessageTooBigError) return { stored: false, reason: 'aborted', detail: error.message };
      if (error instanceof SpoolFullError) {
        this.noteFull(error.limit);
        this.metrics.refused('full');
        return { stored: false, reason: 'full', detail: error.message };
      }
      if (error instanceof MessageStreamClosedError || (error as NodeJS.ErrnoException).code === 'ECONNECTION') {
        return { stored: false, reason: 'client-gone', detail: (error as Error).message };
      }
      this.metrics.refused('failed');
      this.logger.error({ err: error, client: entry.client.address }, 'quarantine write failed; the client is told 451');
      return { stored: false, reason: 'failed', detail: (error as Error).message };
    }
  }

  /** Full is logged once until a write succeeds again, not once per refused message. */
  private noteFull(limit: string): void {
    if (this.fullLogged) return;
    this.fullLogged = true;
    this.logger.warn({ limit, stats: this.spool.stats() }, 'quarantine spool full: quarantined mail is deferred (452) until there is room');
  }
}
