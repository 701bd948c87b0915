// Notices to source networks (the SFDS paper's §3): when a source gets a verdict with an SFDS finding, the
// contact of its network gets one email with the flooding records and what the proxy did. Off the
// session path: flag() only notes the source; after batchDelayMs one notice per contact address lists
// every source of its networks flagged meanwhile, then goes to a bounded queue and out through the
// relay (or into dryRunDir as an .eml file), under a timeout. At most one notice per contact per
// period (notice-limit.ts); sources flagged after it are logged as suppressed. Unknown network: logged.
import { randomBytes } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';
import type Mail from 'nodemailer/lib/mailer/index.js';
import type { Logger } from 'pino';
import type { Policy } from '../config/schema.js';
import type { SfdsRecord } from '../detect/sfds.js';
import type { VerdictEvent } from '../policy/screen.js';
import type { SharedKv } from '../state/shared-kv.js';
import { withTimeout } from '../state/shared-store-health.js';
import { ContactDirectory, type ContactMatch } from './notice-contacts.js';
import { NoticeLimiter } from './notice-limit.js';
import { composeNotice, CSV_FILENAME, describeAction, type FloodingRecord } from './notice-text.js';

export interface NoticeMetrics {
  /** A notice went out (or was written, dry run). */
  sent(): void;
  /** A flagged source not mailed: its contact had a notice this period. */
  suppressed(): void;
  /** A flagged source in no contact's network. */
  noContact(): void;
  /** A notice that failed to go out, or was dropped (queue full, shutdown). */
  failed(): void;
}

export interface NetworkNoticesDependencies {
  policy: () => Policy;
  /** The shared store: one notice per contact and period across every node. */
  kv: SharedKv;
  /** The SFDS records of a source now (SfdsAggregator.floodingRecords). */
  floodingRecords: (source: string, nowMs: number) => SfdsRecord[];
  logger: Logger;
  metrics: NoticeMetrics;
  now?: () => number;
}

/** Notices waiting (batching or queued) at once; more are dropped, logged and counted as failed. */
const MAX_WAITING_NOTICES = 200;
/** Notices sent at once. */
const MAX_SENDING = 2;
/** Sources listed in one notice; more are counted in it, not listed. */
const MAX_SOURCES_PER_NOTICE = 50;

interface PendingNotice {
  to: string;
  networks: Map<string, ContactMatch>;
  records: Map<string, FloodingRecord[]>;
  omittedSources: Set<string>;
  timer?: NodeJS.Timeout;
}

export class NetworkNotices {
  private readonly now: () => number;
  private readonly limiter: NoticeLimiter;
  private directory: { from: Policy['notices'] | undefined; contacts: ContactDirectory } = { from: undefined, contacts: new ContactDirectory([]) };
  /** Batching, by contact address. */
  private readonly pending = new Map<string, PendingNotice>();
  private readonly queue: PendingNotice[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly deps: NetworkNoticesDependencies) {
    this.now = deps.now ?? Date.now;
    this.limiter = new NoticeLimiter(deps.kv, { timeoutMs: deps.policy().state.commandTimeoutMs, maxLocalNotes: 10_000 });
  }

  /** Takes note of a verdict; sources with an SFDS finding are reported to their network. Never throws. */
  flag(event: VerdictEvent): void {
    try {
      const policy = this.deps.policy();
      if (!policy.notices.enabled || this.stopped || !event.detectors.includes('sfds')) return;
      this.note(event, policy);
    } catch (error) {
      this.deps.logger.error({ err: error, source: event.address }, 'notice to the source network not prepared');
    }
  }

  /** Drops what has not been sent yet (logged) and waits for the notices on their way (bounded by their timeouts). */
  async stop(): Promise<void> {
    this.stopped = true;
    const dropped = [...this.pending.values(), ...this.queue.splice(0)];
    for (const notice of this.pending.values()) clearTimeout(notice.timer);
    this.pending.clear();
    if (dropped.length > 0) {
      this.deps.logger.warn({ notices: dropped.length, to: dropped.map((notice) => notice.to) }, 'notices to source networks not sent: shutting down');
    }
    await Promise.allSettled([...this.inFlight]);
  }

  private note(event: VerdictEvent, policy: Policy): void {
    const { logger, metrics } = this.deps;
    const match = this.contacts(policy).lookup(event.address);
    if (match === undefined) {
      metrics.noContact();
      logger.info({ source: event.address, verdict: event.action }, 'no contact for the network of a flooding source: no notice');
      return;
    }
    const to = match.contact.email.toLowerCase();
    const records = this.recordsOf(event, policy);
    if (records.length === 0) return;
    let notice = this.pending.get(to);
    if (notice === undefined) {
      if (this.limiter.sentHere(to, this.now())) {
        this.suppressed([event.address], to, 'this node sent the contact a notice this period');
        return;
      }
      if (this.pending.size + this.queue.length >= MAX_WAITING_NOTICES) {
        metrics.failed();
        logger.warn({ source: event.address, to, waiting: MAX_WAITING_NOTICES }, 'notice to a source network dropped: too many waiting');
        return;
      }
      notice = { to, networks: new Map(), records: new Map(), omittedSources: new Set() };
      this.pending.set(to, notice);
      const pendingNotice = notice;
      notice.timer = setTimeout(() => this.enqueue(pendingNotice), policy.notices.batchDelayMs);
      notice.timer.unref();
    }
    notice.networks.set(match.network, match);
    // A source flagged again while waiting (another set, a later verdict) gets its newest records.
    if (notice.records.has(event.address) || notice.records.size < MAX_SOURCES_PER_NOTICE) notice.records.set(event.address, records);
    else notice.omittedSources.add(event.address);
  }

  private recordsOf(event: VerdictEvent, policy: Policy): FloodingRecord[] {
    const action = describeAction({ action: event.action, mode: event.mode, expiresAtMs: event.expiresAtMs, deferAt: policy.pushback.deferAt });
    return this.deps.floodingRecords(event.address, event.nowMs).flatMap((record) => {
      const set = policy.pushback.sfds.sets.find((candidate) => candidate.name === record.set);
      if (set === undefined) return [];
      const { periodSeconds, minMeanPacketBytes, minFlowsPerPeriod, minDurationPeriods } = set;
      const { flows, packets, bytes, meanPacketBytes, durationPeriods, flowsPerPeriod } = record.stats;
      return [{
        source: record.source, set: record.set, periodSeconds, minMeanPacketBytes, minFlowsPerPeriod, minDurationPeriods,
        firstStartMs: record.firstStartMs, lastEndMs: record.lastEndMs,
        flows, packets, bytes, meanPacketBytes, durationPeriods, flowsPerPeriod, action,
      }];
    });
  }

  private enqueue(notice: PendingNotice): void {
    this.pending.delete(notice.to);
    if (this.stopped) return;
    this.queue.push(notice);
    this.pump();
  }

  private pump(): void {
    while (this.inFlight.size < MAX_SENDING && this.queue.length > 0) {
      const sending = this.send(this.queue.shift()!).catch((error: unknown) => {
        this.deps.logger.error({ err: error }, 'notice to a source network failed');
      });
      this.inFlight.add(sending);
      void sending.finally(() => {
        this.inFlight.delete(sending);
        this.pump();
      });
    }
  }

  private async send(notice: PendingNotice): Promise<void> {
    const policy = this.deps.policy();
    const settings = policy.notices;
    const { logger, metrics } = this.deps;
    const sources = [...notice.records.keys(), ...notice.omittedSources];
    const claim = await this.limiter.claim(notice.to, settings.periodHours * 3_600_000, this.now());
    if (!claim.granted) {
      this.suppressed(sources, notice.to, claim.reason === 'sent-here' ? 'this node sent the contact a notice this period' : 'another node sent the contact a notice this period');
      return;
    }
    if (!claim.shared) logger.warn({ to: notice.to }, 'shared store unavailable: the notice limit is this node’s own (other nodes may send one too)');
    const content = composeNotice({
      reporter: policy.server.hostname,
      networks: [...notice.networks.values()],
      records: [...notice.records.values()].flat(),
      omittedSources: notice.omittedSources.size,
      periodHours: settings.periodHours,
    });
    const message: Mail.Options = {
      from: settings.from ?? undefined,
      to: notice.to,
      cc: [...settings.cc],
      bcc: [...settings.bcc],
      subject: content.subject,
      text: content.text,
      attachments: [{ filename: CSV_FILENAME, content: content.csv, contentType: 'text/csv; charset=utf-8' }],
      // RFC 3834: no vacation replies or bounces-by-autoresponder to a machine's notice.
      headers: { 'Auto-Submitted': 'auto-generated' },
    };
    const networks = [...notice.networks.keys()];
    try {
      if (settings.dryRunDir !== null) {
        const file = await writeEml(settings.dryRunDir, message, notice.to, settings.relay.timeoutMs);
        logger.info({ to: notice.to, sources, networks, file }, 'notice to a source network written (dry run)');
      } else {
        const messageId = await sendThroughRelay(settings, policy.server.hostname, message);
        logger.info({ to: notice.to, sources, networks, messageId }, 'notice to a source network sent');
      }
      metrics.sent();
    } catch (error) {
      metrics.failed();
      logger.error({ err: error, to: notice.to, sources, networks }, 'notice to a source network failed; a later flooding verdict may try again');
      await this.limiter.release(notice.to);
    }
  }

  private suppressed(sources: readonly string[], to: string, why: string): void {
    sources.forEach(() => this.deps.metrics.suppressed());
    this.deps.logger.info({ sources, to }, `notice to a source network suppressed: ${why}`);
  }

  private contacts(policy: Policy): ContactDirectory {
    // A reload gives a new frozen snapshot: build the directory once per snapshot, not per verdict.
    if (this.directory.from !== policy.notices) this.directory = { from: policy.notices, contacts: new ContactDirectory(policy.notices.contacts) };
    return this.directory.contacts;
  }
}

/** One connection per notice (they are rare), closed after; every step and the whole send under timeoutMs. */
async function sendThroughRelay(settings: Policy['notices'], hostname: string, message: Mail.Options): Promise<string> {
  const { address, secure, auth, timeoutMs } = settings.relay;
  if (address === null) throw new Error('notices.relay.address is not set');
  const options: SMTPTransport.Options = {
    host: address.host, port: address.port, secure, name: hostname,
    connectionTimeout: timeoutMs, greetingTimeout: timeoutMs, socketTimeout: timeoutMs,
    ...(auth ? { auth: { user: auth.user, pass: auth.pass } } : {}),
  };
  const transport = nodemailer.createTransport(options);
  try {
    const info = await withTimeout(transport.sendMail(message), timeoutMs, 'notice relay');
    return info.messageId;
  } finally {
    transport.close();
  }
}

/**
 * Dry-run notices name contacts and flooding sources: the spool's modes (owner writes, its group reads,
 * nobody else), not whatever the umask leaves.
 */
const DRY_RUN_DIR_MODE = 0o750;
const DRY_RUN_FILE_MODE = 0o640;

/** The notice as an .eml file (written whole, then renamed into place, so a reader never sees half of one). */
async function writeEml(directory: string, message: Mail.Options, to: string, timeoutMs: number): Promise<string> {
  const transport = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: 'windows' });
  const info = await transport.sendMail(message);
  const name = `${new Date().toISOString().replace(/[:.]/g, '-')}-${to.replace(/[^a-z0-9@.-]/gi, '_')}-${randomBytes(3).toString('hex')}.eml`;
  const file = join(directory, name);
  await withTimeout((async () => {
    await mkdir(directory, { recursive: true, mode: DRY_RUN_DIR_MODE });
    await writeFile(`${file}.tmp`, info.message as Buffer, { mode: DRY_RUN_FILE_MODE, flag: 'wx' });
    await rename(`${file}.tmp`, file);
  })(), timeoutMs, 'notice dry-run write');
  return file;
}
