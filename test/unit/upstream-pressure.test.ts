// Upstream back-pressure: slow or temp-failing Postfix counts as pressure; too few replies do not,
// nor do one client's (or a suspect's) 4xx replies, which it can provoke at will.
import { describe, expect, it } from 'vitest';
import { UpstreamPressure, assessPressure } from '../../src/detect/upstream-pressure.js';

const options = { windowSeconds: 30, latencyMs: 2000, tempFailRate: 0.3, minReplies: 10 };
const client = { address: '192.0.2.1', suspect: false };

describe('upstream pressure', () => {
  it('is pressure when the median latency or the 4xx share is over the threshold', () => {
    const fast = Array.from({ length: 20 }, () => ({ latencyMs: 5, tempFail: false }));
    expect(assessPressure(fast, options).pressured).toBe(false);
    const slow = Array.from({ length: 20 }, (_, index) => ({ latencyMs: index < 11 ? 2500 : 5, tempFail: false }));
    expect(assessPressure(slow, options)).toMatchObject({ pressured: true, medianLatencyMs: 2500 });
    const failing = Array.from({ length: 20 }, (_, index) => ({ latencyMs: 5, tempFailFrom: index < 7 ? `192.0.2.${index}` : undefined }));
    expect(assessPressure(failing, options)).toMatchObject({ pressured: true, tempFailRate: 0.35, tempFailSources: 7 });
    const atLimit = Array.from({ length: 20 }, (_, index) => ({ latencyMs: 5, tempFailFrom: index < 6 ? `192.0.2.${index}` : undefined }));
    expect(assessPressure(atLimit, options).pressured).toBe(false);
  });

  it('needs enough replies, and forgets those older than the window', () => {
    const pressure = new UpstreamPressure(options, 100);
    for (let index = 0; index < 9; index += 1) pressure.record(5000, 250, 1_000, client);
    expect(pressure.reading(1_000)).toMatchObject({ pressured: false, replies: 9 });
    pressure.record(5000, 451, 1_000, client);
    // A reading is reused for 100 ms, then computed afresh.
    expect(pressure.reading(1_050)).toMatchObject({ pressured: false, replies: 9 });
    expect(pressure.reading(1_100)).toMatchObject({ pressured: true, replies: 10 });
    expect(pressure.reading(31_101)).toMatchObject({ pressured: false, replies: 0 });
  });

  it('one source provoking 4xx is no pressure: 200 RCPTs answered 450 for one client leave the status alone', () => {
    const pressure = new UpstreamPressure(options, 0);
    for (let session = 0; session < 10; session += 1) {
      pressure.record(5, 250, 1_000, client);
      for (let rcpt = 0; rcpt < 20; rcpt += 1) pressure.record(5, 450, 1_000, client);
    }
    // Its share is capped at a tenth of the window's 210 replies, and one source is no spread.
    expect(pressure.reading(1_000)).toMatchObject({ pressured: false, replies: 210, tempFailRate: 0.1, tempFailSources: 1 });
  });

  it('needs 4xx replies from several sources, each counted up to a tenth of the window', () => {
    const spread = (sources: number) => Array.from({ length: 100 }, (_, index) => ({ latencyMs: 5, tempFailFrom: index < 60 ? `198.51.100.${index % sources}` : undefined }));
    // Three sources (the fewest that count) at 20 each: 10 count each, 30 % is not above 0.3.
    expect(assessPressure(spread(3), options)).toMatchObject({ pressured: false, tempFailRate: 0.3, tempFailSources: 3 });
    // Four sources at 15 each: 40 %.
    expect(assessPressure(spread(4), options)).toMatchObject({ pressured: true, tempFailRate: 0.4, tempFailSources: 4 });
    // Two sources with every reply a 4xx: still no spread.
    const two = Array.from({ length: 100 }, (_, index) => ({ latencyMs: 5, tempFailFrom: `198.51.100.${index % 2}` }));
    expect(assessPressure(two, options)).toMatchObject({ pressured: false, tempFailSources: 2 });
  });

  it('counts a suspect source’s 4xx as a reply only, but its latency as Postfix’s', () => {
    const pressure = new UpstreamPressure(options, 0);
    for (let index = 0; index < 20; index += 1) pressure.record(5, 450, 1_000, { address: `203.0.113.${index}`, suspect: true });
    expect(pressure.reading(1_000)).toMatchObject({ pressured: false, replies: 20, tempFailRate: 0, tempFailSources: 0 });
    for (let index = 0; index < 21; index += 1) pressure.record(2500, 250, 1_000, { address: '203.0.113.1', suspect: true });
    expect(pressure.reading(1_000)).toMatchObject({ pressured: true, medianLatencyMs: 2500 });
  });

  it('counts an IPv4 client by its address and an IPv6 client by its /64', () => {
    const pressure = new UpstreamPressure(options, 0);
    for (let index = 0; index < 20; index += 1) pressure.record(5, 450, 1_000, { address: `2001:db8:1:2::${index + 1}`, suspect: false });
    expect(pressure.reading(1_000)).toMatchObject({ pressured: false, tempFailSources: 1 });
    for (let index = 0; index < 20; index += 1) pressure.record(5, 450, 1_000, { address: `192.0.2.${index + 1}`, suspect: false });
    expect(pressure.reading(1_000)).toMatchObject({ pressured: true, tempFailSources: 21 });
  });
});
