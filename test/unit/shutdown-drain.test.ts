// The shutdown drain's order of steps against a stand-in listener whose sessions end when the test
// says: drain, then close what is left (gently, or at once on a second request), then stop, once.
// test/integration/shutdown-signals.test.ts runs the real process.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { ShutdownDrain, type DrainingListener } from '../../src/shutdown-drain.js';

class StandInListener implements DrainingListener {
  activeSessions = 1;
  readonly calls: string[] = [];
  private sessionsGone: () => void = () => undefined;
  private readonly gone = new Promise<void>((resolve) => {
    this.sessionsGone = resolve;
  });

  drain(): Promise<void> {
    this.calls.push('drain');
    return this.gone;
  }

  /** Sessions end by themselves only when the test ends them; closing now ends them. */
  closeSessions(now: boolean): Promise<void> {
    this.calls.push(now ? 'close-now' : 'close');
    if (now) this.endSessions();
    return this.gone;
  }

  endSessions(): void {
    this.activeSessions = 0;
    this.sessionsGone();
  }
}

function drainWith(drainSeconds: number): { listener: StandInListener; drain: ShutdownDrain; log: Array<Record<string, unknown>>; stops: () => number } {
  const listener = new StandInListener();
  const log: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) log.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  let stopped = 0;
  const drain = new ShutdownDrain({
    listener,
    drainSeconds,
    logger: createLogger('info', sink),
    stop: async () => {
      listener.calls.push('stop');
      stopped += 1;
    },
  });
  return { listener, drain, log, stops: () => stopped };
}

const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 10));

describe('shutdown drain', () => {
  it('stops once the sessions are gone, before the deadline', async () => {
    const { listener, drain, log, stops } = drainWith(3_600);
    const done = drain.request('SIGTERM');
    await tick();
    expect(listener.calls).toEqual(['drain']);
    listener.endSessions();
    await done;
    expect(listener.calls).toEqual(['drain', 'close', 'stop']);
    expect(stops()).toBe(1);
    expect(log.map((record) => record.msg)).toEqual([
      'draining: new connections and transactions get 421, open sessions may finish',
      'drained and stopped',
    ]);
    expect(log[1]).toMatchObject({ reason: 'SIGTERM', end: 'idle' });
  });

  it('closes the sessions left at the deadline and waits for them', async () => {
    const { listener, drain, log } = drainWith(0);
    const done = drain.request('SIGTERM');
    await tick();
    expect(listener.calls).toEqual(['drain', 'close']);
    // A message still with Postfix: nothing stops until its session has ended.
    await tick();
    expect(listener.calls).not.toContain('stop');
    listener.endSessions();
    await done;
    expect(listener.calls).toEqual(['drain', 'close', 'stop']);
    expect(log.find((record) => record.msg === 'closing the sessions left with 421')).toMatchObject({ end: 'deadline', sessionsLeft: 1 });
  });

  it('a second request during the drain closes every session at once; both requests end together', async () => {
    const { listener, drain, log, stops } = drainWith(3_600);
    const first = drain.request('SIGTERM');
    await tick();
    const second = drain.request('SIGINT');
    expect(second).toBe(first);
    await first;
    expect(listener.calls).toEqual(['drain', 'close-now', 'stop']);
    expect(stops()).toBe(1);
    expect(log.find((record) => record.msg === 'second shutdown request: closing every session now')).toMatchObject({ reason: 'SIGINT', sessionsLeft: 1 });
    expect(log[log.length - 1]).toMatchObject({ msg: 'drained and stopped', end: 'cut-short' });
    // The README: "closing the sessions left with 421" only when the deadline came first.
    expect(log.map((record) => record.msg)).not.toContain('closing the sessions left with 421');
  });

  it('a second request while the deadline waits for final replies stops waiting', async () => {
    const { listener, drain, stops } = drainWith(0);
    const done = drain.request('SIGTERM');
    await tick();
    expect(listener.calls).toEqual(['drain', 'close']);
    void drain.request('SIGTERM');
    await done;
    expect(listener.calls).toEqual(['drain', 'close', 'close-now', 'stop']);
    expect(stops()).toBe(1);
  });
});
