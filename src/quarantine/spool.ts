// The quarantine spool: suspect messages held on disk until the release scheduler hands them to Postfix.
// On-disk layout in spool-layout.ts. An entry EXISTS exactly when its metadata file does; the message is
// renamed into place and its directory fsynced first, so an entry never lacks its message, even after a power
// cut. write() resolves only when both files and both names are on disk: the proxy answers 250 only then.
// One process per directory (spool.lock); open() repairs what a crash left (spool-recovery.ts).
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import type { Readable } from 'node:stream';
import { DIR_MODE, FILE_MODE, removeIfPresent, writeAll, writeFileDurably } from './durable-fs.js';
import { abandonMessage, pumpMessage, type MessageSource } from './message-source.js';
import { buildReceivedHeader } from './received-header.js';
import {
  applyPatch, compileEntryFilter, formatEntryId, freezeMeta, ID_RANDOM_BYTES, isEntryId, serializeEntryMeta,
  type EntryFilter, type EntryMeta, type EntryPatch, type EntryState, type NewEntry,
} from './spool-entry.js';
import { spoolLayout, type SpoolLayout } from './spool-layout.js';
import { acquireSpoolLock, type SpoolLock } from './spool-lock.js';
import { recoverSpool, type SpoolOpenReport } from './spool-recovery.js';

export type { SpoolOpenReport } from './spool-recovery.js';

export interface SpoolLimits {
  /** Sum of message file sizes. */
  maxBytes: number;
  maxMessages: number;
}

export interface SpoolOptions {
  /** The "by" host of our Received header. Default: os.hostname(). */
  hostname?: string;
  nowMs?: () => number;
  /** 10 lowercase hex digits for entry ids; injected by tests. */
  randomHex?: () => string;
}

export interface WriteOptions {
  /** Aborts a write that has not reached its first rename; the temp files are removed, nothing appears. */
  signal?: AbortSignal;
  /** Asked before each chunk is written; an error abandons the write like an abort (e.g. over the size limit). */
  refuseChunk?: () => Error | undefined;
}

export interface SpoolStats {
  entries: number;
  bytes: number;
  byState: Record<EntryState, number>;
}

export class SpoolFullError extends Error {
  constructor(readonly limit: 'messages' | 'bytes') {
    super(`quarantine spool full (${limit})`);
    this.name = 'SpoolFullError';
  }
}

export class EntryNotFoundError extends Error {
  constructor(readonly id: string) {
    super(`no quarantine entry ${id}`);
    this.name = 'EntryNotFoundError';
  }
}

export class QuarantineSpool {
  private readonly index = new Map<string, EntryMeta>();
  /** Per-entry queue so update and remove of one entry never interleave their renames. */
  private readonly entryQueues = new Map<string, Promise<unknown>>();
  private committedBytes = 0;
  /** Bytes already streamed by writes in progress; they count against maxBytes before they commit. */
  private reservedBytes = 0;
  private writesInProgress = 0;
  private closed = false;

  private constructor(
    private readonly layout: SpoolLayout,
    private readonly limits: SpoolLimits,
    private readonly lock: SpoolLock,
    private readonly msgDir: FileHandle,
    private readonly metaDir: FileHandle,
    private readonly hostname: string,
    private readonly nowMs: () => number,
    private readonly randomHex: () => string,
    readonly openReport: SpoolOpenReport,
  ) {}

  /** Creates the layout, takes the lock, removes what a crash left half-done, and loads the index. */
  static async open(dir: string, limits: SpoolLimits, options: SpoolOptions = {}): Promise<QuarantineSpool> {
    const layout = spoolLayout(dir);
    for (const sub of [layout.tmpDir, layout.msgDir, layout.metaDir]) await mkdir(sub, { recursive: true, mode: DIR_MODE });
    const lock = await acquireSpoolLock(layout.lockFile);
    const handles: FileHandle[] = [];
    try {
      handles.push(await open(layout.msgDir, 'r'), await open(layout.metaDir, 'r'));
      const [msgDir, metaDir] = handles as [FileHandle, FileHandle];
      const { entries, report } = await recoverSpool(layout, { msgDir, metaDir });
      const spool = new QuarantineSpool(
        layout, limits, lock, msgDir, metaDir, options.hostname ?? osHostname(), options.nowMs ?? Date.now,
        options.randomHex ?? (() => randomBytes(ID_RANDOM_BYTES).toString('hex')), report,
      );
      for (const meta of entries) {
        spool.index.set(meta.id, meta);
        spool.committedBytes += meta.sizeBytes;
      }
      return spool;
    } catch (error) {
      await Promise.all(handles.map((handle) => handle.close().catch(() => undefined)));
      await lock.release();
      throw error;
    }
  }

  /** True when one more message of sizeHintBytes (0: unknown) fits now. Answer 452/4xx when false. */
  canAccept(sizeHintBytes = 0): boolean {
    return (
      !this.closed &&
      this.index.size + this.writesInProgress < this.limits.maxMessages &&
      this.committedBytes + this.reservedBytes + sizeHintBytes <= this.limits.maxBytes
    );
  }

  /**
   * Streams the message to disk behind our Received header and commits the entry. Rejects with SpoolFullError
   * when a limit is reached (before or during the stream), with the stream's error or MessageStreamClosedError
   * when the client dropped, with the signal's reason on abort, or with the disk error; in every case nothing
   * of the message remains. On rejection the rest of a Readable source is drained (abandonMessage), so
   * smtp-server can send the caller's 4xx.
   */
  async write(entry: NewEntry, message: MessageSource, options: WriteOptions = {}): Promise<EntryMeta> {
    const refusal = this.closed ? new Error('quarantine spool is closed')
      : this.index.size + this.writesInProgress >= this.limits.maxMessages ? new SpoolFullError('messages') : undefined;
    if (refusal) {
      abandonMessage(message);
      throw refusal;
    }
    const receivedAtMs = entry.receivedAtMs ?? this.nowMs();
    let id = formatEntryId(receivedAtMs, this.randomHex());
    // 24 random bits per millisecond make a clash unlikely, but a clash would overwrite another message.
    while (this.index.has(id)) id = formatEntryId(receivedAtMs, this.randomHex());
    const header = Buffer.from(buildReceivedHeader({
      helo: entry.client.helo, clientHostname: entry.client.hostname, clientAddress: entry.client.address,
      byHostname: this.hostname, protocol: entry.protocol ?? 'ESMTP', id, recipients: entry.recipients, receivedAtMs,
    }), 'latin1');
    const tempMessage = this.layout.tempMessageFile(id);
    const tempMeta = this.layout.tempMetaFile(id);
    let streamedBytes = 0;
    let stage: 'temp' | 'message-renamed' | 'committed' = 'temp';
    this.writesInProgress += 1;
    try {
      const reserve = (bytes: number): void => {
        if (this.committedBytes + this.reservedBytes + bytes > this.limits.maxBytes) throw new SpoolFullError('bytes');
        this.reservedBytes += bytes;
        streamedBytes += bytes;
      };
      const handle = await open(tempMessage, 'wx', FILE_MODE);
      try {
        reserve(header.length);
        await writeAll(handle, header);
        await pumpMessage(message, async (chunk) => {
          const refusal = options.refuseChunk?.();
          if (refusal) throw refusal;
          reserve(chunk.length);
          await writeAll(handle, chunk);
        }, options.signal);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      const meta = freezeMeta({
        version: 1, id, receivedAtMs, client: { ...entry.client },
        mailFrom: { address: entry.mailFrom.address, params: { ...entry.mailFrom.params } },
        recipients: [...entry.recipients], sizeBytes: streamedBytes,
        ...(entry.recipientParams ? { recipientParams: { ...entry.recipientParams } } : {}),
        verdict: { reasons: [...entry.verdict.reasons], score: entry.verdict.score }, attempts: 0,
        nextAttemptAtMs: entry.nextAttemptAtMs ?? receivedAtMs, state: 'held',
      });
      options.signal?.throwIfAborted();
      // Message first, its directory fsynced, then the metadata: an entry never exists without its message.
      await rename(tempMessage, this.layout.messageFile(id));
      stage = 'message-renamed';
      await this.msgDir.sync();
      await writeFileDurably(tempMeta, this.layout.metaFile(id), serializeEntryMeta(meta));
      stage = 'committed';
      await this.metaDir.sync();
      this.index.set(id, meta);
      this.committedBytes += meta.sizeBytes;
      return meta;
    } catch (error) {
      // Not acknowledged, so the sender will retry: remove every trace rather than risk a duplicate.
      abandonMessage(message);
      await this.discardWrite(id, stage, tempMessage, tempMeta);
      throw error;
    } finally {
      this.reservedBytes -= streamedBytes;
      this.writesInProgress -= 1;
    }
  }

  private async discardWrite(id: string, stage: string, tempMessage: string, tempMeta: string): Promise<void> {
    await Promise.all([removeIfPresent(tempMessage), removeIfPresent(tempMeta)]).catch(() => undefined);
    if (stage === 'committed') await removeIfPresent(this.layout.metaFile(id)).catch(() => undefined);
    if (stage !== 'temp') await removeIfPresent(this.layout.messageFile(id)).catch(() => undefined);
  }

  /** Entries in arrival order (then id). Reads the in-memory index: no I/O. Throws RangeError on a bad CIDR. */
  list(filter?: EntryFilter): EntryMeta[] {
    const matches = compileEntryFilter(filter);
    return [...this.index.values()].filter(matches)
      .sort((a, b) => a.receivedAtMs - b.receivedAtMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  get(id: string): EntryMeta | undefined {
    return this.index.get(id);
  }

  /**
   * The stored message (our Received header first). The file stays readable even if the entry is removed
   * meanwhile. The stream holds a file descriptor until it ends or is destroyed: read it or destroy it.
   */
  async readMessage(id: string): Promise<Readable> {
    this.known(id);
    try {
      const handle = await open(this.layout.messageFile(id), 'r');
      return handle.createReadStream();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new EntryNotFoundError(id);
      throw error;
    }
  }

  /** Rewrites the metadata atomically (temp, fdatasync, rename, directory fsync) and returns the new record. */
  update(id: string, patch: EntryPatch): Promise<EntryMeta> {
    return this.serialized(id, async () => {
      const next = applyPatch(this.known(id), patch);
      await writeFileDurably(this.layout.tempMetaFile(id, this.randomHex()), this.layout.metaFile(id), serializeEntryMeta(next));
      // The index follows the name on disk, even if the directory fsync below fails.
      this.index.set(id, next);
      await this.metaDir.sync();
      return next;
    });
  }

  /**
   * Metadata first (the entry stops existing once that name is gone and fsynced), then the message. A crash
   * in between leaves a message without metadata, which the next open() removes.
   */
  remove(id: string): Promise<void> {
    return this.serialized(id, async () => {
      const meta = this.known(id);
      await removeIfPresent(this.layout.metaFile(id));
      this.index.delete(id);
      this.committedBytes -= meta.sizeBytes;
      await this.metaDir.sync();
      await removeIfPresent(this.layout.messageFile(id));
    });
  }

  stats(): SpoolStats {
    const byState: Record<EntryState, number> = { held: 0, releasing: 0, released: 0, rejected: 0 };
    for (const meta of this.index.values()) byState[meta.state] += 1;
    return { entries: this.index.size, bytes: this.committedBytes, byState };
  }

  /** Waits for updates and removals under way, then releases the lock. Writes in progress are the caller's to await. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.entryQueues.values()]);
    await Promise.all([this.msgDir.close(), this.metaDir.close()]);
    await this.lock.release();
  }

  private known(id: string): EntryMeta {
    const meta = isEntryId(id) ? this.index.get(id) : undefined;
    if (!meta) throw new EntryNotFoundError(id);
    return meta;
  }

  private serialized<T>(id: string, task: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('quarantine spool is closed'));
    const previous = this.entryQueues.get(id) ?? Promise.resolve();
    const run = previous.then(task, task);
    const tail = run.catch(() => undefined);
    this.entryQueues.set(id, tail);
    void tail.then(() => {
      if (this.entryQueues.get(id) === tail) this.entryQueues.delete(id);
    });
    return run;
  }
}
