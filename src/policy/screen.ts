// The screen stage: decides what to do with each connecting client and learns from each finished
// session. At connect: allow list → deny list → cached verdict (this address or a suspect prefix,
// from the shared store, so every node enforces what one node found) → proven sender → live
// detectors → action table (precedence.ts). At session end: per-source counters go to the shared
// store in one round trip, the detectors score the source, and a verdict that pushes back is stored
// with its expiry and logged once with its reasons. Observe mode computes and logs all of it and
// enforces nothing (not even the longer greet wait of a stressed server). Deciding only: the
// listener carries the decision out.
//
// Keys, so that a flood of fresh addresses costs the store one small record each and nothing more:
// `c:<source>` one counter record per source (an IPv4 address, an IPv6 /64: sourceOf), holding only
// the counts that are not 0, for misbehaviourTtlSeconds; `pv:<source>` its proven-sender mark, and
// `pvn:<prefix>` on each prefix around it the firewall may widen to (its /24 and /16, or /48), which
// stays until the last proven sender inside would have expired, even if one later turns bad;
// `v:<scope>` a verdict on an address or a prefix, listed (setListed) so the firewall export reads
// the verdicts without walking the keyspace, and kept apart from the counters, which never evict it.
import net from 'node:net';
import type { Logger } from 'pino';
import type { Policy } from '../config/schema.js';
import { RateLimitedLog } from '../log-rate.js';
import type { ServerStatus } from '../detect/entropy.js';
import { canonicalAddress, familyOf, parseAddress, prefixLadder, prefixOf, sourceOf, type PrefixAggregator } from '../detect/prefix.js';
import { provenNetworkKey, provenNetworkLengths } from '../detect/firewall-widening.js';

/** The part of the prefix aggregator the screen uses (main.ts swaps the aggregator on reload). */
export type SuspectPrefixes = Pick<PrefixAggregator, 'suspectPrefix' | 'addSuspect'>;
import type { SessionRecord } from '../session/record.js';
import type { ScreenDecision, SessionScreen } from '../smtp/stage-contracts.js';
import type { SharedKv } from '../state/shared-kv.js';
import { withTimeout } from '../state/shared-store-health.js';
import { chooseAction, tarpitDelayMs, type Action } from './actions.js';
import { parseCidrList, type CidrList } from './cidr-list.js';
import { findingsFor, strongestDetector, type SourceEvidence } from './evidence.js';
import { decide, type Verdict } from './precedence.js';
import type { SfdsFinding } from './sfds-view.js';

/** Verdict lines written one by one per second; beyond, one summary line per second counts them. */
const VERDICTS_LOGGED_PER_SECOND = 20;

export interface ScreenMetrics {
  /** A verdict found by the detectors (or a list) and stored: once per source and verdict. */
  verdict(action: Action, detector: string): void;
  /** A decision at connect, and whether it was carried out (false in observe mode). */
  decision(action: Action, enforced: boolean): void;
  kvError(): void;
}

export interface ScreenDependencies {
  policy: () => Policy;
  kv: SharedKv;
  /** The effective server status right now (entropy status, at most 0 under upstream pressure). */
  status: () => ServerStatus;
  prefixes: SuspectPrefixes;
  /** The SFDS verdict on a source, if it floods under some threshold set. */
  sfds: (source: string, nowMs: number) => SfdsFinding | undefined;
  logger: Logger;
  metrics: ScreenMetrics;
  /** Whether the quarantine spool is open; without it quarantine verdicts defer at RCPT instead. */
  quarantineAvailable: () => boolean;
  /** Told of each verdict stored for an address (notices to its network act on it); must not throw. */
  onVerdict?: (event: VerdictEvent) => void;
  now?: () => number;
}

/** A verdict the screen stored for one address, found by the live detectors. */
export interface VerdictEvent {
  address: string;
  action: Action;
  /** The detectors that gave points ("sfds", "entropy" ...). */
  detectors: string[];
  expiresAtMs: number;
  mode: Policy['mode'];
  nowMs: number;
}

interface StoredVerdict extends Verdict {
  detector: string;
  scope: string;
}

/** The fields of a source's counter record. */
type CounterName = 'abnormal' | 'normal' | 'early' | 'nonsmtp' | 'pipelining' | 'unknown' | 'clean';

export class Screen implements SessionScreen {
  private lists: { allow: CidrList; deny: CidrList; from: Policy['pushback'] | undefined } = { allow: parseCidrList([]), deny: parseCidrList([]), from: undefined };
  private readonly now: () => number;
  /** Verdicts this node stored recently, by scope (see recentlyStored). */
  private readonly stored = new Map<string, { action: Action; untilMs: number }>();
  /** Verdicts are logged one by one up to 20 a second, then counted per action and detector. */
  private readonly verdictLog: RateLimitedLog;

  constructor(private readonly deps: ScreenDependencies) {
    this.verdictLog = new RateLimitedLog(deps.logger, { perSecond: VERDICTS_LOGGED_PER_SECOND, summary: 'more verdicts in the last second (not logged one by one)' });
    this.now = deps.now ?? Date.now;
  }

  async atConnect(client: { address: string; port: number }): Promise<ScreenDecision> {
    const policy = this.deps.policy();
    const pushback = policy.pushback;
    const nowMs = this.now();
    // A client that reset before its address was known: smtp-server will find the socket gone.
    if (net.isIP(client.address) === 0) return { action: 'pass', greetDelayMs: 0, replyDelayMs: 0, label: 'pass:no-address' };
    const address = canonicalAddress(client.address);
    const status = this.deps.status();
    const lists = this.listsFor(pushback);
    const allowListMatch = lists.allow.match(address);
    const denyListMatch = lists.deny.match(address);
    if (allowListMatch !== undefined || denyListMatch !== undefined) {
      // The lists decide alone: no shared-store round trip for them, whatever Redis is doing.
      const listed = decide({ nowMs, allowListMatch, denyListMatch, cachedVerdict: undefined, provenSender: undefined, serverStatus: status, findings: [] }, this.decisionPolicy(pushback));
      return this.toDecision(listed, status, policy);
    }
    const scopes = this.scopesOf(address, pushback);
    const stored = await this.read([...scopes.map((scope) => `v:${scope}`), `pv:${sourceOf(address)}`], nowMs);
    const provenUntil = stored[scopes.length] === undefined ? undefined : Number(stored[scopes.length]);
    // A verdict on this address outranks a proven sender; a verdict on a prefix around it does not,
    // so a widened /16 never delays known correspondents inside it.
    const addressVerdict = parseVerdict(stored[0]);
    const prefixVerdict = mostSevere(stored.slice(1, scopes.length).map(parseVerdict));
    const proven = provenUntil !== undefined && provenUntil > nowMs;
    const cached = addressVerdict ?? (proven ? undefined : prefixVerdict);
    const prefix = this.deps.prefixes.suspectPrefix(address, nowMs);
    const evidence: SourceEvidence = {
      status, abnormalPairs: 0, normalPairs: 0, earlyTalks: 0, nonSmtp: 0, pipelining: 0, unknownCommands: 0,
      sfds: this.deps.sfds(address, nowMs),
      prefix: prefix && prefix.lengthBits < (address.includes(':') ? 128 : 32) ? { prefix: prefix.prefix, members: prefix.members } : undefined,
    };
    const verdict = decide({
      nowMs,
      allowListMatch,
      denyListMatch,
      cachedVerdict: cached,
      provenSender: provenUntil === undefined ? undefined : { cleanSessions: pushback.proven.sessions, expiresAtMs: provenUntil },
      serverStatus: status,
      findings: findingsFor(evidence, pushback),
    }, this.decisionPolicy(pushback));
    return this.toDecision(verdict, status, policy);
  }

  /**
   * Why a source should not have its quarantined mail released now (deny-listed, or under a verdict
   * for it or a prefix holding it), or undefined. Asked by the release scheduler before each release.
   */
  async stillSuspect(address: string): Promise<string | undefined> {
    const pushback = this.deps.policy().pushback;
    const canonical = canonicalAddress(address);
    const denied = this.listsFor(pushback).deny.match(canonical);
    if (denied !== undefined) return `deny list ${denied}`;
    const scopes = this.scopesOf(canonical, pushback);
    const nowMs = this.now();
    const verdict = mostSevere((await this.read(scopes.map((scope) => `v:${scope}`), nowMs)).map(parseVerdict));
    if (verdict && verdict.action !== 'pass' && (verdict.expiresAtMs ?? 0) > nowMs) {
      return `${verdict.action} verdict for ${verdict.scope} (${verdict.detector})`;
    }
    return undefined;
  }

  /** Learns from a finished session; resolves once its counters and any new verdict are stored. */
  async sessionEnded(record: SessionRecord): Promise<void> {
    const policy = this.deps.policy();
    const pushback = policy.pushback;
    const nowMs = this.now();
    const address = canonicalAddress(record.client);
    const lists = this.listsFor(pushback);
    if (lists.allow.match(address) !== undefined) return;
    const clean = record.outcome === 'relayed' && record.pairs.abnormal === 0 && !misbehaved(record);
    const { earlyTalker, nonSmtp, pipelining, unknownCommands } = record.misbehaviour;
    // A session refused at connect taught us nothing: no round trip for it (it matters under a flood).
    if (record.pairs.normal + record.pairs.abnormal === 0 && !earlyTalker && nonSmtp + pipelining + unknownCommands === 0) return;
    const increments: Record<CounterName, number> = {
      abnormal: record.pairs.abnormal,
      normal: record.pairs.normal,
      early: record.misbehaviour.earlyTalker ? 1 : 0,
      nonsmtp: record.misbehaviour.nonSmtp,
      pipelining: record.misbehaviour.pipelining,
      unknown: record.misbehaviour.unknownCommands,
      clean: clean ? 1 : 0,
    };
    const ttlMs = pushback.misbehaviourTtlSeconds * 1000;
    const source = sourceOf(address);
    let totals: Partial<Record<string, number>>;
    try {
      totals = await withTimeout(this.deps.kv.incrementRecord(`c:${source}`, increments, ttlMs, nowMs), policy.state.commandTimeoutMs, 'screen counters');
    } catch {
      this.deps.metrics.kvError();
      // Shared store out: judge on this session alone, so detection keeps working on this node.
      totals = increments;
    }
    const count = (name: CounterName): number => totals[name] ?? 0;
    const prefix = this.deps.prefixes.suspectPrefix(address, nowMs);
    const status = this.deps.status();
    const findings = findingsFor({
      status,
      abnormalPairs: count('abnormal'),
      normalPairs: count('normal'),
      earlyTalks: count('early'),
      nonSmtp: count('nonsmtp'),
      pipelining: count('pipelining'),
      unknownCommands: count('unknown'),
      sfds: this.deps.sfds(address, nowMs),
      prefix: prefix && prefix.lengthBits < (address.includes(':') ? 128 : 32) ? { prefix: prefix.prefix, members: prefix.members } : undefined,
    }, pushback);
    const verdict = decide({
      nowMs, allowListMatch: undefined, denyListMatch: lists.deny.match(address), cachedVerdict: undefined,
      provenSender: undefined, serverStatus: status, findings,
    }, this.decisionPolicy(pushback));

    if (verdict.source === 'detectors' && verdict.action !== 'pass') {
      // Already stored (a cached verdict met this session at connect, or this node stored one a moment
      // ago for another of the source's sessions): nothing new to store or log.
      if (record.screen.endsWith(':cached') && SEVERITY[verdict.action] <= SEVERITY[actionOf(record.screen)]) return;
      if (this.recentlyStored(address, verdict.action, nowMs)) return;
      await this.storeVerdict(address, verdict, strongestDetector(findings), policy, nowMs);
      const expiresAtMs = nowMs + pushback.verdictTtlSeconds * 1000;
      this.deps.onVerdict?.({ address, action: verdict.action, detectors: findings.map((finding) => finding.detector), expiresAtMs, mode: policy.mode, nowMs });
      await this.learnPrefix(address, verdict, status, policy, nowMs);
      return;
    }
    if (clean && count('clean') >= pushback.proven.sessions) {
      const provenTtlMs = Math.round(pushback.proven.ttlHours * 3_600_000);
      const mark = String(nowMs + provenTtlMs);
      // Also on each prefix around it the firewall may widen to, so the export never blocks a network holding it.
      const family = familyOf(parseAddress(address));
      const networks = provenNetworkLengths(family).map((length) => provenNetworkKey(prefixOf(address, length)));
      await this.write(async () => {
        await Promise.all([`pv:${source}`, ...networks].map((key) => this.deps.kv.set(key, mark, provenTtlMs, nowMs)));
      }, policy);
    }
  }

  /**
   * True when this node stored a verdict at least this severe for the scope less than half a TTL ago;
   * otherwise notes this one. Many sessions of one flooder end together, and the verdict is stored
   * and logged once. Bounded: expired notes are dropped as the map grows.
   */
  private recentlyStored(scope: string, action: Action, nowMs: number): boolean {
    const halfTtlMs = (this.deps.policy().pushback.verdictTtlSeconds * 1000) / 2;
    const previous = this.stored.get(scope);
    if (previous && previous.untilMs > nowMs && SEVERITY[previous.action] >= SEVERITY[action]) return true;
    if (this.stored.size >= MAX_STORED_NOTES) {
      for (const [key, note] of this.stored) if (note.untilMs <= nowMs) this.stored.delete(key);
      if (this.stored.size >= MAX_STORED_NOTES) this.stored.delete(this.stored.keys().next().value as string);
    }
    this.stored.set(scope, { action, untilMs: nowMs + halfTtlMs });
    return false;
  }

  private async storeVerdict(scope: string, verdict: Verdict, detector: string, policy: Policy, nowMs: number): Promise<void> {
    const ttlMs = policy.pushback.verdictTtlSeconds * 1000;
    const stored: StoredVerdict = { ...verdict, detector, scope, expiresAtMs: nowMs + ttlMs };
    // A source that pushes back is no longer a proven sender, whatever it did before (for an IPv6
    // address, the proven mark is its /64's).
    await this.write(() => this.deps.kv.setListed(`v:${scope}`, JSON.stringify(stored), ttlMs, nowMs), policy);
    await this.write(() => this.deps.kv.delete([`pv:${net.isIP(scope) === 0 ? scope : sourceOf(scope)}`]), policy);
    this.deps.metrics.verdict(verdict.action, detector);
    this.verdictLog.log(
      { verdict: verdict.action, scope, detector, score: verdict.score, reasons: verdict.reasons, expiresInSeconds: policy.pushback.verdictTtlSeconds, mode: policy.mode },
      policy.mode === 'observe' ? 'verdict (observe mode: not enforced)' : 'verdict',
      `${verdict.action}/${detector}`,
      scope,
    );
  }

  /**
   * k suspects inside one prefix make the prefix suspect: its verdict, stored for every node, is what
   * the action table gives a member's score plus the prefix points (so a prefix is pushed back a
   * step harder than one suspect alone).
   */
  private async learnPrefix(address: string, verdict: Verdict, status: ServerStatus, policy: Policy, nowMs: number): Promise<void> {
    const expiresAtMs = nowMs + policy.pushback.verdictTtlSeconds * 1000;
    const before = this.deps.prefixes.suspectPrefix(address, nowMs);
    this.deps.prefixes.addSuspect(address, expiresAtMs);
    const after = this.deps.prefixes.suspectPrefix(address, nowMs);
    const hostBits = address.includes(':') ? 128 : 32;
    if (!after || after.lengthBits >= hostBits || after.prefix === before?.prefix) return;
    const score = verdict.score + policy.pushback.scores.prefix;
    const prefixVerdict: Verdict = {
      action: chooseAction(status, score, policy.pushback.actions),
      source: 'detectors',
      score,
      reasons: [
        `prefix ${after.prefix}: ${after.members} suspects inside (k = ${policy.pushback.prefix.suspectsPerPrefix}), the last with score ${verdict.score}`,
        ...verdict.reasons.filter((reason) => !reason.startsWith('rule ')),
      ],
    };
    if (prefixVerdict.action === 'pass') return;
    await this.storeVerdict(after.prefix, prefixVerdict, 'prefix', policy, nowMs);
  }

  private toDecision(verdict: Verdict, status: ServerStatus, policy: Policy): ScreenDecision {
    const pushback = policy.pushback;
    const label = verdict.source === 'detectors' ? verdict.action : `${verdict.action}:${verdict.source}`;
    const enforce = policy.mode === 'enforce';
    this.deps.metrics.decision(verdict.action, enforce);
    const trusted = verdict.source === 'allow-list' || verdict.source === 'proven';
    // Under stress the longer waits go only to clients with points against them (their own counters, a
    // suspect prefix around them, a stored verdict). An idle flood never talks: a stress wait for every
    // newcomer would only delay first-time correspondents (the complaint about postscreen's greet wait).
    // Observe mode: the greet wait of a calm server whatever the status, so a trial under stress
    // holds no greeting longer than it would without the proxy's decisions.
    const greetDelayMs = trusted ? 0 : greetWait(enforce && verdict.score > 0 ? status : 1, pushback);
    if (!enforce && verdict.action !== 'pass') {
      return { action: 'pass', greetDelayMs, replyDelayMs: 0, label: `observe:${label}` };
    }
    const host = policy.server.hostname;
    switch (verdict.action) {
      case 'pass':
        return { action: 'pass', greetDelayMs, replyDelayMs: 0, label };
      case 'tarpit': {
        const delayMs = tarpitDelayMs(verdict.score, { baseMs: pushback.tarpit.baseDelayMs, perScoreMs: pushback.tarpit.perScoreDelayMs, maxMs: pushback.tarpit.maxDelayMs });
        return { action: 'tarpit', greetDelayMs: Math.max(greetDelayMs, delayMs), replyDelayMs: delayMs, label };
      }
      case 'defer':
        return pushback.deferAt === 'connect'
          ? { action: 'defer', greetDelayMs: 0, replyDelayMs: 0, label, refuse: { code: 421, text: `4.7.0 ${host} Service temporarily unavailable, try again later` } }
          : { action: 'defer', greetDelayMs, replyDelayMs: 0, label, refuseRecipients: { code: 450, text: '4.7.1 Service temporarily unavailable, try again later' } };
      case 'reject':
        return { action: 'reject', greetDelayMs: 0, replyDelayMs: 0, label, refuse: { code: 554, text: `5.7.1 ${host} Service refused` } };
      case 'quarantine':
        // Without a spool (it could not be opened), such mail is deferred at RCPT (450): the sender
        // retries and nothing is lost or reaches Postfix meanwhile.
        return this.deps.quarantineAvailable()
          ? { action: 'quarantine', greetDelayMs, replyDelayMs: 0, label, quarantine: { reasons: verdict.reasons, score: verdict.score } }
          : { action: 'quarantine', greetDelayMs, replyDelayMs: 0, label, refuseRecipients: { code: 450, text: '4.7.1 Service temporarily unavailable, try again later' } };
    }
  }

  private decisionPolicy(pushback: Policy['pushback']): Parameters<typeof decide>[1] {
    return {
      denyAction: 'reject',
      provenAfterCleanSessions: pushback.proven.sessions,
      actionTable: pushback.actions,
      verdictTtlMs: pushback.verdictTtlSeconds * 1000,
    };
  }

  /** The address and the prefixes a verdict may be stored for (its ladder up to the widest allowed). */
  private scopesOf(address: string, pushback: Policy['pushback']): string[] {
    const family = familyOf(parseAddress(address));
    const widest = family === 'ipv4' ? pushback.prefix.widestV4 : pushback.prefix.widestV6;
    const hostBits = family === 'ipv4' ? 32 : 128;
    return [address, ...prefixLadder(family, widest).filter((length) => length < hostBits).map((length) => prefixOf(address, length))];
  }

  private listsFor(pushback: Policy['pushback']): { allow: CidrList; deny: CidrList } {
    if (this.lists.from !== pushback) {
      // A reload gives a new frozen snapshot: parse its lists once, not per connection.
      this.lists = { allow: parseCidrList(pushback.allow), deny: parseCidrList(pushback.deny), from: pushback };
    }
    return this.lists;
  }

  private async read(keys: string[], nowMs: number): Promise<Array<string | undefined>> {
    try {
      return await withTimeout(this.deps.kv.getMany(keys, nowMs), this.deps.policy().state.commandTimeoutMs, 'screen lookup');
    } catch {
      // Fail open: without the shared store the live detectors on this node still decide.
      this.deps.metrics.kvError();
      return keys.map(() => undefined);
    }
  }

  private async write(operation: () => Promise<void>, policy: Policy): Promise<void> {
    try {
      await withTimeout(operation(), policy.state.commandTimeoutMs, 'screen write');
    } catch {
      this.deps.metrics.kvError();
    }
  }
}

function greetWait(status: ServerStatus, pushback: Policy['pushback']): number {
  if (status === 1) return pushback.greetWaitMs.safe;
  return status === 0 ? pushback.greetWaitMs.critical : pushback.greetWaitMs.danger;
}

function misbehaved(record: SessionRecord): boolean {
  const { earlyTalker, nonSmtp, pipelining, unknownCommands } = record.misbehaviour;
  return earlyTalker || nonSmtp > 0 || pipelining > 0 || unknownCommands > 2;
}

function parseVerdict(text: string | undefined): StoredVerdict | undefined {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as StoredVerdict;
  } catch {
    return undefined;
  }
}

/** The action a session's screen label names ("tarpit:cached", "observe:defer", "pass:proven" ...). */
function actionOf(label: string): Action {
  const action = label.replace(/^observe:/, '').split(':')[0] as Action;
  return action in SEVERITY ? action : 'pass';
}

const MAX_STORED_NOTES = 50_000;

const SEVERITY: Record<Action, number> = { pass: 0, tarpit: 1, quarantine: 2, defer: 3, reject: 4 };

function mostSevere(verdicts: Array<StoredVerdict | undefined>): StoredVerdict | undefined {
  let worst: StoredVerdict | undefined;
  for (const verdict of verdicts) if (verdict && (!worst || SEVERITY[verdict.action] > SEVERITY[worst.action])) worst = verdict;
  return worst;
}
