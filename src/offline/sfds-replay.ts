// SFDS over recorded NetFlow: each SMTP flow becomes the SessionObservation the live proxy makes of a
// session (source = client, destination:port = the proxy's address and port) and goes into the SAME
// SfdsAggregator, on a clock that is the latest flow end seen so far. After each flow the replay asks what
// the live screen asks at each connection, floodingSets(source), so a flood anywhere in the input is
// found even when the input goes on for hours after it; the top-N table is the aggregator's state at the
// end. Pure: records in, a report out.
import { SfdsAggregator, windowPeriods, type SfdsDetection, type SfdsRow, type SfdsStats, type ThresholdSet } from '../detect/sfds.js';
import type { NetflowRecord } from './netflow-csv.js';

export interface ReplayOptions {
  sets: readonly ThresholdSet[];
  maxSources: number;
}

/** One source flooding under one set somewhere in the input. */
export interface FloodingFinding {
  source: string;
  set: string;
  /** End time of the flow at which it was first, and last, found flooding. */
  firstDetectedMs: number;
  lastDetectedMs: number;
  /** The numbers when its flooding duration was longest (the later one on a tie). */
  stats: SfdsStats;
}

export interface ReplayReport {
  flows: number;
  firstFlowMs: number | undefined;
  /** The replay's clock at the end: the latest flow end. */
  lastFlowMs: number | undefined;
  /** Flows that ended before the window a set keeps (see windowPeriods), so that set did not count them. */
  lateFlows: Record<string, number>;
  /** Sources forgotten because maxSources were tracked at once (the least recently seen go first). */
  evictedSources: number;
  topSet: string;
  top: SfdsRow[];
  flooding: FloodingFinding[];
}

export class SfdsReplay {
  private readonly aggregator: SfdsAggregator;
  private readonly findings = new Map<string, FloodingFinding>();
  private readonly lateFlows: Map<string, number>;
  private flows = 0;
  private firstFlowMs: number | undefined;
  private clockMs: number | undefined;

  constructor(private readonly options: ReplayOptions) {
    this.aggregator = new SfdsAggregator({ sets: options.sets, maxSources: options.maxSources });
    this.lateFlows = new Map(options.sets.map((set) => [set.name, 0]));
  }

  add(record: NetflowRecord): void {
    const nowMs = Math.max(this.clockMs ?? record.endMs, record.endMs);
    this.clockMs = nowMs;
    this.firstFlowMs = Math.min(this.firstFlowMs ?? record.startMs, record.startMs);
    this.flows += 1;
    for (const set of this.options.sets) {
      const periodMs = set.periodSeconds * 1_000;
      if (Math.floor(record.endMs / periodMs) <= Math.floor(nowMs / periodMs) - windowPeriods(set)) {
        this.lateFlows.set(set.name, this.lateFlows.get(set.name)! + 1);
      }
    }
    const { source, destination, destinationPort, startMs, endMs, packets, bytes } = record;
    this.aggregator.observe({ client: source, local: destination, localPort: destinationPort, startMs, endMs, packets, bytes }, nowMs);
    for (const detection of this.aggregator.floodingSets(source, nowMs)) this.remember(detection, nowMs);
  }

  /** The report at the end of the input; setName picks the set of the top-N table (default: the first). */
  report(topCount: number, setName?: string): ReplayReport {
    const topSet = setName ?? this.options.sets[0]!.name;
    const top = this.clockMs === undefined ? [] : this.aggregator.top(topCount, this.clockMs, topSet);
    const flooding = [...this.findings.values()].sort((a, b) => a.firstDetectedMs - b.firstDetectedMs || a.source.localeCompare(b.source) || a.set.localeCompare(b.set));
    return {
      flows: this.flows,
      firstFlowMs: this.firstFlowMs,
      lastFlowMs: this.clockMs,
      lateFlows: Object.fromEntries(this.lateFlows),
      evictedSources: this.aggregator.evicted,
      topSet,
      top,
      flooding,
    };
  }

  private remember(detection: SfdsDetection, nowMs: number): void {
    const key = `${detection.source} ${detection.set}`;
    const known = this.findings.get(key);
    if (known === undefined) {
      this.findings.set(key, { source: detection.source, set: detection.set, firstDetectedMs: nowMs, lastDetectedMs: nowMs, stats: detection.stats });
      return;
    }
    known.lastDetectedMs = nowMs;
    if (detection.stats.durationPeriods >= known.stats.durationPeriods) known.stats = detection.stats;
  }
}
