import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { RateLimitedLog } from '../../src/log-rate.js';

function capture(): { lines: Record<string, unknown>[]; stream: Writable } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({ write(chunk, _encoding, done) { for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line)); done(); } });
  return { lines, stream };
}

describe('RateLimitedLog', () => {
  it('writes the first lines of a second in full, then one summary with counts and examples per group', () => {
    const { lines, stream } = capture();
    const log = new RateLimitedLog(createLogger('info', stream), { perSecond: 3, summary: 'more verdicts' });
    for (let index = 0; index < 1_000; index += 1) log.log({ scope: `192.0.2.${index % 250}` }, 'verdict', index % 2 === 0 ? 'reject/entropy' : 'defer/sfds', `192.0.2.${index % 250}`);
    expect(lines.map((line) => line.msg)).toEqual(['verdict', 'verdict', 'verdict']);
    log.flush();
    expect(lines).toHaveLength(4);
    const summary = lines[3] as { msg: string; count: number; groups: Record<string, { count: number; samples: string[] }> };
    expect(summary.msg).toBe('more verdicts');
    expect(summary.count).toBe(997);
    expect(summary.groups['reject/entropy']?.count).toBe(498);
    expect(summary.groups['defer/sfds']?.count).toBe(499);
    expect(summary.groups['reject/entropy']?.samples).toHaveLength(3);
    // A new second starts with a fresh allowance.
    log.log({}, 'verdict');
    expect(lines).toHaveLength(5);
    log.flush();
    expect(lines).toHaveLength(5);
  });

  it('count() only ever reaches the summary line', () => {
    const { lines, stream } = capture();
    const log = new RateLimitedLog(createLogger('info', stream), { perSecond: 0, summary: 'dropped' });
    log.count('dropped', '198.51.100.1');
    log.count('dropped');
    expect(lines).toHaveLength(0);
    log.flush();
    expect(lines[0]).toMatchObject({ msg: 'dropped', count: 2, groups: { dropped: { count: 2, samples: ['198.51.100.1'] } } });
  });
});
