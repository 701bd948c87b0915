// Upstream back-pressure (Bencsáth's queue trigger, from the survey): Postfix's reply latency and
// its rate of 4xx replies over a recent window. Above the policy's thresholds the proxy treats the
// server as under attack (status at most 0) even while the pairs look normal. Pure: injected time.
// The 4xx share must measure Postfix, not one client: 4xx replies are cheap to provoke (relay attempts
// under defer_unauth_destination, unknown users with unknown_address_reject_code = 450), so each
// source counts for at most a share of the window, several sources must see them, and replies to
// suspect clients count as replies only. Latency stays server-wide: a slow Postfix is slow for all.
import net from 'node:net';
import { sourceOf } from './prefix.js';

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
  /** The 4xx share that counts: each source's capped at MAX_SOURCE_SHARE, suspects' left out. */
  tempFailRate: number | null;
  /** Distinct sources (IPv4 addresses, IPv6 /64s: sourceOf) whose 4xx replies count. */
  tempFailSources: number;
}

/** The client a reply of Postfix's was for, as the listener knows it. */
export interface ReplySource {
  address: string;
  /** Screened as anything but a plain pass (a verdict, stored or observed): its 4xx say nothing about Postfix. */
  suspect: boolean;
}

interface Sample {
  atMs: number;
  latencyMs: number;
  /** The source network of a 4xx that counts; undefined for any other reply. */
  tempFailFrom: string | undefined;
}

/** Bounded: about this many replies are kept (at most twice as many), oldest dropped first. */
const MAX_SAMPLES = 10_000;

/**
 * One source's 4xx replies count for at most this share of the window's replies: well below the
 * default tempFailRate (0.3), so once the window holds ten replies or more it takes four sources.
 */
const MAX_SOURCE_SHARE = 0.1;

/** Fewer distinct sources with 4xx replies than this, and the 4xx share says nothing. */
const MIN_TEMP_FAIL_SOURCES = 3;

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

  /** A reply (or a time-out: code undefined) to source. O(1): sources are counted only when a reading is made. */
  record(latencyMs: number, code: number | undefined, nowMs: number, source: ReplySource): void {
    const tempFail = code !== undefined && code >= 400 && code < 500 && !source.suspect;
    this.samples.push({ atMs: nowMs, latencyMs, tempFailFrom: tempFail ? sourceNetwork(source.address) : undefined });
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

export function assessPressure(samples: ReadonlyArray<{ latencyMs: number; tempFailFrom?: string | undefined }>, options: UpstreamPressureOptions): PressureReading {
  if (samples.length === 0) return { pressured: false, replies: 0, medianLatencyMs: null, tempFailRate: null, tempFailSources: 0 };
  const latencies = samples.map((sample) => sample.latencyMs).sort((left, right) => left - right);
  const middle = Math.floor(latencies.length / 2);
  const medianLatencyMs = latencies.length % 2 ? (latencies[middle] as number) : ((latencies[middle - 1] as number) + (latencies[middle] as number)) / 2;
  const tempFails = countedTempFails(samples);
  const tempFailRate = tempFails.replies / samples.length;
  const enough = samples.length >= options.minReplies;
  const spread = tempFails.sources >= MIN_TEMP_FAIL_SOURCES;
  return {
    pressured: enough && (medianLatencyMs > options.latencyMs || (spread && tempFailRate > options.tempFailRate)),
    replies: samples.length,
    medianLatencyMs,
    tempFailRate,
    tempFailSources: tempFails.sources,
  };
}

/**
 * The 4xx replies that count, and from how many sources: each source's up to MAX_SOURCE_SHARE of the
 * window's replies, and at least one whole reply (in a quiet window one reply is a large share).
 * The per-source map lives for one reading: at most one entry per sample kept, so MAX_SAMPLES bounds it.
 */
function countedTempFails(samples: ReadonlyArray<{ tempFailFrom?: string | undefined }>): { replies: number; sources: number } {
  const perSource = new Map<string, number>();
  for (const { tempFailFrom } of samples) {
    if (tempFailFrom !== undefined) perSource.set(tempFailFrom, (perSource.get(tempFailFrom) ?? 0) + 1);
  }
  const perSourceCap = Math.max(1, MAX_SOURCE_SHARE * samples.length);
  let replies = 0;
  for (const count of perSource.values()) replies += Math.min(count, perSourceCap);
  return { replies, sources: perSource.size };
}

/** sourceOf for a client the listener may not have an address for (a reset before it was known). */
function sourceNetwork(address: string): string {
  return net.isIP(address) === 0 ? address : sourceOf(address);
}
