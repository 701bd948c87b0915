// Off-peak windows at fixed instants: across midnight, day lists, several time zones, and both DST changes in
// Europe/Berlin (2025-03-30 01:00Z: 02:00 CET -> 03:00 CEST; 2025-10-26 01:00Z: 03:00 CEST -> 02:00 CET).
import { describe, expect, it } from 'vitest';
import {
  isOffPeak, nextOffPeakStart, offPeakState, validateOffPeakSchedule, type OffPeakSchedule,
} from '../../src/quarantine/offpeak.js';

const at = (iso: string): number => Date.parse(iso);
const WEEKNIGHTS = ['mon', 'tue', 'wed', 'thu', 'fri'] as const;

describe('off-peak windows in UTC', () => {
  // 2025-01-17 is a Friday.
  const schedule: OffPeakSchedule = { timeZone: 'UTC', windows: [{ days: [...WEEKNIGHTS], from: '22:00', to: '06:00' }] };

  it('a window across midnight belongs to the day it starts on', () => {
    expect(isOffPeak(at('2025-01-17T21:59:59.999Z'), schedule)).toBe(false);
    expect(isOffPeak(at('2025-01-17T22:00:00Z'), schedule)).toBe(true);
    expect(isOffPeak(at('2025-01-18T03:00:00Z'), schedule)).toBe(true); // Saturday morning: Friday's window
    expect(isOffPeak(at('2025-01-18T06:00:00Z'), schedule)).toBe(false);
    expect(isOffPeak(at('2025-01-18T23:00:00Z'), schedule)).toBe(false); // no Saturday window
    expect(isOffPeak(at('2025-01-20T03:00:00Z'), schedule)).toBe(false); // Monday morning: Sunday has none
    expect(isOffPeak(at('2025-01-20T22:30:00Z'), schedule)).toBe(true);
  });

  it('reports the end of the current window and the start of the next', () => {
    expect(offPeakState(at('2025-01-18T03:00:00Z'), schedule)).toEqual({ offPeak: true, endsAtMs: at('2025-01-18T06:00:00Z') });
    expect(offPeakState(at('2025-01-18T12:00:00Z'), schedule)).toEqual({ offPeak: false, nextStartMs: at('2025-01-20T22:00:00Z') });
    expect(nextOffPeakStart(at('2025-01-18T12:00:00Z'), schedule)).toBe(at('2025-01-20T22:00:00Z'));
    expect(nextOffPeakStart(at('2025-01-17T23:00:00Z'), schedule)).toBe(at('2025-01-17T23:00:00Z'));
  });

  it('merges adjoining windows and whole days', () => {
    const weekend: OffPeakSchedule = {
      timeZone: 'UTC',
      windows: [
        { days: ['fri'], from: '18:00', to: '24:00' },
        { days: ['sat', 'sun'], from: '00:00', to: '00:00' },
      ],
    };
    expect(offPeakState(at('2025-01-17T19:00:00Z'), weekend)).toEqual({ offPeak: true, endsAtMs: at('2025-01-20T00:00:00Z') });
    expect(isOffPeak(at('2025-01-19T23:59:59Z'), weekend)).toBe(true);
    expect(isOffPeak(at('2025-01-20T00:00:00Z'), weekend)).toBe(false);
  });

  it('a schedule without windows is never off-peak', () => {
    expect(offPeakState(0, { timeZone: 'UTC', windows: [] })).toEqual({ offPeak: false, nextStartMs: null });
    expect(nextOffPeakStart(0, { timeZone: 'UTC', windows: [] })).toBeNull();
  });

  it('every day with "*"', () => {
    const nightly: OffPeakSchedule = { timeZone: 'UTC', windows: [{ days: ['*'], from: '01:00', to: '05:00' }] };
    for (let day = 13; day <= 19; day += 1) expect(isOffPeak(Date.UTC(2025, 0, day, 2), nightly)).toBe(true);
  });
});

describe('off-peak windows in other time zones', () => {
  it('America/New_York, standard and daylight time', () => {
    const schedule: OffPeakSchedule = { timeZone: 'America/New_York', windows: [{ days: ['*'], from: '01:00', to: '05:00' }] };
    // January: EST, UTC-5.
    expect(isOffPeak(at('2025-01-15T05:59:00Z'), schedule)).toBe(false);
    expect(offPeakState(at('2025-01-15T06:30:00Z'), schedule)).toEqual({ offPeak: true, endsAtMs: at('2025-01-15T10:00:00Z') });
    // July: EDT, UTC-4.
    expect(nextOffPeakStart(at('2025-07-15T12:00:00Z'), schedule)).toBe(at('2025-07-16T05:00:00Z'));
  });

  it('Asia/Kolkata, UTC+05:30, day lists in local days', () => {
    const schedule: OffPeakSchedule = { timeZone: 'Asia/Kolkata', windows: [{ days: ['sun'], from: '22:00', to: '06:00' }] };
    // Sunday 2025-01-19 22:00 IST is 16:30Z; its window ends Monday 06:00 IST = 00:30Z.
    expect(isOffPeak(at('2025-01-19T16:29:59Z'), schedule)).toBe(false);
    expect(offPeakState(at('2025-01-19T16:30:00Z'), schedule)).toEqual({ offPeak: true, endsAtMs: at('2025-01-20T00:30:00Z') });
    // Monday 2025-01-20 20:00Z is already Tuesday 01:30 IST: no window until next Sunday.
    expect(nextOffPeakStart(at('2025-01-20T20:00:00Z'), schedule)).toBe(at('2025-01-26T16:30:00Z'));
  });
});

describe('off-peak windows on DST days in Europe/Berlin', () => {
  it('spring forward: the night is 7 hours long', () => {
    const schedule: OffPeakSchedule = { timeZone: 'Europe/Berlin', windows: [{ days: ['sat'], from: '22:00', to: '06:00' }] };
    // Saturday 22:00 CET = 21:00Z; Sunday 06:00 CEST = 04:00Z.
    expect(offPeakState(at('2025-03-29T21:00:00Z'), schedule)).toEqual({ offPeak: true, endsAtMs: at('2025-03-30T04:00:00Z') });
  });

  it('spring forward: an edge inside the skipped hour moves to its end; a window wholly inside it is skipped', () => {
    const edge: OffPeakSchedule = { timeZone: 'Europe/Berlin', windows: [{ days: ['sun'], from: '02:30', to: '04:00' }] };
    expect(isOffPeak(at('2025-03-30T00:59:59Z'), edge)).toBe(false);
    expect(offPeakState(at('2025-03-30T01:00:00Z'), edge)).toEqual({ offPeak: true, endsAtMs: at('2025-03-30T02:00:00Z') });
    expect(nextOffPeakStart(at('2025-03-29T12:00:00Z'), edge)).toBe(at('2025-03-30T01:00:00Z'));

    const inside: OffPeakSchedule = { timeZone: 'Europe/Berlin', windows: [{ days: ['*'], from: '02:15', to: '02:45' }] };
    // Saturday 02:15 CET, then no Sunday window, then Monday 02:15 CEST = 00:15Z.
    expect(nextOffPeakStart(at('2025-03-29T12:00:00Z'), inside)).toBe(at('2025-03-31T00:15:00Z'));
  });

  it('fall back: the night is 9 hours long and an edge in the repeated hour is its first occurrence', () => {
    const night: OffPeakSchedule = { timeZone: 'Europe/Berlin', windows: [{ days: ['sat'], from: '22:00', to: '06:00' }] };
    // Saturday 22:00 CEST = 20:00Z; Sunday 06:00 CET = 05:00Z.
    expect(offPeakState(at('2025-10-25T20:00:00Z'), night)).toEqual({ offPeak: true, endsAtMs: at('2025-10-26T05:00:00Z') });

    const edge: OffPeakSchedule = { timeZone: 'Europe/Berlin', windows: [{ days: ['sat'], from: '22:00', to: '02:30' }] };
    // The first 02:30 is CEST: 00:30Z. The second (CET, 01:30Z) is not in the window.
    expect(offPeakState(at('2025-10-25T23:00:00Z'), edge)).toEqual({ offPeak: true, endsAtMs: at('2025-10-26T00:30:00Z') });
    expect(isOffPeak(at('2025-10-26T01:30:00Z'), edge)).toBe(false);
  });
});

describe('a zone that skips local midnight', () => {
  it('America/Santiago 2024-09-08: 00:00 never happens, the Sunday window starts at 01:00 -03', () => {
    const schedule: OffPeakSchedule = { timeZone: 'America/Santiago', windows: [{ days: ['sun'], from: '00:00', to: '02:00' }] };
    expect(nextOffPeakStart(at('2024-09-07T12:00:00Z'), schedule)).toBe(at('2024-09-08T04:00:00Z'));
    expect(offPeakState(at('2024-09-08T04:00:00Z'), schedule)).toEqual({ offPeak: true, endsAtMs: at('2024-09-08T05:00:00Z') });
  });
});

describe('validateOffPeakSchedule', () => {
  it('names every problem and the functions refuse such a schedule', () => {
    const bad = {
      timeZone: 'Mars/Olympus',
      windows: [{ days: [] }, { days: ['mon', 'funday'], from: '24:00', to: '6:00' }].map((window) => ({ from: '22:00', to: '06:00', ...window })),
    } as unknown as OffPeakSchedule;
    expect(validateOffPeakSchedule(bad)).toEqual([
      'unknown time zone "Mars/Olympus"',
      'windows[0].days is empty',
      'windows[1].days: unknown day "funday"',
      'windows[1].from: expected HH:MM (00:00-23:59), got "24:00"',
      'windows[1].to: expected HH:MM (00:00-24:00), got "6:00"',
    ]);
    expect(() => isOffPeak(0, bad)).toThrow(RangeError);
    expect(validateOffPeakSchedule({ timeZone: 'Europe/Berlin', windows: [{ days: ['*'], from: '22:00', to: '24:00' }] })).toEqual([]);
  });
});
