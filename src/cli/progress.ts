// One progress line on stderr for long work (a bulk quarantine release, `sfds` over many files, the demo):
// on a terminal it is rewritten in place with \r, at most every intervalMs; piped, it prints nothing
// (the default: a script reading stderr gets only what it got before) or, with plainEveryMs, one plain
// line that often (logs of a non-interactive run). The caller says what the line reads; this file says
// when and how it is drawn, and what the rate is.

/** What the helper needs of a stream: process.stderr, or a fake one in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  /** Terminal width; the line is cut to fit, so \r always returns to its start. */
  columns?: number;
  write(text: string): unknown;
}

export interface ProgressOptions {
  /** Fewest milliseconds between two redraws on a terminal. */
  intervalMs?: number;
  /** Not a terminal: print a plain line this often instead of nothing. */
  plainEveryMs?: number;
  /** Clock in milliseconds (tests drive it). */
  nowMs?: () => number;
}

/** Builds the line's text from the count's rate since start (per second). */
export type DescribeProgress = (ratePerSecond: number) => string;

const ERASE_TO_END = '\x1b[K';

export class ProgressLine {
  private readonly startedMs: number;
  private readonly intervalMs: number;
  private readonly nowMs: () => number;
  /** Whether anything will ever be printed: callers may skip the work of counting when not. */
  readonly enabled: boolean;
  private nextDrawMs: number;
  private drawn = false;

  /** No stream: nothing is ever printed. */
  constructor(private readonly stream: ProgressStream | undefined, options: ProgressOptions = {}) {
    this.nowMs = options.nowMs ?? (() => performance.now());
    this.startedMs = this.nowMs();
    this.intervalMs = this.tty ? options.intervalMs ?? 200 : options.plainEveryMs ?? Number.POSITIVE_INFINITY;
    this.enabled = stream !== undefined && (this.tty || Number.isFinite(this.intervalMs));
    this.nextDrawMs = this.startedMs + this.intervalMs;
  }

  private get tty(): boolean {
    return this.stream?.isTTY === true;
  }

  /** Redraws when due: `describe` is called only then, so it may format freely. */
  update(count: number, describe: DescribeProgress): void {
    if (!this.enabled) return;
    const now = this.nowMs();
    if (now < this.nextDrawMs) return;
    this.nextDrawMs = now + this.intervalMs;
    this.draw(describe(this.rate(count, now)));
  }

  /** Draws now whatever the interval (a phase change the reader should see at once). */
  show(count: number, describe: DescribeProgress): void {
    const now = this.nowMs();
    this.nextDrawMs = now + this.intervalMs;
    this.draw(describe(this.rate(count, now)));
  }

  /** Erases the line on a terminal, so a message written next starts at its start; the next update redraws it. */
  clear(): void {
    if (this.tty && this.drawn) this.stream?.write(`\r${ERASE_TO_END}`);
    this.drawn = false;
  }

  /** Ends the line: erased on a terminal, so what follows starts on a clean line; later updates draw nothing. */
  done(): void {
    this.clear();
    this.nextDrawMs = Number.POSITIVE_INFINITY;
  }

  private rate(count: number, now: number): number {
    const seconds = (now - this.startedMs) / 1000;
    return seconds > 0 ? count / seconds : 0;
  }

  private draw(text: string): void {
    const stream = this.stream;
    if (!this.enabled || !stream) return;
    if (!this.tty) {
      stream.write(`${text}\n`);
      return;
    }
    // One column kept free: writing the last column wraps on some terminals, and \r would then redraw one row down.
    const width = Math.max(20, (stream.columns || 80) - 1);
    stream.write(`\r${text.length > width ? `${text.slice(0, width - 1)}…` : text}${ERASE_TO_END}`);
    this.drawn = true;
  }
}

/** 1234567 -> "1,234,567"; rates below 10 keep one decimal. */
export function formatCount(value: number): string {
  return value < 10 && !Number.isInteger(value) ? value.toFixed(1) : Math.round(value).toLocaleString('en-US');
}
