// The progress line of long CLI work (src/cli/progress.ts), on fake streams and a fake clock: redrawn in
// place on a terminal at most every interval, nothing at all when piped, plain lines when asked for.
import { describe, expect, it } from 'vitest';
import { formatCount, ProgressLine, type ProgressStream } from '../../src/cli/progress.js';

function fakeStream(isTTY: boolean, columns?: number): ProgressStream & { written: string[] } {
  const written: string[] = [];
  const stream: ProgressStream & { written: string[] } = { written, write: (text: string) => written.push(text) };
  if (isTTY) stream.isTTY = true;
  if (columns !== undefined) stream.columns = columns;
  return stream;
}

function clock(): { nowMs: () => number; advance(ms: number): void } {
  let now = 1_000;
  return { nowMs: () => now, advance: (ms) => { now += ms; } };
}

describe('ProgressLine', () => {
  it('on a terminal redraws one line with \\r at most every interval, with the rate since start', () => {
    const stream = fakeStream(true);
    const time = clock();
    const line = new ProgressLine(stream, { intervalMs: 200, nowMs: time.nowMs });
    let described = 0;
    const describe = (count: number) => (rate: number): string => {
      described += 1;
      return `${count} done, ${rate.toFixed(1)}/s`;
    };
    line.update(10, describe(10));
    expect(stream.written).toEqual([]);
    time.advance(500);
    line.update(50, describe(50));
    time.advance(100);
    line.update(60, describe(60));
    time.advance(150);
    line.update(75, describe(75));
    expect(described).toBe(2);
    expect(stream.written).toEqual(['\r50 done, 100.0/s\x1b[K', '\r75 done, 100.0/s\x1b[K']);
    line.done();
    expect(stream.written.at(-1)).toBe('\r\x1b[K');
    time.advance(1_000);
    line.update(100, describe(100));
    expect(stream.written).toHaveLength(3);
  });

  it('cuts the line to the terminal width, so \\r returns to its start', () => {
    const stream = fakeStream(true, 30);
    const time = clock();
    const line = new ProgressLine(stream, { nowMs: time.nowMs });
    time.advance(1_000);
    line.update(1, () => 'x'.repeat(100));
    const drawn = (stream.written[0] as string).replace('\r', '').replace('\x1b[K', '');
    expect(drawn).toHaveLength(29);
    expect(drawn.endsWith('…')).toBe(true);
  });

  it('clear() erases a drawn line for a message and the next update draws it again; nothing to erase, nothing written', () => {
    const stream = fakeStream(true);
    const time = clock();
    const line = new ProgressLine(stream, { intervalMs: 100, nowMs: time.nowMs });
    line.clear();
    expect(stream.written).toEqual([]);
    time.advance(100);
    line.update(1, () => 'one');
    line.clear();
    time.advance(100);
    line.update(2, () => 'two');
    expect(stream.written).toEqual(['\rone\x1b[K', '\r\x1b[K', '\rtwo\x1b[K']);
  });

  it('piped (not a terminal) prints nothing at all, and says so through enabled', () => {
    const stream = fakeStream(false);
    const time = clock();
    const line = new ProgressLine(stream, { nowMs: time.nowMs });
    expect(line.enabled).toBe(false);
    for (let step = 0; step < 20; step += 1) {
      time.advance(1_000);
      line.update(step, () => 'never');
    }
    line.show(20, () => 'never');
    line.done();
    expect(stream.written).toEqual([]);
  });

  it('without a stream prints nothing', () => {
    const line = new ProgressLine(undefined, { plainEveryMs: 1 });
    expect(line.enabled).toBe(false);
  });

  it('piped with plainEveryMs prints a plain line that often, without \\r or escapes', () => {
    const stream = fakeStream(false);
    const time = clock();
    const line = new ProgressLine(stream, { plainEveryMs: 5_000, nowMs: time.nowMs });
    expect(line.enabled).toBe(true);
    for (let second = 1; second <= 12; second += 1) {
      time.advance(1_000);
      line.update(second, () => `at ${second} s`);
    }
    line.done();
    expect(stream.written).toEqual(['at 5 s\n', 'at 10 s\n']);
  });

  it('show() draws at once whatever the interval', () => {
    const stream = fakeStream(true);
    const line = new ProgressLine(stream, { nowMs: clock().nowMs });
    line.show(0, () => 'starting');
    expect(stream.written).toEqual(['\rstarting\x1b[K']);
  });
});

describe('formatCount', () => {
  it('groups thousands and keeps one decimal for small rates', () => {
    expect(formatCount(1_234_567)).toBe('1,234,567');
    expect(formatCount(4.25)).toBe('4.3');
    expect(formatCount(12.6)).toBe('13');
    expect(formatCount(3)).toBe('3');
  });
});
