// Upstream back-pressure: slow or temp-failing Postfix counts as pressure; too few replies do not.
import { describe, expect, it } from 'vitest';
import { UpstreamPressure, assessPressure } from '../../src/detect/upstream-pressure.js';

const options = { windowSeconds: 30, latencyMs: 2000, tempFailRate: 0.3, minReplies: 10 };

describe('upstream pressure', () => {
  it('is pressure when the median latency or the 4xx share is over the threshold', () => {
    const fast = Array.from({ length: 20 }, () => ({ latencyMs: 5, tempFail: false }));
    expect(assessPressure(fast, options).pressured).toBe(false);
    const slow = Array.from({ length: 20 }, (_, index) => ({ latencyMs: index < 11 ? 2500 : 5, tempFail: false }));
    expect(assessPressure(slow, options)).toMatchObject({ pressured: true, medianLatencyMs: 2500 });
    const failing = Array.from({ length: 20 }, (_, index) => ({ latencyMs: 5, tempFail: index < 7 }));
    expect(assessPressure(failing, options)).toMatchObject({ pressured: true, tempFailRate: 0.35 });
    const atLimit = Array.from({ length: 20 }, (_, index) => ({ latencyMs: 5, tempFail: index < 6 }));
    expect(assessPressure(atLimit, options).pressured).toBe(false);
  });

  it('needs enough replies, and forgets those older than the window', () => {
    const pressure = new UpstreamPressure(options, 100);
    for (let index = 0; index < 9; index += 1) pressure.record(5000, 250, 1_000);
    expect(pressure.reading(1_000)).toMatchObject({ pressured: false, replies: 9 });
    pressure.record(5000, 451, 1_000);
    // A reading is reused for 100 ms, then computed afresh.
    expect(pressure.reading(1_050)).toMatchObject({ pressured: false, replies: 9 });
    expect(pressure.reading(1_100)).toMatchObject({ pressured: true, replies: 10 });
    expect(pressure.reading(31_101)).toMatchObject({ pressured: false, replies: 0 });
  });
});
