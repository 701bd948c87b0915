// SFDS, the SMTP flooding detection system of Yang and Tseng (2005), over what the proxy sees of each session instead of NetFlow.
// Traffic is aggregated per source and period (the paper's virtual flow is client address, proxy address,
// proxy port; per source we count how many of those it used). A source floods under a threshold set when its
// mean packet size, mean flow rate and flooding duration all STRICTLY exceed the set's values (formula 7).
// The paper's hourly set (100 bytes, 180 flows/hour, 5 hours) is the default; operators add faster sets.
// Pure state over injected time: no clock, no timers, no I/O.
import { sourceOf } from './prefix.js';

export interface ThresholdSet {
  name: string;
  periodSeconds: number;
  /** Mean packet size must exceed this (bytes/packet). */
  minMeanPacketBytes: number;
  /** Mean flow rate must exceed this (sessions per period). */
  minFlowsPerPeriod: number;
  /** Flooding duration must exceed this many periods. */
  minDurationPeriods: number;
}

export const PAPER_THRESHOLDS: Readonly<ThresholdSet> = Object.freeze({
  name: 'paper-hourly',
  periodSeconds: 3_600,
  minMeanPacketBytes: 100,
  minFlowsPerPeriod: 180,
  minDurationPeriods: 5,
});

/**
 * SFDS "packets" at the SMTP layer, both directions: one per command line the client sent, one per reply we
 * sent (a multi-line reply is one), and one per full-size TCP segment of DATA, ceil(dataBytes / 1460).
 * Bytes are all SMTP-layer bytes both ways (lines with their CRLF, message bytes). src/smtp/live-session.ts
 * counts exactly this. The paper's 100-byte split keeps its meaning: a session refused at RCPT is about
 * 10 packets of 35-40 bytes, while one that delivers a message (12 packets of dialogue, about 420 bytes)
 * passes 100 bytes/packet once the message is over about 900 bytes, which spam almost always is.
 */
export const SEGMENT_BYTES = 1_460;

export function sessionPackets(counts: { commandLines: number; replies: number; dataBytes: number }): number {
  return counts.commandLines + counts.replies + Math.ceil(counts.dataBytes / SEGMENT_BYTES);
}

/** One SMTP session as the proxy saw it; one session is one SFDS flow. */
export interface SessionObservation {
  client: string;
  /** The proxy's address and port the client connected to. */
  local: string;
  localPort: number;
  startMs: number;
  endMs: number;
  packets: number;
  bytes: number;
}

/** The fields of a session log record SFDS needs (src/session/record.ts), turned into an observation. */
export function observationFromRecord(
  record: { client: string; local: string; localPort: number; durationMs: number; packets: number; bytesIn: number; bytesOut: number },
  endMs: number,
): SessionObservation {
  const { client, local, localPort, packets } = record;
  return { client, local, localPort, startMs: endMs - record.durationMs, endMs, packets, bytes: record.bytesIn + record.bytesOut };
}

export interface SfdsStats {
  flows: number;
  packets: number;
  bytes: number;
  meanPacketBytes: number;
  /** Flooding duration: consecutive periods over the rate (see floodingDuration). */
  durationPeriods: number;
  /** Mean flow rate: flows per period over the periods the numbers cover. */
  flowsPerPeriod: number;
  /** Distinct (client, proxy address, proxy port) seen, capped at maxVirtualFlowsPerSource. */
  virtualFlows: number;
  /** Periods the numbers cover: the run still held in memory, or the current period alone when there is no run. */
  coveredPeriods: number;
}

export interface SfdsRow extends SfdsStats {
  source: string;
  set: string;
}

export interface SfdsDetection {
  source: string;
  set: string;
  stats: SfdsStats;
}

/** A detection with the time range its numbers cover: what a notice to the source's network reports. */
export interface SfdsRecord extends SfdsDetection {
  /** Start of the earliest and end of the latest session counted in stats. */
  firstStartMs: number;
  lastEndMs: number;
}

export function meanPacketBytes(bytes: number, packets: number): number {
  return packets > 0 ? bytes / packets : 0;
}

/** Formula 7: every test is strictly greater-than, as in the paper ("above 180", "more than 5 hours"). */
export function isFlooding(stats: Pick<SfdsStats, 'meanPacketBytes' | 'flowsPerPeriod' | 'durationPeriods'>, set: ThresholdSet): boolean {
  return (
    stats.meanPacketBytes > set.minMeanPacketBytes &&
    stats.flowsPerPeriod > set.minFlowsPerPeriod &&
    stats.durationPeriods > set.minDurationPeriods
  );
}

export interface FloodingRun {
  /** Complete periods over the rate, consecutive and ending with the most recent complete one. */
  completePeriods: number;
  /** The current, partial period already exceeds the rate on its own count so far. */
  includesCurrent: boolean;
  /** Every complete period given is in the run, so the run may go on before them. */
  reachesWindowStart: boolean;
}

/** periodFlowCounts: flows per period, oldest first, the LAST being the current (partial) period. */
export function floodingRun(periodFlowCounts: readonly number[], set: ThresholdSet): FloodingRun {
  const completeCount = Math.max(0, periodFlowCounts.length - 1);
  let completePeriods = 0;
  while (completePeriods < completeCount && periodFlowCounts[completeCount - 1 - completePeriods]! > set.minFlowsPerPeriod) {
    completePeriods += 1;
  }
  const current = periodFlowCounts[periodFlowCounts.length - 1] ?? 0;
  return { completePeriods, includesCurrent: current > set.minFlowsPerPeriod, reachesWindowStart: completePeriods === completeCount };
}

/**
 * Flooding duration in periods: the consecutive complete periods over the rate ending with the most recent
 * complete one, plus the current partial period if its count so far already exceeds the rate. A partial
 * period under the rate does not break the run (it may still get there), so a flood is seen as soon as its
 * sixth hour passes 180 flows, and is forgotten one full quiet period after it stops.
 * earlierRunPeriods: run periods just before the first count given, added only when the run reaches them.
 */
export function floodingDuration(periodFlowCounts: readonly number[], set: ThresholdSet, earlierRunPeriods = 0): number {
  const run = floodingRun(periodFlowCounts, set);
  return run.completePeriods + (run.reachesWindowStart ? earlierRunPeriods : 0) + (run.includesCurrent ? 1 : 0);
}

export function validateThresholdSets(sets: readonly ThresholdSet[]): void {
  if (sets.length === 0) throw new RangeError('SFDS needs at least one threshold set');
  const names = new Set<string>();
  for (const set of sets) {
    if (names.has(set.name)) throw new RangeError(`duplicate SFDS threshold set "${set.name}"`);
    names.add(set.name);
    if (!Number.isInteger(set.periodSeconds) || set.periodSeconds < 1) throw new RangeError(`${set.name}: periodSeconds must be a positive integer`);
    if (!Number.isInteger(set.minDurationPeriods) || set.minDurationPeriods < 0) throw new RangeError(`${set.name}: minDurationPeriods must be an integer >= 0`);
    if (!(set.minFlowsPerPeriod >= 0) || !(set.minMeanPacketBytes >= 0)) throw new RangeError(`${set.name}: thresholds must be >= 0`);
  }
}

export interface SfdsOptions {
  sets: readonly ThresholdSet[];
  /** Sources tracked at once; a new one beyond this drops the least recently seen. */
  maxSources: number;
  /** Distinct (proxy address, port) remembered per source and period; a count, not evidence, so a small cap. */
  maxVirtualFlowsPerSource: number;
}

export const DEFAULT_SFDS_OPTIONS: Readonly<SfdsOptions> = Object.freeze({
  sets: Object.freeze([PAPER_THRESHOLDS]),
  maxSources: 50_000,
  maxVirtualFlowsPerSource: 32,
});

/**
 * Periods one source's ring holds under a set: the current one and the minDurationPeriods + 1 complete ones
 * before it. A session that ended before them is too late to count (an offline reader reports how many).
 */
export function windowPeriods(set: ThresholdSet): number {
  return set.minDurationPeriods + 2;
}

interface PeriodTotals {
  periodIndex: number;
  flows: number;
  packets: number;
  bytes: number;
  virtualFlows: Set<string>;
  firstStartMs: number;
  lastEndMs: number;
}

/**
 * One source under one threshold set: the current period and the minDurationPeriods + 1 complete ones before
 * it, enough to see a run longer than the threshold on its own. Periods are aligned to the epoch (hours on
 * the hour, like the paper's hourly NetFlow files). Run periods that leave the ring are carried as a count,
 * so the duration stays exact for long floods while the totals cover the ring only.
 */
class PeriodRing {
  private readonly slots: Array<PeriodTotals | undefined>;
  private readonly periodMs: number;
  private headIndex: number;
  private earlierRunPeriods = 0;

  constructor(private readonly set: ThresholdSet, nowMs: number) {
    this.slots = new Array<PeriodTotals | undefined>(windowPeriods(set)).fill(undefined);
    this.periodMs = set.periodSeconds * 1_000;
    this.headIndex = this.periodIndex(nowMs);
  }

  periodIndex(ms: number): number {
    return Math.floor(ms / this.periodMs);
  }

  /** Makes nowMs's period the current one; time never runs backwards here (a late clock keeps the head). */
  advanceTo(nowMs: number): void {
    const target = this.periodIndex(nowMs);
    const size = this.slots.length;
    for (let leaving = this.headIndex - size + 1; leaving <= target - size; leaving += 1) {
      if (leaving > this.headIndex) {
        this.earlierRunPeriods = 0;
        break;
      }
      this.earlierRunPeriods = (this.totalsAt(leaving)?.flows ?? 0) > this.set.minFlowsPerPeriod ? this.earlierRunPeriods + 1 : 0;
    }
    this.headIndex = Math.max(this.headIndex, target);
  }

  /** Counts a session in the period it ended in (as NetFlow files a flow), or the current one if that is later. */
  add(session: SessionObservation, maxVirtualFlows: number): void {
    const index = Math.min(this.periodIndex(session.endMs), this.headIndex);
    if (index <= this.headIndex - this.slots.length) return;
    const position = index % this.slots.length;
    let totals = this.slots[position];
    if (totals?.periodIndex !== index) {
      totals = { periodIndex: index, flows: 0, packets: 0, bytes: 0, virtualFlows: new Set(), firstStartMs: session.startMs, lastEndMs: session.endMs };
      this.slots[position] = totals;
    }
    totals.firstStartMs = Math.min(totals.firstStartMs, session.startMs);
    totals.lastEndMs = Math.max(totals.lastEndMs, session.endMs);
    totals.flows += 1;
    totals.packets += session.packets;
    totals.bytes += session.bytes;
    if (totals.virtualFlows.size < maxVirtualFlows) totals.virtualFlows.add(`${session.local} ${session.localPort}`);
  }

  isIdle(): boolean {
    return this.window().every((totals) => totals === undefined);
  }

  stats(maxVirtualFlows: number): SfdsStats {
    const { covered, durationPeriods } = this.covered();
    const virtualFlows = new Set<string>();
    let flows = 0;
    let packets = 0;
    let bytes = 0;
    for (const totals of covered) {
      if (totals === undefined) continue;
      flows += totals.flows;
      packets += totals.packets;
      bytes += totals.bytes;
      for (const key of totals.virtualFlows) if (virtualFlows.size < maxVirtualFlows) virtualFlows.add(key);
    }
    return {
      flows,
      packets,
      bytes,
      meanPacketBytes: meanPacketBytes(bytes, packets),
      durationPeriods,
      flowsPerPeriod: flows / covered.length,
      virtualFlows: virtualFlows.size,
      coveredPeriods: covered.length,
    };
  }

  /** Start of the earliest and end of the latest session in the periods stats() covers; undefined if none. */
  timeRange(): { firstStartMs: number; lastEndMs: number } | undefined {
    const seen = this.covered().covered.filter((totals) => totals !== undefined);
    if (seen.length === 0) return undefined;
    return { firstStartMs: Math.min(...seen.map((totals) => totals.firstStartMs)), lastEndMs: Math.max(...seen.map((totals) => totals.lastEndMs)) };
  }

  /** The periods the numbers cover (the run, or the current period alone) and the flooding duration. */
  private covered(): { covered: Array<PeriodTotals | undefined>; durationPeriods: number } {
    const window = this.window();
    const run = floodingRun(window.map((totals) => totals?.flows ?? 0), this.set);
    const durationPeriods = run.completePeriods + (run.reachesWindowStart ? this.earlierRunPeriods : 0) + (run.includesCurrent ? 1 : 0);
    const current = window.length - 1;
    let covered = window.slice(current - run.completePeriods, current);
    if (run.includesCurrent || covered.length === 0) covered = [...covered, window[current]];
    return { covered, durationPeriods };
  }

  /** The ring's periods oldest first, the current one last; undefined where nothing was seen. */
  private window(): Array<PeriodTotals | undefined> {
    const size = this.slots.length;
    return Array.from({ length: size }, (_, offset) => this.totalsAt(this.headIndex - size + 1 + offset));
  }

  private totalsAt(index: number): PeriodTotals | undefined {
    const totals = this.slots[((index % this.slots.length) + this.slots.length) % this.slots.length];
    return totals?.periodIndex === index ? totals : undefined;
  }
}

function assertObservation(session: SessionObservation): void {
  for (const [name, value] of [['packets', session.packets], ['bytes', session.bytes]] as const) {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`);
  }
  if (!(session.endMs >= session.startMs)) throw new RangeError(`endMs ${session.endMs} is before startMs ${session.startMs}`);
}

/** One key per host: mapped IPv6 and IPv4 are the same source; anything unparsable is kept as written. */
/**
 * The source SFDS aggregates over (sourceOf): the IPv4 address, or the IPv6 /64, as the other
 * per-source counters use. Per /128, one host that owns a /64 could spread a flood over 2^64
 * sources, each under every threshold, and fill maxSources with itself.
 */
function sourceKey(client: string): string {
  try {
    return sourceOf(client);
  } catch {
    return client;
  }
}

/** Per-source SFDS aggregation under every threshold set, with bounded memory (maxSources, fixed rings). */
export class SfdsAggregator {
  private readonly options: Readonly<SfdsOptions>;
  /** Insertion order is recency: a source is re-inserted when seen, so the first key is the stalest. */
  private readonly sources = new Map<string, PeriodRing[]>();
  private evictedCount = 0;

  constructor(options: Partial<SfdsOptions> = {}) {
    this.options = Object.freeze({ ...DEFAULT_SFDS_OPTIONS, ...options });
    validateThresholdSets(this.options.sets);
    if (!Number.isInteger(this.options.maxSources) || this.options.maxSources < 1) throw new RangeError('maxSources must be a positive integer');
  }

  get sourceCount(): number {
    return this.sources.size;
  }

  /** Sources dropped because maxSources was reached. */
  get evicted(): number {
    return this.evictedCount;
  }

  observe(session: SessionObservation, nowMs: number): void {
    assertObservation(session);
    const source = sourceKey(session.client);
    let rings = this.sources.get(source);
    if (rings !== undefined) {
      this.sources.delete(source);
    } else {
      if (this.sources.size >= this.options.maxSources) this.evictStalest();
      rings = this.options.sets.map((set) => new PeriodRing(set, nowMs));
    }
    this.sources.set(source, rings);
    for (const ring of rings) {
      ring.advanceTo(nowMs);
      ring.add(session, this.options.maxVirtualFlowsPerSource);
    }
  }

  /** The sets under which one source floods now (the screen's per-connection question). */
  floodingSets(client: string, nowMs: number): SfdsDetection[] {
    const source = sourceKey(client);
    const rings = this.sources.get(source);
    return rings === undefined ? [] : this.detect(source, rings, nowMs);
  }

  /** floodingSets with the time range of each set's numbers: the flooding records of one source. */
  floodingRecords(client: string, nowMs: number): SfdsRecord[] {
    const source = sourceKey(client);
    const rings = this.sources.get(source);
    if (rings === undefined) return [];
    return this.detect(source, rings, nowMs).flatMap((detection) => {
      const range = rings[this.options.sets.findIndex((set) => set.name === detection.set)]?.timeRange();
      return range === undefined ? [] : [{ ...detection, ...range }];
    });
  }

  /** Every flooding source and the sets that fired, by source; forgets sources with nothing left in their rings. */
  evaluate(nowMs: number): SfdsDetection[] {
    const detections: SfdsDetection[] = [];
    for (const [source, rings] of this.sources) {
      rings.forEach((ring) => ring.advanceTo(nowMs));
      if (rings.every((ring) => ring.isIdle())) this.sources.delete(source);
      else detections.push(...this.detect(source, rings, nowMs));
    }
    return detections.sort((a, b) => a.source.localeCompare(b.source));
  }

  /** The paper's Fig. 2 under one set (the first by default): the n sources with most flows. */
  top(n: number, nowMs: number, setName?: string): SfdsRow[] {
    const setIndex = setName === undefined ? 0 : this.options.sets.findIndex((set) => set.name === setName);
    const set = this.options.sets[setIndex];
    if (set === undefined) throw new RangeError(`no SFDS threshold set named "${setName}"`);
    const rows: SfdsRow[] = [];
    for (const [source, rings] of this.sources) {
      const ring = rings[setIndex]!;
      ring.advanceTo(nowMs);
      const stats = ring.stats(this.options.maxVirtualFlowsPerSource);
      if (stats.flows > 0) rows.push({ source, set: set.name, ...stats });
    }
    rows.sort((a, b) => b.flows - a.flows || b.bytes - a.bytes || a.source.localeCompare(b.source));
    return rows.slice(0, Math.max(0, n));
  }

  private detect(source: string, rings: readonly PeriodRing[], nowMs: number): SfdsDetection[] {
    const detections: SfdsDetection[] = [];
    rings.forEach((ring, index) => {
      const set = this.options.sets[index]!;
      ring.advanceTo(nowMs);
      const stats = ring.stats(this.options.maxVirtualFlowsPerSource);
      if (isFlooding(stats, set)) detections.push({ source, set: set.name, stats });
    });
    return detections;
  }

  private evictStalest(): void {
    const stalest = this.sources.keys().next();
    if (stalest.done === true) return;
    this.sources.delete(stalest.value);
    this.evictedCount += 1;
  }
}
