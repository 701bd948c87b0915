// Firewall pushback, the enforcer that carries verdicts out beyond the proxy: every refreshSeconds it
// reads the verdicts all nodes stored (the shared store's listed entries: an index, never a scan of a
// keyspace a flood may have filled with counters), keeps those whose action the policy exports plus
// the deny list, and when the set changes writes the nftables script atomically and runs the operator's
// command. GET /pushback serves the last set. It never sits on a session's path: a slow store or a hung
// command delays only the next refresh. When the store cannot be read the last set stays exported (its
// elements carry their own timeouts, so nothing outlives its verdict by more than the kernel allows).
// A verdict on a prefix wider than one source is exported only with firewall-widening.ts's evidence and
// when no proven sender is inside it (the screen's `pvn:` marks, read at each refresh); when those
// marks cannot be read, no prefix is widened: its sources' own verdicts stay exported.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Policy } from '../config/schema.js';
import { removeIfPresent, writeFileDurably } from '../quarantine/durable-fs.js';
import { parseCidrList, type CidrList } from '../policy/cidr-list.js';
import type { SharedKv } from '../state/shared-kv.js';
import { withTimeout } from '../state/shared-store-health.js';
import { provenNetworkKey, provenNetworkLengths, widerThanSource } from '../detect/firewall-widening.js';
import { prefixOf } from '../detect/prefix.js';
import {
  blockedFromDenyList,
  blockedFromVerdicts,
  collapseSteps,
  renderNftables,
  wideningSteps,
  type BlockedPrefix,
} from './blocked-prefixes.js';

export interface FirewallMetrics {
  /** The set changed and was exported (file written, command started). */
  updated(prefixesV4: number, prefixesV6: number): void;
  command(result: 'ok' | 'failed' | 'timeout'): void;
  refreshFailed(): void;
}

export interface FirewallSnapshot {
  /** When the set was last read from the shared store; 0 before the first read. */
  generatedAtMs: number;
  /** False in observe mode: the entries are what would be blocked, and nothing is exported. */
  enforced: boolean;
  /** The last refresh could not read the store: these are the entries of the last one that could. */
  stale: boolean;
  /** More verdicts matched than maxEntries; the rest are left out. */
  truncated: boolean;
  /** Verdicts on prefixes not exported: too little evidence for the firewall, or a proven sender inside. */
  widenedWithheld: number;
  entries: BlockedPrefix[];
}

export interface FirewallExportDependencies {
  kv: SharedKv;
  policy: () => Policy;
  logger: Logger;
  metrics?: FirewallMetrics | undefined;
  now?: () => number;
}

/** Reading every verdict is a few round trips over tens of thousands of entries: allowed longer than one hot-path call. */
const READ_TIMEOUT_MS = 5_000;
/** Expiries within this are the same element (the store's remaining life drifts by a few ms per read). */
const SAME_EXPIRY_MS = 2_000;
/** Reads start at most this often, whatever triggers them. */
const MIN_GAP_MS = 1_000;
const STDERR_KEPT_BYTES = 4_096;
/** How long stop() lets a running command end on SIGTERM before SIGKILL. */
const STOP_COMMAND_GRACE_MS = 2_000;
/** Verdicts parsed between two turns of the event loop. */
const PARSE_CHUNK = 2_000;

export class FirewallExporter {
  private readonly now: () => number;
  private snapshotNow: FirewallSnapshot = { generatedAtMs: 0, enforced: true, stale: false, truncated: false, widenedWithheld: 0, entries: [] };
  /** What was last exported (empty in observe mode): compared to decide whether anything changed. */
  private exported: BlockedPrefix[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private commandRun: { child: ChildProcess; done: Promise<void> } | undefined;
  private commandAgain = false;
  private refreshAgain = false;
  private lastStartMs = 0;
  private readInFlight: Promise<unknown> | undefined;
  /** The exported verdicts of the last read that worked, kept for when the store cannot be read. */
  private lastVerdicts: BlockedPrefix[] = [];
  private allowList: { from: readonly string[] | undefined; list: CidrList } = { from: undefined, list: parseCidrList([]) };
  private storeFailing = false;
  private stopped = false;

  constructor(private readonly deps: FirewallExportDependencies) {
    this.now = deps.now ?? Date.now;
  }

  /** Reads and exports the set once, then keeps refreshing until stop(). */
  async start(): Promise<void> {
    await this.refresh();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.refreshing;
    const run = this.commandRun;
    if (run) {
      killGroup(run.child, 'SIGTERM');
      // Bounded: a command that ignores SIGTERM is killed, so stop() always returns.
      const killer = setTimeout(() => killGroup(run.child, 'SIGKILL'), STOP_COMMAND_GRACE_MS);
      await run.done;
      clearTimeout(killer);
    }
  }

  snapshot(): FirewallSnapshot {
    return this.snapshotNow;
  }

  /** The prefixes a router should drop now: empty in observe mode, expired elements left out. */
  exportedNow(): BlockedPrefix[] {
    const nowMs = this.now();
    return (this.exported ?? []).filter((entry) => entry.expiresAtMs === null || entry.expiresAtMs > nowMs);
  }

  /** One refresh; concurrent callers share it. */
  refresh(): Promise<void> {
    this.refreshing ??= this.refreshOnce().finally(() => {
      this.refreshing = undefined;
      if (this.refreshAgain && !this.stopped) {
        this.refreshAgain = false;
        this.scheduleIn(this.gapLeftMs());
      } else {
        this.schedule();
      }
    });
    return this.refreshing;
  }

  /**
   * A verdict this node just stored: read again soon rather than at the next interval, so the firewall
   * follows within a second or so. Reads start at most once per MIN_GAP_MS however many verdicts a
   * flood brings (each read lists every verdict, each change is a file write and a loader run).
   */
  verdictStored(action: string): void {
    if (this.stopped || !this.deps.policy().pushback.firewall.actions.includes(action as never)) return;
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.scheduleIn(this.gapLeftMs());
  }

  /** A refresh never throws: whatever goes wrong is logged and counted, and the last exported set stays. */
  private async refreshOnce(): Promise<void> {
    this.lastStartMs = this.now();
    try {
      await this.export();
    } catch (error) {
      this.deps.metrics?.refreshFailed();
      this.deps.logger.error({ err: error }, 'firewall export: refresh failed; the last exported set stays');
    }
  }

  /**
   * The verdicts with an exported action, from the store; when it cannot be read, the last ones read
   * (those not expired yet), so a change of mode or deny list still reaches the firewall during an outage.
   */
  private async readBlockedVerdicts(policy: Policy, nowMs: number): Promise<{ blocked: BlockedPrefix[]; stale: boolean; truncated: boolean }> {
    const firewall = policy.pushback.firewall;
    let verdicts;
    try {
      // A read that timed out may still be running against a slow store: never pile a second one on it.
      if (this.readInFlight) throw new Error('the previous read of the verdicts has not finished');
      const read = this.deps.kv.listed(firewall.maxEntries + 1, nowMs);
      this.readInFlight = read;
      void read.then(() => undefined, () => undefined).finally(() => {
        if (this.readInFlight === read) this.readInFlight = undefined;
      });
      verdicts = await withTimeout(read, READ_TIMEOUT_MS, 'firewall verdict read');
    } catch (error) {
      this.deps.metrics?.refreshFailed();
      if (!this.storeFailing) this.deps.logger.warn({ err: error }, 'firewall export: cannot read the shared verdicts; the last ones read stay exported');
      this.storeFailing = true;
      const alive = this.lastVerdicts.filter((entry) => entry.expiresAtMs === null || entry.expiresAtMs > nowMs);
      return { blocked: alive, stale: true, truncated: this.snapshotNow.truncated };
    }
    if (this.storeFailing) this.deps.logger.info('firewall export: shared verdicts readable again');
    this.storeFailing = false;
    const truncated = verdicts.length > firewall.maxEntries;
    if (truncated && !this.snapshotNow.truncated) {
      this.deps.logger.warn({ maxEntries: firewall.maxEntries }, 'firewall export: more verdicts than pushback.firewall.maxEntries; the rest are not exported');
    }
    // Tens of thousands of verdicts take a while to read: a few thousand at a time, letting sessions
    // run in between, so the event loop never waits for the whole set.
    const blocked: BlockedPrefix[] = [];
    const exportedActions = new Set<string>(firewall.actions);
    for (let start = 0; start < Math.min(verdicts.length, firewall.maxEntries); start += PARSE_CHUNK) {
      blocked.push(...blockedFromVerdicts(verdicts.slice(start, Math.min(start + PARSE_CHUNK, firewall.maxEntries)), exportedActions, nowMs));
      await setImmediatePromise();
    }
    this.lastVerdicts = blocked;
    return { blocked, stale: false, truncated };
  }

  private async export(): Promise<void> {
    const policy = this.deps.policy();
    const firewall = policy.pushback.firewall;
    const nowMs = this.now();
    const verdicts = await this.readBlockedVerdicts(policy, nowMs);
    const widening = wideningSteps(verdicts.blocked, firewall.widening);
    let split = widening.next();
    for (; !split.done; split = widening.next()) await setImmediatePromise();
    const overProven = await this.overProvenSenders(split.value.allowed, verdicts.stale, nowMs);
    const exportedVerdicts = split.value.allowed.filter((entry) => !overProven.has(entry));
    const candidates = [...(firewall.includeDenyList ? blockedFromDenyList(policy.pushback.deny) : []), ...exportedVerdicts];
    const steps = collapseSteps(candidates, this.allowListOf(policy));
    let step = steps.next();
    for (; !step.done; step = steps.next()) await setImmediatePromise();
    const blocked = step.value;
    await setImmediatePromise();
    const enforced = policy.mode === 'enforce';
    this.snapshotNow = {
      generatedAtMs: nowMs, enforced, stale: verdicts.stale, truncated: verdicts.truncated,
      widenedWithheld: split.value.withheld.length + overProven.size, entries: blocked,
    };
    const exported = enforced ? blocked : [];
    if (this.exported !== undefined && sameElements(this.exported, exported)) return;
    this.exported = exported;
    const v4 = exported.filter((entry) => entry.family === 'ipv4').length;
    this.deps.metrics?.updated(v4, exported.length - v4);
    this.deps.logger.info({ prefixesV4: v4, prefixesV6: exported.length - v4, enforced }, 'firewall set changed');
    if (firewall.nftablesFile !== '') {
      try {
        await writeFileAtomically(firewall.nftablesFile, renderNftables(exported, firewall, nowMs));
      } catch (error) {
        this.deps.logger.error({ err: error, file: firewall.nftablesFile }, 'firewall export: cannot write the nftables file');
        // Written next time even if nothing changes by then.
        this.exported = undefined;
        return;
      }
    }
    if (firewall.command.length > 0) this.runCommand(policy);
  }

  /**
   * The verdicts on prefixes wider than one source that hold a proven sender, by the mark the screen keeps for
   * each ladder step (`pvn:<prefix>`): one read for all of them. A prefix off the ladder is checked by the mark
   * of the ladder step holding it (a /20 by its /16); one wider than every step cannot be checked. When the
   * marks cannot be read (or the store is down), every one of them counts as holding one: no guess widens.
   */
  private async overProvenSenders(verdicts: readonly BlockedPrefix[], storeDown: boolean, nowMs: number): Promise<Set<BlockedPrefix>> {
    const widened = verdicts.filter((entry) => widerThanSource(entry.family, entry.lengthBits));
    if (widened.length === 0) return new Set();
    if (storeDown) return new Set(widened);
    const keys = widened.map((entry) => {
      const holding = provenNetworkLengths(entry.family).filter((step) => step <= entry.lengthBits);
      if (holding.length === 0) return undefined;
      return provenNetworkKey(prefixOf(entry.prefix.slice(0, entry.prefix.lastIndexOf('/')), Math.max(...holding)));
    });
    let marks: Array<string | undefined>;
    try {
      marks = await withTimeout(this.deps.kv.getMany(keys.filter((key): key is string => key !== undefined), nowMs), READ_TIMEOUT_MS, 'firewall proven-sender read');
    } catch (error) {
      this.deps.metrics?.refreshFailed();
      this.deps.logger.warn({ err: error }, 'firewall export: cannot read the proven-sender marks; no prefix is widened this time');
      return new Set(widened);
    }
    const held = new Set<BlockedPrefix>();
    let read = 0;
    widened.forEach((entry, index) => {
      // marks hold the defined keys only, in order.
      if (keys[index] === undefined || marks[read++] !== undefined) held.add(entry);
    });
    return held;
  }

  /** The allow list of this policy, parsed once per policy snapshot. */
  private allowListOf(policy: Policy): CidrList {
    if (this.allowList.from !== policy.pushback.allow) this.allowList = { from: policy.pushback.allow, list: parseCidrList(policy.pushback.allow) };
    return this.allowList.list;
  }

  /** Time left until a read may start again (MIN_GAP_MS after the last one started). */
  private gapLeftMs(): number {
    return Math.max(0, this.lastStartMs + MIN_GAP_MS - this.now());
  }

  private scheduleIn(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.refresh(), delayMs);
    this.timer.unref();
  }

  /**
   * Next read: the refresh interval, or sooner when an exported element expires (a narrower prefix
   * hidden under it comes back then), but never sooner than MIN_GAP_MS after the last read started:
   * a flood's verdicts expire a few ms apart, and each read lists every verdict.
   */
  private schedule(): void {
    if (this.stopped) return;
    const nowMs = this.now();
    let delayMs = this.deps.policy().pushback.firewall.refreshSeconds * 1000;
    for (const entry of this.exported ?? []) {
      if (entry.expiresAtMs !== null) delayMs = Math.min(delayMs, entry.expiresAtMs - nowMs + 10);
    }
    this.scheduleIn(Math.max(delayMs, this.gapLeftMs()));
  }

  /**
   * Starts the operator's command without waiting for it. One runs at a time: a change while it runs
   * makes it run once more afterwards (the file then holds the newest set). Its failures are logged and
   * counted; they change nothing else, and the next change runs it again.
   */
  private runCommand(policy: Policy): void {
    if (this.commandRun) {
      this.commandAgain = true;
      return;
    }
    const { command, commandTimeoutMs, nftablesFile } = policy.pushback.firewall;
    const argv = command.map((arg) => arg.replaceAll('{file}', nftablesFile));
    let child: ChildProcess;
    try {
      // Its own process group: a time-out or stop kills whatever it started too (an ssh master, a `&`).
      child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    } catch (error) {
      this.deps.metrics?.command('failed');
      this.deps.logger.error({ command: argv, err: error }, 'firewall command failed');
      return;
    }
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < STDERR_KEPT_BYTES) stderr += chunk.slice(0, STDERR_KEPT_BYTES - stderr.length);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, commandTimeoutMs);
    const done = new Promise<void>((resolve) => {
      let finished = false;
      // A program that cannot start emits 'error' and then 'close'; one that exits may leave a child
      // holding stderr open, so its end is 'exit', not 'close': count and log it once either way.
      const finish = (code: number | null, error?: Error): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        child.stderr?.destroy();
        const result = timedOut ? 'timeout' : code === 0 && !error ? 'ok' : 'failed';
        this.deps.metrics?.command(result);
        if (result === 'ok') this.deps.logger.debug({ command: argv }, 'firewall command done');
        else this.deps.logger.error({ command: argv, exitCode: code, err: error, stderr: stderr.trim(), timeoutMs: timedOut ? commandTimeoutMs : undefined }, `firewall command ${result === 'timeout' ? 'timed out' : 'failed'}`);
        this.commandRun = undefined;
        resolve();
        if (this.commandAgain && !this.stopped) {
          this.commandAgain = false;
          this.runCommand(this.deps.policy());
        }
      };
      child.once('error', (error) => finish(null, error));
      // Let the last stderr chunks of a normal exit arrive first.
      child.once('exit', (code) => setImmediate(() => finish(code)));
    });
    this.commandRun = { child, done };
  }

}

/** Same prefixes with the same expiries (within SAME_EXPIRY_MS): nothing to export again. */
function sameElements(before: readonly BlockedPrefix[], after: readonly BlockedPrefix[]): boolean {
  if (before.length !== after.length) return false;
  return before.every((entry, index) => {
    const other = after[index]!;
    if (entry.prefix !== other.prefix) return false;
    if (entry.expiresAtMs === null || other.expiresAtMs === null) return entry.expiresAtMs === other.expiresAtMs;
    return Math.abs(entry.expiresAtMs - other.expiresAtMs) < SAME_EXPIRY_MS;
  });
}

/**
 * Temporary file in the same directory, fsync, rename over the old one, fsync the directory: a reader
 * (nft -f, a path unit) sees the old script or the new one, never half of one, even after a crash.
 */
export async function writeFileAtomically(file: string, content: string): Promise<void> {
  const directory = path.dirname(file);
  const temporary = path.join(directory, `.${path.basename(file)}.${process.pid}.tmp`);
  // Made like the spool directory is: a policy naming /var/lib/smtp-pushback/… works without a mkdir first.
  await mkdir(directory, { recursive: true, mode: 0o750 });
  // A temporary file left by a crash of this pid's earlier life would make the exclusive create fail.
  await removeIfPresent(temporary);
  await writeFileDurably(temporary, file, Buffer.from(content, 'utf8'));
  const directoryHandle = await open(directory, 'r');
  try {
    await directoryHandle.sync();
  } finally {
    await directoryHandle.close();
  }
}

/** Signals the command's whole process group; a group already gone is fine. */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}
