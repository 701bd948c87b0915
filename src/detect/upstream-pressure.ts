// Upstream back-pressure (Bencsáth's queue trigger, from the survey): Postfix's reply latency and
// its rate of 4xx replies over a recent window. Above the policy's thresholds the proxy treats the
// server as under attack (status at most 0) even while the pairs look normal. Pure: injected time.

export interface UpstreamPressureOptions {
  windowSeconds: number;
  /** Median reply latency above this is pressure. */
  latencyMs: number;
  /** Share of 4xx replies above this is pressure. */
  tempFailRate: number;
  /** Fewer replies than this in the window say nothing either way. */
  minReplies: number;
}

export interface PressureReading {
  pressured: boolean;
  replies: number;
  medianLatencyMs: number | null;
  tempFailRate: number | null;
}

interface Sample {
  atMs: number;
  latencyMs: number;
  tempFail: boolean;
}

/** Bounded: about this many replies are kept (at most twice as many), oldest dropped first. */
const MAX_SAMPLES = 10_000;

export class UpstreamPressure {
  private samples: Sample[] = [];
  private cached: { atMs: number; reading: PressureReading } | undefined;

  /**
   * @param recomputeEveryMs a reading is reused this long: sessions ask at every connect, and the
   *   median sorts the whole window, which under load is thousands of replies.
   */
  constructor(private options: UpstreamPressureOptions, private readonly recomputeEveryMs = 250) {}

  reconfigure(options: UpstreamPressureOptions): void {
    this.options = options;
    this.cached = undefined;
  }

  record(latencyMs: number, code: number | undefined, nowMs: number): void {
    this.samples.push({ atMs: nowMs, latencyMs, tempFail: code !== undefined && code >= 400 && code < 500 });
    // Trimmed in one go once it is well over the bound, not one element per reply.
    if (this.samples.length > 2 * MAX_SAMPLES) this.samples = this.samples.slice(-MAX_SAMPLES);
  }

  reading(nowMs: number): PressureReading {
    if (this.cached && nowMs >= this.cached.atMs && nowMs - this.cached.atMs < this.recomputeEveryMs) return this.cached.reading;
    const since = nowMs - this.options.windowSeconds * 1000;
    const firstLive = this.samples.findIndex((sample) => sample.atMs >= since);
    this.samples = firstLive === -1 ? [] : this.samples.slice(firstLive);
    this.cached = { atMs: nowMs, reading: assessPressure(this.samples, this.options) };
    return this.cached.reading;
  }
}

export function assessPressure(samples: ReadonlyArray<{ latencyMs: number; tempFail: boolean }>, options: UpstreamPressureOptions): PressureReading {
  if (samples.length === 0) return { pressured: false, replies: 0, medianLatencyMs: null, tempFailRate: null };
  const latencies = samples.map((sample) => sample.latencyMs).sort((left, right) => left - right);
  const middle = Math.floor(latencies.length / 2);
  const medianLatencyMs = latencies.length % 2 ? (latencies[middle] as number) : ((latencies[middle - 1] as number) + (latencies[middle] as number)) / 2;
  const tempFailRate = samples.filter((sample) => sample.tempFail).length / samples.length;
  const enough = samples.length >= options.minReplies;
  return {
    pressured: enough && (medianLatencyMs > options.latencyMs || tempFailRate > options.tempFailRate),
    replies: samples.length,
    medianLatencyMs,
    tempFailRate,
  };
}
