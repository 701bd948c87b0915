// Off-peak windows: when quarantined mail may be released. Pure functions of an instant and a schedule; the
// time zone rules come from Intl.DateTimeFormat (the ICU data in Node), no clock is read here.
//
// A window lists days and local wall-clock times: { days: ['fri'], from: '22:00', to: '06:00' }. A window whose
// `to` is not after its `from` crosses midnight and belongs to the day it STARTS on: that Friday window covers
// Friday 22:00 to Saturday 06:00. from == to is a whole day; to may be '24:00' (the end of the day).
//
// Daylight saving: `from` and `to` mean the first instant on that local day at which the clock shows that time
// or later. So when the clock skips an hour (Europe/Berlin, last Sunday of March, 02:00 -> 03:00) an edge inside
// the gap moves to the end of the gap (03:00 CEST), and a window wholly inside the gap does not happen that day.
// When the clock repeats an hour (last Sunday of October, 03:00 -> 02:00) an edge inside it is its first
// occurrence. Windows keep their wall-clock meaning, so a 22:00-06:00 night lasts 7 hours in spring, 9 in autumn.
// Assumed: at most one offset change within a day of any instant (true of every zone in use today).

export const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type DayName = (typeof DAY_NAMES)[number];

export interface OffPeakWindow {
  /** Days the window STARTS on; ['*'] is every day. */
  days: readonly (DayName | '*')[];
  /** "HH:MM", 00:00-23:59. */
  from: string;
  /** "HH:MM", 00:00-24:00; at or before `from`: the next day. */
  to: string;
}

export interface OffPeakSchedule {
  /** IANA zone, e.g. "Europe/Berlin"; "UTC" for none. */
  timeZone: string;
  windows: readonly OffPeakWindow[];
}

export type OffPeakState =
  | { offPeak: true; /** End of the current off-peak run (adjoining windows merged), looking at most a week ahead. */ endsAtMs: number }
  | { offPeak: false; /** Start of the next window; null when the schedule has none. */ nextStartMs: number | null };

const DAY_MS = 86_400_000;
const MINUTE_MS = 60_000;
/** A window can start on any day of the week, so a week plus the day before today covers the next start. */
const HORIZON_DAYS = 8;

/** Problems with a schedule, for the config loader; empty when it is usable. */
export function validateOffPeakSchedule(schedule: OffPeakSchedule): string[] {
  const problems: string[] = [];
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: schedule.timeZone });
  } catch {
    problems.push(`unknown time zone "${schedule.timeZone}"`);
  }
  schedule.windows.forEach((window, position) => {
    const where = `windows[${position}]`;
    if (window.days.length === 0) problems.push(`${where}.days is empty`);
    for (const day of window.days) {
      if (day !== '*' && !DAY_NAMES.includes(day)) problems.push(`${where}.days: unknown day "${day}"`);
    }
    if (clockMinutes(window.from, false) === undefined) problems.push(`${where}.from: expected HH:MM (00:00-23:59), got "${window.from}"`);
    if (clockMinutes(window.to, true) === undefined) problems.push(`${where}.to: expected HH:MM (00:00-24:00), got "${window.to}"`);
  });
  return problems;
}

export function isOffPeak(nowMs: number, schedule: OffPeakSchedule): boolean {
  return offPeakState(nowMs, schedule).offPeak;
}

/** nowMs itself when off-peak now; else the start of the next window; null when the schedule has none. */
export function nextOffPeakStart(nowMs: number, schedule: OffPeakSchedule): number | null {
  const state = offPeakState(nowMs, schedule);
  return state.offPeak ? nowMs : state.nextStartMs;
}

/** Throws RangeError for a schedule validateOffPeakSchedule would reject. */
export function offPeakState(nowMs: number, schedule: OffPeakSchedule): OffPeakState {
  const problems = validateOffPeakSchedule(schedule);
  if (problems.length > 0) throw new RangeError(`invalid off-peak schedule: ${problems.join('; ')}`);
  const zone = zoneClock(schedule.timeZone);
  const today = Math.floor((nowMs + zone.offsetMs(nowMs)) / DAY_MS);
  const runs = mergeIntervals(windowInstances(schedule.windows, today - 1, today + HORIZON_DAYS, zone));
  const current = runs.find(([startMs, endMs]) => startMs <= nowMs && nowMs < endMs);
  if (current) return { offPeak: true, endsAtMs: current[1] };
  const next = runs.find(([startMs]) => startMs > nowMs);
  return { offPeak: false, nextStartMs: next ? next[0] : null };
}

type Interval = [startMs: number, endMs: number];

function windowInstances(windows: readonly OffPeakWindow[], firstDay: number, lastDay: number, zone: ZoneClock): Interval[] {
  const instances: Interval[] = [];
  for (let day = firstDay; day <= lastDay; day += 1) {
    const weekday = DAY_NAMES[(((day + 4) % 7) + 7) % 7] as DayName; // day 0, 1970-01-01, was a Thursday
    for (const window of windows) {
      if (!window.days.includes('*') && !window.days.includes(weekday)) continue;
      const fromMinutes = clockMinutes(window.from, false) as number;
      const toMinutes = clockMinutes(window.to, true) as number;
      const startMs = zone.firstInstantAtOrAfter(day, fromMinutes);
      const endMs = zone.firstInstantAtOrAfter(toMinutes > fromMinutes ? day : day + 1, toMinutes);
      // Empty when the whole window fell into a skipped hour.
      if (endMs > startMs) instances.push([startMs, endMs]);
    }
  }
  return instances;
}

/** Overlapping or adjoining windows form one off-peak run. */
function mergeIntervals(intervals: Interval[]): Interval[] {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  const merged: Interval[] = [];
  for (const [startMs, endMs] of sorted) {
    const last = merged[merged.length - 1];
    if (last && startMs <= last[1]) last[1] = Math.max(last[1], endMs);
    else merged.push([startMs, endMs]);
  }
  return merged;
}

/** Minutes after local midnight; '24:00' only where allowEndOfDay. undefined when malformed. */
function clockMinutes(text: string, allowEndOfDay: boolean): number | undefined {
  if (allowEndOfDay && text === '24:00') return 24 * 60;
  const match = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(text);
  return match ? Number(match[1]) * 60 + Number(match[2]) : undefined;
}

interface ZoneClock {
  /** Local wall time minus UTC at this instant, in ms (+3_600_000 for CET). */
  offsetMs(instantMs: number): number;
  /** First instant of local day `day` (days since 1970-01-01) at which the clock shows `minutes` or later. */
  firstInstantAtOrAfter(day: number, minutes: number): number;
}

function zoneClock(timeZone: string): ZoneClock {
  const format = new Intl.DateTimeFormat('en-US', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
  });
  const offsetMs = (instantMs: number): number => {
    const fields: Record<string, number> = {};
    for (const part of format.formatToParts(new Date(instantMs))) fields[part.type] = Number(part.value);
    const wallAsUtc = Date.UTC(fields.year as number, (fields.month as number) - 1, fields.day, fields.hour, fields.minute, fields.second);
    return wallAsUtc - Math.floor(instantMs / 1000) * 1000;
  };
  const firstInstantAtOrAfter = (day: number, minutes: number): number => {
    const wallMs = day * DAY_MS + minutes * MINUTE_MS;
    // The offsets a day before and after bracket any change near this wall time.
    const offsetBefore = offsetMs(wallMs - DAY_MS);
    const offsetAfter = offsetMs(wallMs + DAY_MS);
    const valid = [wallMs - offsetBefore, wallMs - offsetAfter].filter((instantMs) => offsetMs(instantMs) === wallMs - instantMs);
    if (valid.length > 0) return Math.min(...valid);
    // Skipped wall time: the first instant after the gap is when the offset changes. Binary search for it.
    let earlyMs = wallMs - Math.max(offsetBefore, offsetAfter);
    let lateMs = wallMs - Math.min(offsetBefore, offsetAfter);
    const lateOffset = offsetMs(lateMs);
    while (lateMs - earlyMs > 1) {
      const middleMs = Math.floor((earlyMs + lateMs) / 2);
      if (offsetMs(middleMs) === lateOffset) lateMs = middleMs;
      else earlyMs = middleMs;
    }
    return lateMs;
  };
  return { offsetMs, firstInstantAtOrAfter };
}
