// Entropy status of a server from its command/response pairs (the entropy paper, Chen et al. 2012, as our issue reads it).
// Per time window: Pn normal pairs (reply answered by the client's next command), Pa abnormal pairs (reply the
// client never answered). H(x) = -log2(x/P), distance D = H(Pa) - H(Pn) = log2(Pn/Pa), and the status compares
// D with a margin delta. Pure functions of numbers: no clock, no I/O.

/** 1 safe, 0 critical, -1 danger. */
export type ServerStatus = 1 | 0 | -1;

/** 'pairs': the status was decided by the distance; 'quiet': too few pairs to judge, reported as safe. */
export type StatusReason = 'pairs' | 'quiet';

export interface PairCounts {
  normal: number;
  abnormal: number;
}

export interface EntropyOptions {
  /** Margin delta in bits around D = 0 inside which the server is critical. */
  deltaBits: number;
  /** Below this many pairs in the window the server counts as quiet, so an idle server never looks attacked. */
  minPairs: number;
}

export const DEFAULT_ENTROPY_OPTIONS: Readonly<EntropyOptions> = Object.freeze({ deltaBits: 0.5, minPairs: 20 });

export interface WindowEntropy {
  normal: number;
  abnormal: number;
  hNormal: number;
  hAbnormal: number;
  /**
   * D in bits. +Infinity when Pa = 0 < Pn, -Infinity when Pn = 0 < Pa, 0 when P = 0. JSON.stringify turns the
   * infinities into null, which is also what the entropy command's JSON prints (see distanceForJson).
   */
  distance: number;
  status: ServerStatus;
  reason: StatusReason;
}

function assertCount(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  }
}

/**
 * log2 as the entropy paper computed it: log10(x) / 0.301. Every one of the paper's twenty printed H values is this
 * rounded to three decimals, and four of them (2.944, 1.600, 0.972, 2.185) differ from exact log2 in the third
 * decimal; our issue requires the example to come out as printed. The two differ by 0.01 %, far below any
 * delta an operator would set, so the status is the same either way.
 */
const LOG10_OF_2_AS_PRINTED = 0.301;

export function paperLog2(x: number): number {
  return Math.log10(x) / LOG10_OF_2_AS_PRINTED;
}

/** H = -log2(count/total) in bits; 0 when count is 0 (the paper's convention, also covers total = 0). */
export function pairEntropy(count: number, total: number): number {
  assertCount('count', count);
  assertCount('total', total);
  if (count > total) throw new RangeError(`count ${count} exceeds total ${total}`);
  if (count === 0) return 0;
  // -log2(1) is -0; report a plain 0 so tables and equality checks stay clean.
  return count === total ? 0 : -paperLog2(count / total);
}

/**
 * D = H(Pa) - H(Pn), computed as log2(Pn/Pa) so that a zero count gives the limit (±Infinity) instead of the
 * H = 0 convention, which would wrongly put an all-normal window at D = 0 (critical).
 */
export function entropyDistance(normal: number, abnormal: number): number {
  assertCount('normal', normal);
  assertCount('abnormal', abnormal);
  if (normal === 0 && abnormal === 0) return 0;
  if (abnormal === 0) return Number.POSITIVE_INFINITY;
  if (normal === 0) return Number.NEGATIVE_INFINITY;
  return paperLog2(normal / abnormal);
}

/** S = 1 when D > delta, -1 when D < -delta, 0 when |D| <= delta. */
export function statusFromDistance(distanceBits: number, deltaBits: number): ServerStatus {
  if (Number.isNaN(distanceBits)) throw new RangeError('distance must not be NaN');
  if (!Number.isFinite(deltaBits) || deltaBits < 0) {
    throw new RangeError(`deltaBits must be a finite number >= 0, got ${deltaBits}`);
  }
  if (distanceBits > deltaBits) return 1;
  if (distanceBits < -deltaBits) return -1;
  return 0;
}

/** Full entropy reading of one window. A window with fewer than max(minPairs, 1) pairs is quiet and safe. */
export function windowEntropy(
  counts: PairCounts,
  options: EntropyOptions = DEFAULT_ENTROPY_OPTIONS,
): WindowEntropy {
  const { normal, abnormal } = counts;
  if (!Number.isFinite(options.minPairs) || options.minPairs < 0) {
    throw new RangeError(`minPairs must be a finite number >= 0, got ${options.minPairs}`);
  }
  const total = normal + abnormal;
  const distance = entropyDistance(normal, abnormal);
  const status = statusFromDistance(distance, options.deltaBits);
  const quiet = total === 0 || total < options.minPairs;
  return {
    normal,
    abnormal,
    hNormal: pairEntropy(normal, total),
    hAbnormal: pairEntropy(abnormal, total),
    distance,
    status: quiet ? 1 : status,
    reason: quiet ? 'quiet' : 'pairs',
  };
}

/** JSON form of D: infinities become null; the sign follows from which count is zero (Pa = 0: +∞, Pn = 0: -∞). */
export function distanceForJson(distanceBits: number): number | null {
  return Number.isFinite(distanceBits) ? distanceBits : null;
}
