// Log lines that a flood multiplies (a verdict for each of ten thousand addresses, a dropped record
// for each session beyond a queue) are written in full for the first few of each second, then
// counted: one summary line at the end of that second says how many more there were, by group, with
// a few examples. The operator still sees every kind of event within a second; the log, and the
// event loop that writes it, no longer grow with the attacker's address count.
import type { Logger } from 'pino';

export interface RateLimitedLogOptions {
  /** Lines written in full per second; the rest are only counted. */
  perSecond: number;
  /** The message of the summary line, e.g. "more verdicts in the last second (not logged one by one)". */
  summary: string;
  level?: 'info' | 'warn' | 'error';
  /** Examples kept per group for the summary line. */
  samplesPerGroup?: number;
}

interface GroupCount {
  count: number;
  samples: string[];
}

export class RateLimitedLog {
  private writtenThisSecond = 0;
  private suppressed = new Map<string, GroupCount>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly logger: Logger, private readonly options: RateLimitedLogOptions) {}

  /**
   * One event: written in full while this second's allowance lasts, else counted under `group`
   * (e.g. "reject/entropy"), with `sample` (e.g. the address) kept as one of a few examples.
   */
  log(fields: Record<string, unknown>, message: string, group = 'all', sample?: string): void {
    this.startSecond();
    if (this.writtenThisSecond < this.options.perSecond) {
      this.writtenThisSecond += 1;
      this.logger[this.options.level ?? 'warn'](fields, message);
      return;
    }
    let entry = this.suppressed.get(group);
    if (!entry) {
      entry = { count: 0, samples: [] };
      this.suppressed.set(group, entry);
    }
    entry.count += 1;
    if (sample !== undefined && entry.samples.length < (this.options.samplesPerGroup ?? 3)) entry.samples.push(sample);
  }

  /** Counts an event without ever writing it alone (summary only). */
  count(group = 'all', sample?: string): void {
    this.startSecond();
    const entry = this.suppressed.get(group) ?? { count: 0, samples: [] };
    entry.count += 1;
    if (sample !== undefined && entry.samples.length < (this.options.samplesPerGroup ?? 3)) entry.samples.push(sample);
    this.suppressed.set(group, entry);
  }

  /** Writes the summary of what was counted so far (at the end of each second, and at stop). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.writtenThisSecond = 0;
    if (this.suppressed.size === 0) return;
    const groups = Object.fromEntries([...this.suppressed].map(([group, entry]) => [group, entry.samples.length > 0 ? entry : entry.count]));
    const total = [...this.suppressed.values()].reduce((sum, entry) => sum + entry.count, 0);
    this.suppressed = new Map();
    this.logger[this.options.level ?? 'warn']({ count: total, groups }, this.options.summary);
  }

  private startSecond(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), 1_000);
    this.timer.unref();
  }
}
