// Entropy maths against the entropy paper's own example (ten windows of 100 pairs) and the edge cases our
// issue fixed: empty windows, one-sided windows, delta = 0 and the quiet-server floor.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_ENTROPY_OPTIONS,
  distanceForJson,
  entropyDistance,
  pairEntropy,
  paperLog2,
  statusFromDistance,
  windowEntropy,
} from '../../src/detect/entropy.js';

const paperNormal = [100, 95, 87, 85, 76, 67, 51, 32, 22, 19];
const paperAbnormal = [0, 5, 13, 15, 24, 33, 49, 68, 78, 81];
const paperHNormal = [0, 0.074, 0.201, 0.234, 0.396, 0.578, 0.972, 1.644, 2.185, 2.396];
const paperHAbnormal = [0, 4.322, 2.944, 2.737, 2.059, 1.6, 1.029, 0.556, 0.358, 0.304];
const paperStatus = [1, 1, 1, 1, 1, 1, 0, -1, -1, -1];

const windows = paperNormal.map((normal, i) => ({
  window: i + 1,
  normal,
  abnormal: paperAbnormal[i]!,
  hNormal: paperHNormal[i]!,
  hAbnormal: paperHAbnormal[i]!,
  status: paperStatus[i]!,
}));

// The paper printed log10(x)/0.301 rather than exact log2; pairEntropy uses the same constant so that all
// twenty printed values come out exactly to three decimals, as the issue requires.
const THIRD_DECIMAL = 0.0005;

describe('paper example (ten windows of 100 pairs)', () => {
  it.each(windows)('window $window: H(Pn) = $hNormal, H(Pa) = $hAbnormal', (w) => {
    expect(w.normal + w.abnormal).toBe(100);
    expect(Math.abs(pairEntropy(w.normal, 100) - w.hNormal)).toBeLessThan(THIRD_DECIMAL);
    expect(Math.abs(pairEntropy(w.abnormal, 100) - w.hAbnormal)).toBeLessThan(THIRD_DECIMAL);
  });

  it.each(windows)('window $window: prints exactly as the paper to three decimals', (w) => {
    expect(pairEntropy(w.normal, 100).toFixed(3)).toBe(w.hNormal.toFixed(3));
    expect(pairEntropy(w.abnormal, 100).toFixed(3)).toBe(w.hAbnormal.toFixed(3));
  });

  it.each(windows)('window $window: S = $status with default delta and minPairs', (w) => {
    const reading = windowEntropy({ normal: w.normal, abnormal: w.abnormal });
    expect(reading.status).toBe(w.status);
    expect(reading.reason).toBe('pairs');
    expect(Math.abs(reading.hNormal - w.hNormal)).toBeLessThan(THIRD_DECIMAL);
    expect(Math.abs(reading.hAbnormal - w.hAbnormal)).toBeLessThan(THIRD_DECIMAL);
  });

  it('stays within 0.01 % of exact log2', () => {
    for (const count of [1, 5, 13, 33, 51, 99]) {
      expect(pairEntropy(count, 100) / -Math.log2(count / 100)).toBeCloseTo(1, 3);
    }
  });

  it('D equals H(Pa) - H(Pn) whenever both counts are non-zero', () => {
    for (const w of windows.slice(1)) {
      const reading = windowEntropy(w);
      expect(reading.distance).toBeCloseTo(reading.hAbnormal - reading.hNormal, 12);
    }
  });

  it('uses delta 0.5 bit and 20 pairs by default', () => {
    expect(DEFAULT_ENTROPY_OPTIONS).toEqual({ deltaBits: 0.5, minPairs: 20 });
  });
});

describe('edge cases', () => {
  it('P = 0 is quiet and safe with a zero distance', () => {
    expect(windowEntropy({ normal: 0, abnormal: 0 })).toEqual({
      normal: 0,
      abnormal: 0,
      hNormal: 0,
      hAbnormal: 0,
      distance: 0,
      status: 1,
      reason: 'quiet',
    });
    // Even with no floor at all an empty window cannot be judged.
    expect(windowEntropy({ normal: 0, abnormal: 0 }, { deltaBits: 0.5, minPairs: 0 }).reason).toBe('quiet');
  });

  it('Pa = 0 < Pn gives D = +Infinity and safe', () => {
    const reading = windowEntropy({ normal: 40, abnormal: 0 });
    expect(reading.distance).toBe(Number.POSITIVE_INFINITY);
    expect(reading.status).toBe(1);
    expect(reading.reason).toBe('pairs');
    expect(reading.hNormal).toBe(0);
    expect(Object.is(reading.hNormal, -0)).toBe(false);
    expect(reading.hAbnormal).toBe(0);
    expect(distanceForJson(reading.distance)).toBeNull();
  });

  it('Pn = 0 < Pa gives D = -Infinity and danger', () => {
    const reading = windowEntropy({ normal: 0, abnormal: 40 });
    expect(reading.distance).toBe(Number.NEGATIVE_INFINITY);
    expect(reading.status).toBe(-1);
    expect(reading.reason).toBe('pairs');
    expect(distanceForJson(reading.distance)).toBeNull();
    expect(JSON.parse(JSON.stringify(reading)).distance).toBeNull();
  });

  it('delta = 0 leaves only D = 0 critical', () => {
    const options = { deltaBits: 0, minPairs: 0 };
    expect(windowEntropy({ normal: 50, abnormal: 50 }, options).status).toBe(0);
    expect(windowEntropy({ normal: 51, abnormal: 49 }, options).status).toBe(1);
    expect(windowEntropy({ normal: 49, abnormal: 51 }, options).status).toBe(-1);
  });

  it('|D| = delta exactly is critical (boundary belongs to 0)', () => {
    expect(statusFromDistance(1, 1)).toBe(0);
    expect(statusFromDistance(-1, 1)).toBe(0);
    // Pn = 2 Pa gives exactly one (paper) bit.
    expect(windowEntropy({ normal: 40, abnormal: 20 }, { deltaBits: paperLog2(2), minPairs: 0 }).status).toBe(0);
    expect(statusFromDistance(Number.POSITIVE_INFINITY, 0.5)).toBe(1);
    expect(statusFromDistance(Number.NEGATIVE_INFINITY, 0.5)).toBe(-1);
  });

  it('below minPairs a window that would be danger is reported quiet and safe', () => {
    const quiet = windowEntropy({ normal: 2, abnormal: 17 });
    expect(quiet.status).toBe(1);
    expect(quiet.reason).toBe('quiet');
    // The readings are still there for display.
    expect(quiet.distance).toBeCloseTo(paperLog2(2 / 17), 12);
    const judged = windowEntropy({ normal: 2, abnormal: 18 });
    expect(judged.status).toBe(-1);
    expect(judged.reason).toBe('pairs');
    expect(windowEntropy({ normal: 2, abnormal: 17 }, { deltaBits: 0.5, minPairs: 0 }).status).toBe(-1);
  });

  it('rejects impossible inputs', () => {
    expect(() => pairEntropy(-1, 10)).toThrow(RangeError);
    expect(() => pairEntropy(11, 10)).toThrow(RangeError);
    expect(() => pairEntropy(Number.NaN, 10)).toThrow(RangeError);
    expect(() => entropyDistance(1, Number.POSITIVE_INFINITY)).toThrow(RangeError);
    expect(() => statusFromDistance(0, -0.1)).toThrow(RangeError);
    expect(() => statusFromDistance(Number.NaN, 0.5)).toThrow(RangeError);
    expect(() => windowEntropy({ normal: 1, abnormal: 1 }, { deltaBits: 0.5, minPairs: -1 })).toThrow(RangeError);
  });
});
